//! End-to-end: the `migrationpilot` binary on real pipeline files and real scripts.

use std::fs;
use std::path::Path;

use predicates::prelude::*;

mod common;
use common::{Workspace, migrationpilot};

on_every_store!(
    the_bundled_example_runs_and_heals_its_injected_failures,
    a_flaky_stage_is_healed_by_retry,
    a_critical_failure_rolls_back_completed_work_in_reverse_order,
    healing_trigger_from_a_second_process_restarts_a_running_stage,
    a_run_killed_at_random_points_resumes_to_completion_with_each_item_journaled_once,
);

fn the_bundled_example_runs_and_heals_its_injected_failures(work: Workspace) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/migration");
    for entry in ["pipeline.yaml", "legacy", "scripts"] {
        copy(&example.join(entry), &work.path().join(entry));
    }
    let output = work
        .cmd()
        .args(["run", "pipeline.yaml", "--seed", "7"])
        .env("MIGRATIONPILOT_CHAOS", "30")
        .assert()
        .success()
        .stdout(predicate::str::contains("⟳ retry"))
        .stdout(predicate::str::contains("run ").and(predicate::str::contains(" succeeded")))
        .stdout(predicate::str::contains("retryCount"));
    let stdout = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("✔ validation: 12 unit(s)"), "{stdout}");
    let payroll = work.read("out/src/payroll.rs");
    assert_eq!(payroll.matches("pub fn ").count(), 4, "{payroll}");
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}

fn a_flaky_stage_is_healed_by_retry(work: Workspace) {
    // Fails with ECONNRESET on its first two attempts for every item.
    work.script(
        "flaky.sh",
        r#"if [ "$MIGRATIONPILOT_ATTEMPT" -lt 3 ]; then echo "read ECONNRESET" >&2; exit 1; fi
echo "$1" >> done.txt"#,
    );
    let pipeline = work.file(
        "pipeline.yaml",
        r#"
project: flaky
stages:
  - name: load
    command: ["./flaky.sh", "{item}"]
    items: [a, b, c]
healing:
  strategies:
    - name: retry-transient
      triggers: [{ type: error, pattern: ECONNRESET }]
      action: retry
      config: { maxAttempts: 3, initialDelay: 10, backoff: fixed }
"#,
    );
    work.cmd()
        .arg("run")
        .arg(&pipeline)
        .assert()
        .success()
        .stdout(predicate::str::contains("retryCount                6"));
    let mut done: Vec<String> = work.read("done.txt").lines().map(str::to_owned).collect();
    done.sort();
    assert_eq!(done, ["a", "b", "c"]);
}

fn a_critical_failure_rolls_back_completed_work_in_reverse_order(work: Workspace) {
    work.script("do.sh", r#"echo "do $1" >> log.txt"#);
    work.script("undo.sh", r#"echo "undo $1" >> log.txt"#);
    work.script(
        "break.sh",
        r#"echo '{"code":"SCHEMA","severity":"critical","message":"target schema corrupted"}' >&2; exit 1"#,
    );
    let pipeline = work.file(
        "pipeline.yaml",
        r#"
project: rollback
stages:
  - name: extract
    command: ["./do.sh", "{item}"]
    items: [one, two, three]
    rollback: ["./undo.sh", "{item}"]
  - name: transform
    command: ["./do.sh", "transform"]
    rollback: ["./undo.sh", "transform"]
  - name: load
    command: ["./break.sh"]
healing:
  strategies:
    - name: rollback-critical
      priority: 100
      triggers: [{ type: error, severity: critical }]
      action: rollback
"#,
    );
    work.cmd()
        .arg("run")
        .arg(&pipeline)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("rolled-back"))
        .stdout(predicate::str::contains("↶ compensated extract/three"));
    let log = work.read("log.txt");
    let undo: Vec<&str> = log.lines().filter(|l| l.starts_with("undo")).collect();
    let done_order: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("do") && *l != "do transform")
        .map(|l| &l[3..])
        .collect();
    let mut expected = vec!["undo transform".to_owned()];
    expected.extend(done_order.iter().rev().map(|item| format!("undo {item}")));
    assert_eq!(undo, expected, "compensations run newest first:\n{log}");
    let journaled: Vec<(String, Option<String>)> = work
        .journal("SELECT stage, item FROM events WHERE kind = 'compensation-finished' ORDER BY id");
    let journaled: Vec<String> = journaled
        .into_iter()
        .map(|(s, i)| format!("{s}/{}", i.unwrap_or_default()))
        .collect();
    assert_eq!(journaled.len(), 4, "{journaled:?}");
    assert_eq!(
        journaled[0], "transform/",
        "the last completed stage first: {journaled:?}"
    );
    let status: Vec<(String,)> = work.journal("SELECT status FROM runs");
    assert_eq!(status, [("rolled-back".to_owned(),)]);
}

#[test]
fn items_reach_commands_as_one_argument_each_unchanged() {
    let work = Workspace::new();
    work.script(
        "record.sh",
        r#"[ "$#" -eq 1 ] || { echo "got $# arguments" >&2; exit 1; }
printf '%s\n' "$1" >> seen.txt"#,
    );
    let items = [
        "two words",
        "it's \"quoted\"",
        "semi;colon",
        "$(touch pwned)",
        "`touch pwned`",
        "-rf",
        "a|b&c>d",
    ];
    let list: Vec<String> = items
        .iter()
        .map(|i| serde_json::to_string(i).unwrap())
        .collect();
    let pipeline = work.file(
        "pipeline.yaml",
        &format!(
            "project: quoting\nstages:\n  - name: record\n    command: [\"./record.sh\", \"{{item}}\"]\n    items: [{}]\n",
            list.join(", ")
        ),
    );
    work.cmd().arg("run").arg(&pipeline).assert().success();
    let mut seen: Vec<String> = work.read("seen.txt").lines().map(str::to_owned).collect();
    seen.sort();
    let mut expected: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(
        !work.path().join("pwned").exists(),
        "an item was run by a shell"
    );
}

#[test]
fn json_events_are_one_object_per_line() {
    let work = Workspace::new();
    let pipeline = work.file(
        "pipeline.toml",
        "project = \"json\"\n\n[[stages]]\nname = \"only\"\ncommand = [\"true\"]\n",
    );
    let output = work
        .cmd()
        .arg("run")
        .arg(&pipeline)
        .arg("--json-events")
        .assert()
        .success();
    let stdout = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    let types: Vec<String> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{line}: {e}"))
        })
        .map(|v| v["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("run-started"));
    assert!(types.contains(&"stage-succeeded".to_owned()));
    assert_eq!(types.last().map(String::as_str), Some("run-report"));
}

#[test]
fn validate_accepts_the_example_and_toml() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/migration/pipeline.yaml");
    migrationpilot()
        .arg("validate")
        .arg(&example)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "ok: project `payroll-migration`, 4 stage(s)",
        ));
}

/// Malformed files, each with the error it must produce: `validate` exits 2 and names file,
/// line, column and key.
#[test]
fn validate_reports_each_mistake_specifically() {
    let base = "project: p\nstages:\n  - name: a\n    command: [\"true\"]\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("p.yaml", "project: p\nstages:\n  - name: a\n    comand: [\"true\"]\n".into(), "p.yaml:4:5: `stages[0].comand`: unknown field `comand`"),
        ("p.yaml", "project: p\nstages:\n  - name: a\n    comand: [\"true\"]\n".into(), "did you mean `command`?"),
        ("p.yaml", "stages:\n  - name: a\n    command: [x]\n".into(), "missing field `project`"),
        ("p.yaml", "project: p\nstages: []\n".into(), "`stages`: a pipeline needs at least one stage"),
        ("p.yaml", format!("{base}    concurrency: 0\n    items: [x]\n"), "`stages[0].concurrency`: must be at least 1"),
        ("p.yaml", format!("{base}    timeout: 5 parsecs\n"), "not a unit"),
        ("p.yaml", format!("{base}    timeout: 0\n"), "p.yaml:5:5: `stages[0].timeout`: must be longer than zero"),
        ("p.yaml", "project: p\nstages:\n  - name: a\n    command: []\n".into(), "`stages[0].command`: needs a program to run"),
        ("p.yaml", format!("{base}    items: {{ glob: \"[\" }}\n"), "`stages[0].items.glob`"),
        ("p.yaml", format!("{base}    items: {{ folder: x }}\n"), "unknown field `folder`"),
        ("p.yaml", format!("{base}    workdir: no/such/dir\n"), "`stages[0].workdir`: `"),
        ("p.yaml", format!("{base}healing:\n  strategies:\n    - name: s\n      triggers: [{{type: error}}]\n      action: retyr\n"), "did you mean `retry`?"),
        ("p.yaml", format!("{base}healing:\n  strategies:\n    - name: s\n      triggers: [{{type: error, pattern: \"(\"}}]\n      action: retry\n"), "`healing.strategies[0].triggers[0].pattern`"),
        ("p.yaml", format!("{base}healing:\n  strategies:\n    - name: s\n      triggers: [{{type: metrics, metric: errorRat, value: 1}}]\n      action: rollback\n"), "did you mean `errorRate`?"),
        ("p.yaml", format!("{base}healing:\n  strategies:\n    - name: s\n      triggers: [{{type: error}}]\n      action: retry\n      config: {{ breakDuration: 5 }}\n"), "`healing.strategies[0].config.breakDuration`: does not apply to retry"),
        ("p.yaml", format!("{base}healing:\n  retryPolicy: {{ maxAttempts: 0 }}\n"), "`healing.retryPolicy.maxAttempts`: must be at least 1"),
        ("p.yaml", format!("{base}healing:\n  healthMonitor:\n    checks:\n      - {{ name: c, type: tcp, host: h, port: 1, endpoint: x }}\n"), "`endpoint` does not apply to tcp checks"),
        ("p.yaml", format!("{base}healing:\n  healthMonitor:\n    checks:\n      - {{ name: c, type: database, connectionString: \"oracle://u:hunter2@h/x\" }}\n"), "oracle://u:***@h/x"),
        ("p.yaml", format!("{base}healing:\n  alerts:\n    channels:\n      - {{ type: slack, webhook: \"${{MP_TEST_UNSET_HOOK}}\" }}\n"), "p.yaml:8:33: `healing.alerts.channels[0].webhook`: environment variable `MP_TEST_UNSET_HOOK` is not set"),
        ("p.yaml", format!("{base}healing:\n  alerts:\n    thresholds:\n      - {{ metric: queueDepth, warning: 1 }}\n    channels:\n      - {{ type: webhook, url: \"https://alerts.example/hook\" }}\n"), "`queueDepth` is not a known metric"),
        ("p.yaml", format!("{base}healing:\n  alerts:\n    thresholds:\n      - {{ metric: errorRate, warning: 0.1 }}\n"), "`healing.alerts.thresholds`: alert thresholds need a channel"),
        ("p.yaml", format!("{base}healing:\n  metricsCollector: {{ retentionSize: 0 }}\n"), "`healing.metricsCollector.retentionSize`: must be at least 1"),
        ("p.yaml", "project: p\nstages:\n  - name: a\n    command: [\"true\"]\n  - name: a\n    command: [\"true\"]\n".into(), "`a` names two stages"),
        ("p.yaml", "project: [p\n".into(), "p.yaml:"),
        ("p.toml", "project = \"p\"\n[[stages]]\nname = \"a\"\ncommand = [\"true\"]\nretries = 3\n".into(), "p.toml:5:1: `stages[0].retries`: unknown field `retries`"),
        ("p.json", "{}".into(), "a pipeline file ends in .yaml, .yml or .toml"),
    ];
    for (name, text, expected) in &cases {
        let work = Workspace::new();
        let path = work.file(name, text);
        let output = migrationpilot()
            .arg("validate")
            .arg(&path)
            .env_remove("MP_TEST_UNSET_HOOK")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "for:\n{text}\nexpected `{expected}` in:\n{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "a secret leaked: {stderr}");
    }
    assert!(cases.len() >= 20);
}

#[test]
fn validate_reports_every_error_not_just_the_first() {
    let work = Workspace::new();
    let path = work.file(
        "p.yaml",
        "project: p\nstages:\n  - name: a\n    command: []\n  - name: b\n    command: [\"true\"]\n    timeout: 0\nhealing:\n  retryPolicy: { maxAttempts: 0 }\n",
    );
    migrationpilot()
        .arg("validate")
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("`stages[0].command`"))
        .stderr(predicate::str::contains("`stages[1].timeout`"))
        .stderr(predicate::str::contains(
            "`healing.retryPolicy.maxAttempts`",
        ))
        .stderr(predicate::str::contains("3 error(s)"));
}

#[test]
fn a_built_in_alert_takes_only_its_own_wait() {
    let work = Workspace::new();
    let path = work.file(
        "p.yaml",
        "project: p\nstages:\n  - name: a\n    command: [\"true\"]\nhealing:\n  alerts:\n    builtin:\n      runFailed: { after: 5m }\n      checkDown: { after: 1m }\n      runStuck: { after: 0s }\n",
    );
    migrationpilot()
        .arg("validate")
        .arg(&path)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "`healing.alerts.builtin.runFailed.after`: `run-failed` fires at once: it takes no `after`",
        ))
        .stderr(predicate::str::contains(
            "`healing.alerts.builtin.checkDown.after`: `check-down` waits with `for`, not `after`",
        ))
        .stderr(predicate::str::contains(
            "`healing.alerts.builtin.runStuck.after`: must be more than 0",
        ))
        .stderr(predicate::str::contains("3 error(s)"));
    let path = work.file(
        "q.yaml",
        "project: q\nstages:\n  - name: a\n    command: [\"true\"]\nhealing:\n  alerts:\n    runbook: https://wiki.example/q\n    builtin:\n      runStuck: { after: 2h, severity: critical }\n      checkDown: { for: 1m, enabled: false }\n    thresholds:\n      - { metric: errorRate, critical: 0.5, for: 2m, runbook: https://wiki.example/errors }\n    channels:\n      - { type: webhook, url: \"http://127.0.0.1:9/hook\" }\n",
    );
    migrationpilot()
        .arg("validate")
        .arg(&path)
        .assert()
        .success();
}

#[test]
fn a_healing_problem_does_not_hide_the_stages_or_the_health_monitor() {
    let work = Workspace::new();
    let healing = "healing:\n  retryPolicy: { maxAttempts: 0 }\n";
    let two_named_a = "project: p\nstages:\n  - name: a\n    command: [\"true\"]\n  - name: a\n    command: [\"true\"]\n";
    let checks = "  healthMonitor:\n    checks:\n      - { name: db, type: tcp, host: 127.0.0.1, port: 5432 }\n      - { name: db, type: tcp, host: 127.0.0.1, port: 5433 }\n";
    let one_stage = "project: p\nstages:\n  - name: a\n    command: [\"true\"]\n";
    for (text, other) in [
        (format!("{two_named_a}{healing}"), "`stages[1].name`"),
        (
            format!("{one_stage}{healing}{checks}"),
            "`healing.healthMonitor.checks[1].name`",
        ),
    ] {
        let path = work.file("p.yaml", &text);
        migrationpilot()
            .arg("validate")
            .arg(&path)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "`healing.retryPolicy.maxAttempts`",
            ))
            .stderr(predicate::str::contains(other))
            .stderr(predicate::str::contains("2 error(s)"));
    }
}

#[test]
fn bad_command_lines_exit_with_status_2() {
    migrationpilot().arg("launch").assert().code(2);
    migrationpilot().args(["run"]).assert().code(2);
    migrationpilot()
        .args(["run", "/no/such/pipeline.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read"));
    let work = Workspace::new();
    work.cmd()
        .args(["worker"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "workers share runs through a PostgreSQL store",
        ));
    work.cmd()
        .args(["worker", "--concurrency", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--concurrency must be at least 1"));
    work.cmd()
        .args(["worker", "--workdir", "/no/such/dir"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/no/such/dir"));
    work.cmd()
        .args(["worker", "--lease", "soon"])
        .assert()
        .code(2);
}

fn healing_trigger_from_a_second_process_restarts_a_running_stage(work: Workspace) {
    // The stage hangs until its reset hook has run once: only a restart lets it finish.
    work.script(
        "work.sh",
        "touch started; while [ ! -f reset-done ]; do sleep 0.05; done",
    );
    work.script("reset.sh", "touch reset-done");
    work.file(
        "pipeline.yaml",
        "project: steer\nstages:\n  - name: validation\n    command: [\"./work.sh\"]\n    reset: [\"./reset.sh\"]\n",
    );
    let run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("started");
    work.cmd()
        .args([
            "healing",
            "trigger",
            "--project",
            "steer",
            "--action",
            "restart",
            "--stage",
            "validation",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "queued restart of stage `validation`",
        ));
    let output = run.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("⟳ restart validation: restart 1 of 3: requested by an operator"),
        "{stdout}"
    );
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "steer", "--json"])
        .output()
        .unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0]["strategy"].as_str(),
            records[0]["outcome"].as_str()
        ),
        (Some("manual"), Some("succeeded"))
    );
}

#[test]
fn healing_disable_records_would_have_and_acts_on_nothing() {
    let work = Workspace::new();
    work.script(
        "flaky.sh",
        r#"[ "$MIGRATIONPILOT_ATTEMPT" -gt 1 ] || { echo "read ECONNRESET" >&2; exit 1; }"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: manual
stages:
  - name: load
    command: ["./flaky.sh"]
healing:
  strategies:
    - name: retry-transient
      triggers: [{ type: error, pattern: ECONNRESET }]
      action: retry
      config: { maxAttempts: 3, initialDelay: 10 }
"#,
    );
    work.cmd()
        .args([
            "healing",
            "disable",
            "--project",
            "manual",
            "--reason",
            "change freeze",
        ])
        .assert()
        .success();
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(1);
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "manual", "--json"])
        .output()
        .unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["would-have"], "{records:#?}");
    work.cmd()
        .args(["health", "--project", "manual"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "healing   disabled: change freeze",
        ));

    work.cmd()
        .args(["healing", "enable", "--project", "manual"])
        .assert()
        .success();
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
}

#[test]
fn healing_configure_changes_max_attempts_of_a_running_pipeline() {
    let work = Workspace::new();
    // Fails its first four attempts; maxAttempts 3 would give up, 6 lets it through.
    work.script(
        "stubborn.sh",
        r#"touch "attempt-$MIGRATIONPILOT_ATTEMPT"
[ "$MIGRATIONPILOT_ATTEMPT" -ge 5 ] || { echo "read ETIMEDOUT" >&2; exit 1; }"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: tuned
stages:
  - name: load
    command: ["./stubborn.sh"]
healing:
  strategies:
    - name: retry-transient
      triggers: [{ type: error, pattern: ETIMEDOUT }]
      action: retry
      config: { maxAttempts: 3, backoff: fixed, initialDelay: 1500 }
"#,
    );
    let run = work.spawn(&["run", "pipeline.yaml"]);
    work.wait_for("attempt-1");
    work.cmd()
        .args([
            "healing",
            "configure",
            "--project",
            "tuned",
            "--strategy",
            "retry-transient",
            "--max-attempts",
            "6",
        ])
        .assert()
        .success();
    let output = run.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("retryCount                4"), "{stdout}");
    assert!(work.path().join("attempt-5").exists());
}

#[test]
fn healing_commands_check_their_input() {
    let work = Workspace::new();
    work.cmd()
        .args(["healing", "enable", "--project", "someone"])
        .assert()
        .success();
    work.cmd()
        .args(["healing", "history", "--project", "nobody"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "the store knows no project `nobody`",
        ));
    work.cmd()
        .args(["healing", "configure", "--project", "p", "--strategy", "s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nothing to change"));
    work.cmd()
        .args([
            "healing",
            "configure",
            "--project",
            "p",
            "--strategy",
            "s",
            "--cooldown",
            "5 weeks",
        ])
        .assert()
        .code(2);
    // The API's bounds, in one place for both.
    for (flag, value, says) in [
        (
            "--cooldown",
            "200000000d",
            "cooldown must be at most 9007199254740991 ms",
        ),
        ("--priority", "-9007199254740992", "priority must be within"),
        (
            "--priority",
            "-9223372036854775808",
            "priority must be within",
        ),
    ] {
        work.cmd()
            .args([
                "healing",
                "configure",
                "--project",
                "p",
                "--strategy",
                "s",
                flag,
                value,
            ])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    work.cmd()
        .args(["run", "pipeline.yaml", "--resume"])
        .assert()
        .code(2);
    work.file(
        "pipeline.yaml",
        "project: fresh\nstages:\n  - name: a\n    command: [\"true\"]\n",
    );
    work.cmd()
        .args(["run", "pipeline.yaml", "--resume"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "project `fresh` has no unfinished run to resume",
        ));
}

/// kill -9 at several seeded points, then `run --resume` until the run finishes: every item is
/// completed exactly once in the journal, though an item in flight at a kill runs again.
fn a_run_killed_at_random_points_resumes_to_completion_with_each_item_journaled_once(
    work: Workspace,
) {
    work.script("item.sh", r#"echo "$1" >> executions.txt; sleep 0.01"#);
    let items: Vec<String> = (0..300).map(|i| format!("item-{i:03}")).collect();
    work.file("items.txt", &items.join("\n"));
    work.file(
        "pipeline.yaml",
        r#"
project: crashy
stages:
  - name: first
    command: ["./item.sh", "first {item}"]
    items: { file: items.txt }
    concurrency: 4
  - name: second
    command: ["./item.sh", "second {item}"]
    items: { file: items.txt }
    concurrency: 4
"#,
    );
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut kills: usize = 0;
    let mut args = vec!["run", "pipeline.yaml"];
    let finished = loop {
        let mut run = work.spawn(&args);
        if kills == 0 {
            // The first kill comes once items run: before it claimed its run, a killed
            // process leaves nothing to resume.
            work.wait_for("executions.txt");
        }
        let kill_after = std::time::Duration::from_millis(rng.u64(150..700));
        let deadline = std::time::Instant::now() + kill_after;
        let status = loop {
            if let Some(status) = run.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() >= deadline && kills < 5 {
                run.kill().unwrap(); // SIGKILL
                run.wait().unwrap();
                kills += 1;
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        args = vec!["run", "pipeline.yaml", "--resume"];
        if let Some(status) = status {
            let output = run.wait_with_output().unwrap();
            break (status, String::from_utf8_lossy(&output.stderr).into_owned());
        }
    };
    assert!(
        finished.0.success(),
        "the last resume finished the run: {}",
        finished.1
    );
    assert!(kills >= 3, "the run was killed {kills} times");
    let completions: Vec<(String, String, i64)> = work.journal(
        "SELECT stage, item, COUNT(*) FROM items WHERE status = 'succeeded' GROUP BY stage, item",
    );
    assert_eq!(
        completions.len(),
        600,
        "every item of both stages completed"
    );
    assert!(completions.iter().all(|(_, _, n)| *n == 1));
    let runs: Vec<(String, String)> = work.journal("SELECT id, status FROM runs");
    assert_eq!(runs.len(), 1, "one run, resumed: {runs:?}");
    assert_eq!(runs[0].1, "succeeded");
    // At least once; again only when a kill came before its completion was committed, so at
    // most once per attempt of the run.
    let log = work.read("executions.txt");
    let mut per_item = std::collections::HashMap::new();
    for line in log.lines() {
        *per_item.entry(line).or_insert(0) += 1;
    }
    assert_eq!(per_item.len(), 600);
    assert!(
        per_item.values().all(|&n| n <= kills + 1),
        "an item ran more often than the run was attempted"
    );
}

/// On a terminal the run shows live progress per stage; `NO_COLOR` keeps it free of color.
/// `script` (util-linux, on every Linux machine) gives the binary a real pseudo-terminal.
#[test]
fn a_terminal_gets_live_progress_and_no_color_is_honoured() {
    assert!(
        std::process::Command::new("script")
            .arg("--version")
            .output()
            .is_ok(),
        "this test needs `script` (util-linux)"
    );
    let work = Workspace::new();
    work.script("slow.sh", "sleep 0.3");
    work.file(
        "pipeline.yaml",
        "project: tty\nstages:\n  - name: load\n    command: [\"./slow.sh\", \"{item}\"]\n    items: [a, b, c]\n",
    );
    let binary = assert_cmd::cargo::cargo_bin("migrationpilot");
    let run = |no_color: bool| {
        let mut command = std::process::Command::new("script");
        command
            .args([
                "-qec",
                &format!("{} run pipeline.yaml", binary.display()),
                "/dev/null",
            ])
            .current_dir(work.path())
            .env("MIGRATIONPILOT_STORE", work.store());
        if no_color {
            command.env("NO_COLOR", "1");
        } else {
            command.env_remove("NO_COLOR");
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let colored = run(false);
    assert!(
        colored.contains("load") && colored.contains(" done "),
        "a progress line per stage:\n{colored}"
    );
    assert!(
        colored.contains("\u{1b}[1m"),
        "bold stage names on a terminal"
    );
    let plain = run(true);
    assert!(plain.contains(" done "), "{plain}");
    assert!(
        !plain.contains("\u{1b}[1m") && !plain.contains("\u{1b}[36m"),
        "NO_COLOR: no color codes"
    );
    assert!(plain.contains("run ") && plain.contains(" succeeded"));
}

/// The seed's examples, written in YAML, load unchanged (its closures become commands).
#[test]
fn the_seeds_configuration_examples_validate() {
    let work = Workspace::new();
    work.file(
        "pipeline.yaml",
        r#"
project: my-migration
stages:
  - name: analysis
    command: ["./analyze.sh"]
healing:
  enabled: true
  healthMonitor:
    checkInterval: 10000
    consecutiveFailures: 3
    consecutiveSuccesses: 5
    checks:
      - name: api-health
        type: http
        endpoint: http://api:3000/health
        interval: 10000
        timeout: 5000
        expectedStatus: 200
      - name: database
        type: database
        connectionString: ${DATABASE_URL}
        query: SELECT 1
        interval: 30000
      - name: redis
        type: tcp
        host: redis
        port: 6379
        interval: 15000
      - name: custom-check
        type: command
        command: ["./queue-depth-below.sh", "10000"]
        interval: 60000
  metricsCollector:
    sampleInterval: 5000
    retentionSize: 1000
    metrics: [duration, errorRate, throughput, memoryUsage, cpuUsage]
  strategies:
    - name: retry-transient-errors
      triggers: [{ type: error, pattern: "ECONNRESET|ETIMEDOUT" }]
      action: retry
      config: { maxAttempts: 3, backoff: exponential, initialDelay: 1000 }
    - name: rollback-on-failure
      triggers: [{ type: metrics, metric: errorRate, threshold: 0.1 }]
      action: rollback
      cooldown: 300000
  alerts:
    thresholds:
      - { metric: errorRate, warning: 0.01, critical: 0.05 }
      - { metric: latencyP95, warning: 2000, critical: 5000 }
    channels:
      - { type: slack, webhook: "${SLACK_WEBHOOK}", minSeverity: warning }
      - { type: pagerduty, routingKey: "${PD_ROUTING_KEY}", minSeverity: critical }
  retryPolicy:
    maxAttempts: 3
    backoff: exponential
    initialDelay: 1000
    maxDelay: 30000
    jitter: true
    retryableErrors: ["ECONNRESET", "ETIMEDOUT"]
  circuitBreaker:
    enabled: true
    failureThreshold: 5
    successThreshold: 2
    timeout: 60000
"#,
    );
    work.cmd()
        .args(["validate", "pipeline.yaml"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", work.path().join("app.db").display()),
        )
        .env(
            "SLACK_WEBHOOK",
            "https://hooks.slack.example/services/T0/B0/x",
        )
        .env("PD_ROUTING_KEY", "r0ut1ng")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "1 stage(s), 2 strategy(ies), 4 health check(s), 2 alert threshold(s), 2 alert channel(s)",
        ));
}

#[test]
fn a_retry_waits_the_retry_after_the_command_asked_for() {
    let work = Workspace::new();
    work.script(
        "limited.sh",
        r#"date +%s%3N >> attempts.txt
if [ "$MIGRATIONPILOT_ATTEMPT" = 1 ]; then
  echo '{"message":"429 rate limited","code":"RATE_LIMITED","retryAfter":1500}' >&2; exit 1
fi"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: limited
stages:
  - name: call
    command: ["./limited.sh"]
healing:
  strategies:
    - name: retry-limited
      triggers: [{ type: error, pattern: RATE_LIMITED }]
      action: retry
      config: { maxAttempts: 3, initialDelay: 0 }
"#,
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let attempts: Vec<i64> = work
        .read("attempts.txt")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[1] - attempts[0] >= 1500,
        "the retry waited {} ms",
        attempts[1] - attempts[0]
    );
    let failed: Vec<(String,)> =
        work.journal("SELECT body FROM events WHERE kind = 'attempt-failed'");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].0.contains(r#""retryAfter":1500"#),
        "the hint is kept with the error: {}",
        failed[0].0
    );
}

#[test]
fn a_stage_waits_while_a_check_it_depends_on_is_unhealthy_and_says_so() {
    let work = Workspace::new();
    // Item 2 takes the API down and lingers until the check has run (and failed) since: the
    // stage is held when it ends. The API comes back a second later, in the background; item 3
    // must not start before that.
    work.script(
        "item.sh",
        r#"echo "$1 $(date +%s%3N)" >> calls.txt
if [ "$1" = 2 ]; then
  touch api-down checks.log
  seen=$(wc -l < checks.log)
  while [ "$(wc -l < checks.log)" -lt $((seen + 2)) ]; do sleep 0.05; done
  (sleep 1; date +%s%3N > back-at; rm -f api-down) >/dev/null 2>&1 &
fi"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: gated
stages:
  - name: load
    command: ["./item.sh", "{item}"]
    items: [1, 2, 3, 4]
    dependsOn: [api]
healing:
  healthMonitor:
    thresholds: { consecutiveFailures: 1, consecutiveSuccesses: 1 }
    checks:
      - { name: api, type: command, command: ["sh", "-c", "echo >> checks.log; test ! -e api-down"], interval: 100ms }
"#,
    );
    let output = work.cmd().args(["run", "pipeline.yaml"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("⏸ load: waiting for `api` (unhealthy)"),
        "{stdout}"
    );
    assert!(stdout.contains("▶ load: work resumed"), "{stdout}");
    let calls: Vec<(String, i64)> = work
        .read("calls.txt")
        .lines()
        .map(|l| {
            let (item, at) = l.split_once(' ').unwrap();
            (item.to_owned(), at.parse().unwrap())
        })
        .collect();
    assert_eq!(
        calls.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "4"]
    );
    let back_at: i64 = work.read("back-at").trim().parse().unwrap();
    assert!(
        calls[2].1 >= back_at,
        "item 3 started {} ms before the API was back",
        back_at - calls[2].1
    );
    let history = work
        .cmd()
        .args(["healing", "history", "--project", "gated", "--json"])
        .output()
        .unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    // Newest first.
    let held: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["strategy"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["detail"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        held,
        [
            ("dependsOn", "hold", "work resumed: `api` is healthy"),
            ("dependsOn", "hold", "new attempts wait: `api` is unhealthy"),
        ]
    );
}

#[test]
fn names_the_new_healing_keys_get_wrong_are_located() {
    let work = Workspace::new();
    work.file(
        "pipeline.yaml",
        r#"
project: wrong
stages:
  - name: load
    command: ["true"]
    dependsOn: [api-helth]
    breaker: payments
healing:
  healthMonitor:
    checks: [ { name: api-health, type: command, command: ["true"] } ]
  breakers:
    payments-api: { failureRateThreshold: 150 }
  strategies:
    - name: hold-it
      triggers: [{ type: error }]
      action: hold
    - name: adapt
      triggers: [{ type: error }]
      action: scale
      config: { mode: adaptive, maxInstances: 8 }
"#,
    );
    let output = work
        .cmd()
        .args(["validate", "pipeline.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pipeline.yaml: 5 error(s)"), "{stderr}");
    for expected in [
        "pipeline.yaml:6:17: `stages[0].dependsOn[0]`: no check is named `api-helth` (did you mean `api-health`?)",
        "pipeline.yaml:7:5: `stages[0].breaker`: no breaker is named `payments` (did you mean `payments-api`?) (the breakers are payments-api)",
        "pipeline.yaml:12:21: `healing.breakers.payments-api.failureRateThreshold`: 150 is not a percentage above 0, at most 100",
        "`healing.strategies[0].action`: `hold` is not an action a strategy takes",
        "`healing.strategies[1].triggers`: an adaptive scale runs all the time its stages run: it takes no triggers",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[test]
fn classify_shows_what_a_tools_output_becomes_by_the_files_rules_then_the_built_ins() {
    let work = Workspace::new();
    work.file(
        "pipeline.yaml",
        r#"project: p
errors:
  - { pattern: "schema mismatch", code: ESCHEMA, severity: critical, retryable: false }
stages:
  - name: a
    command: ["true"]
"#,
    );
    work.cmd()
        .args([
            "classify",
            "--file",
            "pipeline.yaml",
            "--exit",
            "3",
            "fatal: schema mismatch in orders",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("code        ESCHEMA"))
        .stdout(predicate::str::contains("severity    critical"))
        .stdout(predicate::str::contains("retried     no"))
        .stdout(predicate::str::contains("rule        errors[0]"));
    let output = work
        .cmd()
        .args(["classify", "--program", "curl", "--exit", "22", "--json"])
        .arg("curl: (22) The requested URL returned error: 503")
        .output()
        .unwrap();
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["code"], "HTTP_503");
    assert_eq!(error["retryable"], true);
    assert_eq!(error["rule"], "builtin:curl-http-status");
    work.file(
        "bad.yaml",
        "project: p\nerrors:\n  - { pattern: \"(\", code: X }\nstages:\n  - name: a\n    command: [\"true\"]\n",
    );
    work.cmd()
        .args(["classify", "--file", "bad.yaml", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "bad.yaml:3:7: `errors[0].pattern`",
        ));
}
