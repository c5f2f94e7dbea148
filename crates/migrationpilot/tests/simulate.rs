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
