//! What every store does, once for all backends: each test is an `async fn` over fresh stores
//! (`Arc<dyn Store>`; two of them, as two processes open one database, where it is about
//! concurrency), run by one thin module per backend. SQLite's run on a temporary file;
//! PostgreSQL's on a database made for the test on the server `MIGRATIONPILOT_TEST_POSTGRES_URL`
//! names, dropped after it (without the variable they are skipped, loudly, except in CI).
//! Each trait's tests beside the runs' here: the journal's in `journal.rs`, the control
//! plane's in `control.rs`, logs' and samples' in `logs.rs`, the alerts' in `alerts.rs`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self_healing::event::{
    ActionKind, AttemptOutput, Event, EventBus, EventKind, HandlerKind, HealthChange, HealthStatus,
    MetricSample, Outcome, RunId, RunStatus, TriggerKind, TriggerMatch,
};
use self_healing::healing::{HealingRecord, StrategyOverride};
use self_healing::pipeline::Resume;
use self_healing::{PipelineMetrics, StageError};

mod alerts;
mod control;
mod journal;
mod logs;
use alerts::*;
use control::*;
use journal::*;
use logs::*;

use super::{
    CheckSeen, Claimed, DeclaredCheck, JournalCursor, KEEP_RUNS, LogFilter, Owner, RunClaim,
    RunState, Store,
};

/// A time on the test's clock: whole milliseconds, so it reads back equal.
fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms as u64)
}

/// [`at`] as the store keeps it.
fn ms(ms: i64) -> i64 {
    1_700_000_000_000 + ms
}

/// An event of `run` at [`at`]`(when)`.
fn event(run: Option<&RunId>, when: i64, kind: EventKind) -> Arc<Event> {
    Arc::new(Event {
        seq: 0,
        at: at(when),
        run: run.cloned(),
        kind,
    })
}

/// A claim of `project` for `run` by this process.
fn claim(project: &str, run: &str) -> RunClaim {
    RunClaim {
        project: project.into(),
        run: run.into(),
        resuming: false,
        pipeline: "pipe".into(),
        owner: Owner::this_process(),
        stages: vec!["extract".into(), "load".into()],
        strategies: vec!["retry".into()],
        checks: Vec::new(),
    }
}

fn decision(run: &RunId, when: i64, strategy: &str) -> HealingRecord {
    HealingRecord {
        at: at(when),
        run: Some(run.clone()),
        stage: Some("load".into()),
        item: Some("i3".into()),
        strategy: strategy.into(),
        trigger: TriggerMatch {
            kind: TriggerKind::Error,
            index: 0,
            observed: None,
            description: "ECONNRESET".into(),
        },
        action: ActionKind::Retry,
        outcome: Outcome::Succeeded,
        detail: "attempt 2".into(),
        duration: Duration::ZERO,
        budget_wait: Some(Duration::from_millis(250)),
    }
}

pub(super) async fn a_run_reads_back_with_its_stages_events_samples_logs_and_resume(
    store: Arc<dyn Store>,
) {
    assert_eq!(store.claim_run(&claim("p", "run-1")).await.unwrap(), None);
    let claimed = store.unfinished_run("p").await.unwrap().unwrap();
    assert_eq!(
        (claimed.id.as_str(), claimed.status, claimed.owner.clone()),
        ("run-1", RunState::Running, Some(Owner::this_process()))
    );
    assert_eq!((claimed.stages.len(), claimed.strategies.len()), (2, 1));
    assert!(claimed.heartbeat_ms.is_some());

    let run = RunId::new("run-1");
    let error = StageError::new("boom");
    let ev = |when, kind| event(Some(&run), when, kind);
    let first = vec![
        ev(
            0,
            EventKind::RunStarted {
                pipeline: "pipe".into(),
                stages: vec!["extract".into(), "load".into()],
            },
        ),
        ev(
            1,
            EventKind::StageStarted {
                stage: "extract".into(),
                concurrency: 1,
            },
        ),
        ev(
            2,
            EventKind::AttemptSucceeded {
                stage: "extract".into(),
                item: None,
                attempt: 1,
                duration: Duration::from_millis(1),
            },
        ),
        ev(
            3,
            EventKind::StageSucceeded {
                stage: "extract".into(),
                duration: Duration::from_millis(2),
                items: 1,
            },
        ),
        ev(
            4,
            EventKind::StageStarted {
                stage: "load".into(),
                concurrency: 2,
            },
        ),
        ev(
            5,
            EventKind::AttemptStarted {
                stage: "load".into(),
                item: Some("a".into()),
                attempt: 1,
                handler: HandlerKind::Primary,
            },
        ),
        ev(
            6,
            EventKind::ItemSucceeded {
                stage: "load".into(),
                item: "a".into(),
                attempts: 1,
                duration: Duration::from_millis(10),
            },
        ),
        ev(
            7,
            EventKind::ItemSucceeded {
                stage: "load".into(),
                item: "b".into(),
                attempts: 2,
                duration: Duration::from_millis(20),
            },
        ),
    ];
    let second = vec![
        ev(
            8,
            EventKind::AttemptFailed {
                stage: "load".into(),
                item: Some("c".into()),
                attempt: 1,
                duration: Duration::from_millis(3),
                error: error.clone(),
            },
        ),
        ev(
            8,
            EventKind::AttemptOutput {
                stage: "load".into(),
                item: Some("c".into()),
                attempt: 1,
                output: Box::new(AttemptOutput {
                    stdout: "out\0put\n".into(),
                    stderr: "é\n".into(),
                    stdout_cut: 3,
                    stderr_cut: 0,
                }),
            },
        ),
        ev(
            9,
            EventKind::MetricsSampled {
                samples: vec![
                    MetricSample {
                        stage: None,
                        metric: "errorRate".into(),
                        value: 0.5,
                    },
                    MetricSample {
                        stage: Some("load".into()),
                        metric: "queueDepth".into(),
                        value: 3.0,
                    },
                ],
            },
        ),
        ev(
            10,
            EventKind::ItemFailed {
                stage: "load".into(),
                item: "c".into(),
                attempts: 1,
                error: error.clone(),
            },
        ),
        ev(
            11,
            EventKind::StageFailed {
                stage: "load".into(),
                duration: Duration::from_millis(7),
                items: 2,
                error: error.clone(),
            },
        ),
        ev(
            12,
            EventKind::RollbackStarted {
                stage: "load".into(),
                error: error.clone(),
            },
        ),
        ev(
            13,
            EventKind::CompensationFinished {
                stage: "extract".into(),
                item: None,
                error: None,
            },
        ),
        ev(
            14,
            EventKind::CompensationFinished {
                stage: "load".into(),
                item: Some("a".into()),
                error: Some(error.clone()),
            },
        ),
    ];
    store.append("p", &first).await.unwrap();
    store.append("p", &second).await.unwrap();
    let resumed = store.unfinished_run("p").await.unwrap().unwrap();
    assert_eq!(resumed.status, RunState::RollingBack);
    // A resume's run-started keeps the rollback it is in.
    store.append("p", &first[..1]).await.unwrap();
    let again = store.unfinished_run("p").await.unwrap().unwrap();
    assert_eq!(again.status, RunState::RollingBack);
    assert_eq!(
        again.started_ms, claimed.started_ms,
        "a resume keeps the start"
    );
    let finished = ev(
        15,
        EventKind::RunFinished {
            status: RunStatus::Failed,
            duration: Duration::from_millis(15),
            error: Some(error.clone()),
        },
    );
    store
        .append("p", std::slice::from_ref(&finished))
        .await
        .unwrap();
    store
        .record_metrics("run-1", &PipelineMetrics::default())
        .await
        .unwrap();

    assert_eq!(store.run("nope").await.unwrap(), None);
    let detail = store.run("run-1").await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunState::Ended(RunStatus::Failed));
    assert_eq!(
        detail.run.error.as_deref(),
        Some(error.to_string().as_str())
    );
    assert_eq!(detail.run.finished_ms, Some(ms(15)));
    assert_eq!(detail.metrics, Some(PipelineMetrics::default()));
    assert_eq!(
        detail.failures,
        [crate::store::FailureCount {
            stage: "load".into(),
            code: None,
            injected: false,
            count: 1
        }]
    );
    assert_eq!(detail.chaos, None);
    let stages: Vec<_> = detail
        .stages
        .iter()
        .map(|s| {
            (
                s.stage.as_str(),
                s.status,
                s.items,
                s.started_ms,
                s.finished_ms,
                s.duration_ms,
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            (
                "extract",
                "succeeded",
                1,
                Some(ms(1)),
                Some(ms(3)),
                Some(2.0)
            ),
            ("load", "failed", 2, Some(ms(4)), Some(ms(11)), Some(7.0)),
        ]
    );

    let rows = store.events("run-1", 0, 100).await.unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "run-started",
            "stage-started",
            "attempt-succeeded",
            "stage-succeeded",
            "stage-started",
            "attempt-failed",
            "item-failed",
            "stage-failed",
            "rollback-started",
            "compensation-finished",
            "compensation-finished",
            "run-started",
            "run-finished",
        ]
    );
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(rows[0].event, serde_json::to_value(&*first[0]).unwrap());
    assert_eq!(rows[12].event, serde_json::to_value(&*finished).unwrap());
    let failed = &rows[5];
    assert_eq!(
        (failed.at, failed.stage.as_deref(), failed.item.as_deref()),
        (ms(8), Some("load"), Some("c"))
    );
    let page = store.events("run-1", rows[2].id, 3).await.unwrap();
    assert_eq!(page, rows[3..6]);

    let samples = store.samples("run-1", None).await.unwrap();
    let sampled: Vec<_> = samples
        .iter()
        .map(|s| (s.at, s.stage.as_deref(), s.metric.as_str(), s.value))
        .collect();
    assert_eq!(
        sampled,
        [
            (ms(9), None, "errorRate", 0.5),
            (ms(9), Some("load"), "queueDepth", 3.0)
        ]
    );
    let depth = store.samples("run-1", Some("queueDepth")).await.unwrap();
    assert_eq!(depth, samples[1..]);

    let logs = store.logs("run-1", &LogFilter::default()).await.unwrap();
    assert_eq!(logs.len(), 1);
    let log = &logs[0];
    assert_eq!(
        (
            log.stage.as_str(),
            log.item.as_deref(),
            log.attempt,
            log.at,
            log.stdout.as_str(),
            log.stderr.as_str(),
            log.stdout_cut,
            log.stderr_cut
        ),
        ("load", Some("c"), 1, ms(8), "out\0put\n", "é\n", 3, 0)
    );
    let picked = |stage: Option<&str>, item: Option<&str>, attempt: Option<i64>| LogFilter {
        stage: stage.map(str::to_owned),
        item: item.map(str::to_owned),
        attempt,
    };
    for (filter, found) in [
        (picked(Some("load"), Some("c"), Some(1)), 1),
        (picked(Some("extract"), None, None), 0),
        (picked(None, Some("a"), None), 0),
        (picked(None, None, Some(2)), 0),
    ] {
        assert_eq!(
            store.logs("run-1", &filter).await.unwrap().len(),
            found,
            "{filter:?}"
        );
    }

    let mut expected = Resume::default();
    expected.stage_completed("extract");
    expected.item_completed("load", "a");
    expected.item_completed("load", "b");
    expected.compensated("extract", None::<String>);
    expected.compensated("load", Some("a"));
    expected.rolling_back("load", error);
    assert_eq!(store.resume(&run).await.unwrap(), expected);
    assert_eq!(
        store.resume(&RunId::new("nope")).await.unwrap(),
        Resume::default()
    );
    let failed = store.unfinished_run("p").await.unwrap().unwrap();
    assert_eq!(failed.status, RunState::Ended(RunStatus::Failed));

    // What a `run --chaos` injected: the latest pass's.
    let chaos = EventKind::ChaosInjecting {
        faults: vec!["fail=30%,code=ECONNRESET".into()],
        seed: 7,
    };
    store.append("p", &[ev(16, chaos)]).await.unwrap();
    assert_eq!(
        store.run("run-1").await.unwrap().unwrap().chaos,
        Some(crate::store::ChaosRow {
            faults: vec!["fail=30%,code=ECONNRESET".into()],
            seed: 7
        })
    );
}

pub(super) async fn runs_are_listed_newest_first_and_names_in_byte_order(store: Arc<dyn Store>) {
    let started = |run: &str, when| {
        event(
            Some(&RunId::new(run)),
            when,
            EventKind::RunStarted {
                pipeline: "pipe".into(),
                stages: Vec::new(),
            },
        )
    };
    // Two runs in one millisecond: the one written last is the newer.
    store.append("q", &[started("r-1", 5)]).await.unwrap();
    store.append("q", &[started("r-0", 4)]).await.unwrap();
    store.append("q", &[started("r-2", 5)]).await.unwrap();
    let ids = |runs: Vec<super::RunRow>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.runs("q", 10).await.unwrap()),
        ["r-2", "r-1", "r-0"]
    );
    assert_eq!(ids(store.runs("q", 1).await.unwrap()), ["r-2"]);
    assert_eq!(
        ids(store.runs("nope", 10).await.unwrap()),
        [] as [String; 0]
    );
    let latest = store.unfinished_run("q").await.unwrap().unwrap();
    assert_eq!((latest.id.as_str(), latest.owner), ("r-2", None));
    assert_eq!(latest.started_ms, ms(5));

    // Stages the run did not declare, in byte order of their names.
    let run = RunId::new("r-2");
    let ended: Vec<_> = ["zeta", "Alpha", "beta"]
        .into_iter()
        .map(|stage| {
            event(
                Some(&run),
                6,
                EventKind::StageSucceeded {
                    stage: stage.into(),
                    duration: Duration::ZERO,
                    items: 3,
                },
            )
        })
        .collect();
    store.append("q", &ended).await.unwrap();
    let detail = store.run("r-2").await.unwrap().unwrap();
    let names: Vec<&str> = detail.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(names, ["Alpha", "beta", "zeta"]);
    assert!(detail.stages.iter().all(|s| s.status == "succeeded"));
    assert_eq!(detail.metrics, None);

    for project in ["b", "B", "_x", "a"] {
        store.set_healing_mode(project, true, None).await.unwrap();
    }
    assert_eq!(store.projects().await.unwrap(), ["B", "_x", "a", "b", "q"]);
    for strategy in ["b", "B", "a"] {
        store
            .set_override("q", strategy, &StrategyOverride::default())
            .await
            .unwrap();
    }
    let strategies: Vec<String> = store
        .overrides("q")
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(strategies, ["B", "a", "b"]);
}

pub(super) async fn health_lists_declared_checks_and_what_they_found(store: Arc<dyn Store>) {
    let declared = |name: &str, stage: Option<&str>| DeclaredCheck {
        name: name.into(),
        stage: stage.map(str::to_owned),
        target: format!("http://{name}"),
    };
    let mut with_checks = claim("p", "run-1");
    with_checks.checks = vec![
        declared("db", Some("load")),
        declared("api", None),
        declared("Zed", None),
    ];
    assert_eq!(store.claim_run(&with_checks).await.unwrap(), None);
    let names =
        |rows: &[super::HealthRow]| rows.iter().map(|r| r.check.clone()).collect::<Vec<_>>();
    let rows = store.health("p").await.unwrap();
    assert_eq!(names(&rows), ["Zed", "api", "db"]);
    assert!(
        rows.iter()
            .all(|r| r.status.is_none() && r.checked_ms.is_none())
    );
    assert_eq!(rows[2].stage.as_deref(), Some("load"));
    assert_eq!(rows[2].target.as_deref(), Some("http://db"));

    let seen = |name: &str, status, when, error: Option<&str>| CheckSeen {
        name: name.into(),
        status,
        checked_ms: when,
        last_error: error.map(str::to_owned),
    };
    store
        .checks_seen(
            "p",
            &[
                seen("db", HealthStatus::Unhealthy, 100, Some("refused")),
                seen("cache", HealthStatus::Healthy, 100, None),
            ],
        )
        .await
        .unwrap();
    store
        .checks_seen(
            "p",
            &[seen("db", HealthStatus::Unhealthy, 200, Some("timed out"))],
        )
        .await
        .unwrap();
    let rows = store.health("p").await.unwrap();
    assert_eq!(names(&rows), ["Zed", "api", "cache", "db"]);
    let cache = &rows[2];
    assert_eq!(
        (
            cache.stage.as_deref(),
            cache.target.as_deref(),
            cache.status,
            cache.changed_ms,
            cache.checked_ms,
            cache.last_error.as_deref()
        ),
        (
            None,
            None,
            Some(HealthStatus::Healthy),
            Some(100),
            Some(100),
            None
        )
    );
    let db = &rows[3];
    assert_eq!(
        (
            db.stage.as_deref(),
            db.status,
            db.changed_ms,
            db.checked_ms,
            db.last_error.as_deref()
        ),
        (
            Some("load"),
            Some(HealthStatus::Unhealthy),
            Some(100),
            Some(200),
            Some("timed out")
        ),
        "the status is unchanged: so is when it changed"
    );
    store
        .checks_seen("p", &[seen("db", HealthStatus::Healthy, 300, None)])
        .await
        .unwrap();
    let changed = HealthChange {
        stage: None,
        check: "api".into(),
        old_status: HealthStatus::Healthy,
        new_status: HealthStatus::Degraded,
        at: at(400),
    };
    store
        .append(
            "p",
            &[event(
                None,
                400,
                EventKind::HealthChanged { change: changed },
            )],
        )
        .await
        .unwrap();
    let rows = store.health("p").await.unwrap();
    let db = &rows[3];
    assert_eq!(
        (
            db.status,
            db.changed_ms,
            db.checked_ms,
            db.last_error.as_deref()
        ),
        (Some(HealthStatus::Healthy), Some(300), Some(300), None)
    );
    let api = &rows[1];
    assert_eq!(
        (api.status, api.changed_ms, api.checked_ms),
        (Some(HealthStatus::Degraded), Some(ms(400)), None)
    );
    assert!(store.health("other").await.unwrap().is_empty());
}

pub(super) async fn a_run_id_is_never_taken_twice_and_only_a_stored_run_resumes(
    store: Arc<dyn Store>,
) {
    let first = claim("p", "run-1");
    assert_eq!(store.claim_run(&first).await.unwrap(), None);
    let run = RunId::new("run-1");
    store
        .append(
            "p",
            &[event(
                Some(&run),
                5,
                EventKind::RunFinished {
                    status: RunStatus::Failed,
                    duration: Duration::from_millis(5),
                    error: Some(StageError::new("boom")),
                },
            )],
        )
        .await
        .unwrap();
    // Another fresh run with the same id is refused, and the first keeps its row.
    let error = store.claim_run(&claim("p", "run-1")).await.unwrap_err();
    assert!(error.to_string().contains("never used twice"), "{error}");
    let kept = store.run("run-1").await.unwrap().unwrap().run;
    assert_eq!(
        (kept.status, kept.error.as_deref()),
        (RunState::Ended(RunStatus::Failed), Some("error: boom"))
    );
    // A resume takes the run again; an unknown run cannot be resumed.
    let resumed = RunClaim {
        resuming: true,
        ..claim("p", "run-1")
    };
    assert_eq!(store.claim_run(&resumed).await.unwrap(), None);
    let again = store.run("run-1").await.unwrap().unwrap().run;
    assert_eq!((again.status, again.error), (RunState::Running, None));
    let unknown = RunClaim {
        resuming: true,
        ..claim("q", "run-9")
    };
    let error = store.claim_run(&unknown).await.unwrap_err();
    assert!(error.to_string().contains("nothing to resume"), "{error}");
}

pub(super) async fn reopening_migrates_again_and_keeps_what_was_stored(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    // `b` opened the store after `a` had migrated it: a migration applied twice would have
    // failed it.
    a.set_healing_mode("p", false, Some("freeze"))
        .await
        .unwrap();
    let mode = b.healing_mode("p").await.unwrap();
    assert_eq!(
        (mode.enabled, mode.reason.as_deref()),
        (false, Some("freeze"))
    );
}

pub(super) async fn two_processes_claiming_one_project_one_wins(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    // Half the projects exist before the race, half are made by it.
    for i in (0..12).step_by(2) {
        a.set_healing_mode(&format!("p{i}"), true, None)
            .await
            .unwrap();
    }
    let races = (0..12).map(|i| {
        let (a, b) = (Arc::clone(&a), Arc::clone(&b));
        async move {
            // Run ids are the store's, not the project's: each project's are its own.
            let project = format!("p{i}");
            let (run_a, run_b) = (format!("{project}-a"), format!("{project}-b"));
            let (first, second) = (claim(&project, &run_a), claim(&project, &run_b));
            let (x, y) = tokio::join!(a.claim_run(&first), b.claim_run(&second));
            let winner = match (x.unwrap(), y.unwrap()) {
                (None, Some(alive)) => {
                    assert_eq!(alive.id, run_a);
                    run_a
                }
                (Some(alive), None) => {
                    assert_eq!(alive.id, run_b);
                    run_b
                }
                other => panic!("{project}: exactly one claim wins, not {other:?}"),
            };
            let runs = a.runs(&project, 10).await.unwrap();
            assert_eq!(runs.len(), 1, "{project}: only the winner's run");
            assert_eq!(runs[0].id, winner);
            let late = b
                .claim_run(&claim(&project, &format!("{project}-c")))
                .await
                .unwrap();
            assert_eq!(late.map(|r| r.id), Some(winner));
        }
    });
    futures_util::future::join_all(races).await;
}

/// One `#[tokio::test]` per test above, for the module's `Backend`, each with the attributes
/// given.
macro_rules! conformance_tests {
    ($(#[$attr:meta])*) => {
        conformance_tests!(
            attributes: [$(#[$attr])*],
            one: [
                the_journal_reads_back_in_pages_with_resumable_cursors,
                a_run_id_is_never_taken_twice_and_only_a_stored_run_resumes,
                an_item_completed_again_is_read_back_as_often_as_it_was_published,
                each_queued_request_is_claimed_exactly_once,
                overrides_merge_field_by_field,
                a_run_reads_back_with_its_stages_events_samples_logs_and_resume,
                runs_are_listed_newest_first_and_names_in_byte_order,
                health_lists_declared_checks_and_what_they_found,
                healing_mode_and_history_read_back,
                logs_and_samples_are_kept_for_the_last_runs_only,
                logs_list_in_pages_without_their_output_and_read_one_at_a_time,
                alerts_are_owed_taken_under_a_lease_and_delivered,
                an_alert_is_raised_once_however_many_would_raise_it,
                a_delivery_is_given_up_after_its_tries_and_released_ones_are_taken_at_once,
            ],
            two: [
                reopening_migrates_again_and_keeps_what_was_stored,
                two_stores_claim_each_queued_request_exactly_once,
                two_processes_claiming_one_project_one_wins,
                concurrent_takers_never_share_a_delivery,
                a_follower_misses_nothing_that_concurrent_writers_append,
                concurrent_overrides_of_one_strategy_both_merge,
            ],
            sql: [an_unknown_action_in_the_queue_is_refused_not_guessed],
        );
    };
    (
        attributes: $attributes:tt,
        one: [$($one:ident),* $(,)?],
        two: [$($two:ident),* $(,)?],
        sql: [$($sql:ident),* $(,)?] $(,)?
    ) => {
        $(conformance_tests!(@test $attributes, $one, |backend| super::$one(backend.store()));)*
        $(conformance_tests!(@test $attributes, $two, |backend| {
            super::$two(backend.store(), backend.another().await)
        });)*
        $(conformance_tests!(@test $attributes, $sql, |backend| {
            super::$sql(backend.store(), async |sql| backend.execute(sql).await)
        });)*
    };
    (@test [$(#[$attr:meta])*], $name:ident, |$backend:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $name() {
            let Some($backend) = Backend::fresh().await else {
                return;
            };
            $body.await;
        }
    };
}

/// The tests on SQLite: a store in a temporary folder.
mod sqlite {
    use std::path::PathBuf;
    use std::sync::Arc;

    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

    use super::super::{SqliteStore, Store};

    struct Backend {
        store: Arc<dyn Store>,
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Backend {
        async fn fresh() -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("nested/journal.db");
            let store = Arc::new(SqliteStore::open(&path).await.unwrap());
            Some(Backend {
                store,
                path,
                _dir: dir,
            })
        }

        fn store(&self) -> Arc<dyn Store> {
            Arc::clone(&self.store)
        }

        /// Another store on the same file, as a second process opens it.
        async fn another(&self) -> Arc<dyn Store> {
            Arc::new(SqliteStore::open(&self.path).await.unwrap())
        }

        async fn execute(&self, sql: &'static str) {
            let options = SqliteConnectOptions::new().filename(&self.path);
            let mut connection = SqliteConnection::connect_with(&options).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        }
    }

    conformance_tests!();

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn a_postgres_url_asks_for_a_build_with_the_feature() {
        let error = super::super::open("postgres://mp:secret@db.example/journal")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("--features postgres"), "{error}");
        assert!(error.contains("mp:***@db.example"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }
}

/// The tests on PostgreSQL: a database made for each test on the server
/// `MIGRATIONPILOT_TEST_POSTGRES_URL` names.
#[cfg(feature = "postgres")]
pub(super) mod postgres {
    use std::sync::Arc;

    use sqlx::Connection;
    use sqlx::postgres::PgConnection;

    use super::super::{PostgresStore, Store, TestDatabase};

    struct Backend {
        // Dropped before the database.
        store: Arc<dyn Store>,
        database: TestDatabase,
    }

    impl Backend {
        async fn fresh() -> Option<Self> {
            let database = TestDatabase::create().await?;
            let store = Arc::new(PostgresStore::open(&database.url).await.unwrap());
            Some(Backend { store, database })
        }

        fn store(&self) -> Arc<dyn Store> {
            Arc::clone(&self.store)
        }

        /// Another store on the same database, as a second process opens it.
        async fn another(&self) -> Arc<dyn Store> {
            Arc::new(PostgresStore::open(&self.database.url).await.unwrap())
        }

        async fn execute(&self, sql: &'static str) {
            let mut connection = PgConnection::connect(&self.database.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
            connection.close().await.unwrap();
        }
    }

    conformance_tests!(
        #[cfg_attr(missing_postgres, ignore = "needs PostgreSQL: source .ci/services.sh start")]
    );
}
