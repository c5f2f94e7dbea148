//! kill -9 at seeded points across forward stages and rollbacks, each followed by
//! `run --resume`, until every run ends: every completed item is journaled exactly once, every
//! completed item of a rolled-back run is compensated, and no forward command runs once a
//! rollback has begun. `MIGRATIONPILOT_SOAK_KILLS` sets how many kills to reach (default 20);
//! the figures are printed for docs/BENCHMARKS.md.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

mod common;
use common::Workspace;

const ITEMS: usize = 30;

/// One pipeline: two item stages with a compensation per item, then a last stage that fails
/// critically when `fail` is set (a rollback-critical strategy then rolls everything back).
fn pipeline(work: &Workspace, project: &str, fail: bool) {
    work.script("work.sh", r#"echo "fwd $1" >> log.txt; sleep 0.01"#);
    work.script("undo.sh", r#"echo "undo $1" >> log.txt; sleep 0.01"#);
    work.script(
        "last.sh",
        r#"echo "fwd last" >> log.txt
if [ "$1" = fail ]; then echo '{"message":"target corrupted","severity":"critical"}' >&2; exit 1; fi"#,
    );
    let items: Vec<String> = (0..ITEMS).map(|i| format!("i{i:02}")).collect();
    work.file("items.txt", &items.join("\n"));
    work.file(
        &format!("{project}.yaml"),
        &format!(
            r#"
project: {project}
stages:
  - name: first
    command: ["./work.sh", "first/{{item}}"]
    items: {{ file: items.txt }}
    concurrency: 3
    rollback: ["./undo.sh", "first/{{item}}"]
  - name: second
    command: ["./work.sh", "second/{{item}}"]
    items: {{ file: items.txt }}
    concurrency: 3
    rollback: ["./undo.sh", "second/{{item}}"]
  - name: last
    command: ["./last.sh", "{}"]
healing:
  strategies:
    - name: rollback-critical
      triggers: [{{ type: error, severity: critical }}]
      action: rollback
"#,
            if fail { "fail" } else { "pass" }
        ),
    );
}

/// What one soaked run did.
#[derive(Debug, Default)]
struct Soaked {
    kills: usize,
    status: &'static str,
    forward_repeats: usize,
    undo_repeats: usize,
}

/// Runs `project` to its end, killing it whenever the log reaches the next seeded point.
fn soak(work: &Workspace, project: &str, expected_lines: usize, rng: &mut fastrand::Rng) -> Soaked {
    let file = format!("{project}.yaml");
    let mut soaked = Soaked::default();
    let mut args = vec!["run", file.as_str()];
    loop {
        let already = work.read("log.txt").lines().count();
        // The next kill: somewhere in what is left, or none once little is left.
        let kill_at =
            (expected_lines > already + 4).then(|| rng.usize(already + 1..expected_lines));
        let mut child = work.spawn(&args);
        let deadline = Instant::now() + Duration::from_secs(120);
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if kill_at.is_some_and(|at| work.read("log.txt").lines().count() >= at) {
                child.kill().unwrap();
                child.wait().unwrap();
                soaked.kills += 1;
                break None;
            }
            assert!(Instant::now() < deadline, "{project} hangs");
            std::thread::sleep(Duration::from_millis(2));
        };
        match finished {
            Some(status) => {
                soaked.status = match status.code() {
                    Some(0) => "succeeded",
                    Some(3) => "rolled-back",
                    other => panic!(
                        "{project} ended with {other:?}: {}",
                        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr)
                    ),
                };
                return soaked;
            }
            None => args = vec!["run", file.as_str(), "--resume"],
        }
    }
}

#[test]
fn killed_at_seeded_points_runs_resume_to_a_consistent_end() {
    let target: usize = std::env::var("MIGRATIONPILOT_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rng = fastrand::Rng::with_seed(0x50a6);
    let started = Instant::now();
    let (mut kills, mut runs, mut rolled_back) = (0, 0, 0);
    let (mut forward_repeats, mut undo_repeats) = (0, 0);
    while kills < target {
        let work = Workspace::new();
        let fail = runs % 2 == 1;
        let project = format!("soak{runs}");
        pipeline(&work, &project, fail);
        let expected = if fail { 4 * ITEMS + 1 } else { 2 * ITEMS + 1 };
        let mut soaked = soak(&work, &project, expected, &mut rng);
        check(&work, &mut soaked, fail);
        kills += soaked.kills;
        runs += 1;
        rolled_back += usize::from(soaked.status == "rolled-back");
        forward_repeats += soaked.forward_repeats;
        undo_repeats += soaked.undo_repeats;
    }
    println!(
        "soak: {kills} kills over {runs} runs ({rolled_back} rolled back) in {:.1}s; \
         forward commands run again after a kill: {forward_repeats}; compensations run again: {undo_repeats}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        rolled_back > 0 && rolled_back < runs,
        "both kinds of run were soaked"
    );
}

/// The invariants of one run, checked against its log and its journal.
fn check(work: &Workspace, soaked: &mut Soaked, fail: bool) {
    let log = work.read("log.txt");
    let entries: Vec<(&str, &str)> = log.lines().filter_map(|l| l.split_once(' ')).collect();
    let count = |kind: &str| {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, unit) in &entries {
            if *k == kind {
                *counts.entry(unit).or_default() += 1;
            }
        }
        counts
    };
    let (forward, undo) = (count("fwd"), count("undo"));
    soaked.forward_repeats = forward.values().map(|n| n - 1).sum();
    soaked.undo_repeats = undo.values().map(|n| n - 1).sum();

    let completed: Vec<(String, String, i64)> =
        work.journal("SELECT stage, item, attempts FROM items WHERE status = 'succeeded'");
    let unique: BTreeSet<(String, String)> = completed
        .iter()
        .map(|(s, i, _)| (s.clone(), i.clone()))
        .collect();
    assert_eq!(
        unique.len(),
        completed.len(),
        "each completion journaled once"
    );
    assert_eq!(
        completed.len(),
        2 * ITEMS,
        "every item of both stages completed and journaled once"
    );
    let statuses: Vec<(String,)> = work.journal("SELECT status FROM runs");
    assert_eq!(statuses, [(soaked.status.to_owned(),)]);
    assert_eq!(soaked.status == "rolled-back", fail);
    if fail {
        // Every completed item compensated, and nothing forward once the rollback began.
        for (stage, item) in &unique {
            assert!(
                undo.contains_key(format!("{stage}/{item}").as_str()),
                "{stage}/{item} completed and was not compensated:\n{log}"
            );
        }
        let first_undo = entries.iter().position(|(k, _)| *k == "undo").unwrap();
        assert!(
            entries[first_undo..].iter().all(|(k, _)| *k == "undo"),
            "a forward command ran after the rollback began:\n{log}"
        );
        let compensations: Vec<(String, String)> =
            work.journal("SELECT stage, item FROM compensations WHERE hook = 0 AND failed = 0");
        assert_eq!(
            compensations.len(),
            2 * ITEMS,
            "each compensation journaled"
        );
    } else {
        assert!(
            undo.is_empty(),
            "nothing compensated in a run that succeeded"
        );
    }
}
