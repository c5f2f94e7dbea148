//! End-to-end: the promises of durable runs, kept by the binary. `${NAME}` into values, manual
//! mode from the file, resuming failed runs and rollbacks cut short, decisions journaled before
//! they act, retry configuration, steering that refuses what cannot happen, one live run per
//! project, secrets masked, `health`, hostile stores and small things.

use predicates::prelude::*;

mod common;
use common::Workspace;

on_every_store!(
    healing_disabled_in_the_file_is_manual_mode_and_either_off_means_off,
    a_failed_run_resumes_with_its_id_and_its_completed_items_skipped,
    a_run_killed_in_its_rollback_resumes_as_a_rollback_and_runs_nothing_forward,
    a_retry_decision_is_in_the_journal_before_the_retry_runs,
    steering_refuses_names_the_latest_run_does_not_have,
    a_queued_action_for_a_stage_that_is_not_running_is_recorded_as_not_applied,
    a_second_run_of_a_live_project_is_refused_and_a_dead_one_resumes,
    secret_values_are_masked_in_everything_shown_or_stored,
    health_lists_every_declared_check_and_says_when_they_were_seen,
    empty_listings_say_so,
);

/// `./flaky.sh NAME N`: fails with ETIMEDOUT the first N times it is run for NAME.
fn flaky(work: &Workspace) {
    work.script(
        "flaky.sh",
        r#"n=$(cat "count-$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "count-$1"
echo "$1" >> executions.txt
if [ "$n" -le "$2" ]; then echo "read ETIMEDOUT on $1" >&2; exit 1; fi"#,
    );
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

#[test]
fn variables_are_substituted_into_values_whatever_they_hold() {
    let work = Workspace::new();
    work.script(
        "write.sh",
        r#"printf '%s' "$VALUE" > value.txt; printf '%s' "$1" > literal.txt"#,
    );
    let weird = r#"a: b #c "q" 'x' *y &z {w} [v]"#;
    work.file(
        "pipeline.yaml",
        r#"
project: values
stages:
  - name: write
    command: ["./write.sh", "$${HOME}"]
    env: { VALUE: "${WEIRD}" }
healing:
  healthMonitor:
    checks:
      - name: database
        type: database
        connectionString: ${DATABASE_URL}
        query: "SELECT 1"
"#,
    );
    work.cmd()
        .args(["validate", "pipeline.yaml"])
        .env("WEIRD", weird)
        .env("DATABASE_URL", "sqlite::memory:")
        .assert()
        .success();
    work.cmd()
        .args(["run", "pipeline.yaml"])
        .env("WEIRD", weird)
        .env("DATABASE_URL", "sqlite::memory:")
        .assert()
        .success();
    assert_eq!(
        work.read("value.txt"),
        weird,
        "one value, every character kept"
    );
    assert_eq!(
        work.read("literal.txt"),
        "${HOME}",
        "a doubled dollar stays literal"
    );

    let toml = work.file(
        "pipeline.toml",
        "project = \"values\"\n[[stages]]\nname = \"write\"\ncommand = [\"./write.sh\", \"x\"]\nenv = { VALUE = \"${WEIRD}\" }\n",
    );
    work.cmd()
        .arg("run")
        .arg(&toml)
        .env("WEIRD", weird)
        .assert()
        .success();
    assert_eq!(work.read("value.txt"), weird);
}

fn healing_disabled_in_the_file_is_manual_mode_and_either_off_means_off(work: Workspace) {
    flaky(&work);
    let file = |enabled: bool| {
        format!(
            r#"
project: manual
stages:
  - name: load
    command: ["./flaky.sh", "load", "1"]
healing:
  enabled: {enabled}
  strategies:
    - name: retry-transient
      triggers: [{{ type: error, pattern: ETIMEDOUT }}]
      action: retry
      config: {{ maxAttempts: 3, initialDelay: 10 }}
"#
        )
    };
    work.file("pipeline.yaml", &file(false));
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(1);
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "manual", "--json"])
        .output()
        .unwrap();
    let records: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records[0]["outcome"], "would-have", "{records}");
    assert_eq!(
        lines(&work.read("executions.txt")),
        ["load"],
        "no retry ran"
    );

    // The file on, the store off: still off.
    std::fs::remove_file(work.path().join("count-load")).unwrap();
    work.file("pipeline.yaml", &file(true));
    work.cmd()
        .args(["healing", "disable", "--project", "manual"])
        .assert()
        .success();
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(1);
    work.cmd()
        .args(["healing", "enable", "--project", "manual"])
        .assert()
        .success();
    std::fs::remove_file(work.path().join("count-load")).unwrap();
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
}

fn a_failed_run_resumes_with_its_id_and_its_completed_items_skipped(work: Workspace) {
    work.script(
        "item.sh",
        r#"echo "$1" >> executions.txt
if [ "$1" = 3 ] && [ ! -f fixed ]; then echo "item 3 is broken" >&2; exit 1; fi"#,
    );
    work.file(
        "pipeline.yaml",
        "project: again\nstages:\n  - name: load\n    command: [\"./item.sh\", \"{item}\"]\n    items: [0, 1, 2, 3, 4]\n  - name: report\n    command: [\"./item.sh\", \"report\"]\n",
    );
    let failed = work.cmd().args(["run", "pipeline.yaml"]).output().unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let first = String::from_utf8_lossy(&failed.stdout).to_string();
    assert!(
        !first.contains("error: error:"),
        "the error line says its severity once: {first}"
    );
    let run_id = first
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|r| r.split(' ').next()))
        .unwrap()
        .to_owned();
    work.file("fixed", "");
    let resumed = work
        .cmd()
        .args(["run", "pipeline.yaml", "--resume"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{text}");
    assert!(text.contains(&format!("run {run_id} succeeded")), "{text}");
    let executions = work.read("executions.txt");
    for done in ["0", "1", "2", "4"] {
        assert_eq!(
            lines(&executions).iter().filter(|l| **l == done).count(),
            1,
            "item {done} ran once: {executions}"
        );
    }
    assert_eq!(lines(&executions).iter().filter(|l| **l == "3").count(), 2);
    let runs = work
        .cmd()
        .args(["runs", "--project", "again", "--json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "one run, resumed: {runs}"
    );
    assert_eq!(runs[0]["status"], "succeeded");
}

/// A pipeline whose stages compensate per item and whose last stage fails critically; the
/// compensation of `extract/b` hangs the first time, so the test can kill the run mid-rollback.
fn rolling_back(work: &Workspace) {
    work.script(
        "forward.sh",
        r#"echo "$1" >> forward.txt; [ "$1" != publish ] || { echo '{"message":"target corrupted","severity":"critical"}' >&2; exit 1; }"#,
    );
    work.script(
        "undo.sh",
        r#"echo "$1" >> undo.txt
if [ "$1" = extract/b ] && [ ! -f hung-once ]; then touch hung-once; sleep 60; fi"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: undoing
stages:
  - name: extract
    command: ["./forward.sh", "extract/{item}"]
    items: [a, b, c]
    rollback: ["./undo.sh", "extract/{item}"]
  - name: load
    command: ["./forward.sh", "load/{item}"]
    items: [x, z]
    rollback: ["./undo.sh", "load/{item}"]
  - name: publish
    command: ["./forward.sh", "publish"]
healing:
  strategies:
    - name: rollback-critical
      triggers: [{ type: error, severity: critical }]
      action: rollback
"#,
    );
}

fn a_run_killed_in_its_rollback_resumes_as_a_rollback_and_runs_nothing_forward(work: Workspace) {
    rolling_back(&work);
    let mut run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("hung-once");
    run.kill().unwrap();
    run.wait().unwrap();
    let forward_before = work.read("forward.txt");
    assert_eq!(
        lines(&forward_before),
        [
            "extract/a",
            "extract/b",
            "extract/c",
            "load/x",
            "load/z",
            "publish"
        ]
    );

    let resumed = work
        .cmd()
        .args(["run", "pipeline.yaml", "--resume"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&resumed.stdout);
    assert_eq!(resumed.status.code(), Some(3), "rolled back: {text}");
    assert!(text.contains("as a rollback"), "{text}");
    assert_eq!(
        work.read("forward.txt"),
        forward_before,
        "no forward command after the rollback began"
    );
    let undo = work.read("undo.txt");
    assert_eq!(
        lines(&undo),
        [
            "load/z",
            "load/x",
            "extract/c",
            "extract/b",
            // cut short by the kill, so run again; the rest once each
            "extract/b",
            "extract/a",
        ],
        "newest first, each completed item compensated"
    );
    let status: Vec<(String,)> = work.journal("SELECT status FROM runs");
    assert_eq!(status, [("rolled-back".to_owned(),)]);
}

fn a_retry_decision_is_in_the_journal_before_the_retry_runs(work: Workspace) {
    work.script(
        "slow-second.sh",
        r#"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
if [ "$n" = 1 ]; then echo "read ECONNRESET" >&2; exit 1; fi
touch second-attempt; sleep 60"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: decided
stages:
  - name: load
    command: ["./slow-second.sh"]
healing:
  strategies:
    - name: retry-transient
      triggers: [{ type: error, pattern: ECONNRESET }]
      action: retry
      config: { maxAttempts: 3, initialDelay: 0 }
"#,
    );
    let mut run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("second-attempt");
    run.kill().unwrap();
    run.wait().unwrap();
    let decisions: Vec<(String, String)> = work.journal("SELECT strategy, outcome FROM healing");
    assert_eq!(
        decisions,
        [("retry-transient".to_owned(), "succeeded".to_owned())],
        "the retry that ran was journaled first"
    );
}

#[test]
fn a_global_retry_policy_retries_by_itself_and_strategies_keep_to_their_stages() {
    let work = Workspace::new();
    flaky(&work);
    work.file(
        "pipeline.yaml",
        r#"
project: policies
stages:
  - name: load
    command: ["./flaky.sh", "load", "2"]
  - name: check
    command: ["./flaky.sh", "check", "3"]
    retryPolicy: { maxAttempts: 4, initialDelay: 10 }
  - name: tail
    command: ["./flaky.sh", "tail", "1"]
healing:
  retryPolicy: { maxAttempts: 3, initialDelay: 10, retryableErrors: [ETIMEDOUT] }
  strategies:
    - name: only-elsewhere
      stages: [check]
      triggers: [{ type: error }]
      action: notify
"#,
    );
    let output = work.cmd().args(["run", "pipeline.yaml"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let executions = work.read("executions.txt");
    let count = |name: &str| lines(&executions).iter().filter(|l| **l == name).count();
    assert_eq!(
        (count("load"), count("check"), count("tail")),
        (3, 4, 2),
        "the global policy, the stage's own, the global again"
    );
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "policies", "--json"])
        .output()
        .unwrap();
    let records: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    for record in records.as_array().unwrap() {
        if record["strategy"] == "only-elsewhere" {
            assert_eq!(record["stage"], "check", "{record}");
        } else {
            assert_eq!(record["strategy"], "retryPolicy", "{record}");
        }
    }
    let unknown = work.file(
        "other.yaml",
        "project: p\nstages:\n  - name: a\n    command: [\"true\"]\nhealing:\n  strategies:\n    - name: s\n      stages: [b]\n      triggers: [{type: error}]\n      action: rollback\n",
    );
    work.cmd()
        .arg("validate")
        .arg(&unknown)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`healing.strategies[0].stages`: no stage is named `b`",
        ));
}

fn steering_refuses_names_the_latest_run_does_not_have(work: Workspace) {
    work.file(
        "pipeline.yaml",
        "project: steer\nstages:\n  - name: load\n    command: [\"true\"]\n  - name: save\n    command: [\"true\"]\nhealing:\n  strategies:\n    - name: retry-transient\n      triggers: [{type: error}]\n      action: retry\n",
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    work.cmd()
        .args([
            "healing",
            "trigger",
            "--project",
            "steer",
            "--action",
            "restart",
            "--stage",
            "lod",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no stage `lod`"))
        .stderr(predicate::str::contains("did you mean `load`?"))
        .stderr(predicate::str::contains("it has load, save"));
    work.cmd()
        .args([
            "healing",
            "configure",
            "--project",
            "steer",
            "--strategy",
            "retry-all",
            "--max-attempts",
            "4",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no strategy `retry-all` in the project's latest run",
        ))
        .stderr(predicate::str::contains("it has retry-transient"));
}

fn a_queued_action_for_a_stage_that_is_not_running_is_recorded_as_not_applied(work: Workspace) {
    work.script(
        "wait.sh",
        "touch started; while [ ! -f go ]; do sleep 0.05; done",
    );
    work.file(
        "pipeline.yaml",
        "project: queued\nstages:\n  - name: first\n    command: [\"true\"]\n  - name: second\n    command: [\"./wait.sh\"]\n",
    );
    let run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("started");
    work.cmd()
        .args([
            "healing",
            "trigger",
            "--project",
            "queued",
            "--action",
            "restart",
            "--stage",
            "first",
        ])
        .assert()
        .success();
    // The running pipeline takes the request within its poll interval.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let detail = loop {
        let found: Vec<(String, String)> =
            work.journal("SELECT outcome, body FROM healing WHERE strategy = 'manual'");
        if let Some(found) = found.into_iter().next() {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "never recorded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    work.file("go", "");
    assert!(run.wait_with_output().unwrap().status.success());
    assert_eq!(detail.0, "failed", "{}", detail.1);
    assert!(detail.1.contains("not applied"), "{}", detail.1);
}

fn a_second_run_of_a_live_project_is_refused_and_a_dead_one_resumes(work: Workspace) {
    work.script("wait.sh", "touch started; sleep 60");
    work.file(
        "pipeline.yaml",
        "project: single\nstages:\n  - name: slow\n    command: [\"./wait.sh\"]\n",
    );
    let mut first = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("started");
    let second = work.cmd().args(["run", "pipeline.yaml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("project `single` has a live run: run-"),
        "{stderr}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // Its process is gone: at once, no lease to wait out.
    work.file("wait.sh", "#!/bin/sh\ntrue\n");
    let resumed = work
        .cmd()
        .args(["run", "pipeline.yaml", "--resume"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

fn secret_values_are_masked_in_everything_shown_or_stored(work: Workspace) {
    let secret = "tok-5ecr3t-v4lue";
    work.script(
        "leaky.sh",
        r#"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
[ "$n" -ge 3 ] || { echo "ETIMEDOUT calling with token $API_TOKEN" >&2; exit 1; }"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: masked
stages:
  - name: call
    command: ["./leaky.sh"]
    env: { API_TOKEN: "${API_TOKEN}" }
healing:
  strategies:
    - name: retry-once
      triggers: [{ type: error, pattern: ETIMEDOUT }]
      action: retry
      config: { maxAttempts: 2, initialDelay: 0 }
"#,
    );
    let plain = work
        .cmd()
        .args(["run", "pipeline.yaml"])
        .env("API_TOKEN", secret)
        .output()
        .unwrap();
    std::fs::remove_file(work.path().join("count")).unwrap();
    let json = work
        .cmd()
        .args(["run", "pipeline.yaml", "--json-events"])
        .env("API_TOKEN", secret)
        .output()
        .unwrap();
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "masked", "--json"])
        .output()
        .unwrap();
    let journal: Vec<(String,)> = work.journal(
        "SELECT body FROM events UNION ALL SELECT body FROM healing UNION ALL SELECT COALESCE(error, '') FROM runs UNION ALL SELECT COALESCE(error, '') FROM items",
    );
    let everything = [
        String::from_utf8_lossy(&plain.stdout).to_string(),
        String::from_utf8_lossy(&plain.stderr).to_string(),
        String::from_utf8_lossy(&json.stdout).to_string(),
        String::from_utf8_lossy(&history.stdout).to_string(),
        journal
            .into_iter()
            .map(|(b,)| b)
            .collect::<Vec<_>>()
            .join("\n"),
    ];
    for (i, text) in everything.iter().enumerate() {
        assert!(
            !text.contains(secret),
            "output {i} leaks the secret:\n{text}"
        );
    }
    assert!(
        everything[0].contains("with token ***"),
        "the error is shown, masked: {}",
        everything[0]
    );
}

fn health_lists_every_declared_check_and_says_when_they_were_seen(work: Workspace) {
    work.file(
        "pipeline.yaml",
        r#"
project: checked
stages:
  - name: slow
    command: ["sleep", "1.5"]
healing:
  healthMonitor:
    checkInterval: 200
    thresholds: { consecutiveFailures: 1, consecutiveSuccesses: 1 }
    checks:
      - { name: fine, type: command, command: ["true"] }
      - { name: broken, type: command, command: ["sh", "-c", "echo no route >&2; exit 1"], stage: slow }
      - { name: never, type: command, command: ["true"], interval: 3600000 }
"#,
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let health = work
        .cmd()
        .args(["health", "--project", "checked"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&health.stdout);
    assert!(health.status.success(), "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .to_owned()
    };
    assert!(row("fine").contains("healthy"), "{text}");
    assert!(
        row("broken").contains("unhealthy") && row("broken").contains("no route"),
        "{text}"
    );
    assert!(
        row("never").contains("unchecked") && row("never").contains("never"),
        "declared, not run yet, still listed: {text}"
    );
    assert!(
        text.contains("which ended"),
        "says the figures are from a finished run: {text}"
    );
}

#[test]
fn a_store_that_is_not_one_is_refused_with_its_name() {
    let work = Workspace::new();
    let bogus = work.file("notes.txt", "this is not a database\n".repeat(200).as_str());
    work.file(
        "pipeline.yaml",
        "project: p\nstages:\n  - name: a\n    command: [\"true\"]\n",
    );
    work.cmd()
        .args(["runs", "--project", "p"])
        .env(
            "MIGRATIONPILOT_STORE",
            format!("sqlite://{}", bogus.display()),
        )
        .assert()
        .code(2)
        .stderr(predicate::str::contains("notes.txt"))
        .stderr(predicate::str::contains("is not a migrationpilot store"));

    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let url = work.store();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async move {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
                .execute(&mut c)
                .await
                .unwrap();
        });
    work.cmd()
        .args(["runs", "--project", "p"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("journal.db"))
        .stderr(predicate::str::contains("schema version 99"));
}

fn empty_listings_say_so(work: Workspace) {
    work.file(
        "pipeline.yaml",
        "project: quiet\nstages:\n  - name: a\n    command: [\"true\"]\n",
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    work.cmd()
        .args(["healing", "history", "--project", "quiet"])
        .assert()
        .success()
        .stdout(predicate::str::contains("has no healing decisions"));
    work.cmd()
        .args(["healing", "disable", "--project", "idle"])
        .assert()
        .success();
    work.cmd()
        .args(["runs", "--project", "idle"])
        .assert()
        .success()
        .stdout(predicate::str::contains("has no runs"));
}
