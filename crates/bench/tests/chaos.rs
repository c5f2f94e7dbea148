//! The chaos harness's claims in docs/BENCHMARKS.md, checked on every test run: it is
//! deterministic (virtual time, seeded faults), so each claim either holds or a change broke it.

use std::process::Command;

use bench::Spread;
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

const SCENARIOS: usize = 12;
const CONTENDERS: [&str; 4] = [
    "healer (recommended)",
    "healer (seed strategies)",
    "retry only",
    "no healing",
];

fn number(row: &Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {row}"))
}

#[test]
fn the_recommended_healer_meets_the_goals_over_five_seeds() {
    let rows = runs(5);
    assert_eq!(rows.len(), SCENARIOS * CONTENDERS.len() * 5);
    let scenarios: Vec<&str> =
        rows.iter()
            .map(|r| r["scenario"].as_str().unwrap())
            .fold(Vec::new(), |mut names, name| {
                if !names.contains(&name) {
                    names.push(name);
                }
                names
            });
    assert_eq!(scenarios.len(), SCENARIOS, "{scenarios:?}");

    for scenario in &scenarios {
        let recommended = of(&rows, scenario, "healer (recommended)");
        for (i, row) in recommended.iter().enumerate() {
            // At least as much as the best other contender, seed by seed; except where the
            // right end is a rollback, which undoes what was done (below).
            for other in CONTENDERS[1..]
                .iter()
                .filter(|_| *scenario != "critical error")
            {
                let theirs = of(&rows, scenario, other)[i];
                assert_eq!(theirs["seed"], row["seed"]);
                assert!(
                    number(row, "completedPct") >= number(theirs, "completedPct"),
                    "{row}\n{theirs}"
                );
            }
            // All of it wherever the fault is recoverable.
            if row["recoverable"] == true {
                assert_eq!(row["status"], "succeeded", "{row}");
                assert_eq!(row["completedPct"], 100.0, "{row}");
            }
            // No call to a dead downstream once the fault is known, by a failure or a check.
            assert_eq!(row["avoidableCallsWhileDown"], 0, "{row}");
        }
    }

    // A health check that sees the outage first keeps every call from the dead downstream.
    for row in of(&rows, "outage a check sees first", "healer (recommended)") {
        assert_eq!(row["callsWhileDown"], 0, "{row}");
    }
    // Flapping completes in a median under 90 s.
    let flapping = Spread::of(
        of(&rows, "flapping 1-3s", "healer (recommended)")
            .iter()
            .map(|r| number(r, "durationMs")),
    )
    .median;
    assert!(flapping < 90_000.0, "{flapping} ms");
    // At 50 % errors: at least as much as retry only (above), in at most twice its time.
    let time = |contender| {
        Spread::of(
            of(&rows, "transient 50%", contender)
                .iter()
                .map(|r| number(r, "durationMs")),
        )
        .median
    };
    let (ours, retry) = (time("healer (recommended)"), time("retry only"));
    assert!(
        ours <= 2.0 * retry,
        "{ours} ms against retry only's {retry} ms"
    );
    // The slow leak and the crash loop complete: a restart runs the reset that cures them.
    for scenario in ["slow leak", "crash loop"] {
        for row in of(&rows, scenario, "healer (recommended)") {
            assert_eq!(row["status"], "succeeded", "{row}");
        }
    }
    // A critical error still ends in a rollback.
    for row in of(&rows, "critical error", "healer (recommended)") {
        assert_eq!(row["status"], "rolled-back", "{row}");
    }
}

#[test]
fn the_seed_strategies_keep_their_claims() {
    let rows = runs(3);
    for outage in of(&rows, "outage 30s", "healer (seed strategies)") {
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
    for flapping in of(&rows, "flapping 1-3s", "healer (seed strategies)") {
        assert_eq!(flapping["status"], "succeeded", "{flapping}");
        assert_eq!(flapping["avoidableCallsWhileDown"], 0, "{flapping}");
    }
    for critical in of(&rows, "critical error", "healer (seed strategies)") {
        assert_eq!(critical["status"], "rolled-back", "{critical}");
    }
    // At 20 % errors the seed's healer is no slower than retrying alone: the circuit breaker's
    // errorRate strategy does not trip on a few failures at the stage's tail.
    for (healer, retry) in of(&rows, "transient 20%", "healer (seed strategies)")
        .into_iter()
        .zip(of(&rows, "transient 20%", "retry only"))
    {
        assert_eq!(
            healer["durationMs"], retry["durationMs"],
            "{healer} {retry}"
        );
    }
}
