//! The chaos harness's claims in docs/BENCHMARKS.md, checked on every test run: it is
//! deterministic (virtual time, seeded faults), so each claim either holds or a change broke it.

use std::process::Command;

use serde_json::Value;

fn runs(seeds: u32) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--json", "--runs", &seeds.to_string()])
        .output()
        .expect("the chaos binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).expect("--json prints a JSON array")
}

fn of<'a>(rows: &'a [Value], scenario: &str, contender: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["scenario"] == scenario && r["contender"].as_str().unwrap().starts_with(contender)
        })
        .collect();
    assert!(!found.is_empty(), "no rows for {scenario} / {contender}");
    found
}

#[test]
fn the_healer_meets_the_chaos_goals() {
    let rows = runs(3);
    assert_eq!(
        rows.len(),
        8 * 3 * 3,
        "8 scenarios × 3 contenders × 3 seeds"
    );

    // Every recoverable fault ends with every item done, by the healer.
    for row in rows.iter().filter(|r| r["recoverable"] == true) {
        if row["contender"].as_str().unwrap().starts_with("healer") {
            assert_eq!(row["status"], "succeeded", "{row}");
            assert_eq!(row["completedPct"], 100.0, "{row}");
        }
    }

    for outage in of(&rows, "outage 30s", "healer") {
        // Only the calls already on their way when the downstream died reach it: no call
        // after a failure came back.
        assert_eq!(outage["avoidableCallsWhileDown"], 0, "{outage}");
        assert!(outage["callsWhileDown"].as_u64().unwrap() <= 8, "{outage}");
        // Work succeeds again within breakDuration (60 s) plus one probe (100 ms) of the
        // outage's end.
        let recover = outage["timeToRecoverMs"].as_u64().unwrap();
        assert!(recover <= 60_000 + 100, "{outage}");
    }
    for retry in of(&rows, "outage 30s", "retry only") {
        assert!(
            retry["avoidableCallsWhileDown"].as_u64().unwrap() > 0,
            "{retry}"
        );
    }
    for flapping in of(&rows, "flapping 1-3s", "healer") {
        assert_eq!(flapping["avoidableCallsWhileDown"], 0, "{flapping}");
    }
    for critical in of(&rows, "critical error", "healer") {
        assert_eq!(critical["status"], "rolled-back", "{critical}");
    }
    // At 20 % errors the healer is no slower than retrying alone: the circuit breaker's
    // errorRate strategy does not trip on a few failures at the stage's tail.
    for (healer, retry) in of(&rows, "transient 20%", "healer").into_iter().zip(of(
        &rows,
        "transient 20%",
        "retry only",
    )) {
        assert_eq!(
            healer["durationMs"], retry["durationMs"],
            "{healer} {retry}"
        );
    }
}
