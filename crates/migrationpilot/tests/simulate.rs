//! Testing healing before production: `simulate` runs a file's own healing against modelled
//! faults without running anything, and `run --chaos` injects faults into a real run, marked
//! as injected wherever the run's failures are shown.

use serde_json::Value;

mod common;
use common::Workspace;

/// A stage of 40 items calling something, healed by nothing but a retry policy; its command
/// would leave a mark if it ran.
const RETRY_ONLY: &str = r#"
project: sim
stages:
  - name: load
    command: ["./load.sh", "{item}"]
    items: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
            21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]
    concurrency: 4
healing:
  retryPolicy: { maxAttempts: 3, initialDelay: 100ms, maxDelay: 1s }
  strategies:
    - name: ask-someone
      triggers: [{ type: custom, command: ["./would-run.sh"] }]
      action: notify
"#;

fn simulate(work: &Workspace, args: &[&str]) -> Value {
    let output = work
        .cmd()
        .args(["simulate", "pipeline.yaml", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

#[test]
fn simulate_runs_the_files_healing_beside_the_others_and_runs_nothing() {
    let work = Workspace::new();
    work.script("load.sh", "touch ran-load");
    work.script("would-run.sh", "touch ran-trigger");
    work.file("pipeline.yaml", RETRY_ONLY);
    let report = simulate(
        &work,
        &["--scenario", "outage:at=500ms,for=20s", "--seeds", "3"],
    );
    assert!(
        !work.path().join("ran-load").exists(),
        "a stage's command ran"
    );
    assert!(
        !work.path().join("ran-trigger").exists(),
        "a trigger's command ran"
    );
    let notes = report["notes"].to_string();
    assert!(notes.contains("`ask-someone`"), "{notes}");

    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4 * 3, "{report}");
    let of = |contender: &str| -> Vec<&Value> {
        rows.iter()
            .filter(|r| r["contender"] == contender)
            .collect()
    };
    // Three attempts a 100 ms apart cannot outlast a 20 s outage; the recommended healing
    // holds the work and completes it.
    for row in of("this file") {
        assert_eq!(row["status"], "failed", "{row}");
        assert!(row["callsWhileDown"].as_u64().unwrap() > 0, "{row}");
    }
    for row in of("recommended") {
        assert_eq!(row["status"], "succeeded", "{row}");
        assert_eq!(row["completedPct"], 100.0, "{row}");
        assert_eq!(row["avoidableCallsWhileDown"], 0, "{row}");
    }
    for row in of("no healing") {
        assert_eq!(row["status"], "failed", "{row}");
    }
    let summary = report["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 1, "{report}");
    let sentence = summary[0].as_str().unwrap();
    assert!(
        sentence.starts_with("outage 20s (at=500ms,for=20s): this file ends failed")
            && sentence.contains("recommended does better: it completes 100 %"),
        "{sentence}"
    );

    // The same file, scenario and seeds give the same rows.
    let again = simulate(
        &work,
        &["--scenario", "outage:at=500ms,for=20s", "--seeds", "3"],
    );
    assert_eq!(again["rows"], report["rows"]);
}

#[test]
fn simulate_names_what_is_wrong_in_a_scenario_or_the_file() {
    let work = Workspace::new();
    work.script("load.sh", "true");
    work.script("would-run.sh", "true");
    work.file("pipeline.yaml", RETRY_ONLY);
    let output = work
        .cmd()
        .args([
            "simulate",
            "pipeline.yaml",
            "--scenario",
            "outage:length=3s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("`length` is not a parameter of `outage` (it takes at, for"),
        "{said}"
    );
    work.file(
        "broken.yaml",
        "project: sim\nstages:\n  - { name: load, comand: [x] }\n",
    );
    let output = work
        .cmd()
        .args(["simulate", "broken.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("broken.yaml:3") && said.contains("comand"),
        "{said}"
    );
}

/// One stage of 20 items that always succeeds, retried up to 10 times.
const STAGING: &str = r#"
project: staging
stages:
  - name: load
    command: ["./load.sh", "{item}"]
    items: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    concurrency: 4
healing:
  retryPolicy: { maxAttempts: 10, initialDelay: 1ms, maxDelay: 5ms }
"#;

/// The attempts a `--json-events` run failed, as (item, code, message, rule).
fn failures(stdout: &[u8]) -> Vec<(String, String, String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["type"] == "attempt-failed")
        .map(|event| {
            let error = &event["error"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&event["item"]),
                text(&error["code"]),
                text(&error["message"]),
                text(&error["rule"]),
            )
        })
        .collect()
}

#[test]
fn run_chaos_injects_journaled_failures_the_seed_repeats() {
    let work = Workspace::new();
    work.script("load.sh", r#"echo "$1" >> done.txt"#);
    work.file("pipeline.yaml", STAGING);
    let run = |seed: &str| {
        let output = work
            .cmd()
            .args(["run", "pipeline.yaml", "--json-events", "--seed", seed])
            .args(["--chaos", "fail=40%,code=EINJECTED,stage=load"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        failures(&output.stdout)
    };
    let first = run("3");
    assert!(first.len() >= 4, "{first:?}");
    for (_, code, message, rule) in &first {
        assert_eq!(code, "EINJECTED");
        assert_eq!(rule, "chaos");
        assert!(
            message.starts_with("injected by --chaos (fail=40%,code=EINJECTED,stage=load)"),
            "{message}"
        );
    }
    // Healed: every item done, and the same attempts fail with the same seed.
    let done = work.read("done.txt");
    assert_eq!(done.lines().count(), 20, "{done}");
    let mut again = run("3");
    let mut first = first;
    first.sort();
    again.sort();
    assert_eq!(first, again);

    // `runs show` counts them apart.
    let listed = work
        .cmd()
        .args(["runs", "--project", "staging", "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let latest = runs[0]["id"].as_str().unwrap_or_else(|| panic!("{runs}"));
    let shown = work.cmd().args(["runs", "show", latest]).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    let counted = shown
        .lines()
        .find(|l| l.starts_with("load") && l.contains("EINJECTED"))
        .unwrap_or_else(|| panic!("no count of EINJECTED in\n{shown}"));
    assert!(
        shown.contains("chaos     fail=40%,code=EINJECTED,stage=load (seed 3)"),
        "{shown}"
    );
    let columns: Vec<&str> = counted.split_whitespace().collect();
    assert_eq!(columns[2], again.len().to_string(), "{counted}");
    assert!(counted.ends_with("injected by --chaos"), "{counted}");
}

#[test]
fn run_chaos_refuses_what_the_file_does_not_have() {
    let work = Workspace::new();
    work.script("load.sh", "true");
    work.file("pipeline.yaml", STAGING);
    for (spec, says) in [
        ("fail=10%,stage=lod", "no stage `lod` (it has load)"),
        ("down=db,for=1s", "no health check `db` (it has none)"),
        ("fail=200%", "not a share from 0 to 100 %"),
    ] {
        let output = work
            .cmd()
            .args(["run", "pipeline.yaml", "--chaos", spec])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{spec}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains(says), "{spec}: {said}");
    }
    assert!(!work.path().join("done.txt").exists());
}

#[test]
fn run_chaos_takes_a_check_down_and_the_stage_waits_for_it() {
    let work = Workspace::new();
    // Slower than the check's interval: the second item starts after the check went down.
    work.script("load.sh", r#"sleep 0.3; echo "$1" >> done.txt"#);
    work.file(
        "pipeline.yaml",
        r#"
project: staging
stages:
  - name: load
    command: ["./load.sh", "{item}"]
    items: [1, 2, 3]
    dependsOn: [db]
healing:
  healthMonitor:
    checkInterval: 100ms
    thresholds: { consecutiveFailures: 1, consecutiveSuccesses: 1 }
    checks: [{ name: db, type: command, command: ["true"] }]
"#,
    );
    let output = work
        .cmd()
        .args(["run", "pipeline.yaml", "--chaos", "down=db,at=0s,for=1s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("chaos: injecting down=db,at=0s,for=1s"),
        "{stdout}"
    );
    assert!(stdout.contains("waiting for `db`"), "{stdout}");
    assert_eq!(work.read("done.txt").lines().count(), 3);
}

/// The latest run of `project`, by its id.
fn latest_run(work: &Workspace, project: &str) -> String {
    let listed = work
        .cmd()
        .args(["runs", "--project", project, "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&listed.stdout).unwrap();
    runs[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{runs}"))
        .to_owned()
}

fn replay(work: &Workspace, run: &str) -> Value {
    let output = work
        .cmd()
        .args(["simulate", "pipeline.yaml", "--replay", run, "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

/// The recorded run comes back: its status, retries, decisions and attempts, and its duration
/// within 10 % (within 5 % on a quiet machine, docs/BENCHMARKS.md: a recording does not hold
/// the gaps a loaded machine leaves between attempts).
fn assert_faithful(replayed: &Value) {
    let (recorded, simulated) = (&replayed["recorded"], &replayed["simulated"]);
    for key in ["status", "decisions", "attempts"] {
        assert_eq!(recorded[key], simulated[key], "{key}: {replayed}");
    }
    for key in [
        "retryCount",
        "healingEvents",
        "rollbackCount",
        "stagesCompleted",
    ] {
        assert_eq!(
            recorded["metrics"][key], simulated["metrics"][key],
            "{key}: {replayed}"
        );
    }
    assert_eq!(replayed["drawnAttempts"], 0, "{replayed}");
    let took = |side: &Value| side["metrics"]["totalDuration"].as_f64().unwrap();
    let (was, is) = (took(recorded), took(simulated));
    assert!(
        (is - was).abs() <= 0.10 * was,
        "{is} ms against {was} ms: {replayed}"
    );
}

#[test]
fn a_replay_of_retries_against_its_own_file_gives_the_run_back_and_a_changed_file_its_own_end() {
    let work = Workspace::new();
    // Each item fails twice (in 50 ms) before it passes.
    work.script(
        "flaky.sh",
        r#"sleep 0.05
if [ "$MIGRATIONPILOT_ATTEMPT" -lt 3 ]; then echo "read ECONNRESET" >&2; exit 1; fi"#,
    );
    let file = |attempts: u32| {
        format!(
            r#"
project: replay
stages:
  - name: load
    command: ["./flaky.sh", "{{item}}"]
    items: [1, 2, 3, 4, 5, 6, 7, 8]
    concurrency: 2
healing:
  retryPolicy: {{ maxAttempts: {attempts}, backoff: fixed, initialDelay: 100ms, retryableErrors: [ECONNRESET] }}
"#
        )
    };
    work.file("pipeline.yaml", &file(5));
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let run = latest_run(&work, "replay");
    let replayed = replay(&work, &run);
    assert_eq!(
        replayed["recorded"]["metrics"]["retryCount"], 16,
        "{replayed}"
    );
    assert_faithful(&replayed);

    // Two attempts are not enough for what was recorded.
    work.file("pipeline.yaml", &file(2));
    let fewer = replay(&work, &run);
    assert_eq!(fewer["simulated"]["status"], "failed", "{fewer}");
    assert_eq!(fewer["drawnAttempts"], 0, "{fewer}");

    // A recording of that failure, replayed with more attempts than it has: the attempts it
    // lacks are drawn from what it recorded, and said.
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(1);
    let failed = latest_run(&work, "replay");
    work.file("pipeline.yaml", &file(4));
    let more = replay(&work, &failed);
    assert!(more["drawnAttempts"].as_u64().unwrap() > 0, "{more}");
}

#[test]
fn a_replay_of_a_rollback_and_of_a_breaker_trip_gives_them_back() {
    let work = Workspace::new();
    work.script("ok.sh", "sleep 0.05");
    // The last item is corrupt: a critical error no retry fixes. (The last: an item after it
    // may or may not start before the rollback's decision is committed, as it happens.)
    work.script(
        "check.sh",
        r#"sleep 0.05
if [ "$1" = 4 ]; then echo '{"code":"ECORRUPT","severity":"critical","message":"bad row"}' >&2; exit 1; fi"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: rollback
stages:
  - name: copy
    command: ["./ok.sh", "{item}"]
    items: [1, 2, 3, 4]
    rollback: ["./ok.sh", "{item}"]
  - name: verify
    command: ["./check.sh", "{item}"]
    items: [1, 2, 3, 4]
healing:
  retryPolicy: { maxAttempts: 1 }
  strategies:
    - name: rollback-critical
      triggers: [{ type: error, severity: critical }]
      action: rollback
"#,
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().code(3);
    let replayed = replay(&work, &latest_run(&work, "rollback"));
    assert_eq!(replayed["simulated"]["status"], "rolled-back", "{replayed}");
    assert_faithful(&replayed);

    // Each item's first attempt is refused: the breaker opens, the retry waits for it to
    // close. One at a time: attempts racing a breaker at once can end a replay a cycle apart
    // (docs/CLI.md says so).
    work.script(
        "refused.sh",
        r#"sleep 0.02
if [ "$MIGRATIONPILOT_ATTEMPT" -lt 2 ]; then echo "connect ECONNREFUSED" >&2; exit 1; fi"#,
    );
    work.file(
        "pipeline.yaml",
        r#"
project: breaker
stages:
  - name: load
    command: ["./refused.sh", "{item}"]
    items: [1, 2, 3, 4]
healing:
  retryPolicy: { maxAttempts: 3, backoff: fixed, initialDelay: 50ms, retryableErrors: [ECONNREFUSED] }
  strategies:
    - name: break-on-refused
      priority: 30
      triggers: [{ type: error, code: ECONNREFUSED }]
      action: circuit-break
      config: { breakDuration: 300ms, halfOpenRequests: 1 }
"#,
    );
    work.cmd().args(["run", "pipeline.yaml"]).assert().success();
    let replayed = replay(&work, &latest_run(&work, "breaker"));
    // Four trips: each opens, goes half-open and closes.
    assert_eq!(replayed["recorded"]["decisions"], 16, "{replayed}");
    assert_faithful(&replayed);
}

#[test]
fn nothing_a_file_runs_probes_or_sends_escapes_a_simulation() {
    let work = Workspace::new();
    let receiver = common::Receiver::start();
    for script in [
        "load", "failover", "rollback", "reset", "check", "trigger", "action", "scaler",
    ] {
        work.script(&format!("{script}.sh"), &format!("touch ran-{script}"));
    }
    work.file(
        "pipeline.yaml",
        &format!(
            r#"
project: sealed
stages:
  - name: load
    command: ["./load.sh", "{{item}}"]
    items: [1, 2, 3, 4, 5, 6, 7, 8]
    concurrency: 2
    failover: ["./failover.sh", "{{item}}"]
    rollback: ["./rollback.sh", "{{item}}"]
    reset: ["./reset.sh"]
    dependsOn: [db]
healing:
  healthMonitor:
    checkInterval: 100ms
    checks: [{{ name: db, type: command, command: ["./check.sh"] }}]
  strategies:
    - {{ name: fail-over, priority: 5, triggers: [{{ type: error, code: ECONNREFUSED }}], action: failover }}
    - {{ name: undo, priority: 100, triggers: [{{ type: error, severity: critical }}], action: rollback }}
    - {{ name: crashed, priority: 20, triggers: [{{ type: error, code: EPOOL }}], action: restart }}
    - {{ name: ask, triggers: [{{ type: custom, command: ["./trigger.sh"] }}], action: notify }}
    - {{ name: fix, triggers: [{{ type: error, code: ECONNRESET }}], action: custom, config: {{ command: ["./action.sh"] }} }}
    - {{ name: grow, triggers: [{{ type: metrics, metric: errorRate, threshold: 0.1 }}], action: scale, config: {{ direction: up, amount: 1, maxInstances: 4, command: ["./scaler.sh"] }} }}
  alerts:
    groupWait: 0
    channels: [{{ type: webhook, url: "{}", minSeverity: warning }}]
"#,
            receiver.url("/hook")
        ),
    );
    let report = simulate(&work, &["--seeds", "2"]);
    assert_eq!(report["rows"].as_array().unwrap().len(), 12 * 4 * 2);
    for script in [
        "load", "failover", "rollback", "reset", "check", "trigger", "action", "scaler",
    ] {
        assert!(
            !work.path().join(format!("ran-{script}")).exists(),
            "{script}.sh ran in a simulation"
        );
    }
    // Alerts were raised (a failed run pages), and kept.
    let raised: u64 = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alerts"].as_u64().unwrap())
        .sum();
    assert!(raised > 0, "{report}");
    assert!(receiver.got.lock().unwrap().is_empty(), "an alert was sent");
    // What was left out is said.
    let notes = report["notes"].to_string();
    for said in ["`ask`", "`fix`", "`grow`"] {
        assert!(notes.contains(said), "{said} in {notes}");
    }
}
