//! End-to-end: several processes share a run through a PostgreSQL store. A coordinating `run`
//! and `worker` processes on loopback, killed with SIGKILL where the promise is about crashes.
#![cfg(feature = "postgres")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

mod common;
use common::Workspace;

/// A background process, killed (SIGKILL) when dropped.
struct Running(Child);

impl Running {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits (a bounded while) for the process to end; its status and standard output and
    /// error.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let child = std::mem::replace(
                    &mut self.0,
                    std::process::Command::new("true").spawn().unwrap(),
                );
                let output = child.wait_with_output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                return (status, text);
            }
            assert!(Instant::now() < deadline, "the process never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A worker named `name` (also `$WORKER` in its commands' environment), whose jobs go back to
/// the queue `lease` after it stops renewing them.
fn worker(work: &Workspace, name: &str, concurrency: usize, lease: &str) -> Running {
    let concurrency = concurrency.to_string();
    Running(work.spawn_with(
        &[
            "worker",
            "--name",
            name,
            "--concurrency",
            &concurrency,
            "--lease",
            lease,
        ],
        &[("WORKER", name)],
    ))
}

/// Waits (a bounded while) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of `calls.txt`-like logs: `WORKER ITEM` per line, in order.
fn lines(work: &Workspace, name: &str) -> Vec<(String, String)> {
    work.read(name)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Every item of `stage` completed exactly once in the journal (a completion after the first
/// would be kept as an `item-succeeded` event), and how many there were.
fn journaled_once(work: &Workspace, stage: &'static str) -> usize {
    let (items, again): (&'static str, &'static str) = match stage {
        "load" => (
            "SELECT COUNT(*) FROM items WHERE stage = 'load'",
            "SELECT COUNT(*) FROM events WHERE kind = 'item-succeeded' AND stage = 'load'",
        ),
        _ => (
            "SELECT COUNT(*) FROM items WHERE stage = 'call'",
            "SELECT COUNT(*) FROM events WHERE kind = 'item-succeeded' AND stage = 'call'",
        ),
    };
    let again: Vec<(i64,)> = work.journal(again);
    assert_eq!(again, [(0,)], "no item of {stage} completed twice");
    let items: Vec<(i64,)> = work.journal(items);
    usize::try_from(items[0].0).unwrap()
}

#[test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL: source .ci/services.sh start"
)]
fn a_coordinator_and_three_workers_share_two_hundred_items_each_journaled_once() {
    let Some(work) = Workspace::postgres() else {
        return;
    };
    // Every tenth item fails its first attempt, wherever it runs.
    work.script(
        "item.sh",
        r#"echo "${WORKER:-run} $1" >> executions.txt
case "$1" in *3) if mkdir "failed-$1" 2>/dev/null; then echo "read ECONNRESET" >&2; exit 1; fi;; esac
sleep 0.02"#,
    );
    let items: Vec<String> = (0..200).map(|i| format!("i{i:03}")).collect();
    work.file("items.txt", &items.join("\n"));
    work.file(
        "pipeline.yaml",
        r#"
project: shared
stages:
  - name: load
    command: ["./item.sh", "{item}"]
    items: { file: items.txt }
    concurrency: 8
healing:
  strategies:
    - name: retry-transient
      triggers: [{ type: error, pattern: ECONNRESET }]
      action: retry
      config: { maxAttempts: 3, initialDelay: 0 }
"#,
    );
    let _workers: Vec<Running> = ["a", "b", "c"]
        .iter()
        .map(|name| worker(&work, name, 2, "10s"))
        .collect();
    let run = Running(work.spawn(&["run", "pipeline.yaml", "--no-work"]));
    let (status, output) = run.finish();
    assert!(status.success(), "{output}");

    assert_eq!(journaled_once(&work, "load"), 200, "every item journaled");
    let by: BTreeMap<String, usize> =
        lines(&work, "executions.txt")
            .into_iter()
            .fold(BTreeMap::new(), |mut by, (worker, _)| {
                *by.entry(worker).or_default() += 1;
                by
            });
    for name in ["a", "b", "c"] {
        assert!(
            by.get(name).copied().unwrap_or(0) > 0,
            "worker {name} did some: {by:?}"
        );
    }
    assert_eq!(
        by.values().sum::<usize>(),
        220,
        "200 items, 20 retried once: {by:?}"
    );
    let decisions: Vec<(String, String, i64)> =
        work.journal("SELECT strategy, outcome, COUNT(*) FROM healing GROUP BY strategy, outcome");
    assert_eq!(
        decisions,
        [("retry-transient".to_owned(), "succeeded".to_owned(), 20)],
        "one decision per failure"
    );
}

#[test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL: source .ci/services.sh start"
)]
fn a_worker_killed_mid_stage_gives_its_items_back_and_none_is_lost() {
    let Some(work) = Workspace::postgres() else {
        return;
    };
    work.script(
        "item.sh",
        r#"echo "$WORKER $1" >> started.txt
sleep 0.1
echo "$WORKER $1" >> ended.txt"#,
    );
    let items: Vec<String> = (0..60).map(|i| format!("i{i:02}")).collect();
    work.file("items.txt", &items.join("\n"));
    work.file(
        "pipeline.yaml",
        "project: lossless\nstages:\n  - name: load\n    command: [\"./item.sh\", \"{item}\"]\n    items: { file: items.txt }\n    concurrency: 6\n",
    );
    let mut doomed = worker(&work, "doomed", 3, "2s");
    let _survivor = worker(&work, "survivor", 3, "10s");
    let run = Running(work.spawn(&["run", "pipeline.yaml", "--no-work"]));
    // Killed mid-item: after five, with one it started not ended (items take 100 ms; between
    // two jobs a worker may wait for the run to queue the next).
    wait_until(
        "the doomed worker finished five items and is in one",
        || {
            let of_doomed = |file: &str| {
                lines(&work, file)
                    .iter()
                    .filter(|(w, _)| w == "doomed")
                    .count()
            };
            let ended = of_doomed("ended.txt");
            ended >= 5 && of_doomed("started.txt") > ended
        },
    );
    doomed.kill();
    let (status, output) = run.finish();
    assert!(status.success(), "{output}");

    assert_eq!(journaled_once(&work, "load"), 60, "no item lost");
    let started = lines(&work, "started.txt");
    // In flight at the kill: started by the doomed worker, and not recorded done by it (an
    // item can end a moment before the kill and its result not be recorded).
    let recorded: Vec<(String,)> =
        work.journal("SELECT item FROM work WHERE worker = 'doomed' AND status = 'done'");
    let recorded: BTreeSet<String> = recorded.into_iter().map(|(item,)| item).collect();
    let in_flight: BTreeSet<String> = started
        .iter()
        .filter(|(w, item)| w == "doomed" && !recorded.contains(item))
        .map(|(_, item)| item.clone())
        .collect();
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, item) in &started {
        *runs.entry(item.as_str()).or_default() += 1;
    }
    for (item, count) in runs {
        if count > 1 {
            assert!(
                in_flight.contains(item),
                "{item} ran {count} times, though it was not in flight at the kill ({in_flight:?})"
            );
        }
    }
    assert!(
        !in_flight.is_empty(),
        "the kill came mid-item: the test shows nothing otherwise"
    );
}

#[test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL: source .ci/services.sh start"
)]
fn a_coordinator_killed_mid_run_is_taken_over_by_a_resume_and_the_run_finishes() {
    let Some(work) = Workspace::postgres() else {
        return;
    };
    work.script(
        "item.sh",
        r#"echo "$WORKER $1" >> executions.txt; sleep 0.05"#,
    );
    let items: Vec<String> = (0..80).map(|i| format!("i{i:02}")).collect();
    work.file("items.txt", &items.join("\n"));
    work.file(
        "pipeline.yaml",
        "project: orphaned\nstages:\n  - name: load\n    command: [\"./item.sh\", \"{item}\"]\n    items: { file: items.txt }\n    concurrency: 4\n",
    );
    let _worker = worker(&work, "w", 4, "10s");
    let mut first = Running(work.spawn(&["run", "pipeline.yaml", "--no-work"]));
    wait_until("ten items ran", || {
        lines(&work, "executions.txt").len() >= 10
    });
    first.kill();
    let journaled: Vec<(String,)> = work.journal("SELECT item FROM items WHERE stage = 'load'");
    let journaled: BTreeSet<String> = journaled.into_iter().map(|(item,)| item).collect();
    let resumed = Running(work.spawn(&["run", "pipeline.yaml", "--resume", "--no-work"]));
    let (status, output) = resumed.finish();
    assert!(status.success(), "{output}");
    assert!(output.contains("resuming run-"), "{output}");
    assert_eq!(journaled_once(&work, "load"), 80, "the run finished");
    let runs: Vec<(String,)> = work.journal("SELECT status FROM runs");
    assert_eq!(runs, [("succeeded".to_owned(),)], "one run, taken over");
    let open: Vec<(i64,)> =
        work.journal("SELECT COUNT(*) FROM work WHERE status IN ('queued', 'leased')");
    assert_eq!(open, [(0,)], "no job left for a worker to run later");
    let mut runs_of: BTreeMap<String, usize> = BTreeMap::new();
    for (_, item) in lines(&work, "executions.txt") {
        *runs_of.entry(item).or_default() += 1;
    }
    // Only what was in flight at the kill runs again: no item whose completion the journal
    // held by then.
    for (item, runs) in &runs_of {
        assert!(
            *runs == 1 || !journaled.contains(item),
            "{item} ran {runs} times though journaled done before the kill"
        );
    }
}

#[test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL: source .ci/services.sh start"
)]
fn a_breaker_opened_by_one_workers_failures_pauses_every_worker() {
    let Some(work) = Workspace::postgres() else {
        return;
    };
    // The downstream refuses until `healthy` exists; every call is logged with its time.
    work.script(
        "call.sh",
        r#"echo "$WORKER $1 $(date +%s%3N)" >> calls.txt
[ -f healthy ] || { echo "connect ECONNREFUSED" >&2; exit 1; }"#,
    );
    let items: Vec<String> = (0..24).map(|i| format!("c{i:02}")).collect();
    work.file("items.txt", &items.join("\n"));
    work.file(
        "pipeline.yaml",
        r#"
project: tripped
stages:
  - name: call
    command: ["./call.sh", "{item}"]
    items: { file: items.txt }
    concurrency: 2
healing:
  circuitBreaker: { enabled: true, failureThreshold: 3, successThreshold: 1, timeout: 3000 }
  strategies:
    - name: retry-refused
      triggers: [{ type: error, pattern: ECONNREFUSED }]
      action: retry
      config: { maxAttempts: 20, initialDelay: 50, backoff: fixed }
"#,
    );
    // One worker alone meets the dead downstream and trips the breaker; the stage's
    // concurrency is that worker's room, so no job waits queued when it trips.
    let _first = worker(&work, "first", 2, "10s");
    let run = Running(work.spawn(&["run", "pipeline.yaml", "--no-work"]));
    work.wait_for("calls.txt");
    let opened = || -> Option<i64> {
        let opened: Vec<(i64,)> = work.journal(
            "SELECT at_ms FROM events WHERE kind = 'breaker-changed' AND body LIKE '%\"to\":\"open\"%' ORDER BY id LIMIT 1",
        );
        opened.first().map(|(at,)| *at)
    };
    wait_until("the breaker opened", || opened().is_some());
    let tripped = opened().unwrap();
    // Two more workers join while it is open, and the downstream recovers.
    let _others: Vec<Running> = ["second", "third"]
        .iter()
        .map(|name| worker(&work, name, 2, "10s"))
        .collect();
    work.file("healthy", "");
    let (status, output) = run.finish();
    assert!(status.success(), "{output}");
    assert_eq!(journaled_once(&work, "call"), 24);

    let calls: Vec<(String, i64)> = work
        .read("calls.txt")
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            Some((words.first()?.to_string(), words.get(2)?.parse().ok()?))
        })
        .collect();
    // Calls dispatched before the trip may still start just after it; none starts later,
    // from any worker, until the breaker lets a trial call through after its 3 s.
    let while_open: Vec<&(String, i64)> = calls
        .iter()
        .filter(|(_, at)| *at > tripped + 500 && *at < tripped + 2_900)
        .collect();
    assert!(while_open.is_empty(), "calls while open: {while_open:?}");
    let early: Vec<&(String, i64)> = calls
        .iter()
        .filter(|(w, at)| w != "first" && *at < tripped + 2_900)
        .collect();
    assert!(early.is_empty(), "the other workers waited: {early:?}");
}

#[test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL: source .ci/services.sh start"
)]
fn workers_get_the_coordinators_chaos_and_the_seed_draws_the_same_failures() {
    let Some(work) = Workspace::postgres() else {
        return;
    };
    work.script("item.sh", r#"echo "${WORKER:-run} $1" >> executions.txt"#);
    let items: Vec<String> = (0..40).map(|i| format!("i{i:02}")).collect();
    work.file("items.txt", &items.join("\n"));
    work.file(
        "pipeline.yaml",
        r#"
project: staged
stages:
  - name: load
    command: ["./item.sh", "{item}"]
    items: { file: items.txt }
    concurrency: 4
healing:
  retryPolicy: { maxAttempts: 10, initialDelay: 1ms, maxDelay: 5ms }
"#,
    );
    // (run, item) of each injected failure.
    let injected = |work: &Workspace| -> Vec<(String, String)> {
        work.journal(
            "SELECT run, item FROM events WHERE kind = 'attempt-failed' AND body LIKE '%injected by --chaos%' ORDER BY run, item, id",
        )
    };
    let _workers: Vec<Running> = ["a", "b"]
        .iter()
        .map(|name| worker(&work, name, 2, "10s"))
        .collect();
    let chaos = ["--chaos", "fail=30%,code=EINJECTED", "--seed", "5"];
    let run =
        Running(work.spawn(&[&["run", "pipeline.yaml", "--no-work"][..], &chaos[..]].concat()));
    let (status, output) = run.finish();
    assert!(status.success(), "{output}");
    assert_eq!(journaled_once(&work, "load"), 40, "every item journaled");
    let first = injected(&work);
    assert!(!first.is_empty(), "nothing injected:\n{output}");
    // Only the workers ran commands, and each item's command ran once: the failures were
    // injected before the jobs were handed out.
    let ran = lines(&work, "executions.txt");
    assert_eq!(ran.len(), 40, "{ran:?}");
    assert!(
        ran.iter().all(|(who, _)| who == "a" || who == "b"),
        "{ran:?}"
    );

    // The same seed, the same failures.
    let run =
        Running(work.spawn(&[&["run", "pipeline.yaml", "--no-work"][..], &chaos[..]].concat()));
    let (status, output) = run.finish();
    assert!(status.success(), "{output}");
    let items_of = |run: &str, all: &[(String, String)]| -> Vec<String> {
        all.iter()
            .filter(|(r, _)| r == run)
            .map(|(_, item)| item.clone())
            .collect()
    };
    let all = injected(&work);
    let runs: BTreeSet<&String> = all.iter().map(|(run, _)| run).collect();
    assert_eq!(runs.len(), 2, "{all:?}");
    let mut runs = runs.into_iter();
    let (a, b) = (runs.next().unwrap(), runs.next().unwrap());
    assert_eq!(
        items_of(a, &all),
        items_of(b, &all),
        "the same items failed"
    );
}
