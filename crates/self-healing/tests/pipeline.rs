//! Pipeline behaviour on paused tokio time: order, fan-out bounds, timeouts, cancellation,
//! hooks, remedies and live controls.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::event::{EventKind, HandlerKind};
use self_healing::healing::{ActionKind, Failure, Remedy};
use self_healing::pipeline::{ItemSource, Resume, RunOptions, SelfHealingPipeline, Stage};
use self_healing::resilience::{BreakerState, Rate, RetryPolicy};
use self_healing::{RunStatus, StageError};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Gauge, Recorder};

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(max_attempts)
        .initial_delay(Duration::from_millis(100))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn stages_run_in_declaration_order() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut builder = SelfHealingPipeline::builder();
    for name in ["analysis", "design", "generation", "validation"] {
        let order = Arc::clone(&order);
        builder = builder.stage(Stage::new(name, move |ctx| {
            let order = Arc::clone(&order);
            async move {
                order.lock().unwrap().push(format!("{} start", ctx.stage()));
                sleep(Duration::from_millis(10)).await;
                order.lock().unwrap().push(format!("{} end", ctx.stage()));
                Ok(())
            }
        }));
    }
    let pipeline = builder.build().unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    let expected: Vec<String> = ["analysis", "design", "generation", "validation"]
        .iter()
        .flat_map(|s| [format!("{s} start"), format!("{s} end")])
        .collect();
    assert_eq!(*order.lock().unwrap(), expected);
    let started: Vec<String> = events.pick(|k| match k {
        EventKind::StageStarted { stage, .. } => Some(stage.to_string()),
        _ => None,
    });
    assert_eq!(started, ["analysis", "design", "generation", "validation"]);
    let stage_order: Vec<&str> = report.stages.iter().map(|s| &*s.stage).collect();
    assert_eq!(
        stage_order,
        ["analysis", "design", "generation", "validation"]
    );
}

#[tokio::test(start_paused = true)]
async fn fan_out_never_exceeds_its_concurrency_and_pulls_items_lazily() {
    let gauge = Arc::new(Gauge::default());
    let pulled = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let source_pulled = Arc::clone(&pulled);
    let (g, p, f) = (
        Arc::clone(&gauge),
        Arc::clone(&pulled),
        Arc::clone(&finished),
    );
    let pipeline = SelfHealingPipeline::builder()
        .stage(
            Stage::for_each(
                "analysis",
                ItemSource::iter(move |_: &()| {
                    let pulled = Arc::clone(&source_pulled);
                    (0..500u32).inspect(move |_| {
                        pulled.fetch_add(1, Ordering::SeqCst);
                    })
                }),
                move |ctx| {
                    let (gauge, pulled, finished) =
                        (Arc::clone(&g), Arc::clone(&p), Arc::clone(&f));
                    async move {
                        gauge.enter();
                        // Items held = pulled but not finished: never more than the bound.
                        let held = pulled.load(Ordering::SeqCst) - finished.load(Ordering::SeqCst);
                        assert!(held <= 5, "{held} items held in memory");
                        // Seeded, uneven durations so items overlap in every pattern.
                        let ms = (u64::from(*ctx.item()) * 7919) % 50 + 1;
                        sleep(Duration::from_millis(ms)).await;
                        finished.fetch_add(1, Ordering::SeqCst);
                        gauge.leave();
                        Ok(())
                    }
                },
            )
            .concurrency(5),
        )
        .build()
        .unwrap();

    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.stages[0].items_completed, 500);
    assert_eq!(pulled.load(Ordering::SeqCst), 500);
    assert_eq!(
        gauge.take_peak(),
        5,
        "the bound is reached and never exceeded"
    );
}

/// A stage's workers run item after item while each finishes at once, but yield to the
/// runtime's other tasks as they go (a timer, a signal handler, the pass itself), on one
/// thread too.
#[tokio::test]
async fn a_stage_of_instant_items_leaves_the_runtime_to_its_other_tasks() {
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticking = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (t, s) = (Arc::clone(&ticks), Arc::clone(&seen));
    let pipeline = SelfHealingPipeline::builder()
        .stage(
            Stage::for_each(
                "count",
                ItemSource::iter(|_: &()| 0..20_000u32),
                move |ctx| {
                    if *ctx.item() % 5_000 == 4_999 {
                        s.lock().unwrap().push(t.load(Ordering::Relaxed));
                    }
                    async { Ok(()) }
                },
            )
            .concurrency(8),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    ticking.abort();
    assert_eq!(report.stages[0].items_completed, 20_000);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "the other task ran between every 5,000 items: {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_cut_at_the_stage_timeout() {
    let pipeline = SelfHealingPipeline::builder()
        .retry_policy(quick_retries(3))
        .stage(
            Stage::new("generation", |ctx| async move {
                // The first attempt hangs; the second is quick.
                let work = if ctx.attempt() == 1 { 3600 } else { 1 };
                sleep(Duration::from_secs(work)).await;
                Ok(())
            })
            .timeout(Duration::from_secs(5)),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let start = Instant::now();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    // 5 s cut + 100 ms backoff + 1 s second attempt.
    assert_eq!(start.elapsed(), Duration::from_millis(6100));
    let failed: Vec<(Duration, StageError)> = events.pick(|k| match k {
        EventKind::AttemptFailed {
            duration, error, ..
        } => Some((duration, error)),
        _ => None,
    });
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, Duration::from_secs(5));
    assert!(failed[0].1.is_timeout(), "{:?}", failed[0].1);
    assert_eq!(failed[0].1.code(), Some("ETIMEDOUT"));
}

#[tokio::test(start_paused = true)]
async fn cancellation_starts_nothing_new_lets_work_finish_within_grace_and_abandons_the_rest() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let pipeline = SelfHealingPipeline::builder()
        .cancel_grace(Duration::from_secs(10))
        .stage(
            Stage::for_each(
                "migrate",
                ItemSource::iter(|_: &()| 0..100u32),
                move |ctx| {
                    let started = Arc::clone(&s);
                    async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        // Even items take 5 s (inside the grace), odd ones 60 s (beyond it).
                        let secs = if *ctx.item() % 2 == 0 { 5 } else { 60 };
                        sleep(Duration::from_secs(secs)).await;
                        Ok(())
                    }
                },
            )
            .concurrency(4),
        )
        .stage(Stage::new("never", |_| async {
            panic!("a cancelled run starts no later stage")
        }))
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        // Items 0-3 start at 0 s; 0 and 2 finish at 5 s and 4, 5 start; cancel at 7 s.
        sleep(Duration::from_secs(7)).await;
        trigger.cancel();
    });
    let start = Instant::now();
    let report = pipeline
        .execute_with(
            (),
            RunOptions {
                cancel,
                ..RunOptions::default()
            },
        )
        .await;

    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(
        started.load(Ordering::SeqCst),
        6,
        "nothing started after the cancel"
    );
    // Item 4 finishes at 10 s (inside the grace); 1, 3, 5 are dropped at 7 + 10 s.
    assert_eq!(start.elapsed(), Duration::from_secs(17));
    let succeeded = events.count(|k| matches!(k, EventKind::ItemSucceeded { .. }));
    let abandoned: Vec<String> = events.pick(|k| match k {
        EventKind::ItemAbandoned { item, .. } => Some(item.to_string()),
        _ => None,
    });
    assert_eq!(succeeded, 3, "0, 2 and 4 completed");
    let mut abandoned_sorted = abandoned.clone();
    abandoned_sorted.sort();
    assert_eq!(abandoned_sorted, ["1", "3", "5"]);
    assert_eq!(report.stages.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn hooks_receive_stage_names_reports_and_healing_context() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let completes = Arc::new(Mutex::new(Vec::new()));
    let healings = Arc::new(Mutex::new(Vec::new()));
    let (s, c, h) = (
        Arc::clone(&starts),
        Arc::clone(&completes),
        Arc::clone(&healings),
    );
    let pipeline = SelfHealingPipeline::builder()
        .retry_policy(quick_retries(2))
        .stage(
            Stage::for_each(
                "analysis",
                ItemSource::list(vec!["a", "b", "c"]),
                |ctx| async move {
                    if ctx.key() == "b" && ctx.attempt() == 1 {
                        return Err(StageError::new("ECONNRESET"));
                    }
                    Ok(())
                },
            )
            .concurrency(1),
        )
        .stage(Stage::new("design", |_| async {
            Err(StageError::critical("schema mismatch").with_code("SCHEMA"))
        }))
        .on_stage_start(move |stage| s.lock().unwrap().push(stage.to_owned()))
        .on_stage_complete(move |report| c.lock().unwrap().push(report.clone()))
        .on_healing_action(move |action, ctx| {
            h.lock().unwrap().push((
                action,
                ctx.stage.to_string(),
                ctx.item.as_deref().map(str::to_owned),
                ctx.detail.clone(),
                ctx.run.is_some(),
            ))
        })
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(*starts.lock().unwrap(), ["analysis", "design"]);
    let completes = completes.lock().unwrap();
    assert_eq!(completes.len(), 2);
    assert_eq!(
        (
            &*completes[0].stage,
            completes[0].items_completed,
            completes[0].error.is_none()
        ),
        ("analysis", 3, true)
    );
    assert_eq!(&*completes[1].stage, "design");
    assert_eq!(completes[1].error.as_ref().unwrap().code(), Some("SCHEMA"));
    // design fails twice: once retried, then given up (max 2 attempts).
    let healings = healings.lock().unwrap();
    assert_eq!(
        *healings,
        [
            (
                ActionKind::Retry,
                "analysis".into(),
                Some("b".into()),
                "attempt 2 in 100ms".into(),
                true
            ),
            (
                ActionKind::Retry,
                "design".into(),
                None,
                "attempt 2 in 100ms".into(),
                true
            ),
        ]
    );
    assert_eq!(report.error.unwrap().message(), "schema mismatch");
}

#[tokio::test(start_paused = true)]
async fn rollback_compensates_completed_items_and_stages_in_reverse_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let item_log = Arc::clone(&log);
    let stage_log = Arc::clone(&log);
    let design_log = Arc::clone(&log);
    let gen_log = Arc::clone(&log);
    let failing_log = Arc::clone(&log);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(|f: &Failure<'_>| {
            if f.error.severity() == self_healing::Severity::Critical {
                Remedy::Rollback
            } else {
                Remedy::Fail
            }
        })
        .stage(
            Stage::for_each(
                "analysis",
                ItemSource::list(vec!["a", "b", "c"]),
                |_| async { Ok(()) },
            )
            .rollback_item(move |ctx| {
                let log = Arc::clone(&item_log);
                async move {
                    log.lock()
                        .unwrap()
                        .push(format!("undo analysis {}", ctx.key()));
                    Ok(())
                }
            })
            .rollback(move |_| {
                let log = Arc::clone(&stage_log);
                async move {
                    log.lock().unwrap().push("undo analysis stage".to_owned());
                    Ok(())
                }
            }),
        )
        .stage(
            Stage::new("design", |_| async { Ok(()) }).rollback(move |ctx| {
                let log = Arc::clone(&design_log);
                async move {
                    log.lock().unwrap().push(format!("undo {}", ctx.stage()));
                    Err(StageError::new("could not drop the design tables"))
                }
            }),
        )
        .stage(
            Stage::for_each(
                "generation",
                ItemSource::list(vec!["x", "y", "z"]),
                |ctx| async move {
                    if ctx.key() == "z" {
                        Err(StageError::critical("corrupt output"))
                    } else {
                        Ok(())
                    }
                },
            )
            .rollback_item(move |ctx| {
                let log = Arc::clone(&gen_log);
                async move {
                    log.lock()
                        .unwrap()
                        .push(format!("undo generation {}", ctx.key()));
                    Ok(())
                }
            })
            .rollback(move |_| {
                let log = Arc::clone(&failing_log);
                async move {
                    log.lock().unwrap().push("undo generation stage".to_owned());
                    Ok(())
                }
            }),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::RolledBack);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "undo generation y",
            "undo generation x",
            "undo design",
            "undo analysis c",
            "undo analysis b",
            "undo analysis a",
            "undo analysis stage",
        ],
        "the failed stage's own hook does not run: it never completed"
    );
    assert_eq!(report.compensation_failures.len(), 1);
    assert_eq!(&*report.compensation_failures[0].stage, "design");
    assert_eq!(
        events.count(|k| matches!(k, EventKind::CompensationFinished { .. })),
        7
    );
    assert_eq!(report.metrics.rollback_count, 1);
}

#[tokio::test(start_paused = true)]
async fn failover_switches_later_attempts_to_the_alternate_handler() {
    let primary_calls = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(&primary_calls);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(|f: &Failure<'_>| {
            if f.can_fail_over && f.handler == HandlerKind::Primary {
                Remedy::Failover
            } else {
                Remedy::Fail
            }
        })
        .stage(
            Stage::for_each(
                "validation",
                ItemSource::iter(|_: &()| 0..10u32),
                move |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err(StageError::new("primary validator down")) }
                },
            )
            .failover(|ctx| async move {
                assert_eq!(ctx.handler(), HandlerKind::Failover);
                Ok(())
            }),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        primary_calls.load(Ordering::SeqCst),
        1,
        "after the switch, only the alternate runs"
    );
    assert_eq!(
        events.count(|k| matches!(
            k,
            EventKind::HealingApplied {
                action: ActionKind::Failover,
                ..
            }
        )),
        1
    );
    assert!(pipeline.control("validation").unwrap().is_failed_over());
    assert!(
        pipeline
            .control("validation")
            .unwrap()
            .set_failed_over(false),
        "and back when told"
    );
}

#[tokio::test(start_paused = true)]
async fn restart_runs_reset_then_the_stage_from_its_start_up_to_the_limit() {
    let attempts = Arc::new(AtomicU32::new(0));
    let resets = Arc::new(Mutex::new(Vec::new()));
    let (a, r) = (Arc::clone(&attempts), Arc::clone(&resets));
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(|_: &Failure<'_>| Remedy::Restart)
        .stage(
            Stage::new("validation", move |_| {
                let n = a.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(StageError::new("corrupted state"))
                    } else {
                        Ok(())
                    }
                }
            })
            .reset(move |ctx| {
                let resets = Arc::clone(&r);
                async move {
                    resets.lock().unwrap().push(ctx.attempt());
                    Ok(())
                }
            })
            .max_restarts(2),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        *resets.lock().unwrap(),
        [1, 2],
        "reset ran before each restart"
    );
    assert_eq!(report.stages[0].restarts, 2);

    // A fourth failure in a fresh run exceeds the limit of two restarts.
    attempts.store(0, Ordering::SeqCst);
    let always = SelfHealingPipeline::builder()
        .supervisor(|_: &Failure<'_>| Remedy::Restart)
        .stage(
            Stage::new("validation", |_| async {
                Err(StageError::new("still corrupted"))
            })
            .max_restarts(2),
        )
        .build()
        .unwrap();
    let report = always.execute(()).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.error.unwrap().code(), Some("RESTART_LIMIT"));
}

#[tokio::test(start_paused = true)]
async fn a_requested_restart_stops_work_in_flight_and_starts_over() {
    let starts = Arc::new(AtomicU32::new(0));
    let s = Arc::clone(&starts);
    let pipeline = Arc::new(
        SelfHealingPipeline::builder()
            .stage(
                Stage::for_each(
                    "generation",
                    ItemSource::iter(|_: &()| 0..4u32),
                    move |_| {
                        s.fetch_add(1, Ordering::SeqCst);
                        async {
                            sleep(Duration::from_secs(10)).await;
                            Ok(())
                        }
                    },
                )
                .concurrency(4),
            )
            .build()
            .unwrap(),
    );
    let events = Recorder::attach(&pipeline);
    let control = Arc::clone(pipeline.control("generation").unwrap());
    tokio::spawn(async move {
        sleep(Duration::from_secs(3)).await;
        control.request_restart("operator asked");
    });
    let start = Instant::now();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(13),
        "cut at 3 s, then a full 10 s pass"
    );
    assert_eq!(starts.load(Ordering::SeqCst), 8);
    assert_eq!(
        events.count(|k| matches!(k, EventKind::ItemAbandoned { .. })),
        4
    );
    assert_eq!(report.stages[0].items_completed, 4);
}

#[tokio::test(start_paused = true)]
async fn a_live_concurrency_change_takes_effect_mid_stage() {
    let gauge = Arc::new(Gauge::default());
    let g = Arc::clone(&gauge);
    let pipeline = Arc::new(
        SelfHealingPipeline::builder()
            .stage(
                Stage::for_each(
                    "generation",
                    ItemSource::iter(|_: &()| 0..400u32),
                    move |_| {
                        let gauge = Arc::clone(&g);
                        async move {
                            gauge.enter();
                            sleep(Duration::from_millis(100)).await;
                            gauge.leave();
                            Ok(())
                        }
                    },
                )
                .concurrency(2),
            )
            .build()
            .unwrap(),
    );
    let events = Recorder::attach(&pipeline);
    let run = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move { pipeline.execute(()).await }
    });
    let control = pipeline.control("generation").unwrap();

    sleep(Duration::from_millis(1050)).await;
    assert_eq!(gauge.take_peak(), 2, "phase 1: limit 2");
    assert_eq!(control.set_concurrency(8).unwrap(), 2);
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(gauge.take_peak(), 8, "phase 2: raised to 8 while running");
    control.set_concurrency(3).unwrap();
    sleep(Duration::from_millis(150)).await; // what was running finishes
    gauge.take_peak();
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(gauge.take_peak(), 3, "phase 3: cut to 3 while running");
    control.set_concurrency(6).unwrap();
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(gauge.take_peak(), 6, "phase 4: raised again after the cut");

    let report = run.await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.stages[0].items_completed, 400);
    let changes: Vec<(usize, usize)> = events.pick(|k| match k {
        EventKind::ConcurrencyChanged { from, to, .. } => Some((from, to)),
        _ => None,
    });
    assert_eq!(changes, [(2, 8), (8, 3), (3, 6)]);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_pauses_work_without_spending_attempts() {
    let pipeline = Arc::new(
        SelfHealingPipeline::builder()
            .stage(
                Stage::for_each("load", ItemSource::iter(|_: &()| 0..20u32), |_| async {
                    sleep(Duration::from_millis(100)).await;
                    Ok(())
                })
                .concurrency(2),
            )
            .build()
            .unwrap(),
    );
    let events = Recorder::attach(&pipeline);
    let control = Arc::clone(pipeline.control("load").unwrap());
    tokio::spawn(async move {
        sleep(Duration::from_millis(250)).await;
        control.breaker().trip(Some(Duration::from_secs(30)));
    });
    let start = Instant::now();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        events.count(|k| matches!(k, EventKind::AttemptStarted { .. })),
        20,
        "no attempt wasted"
    );
    // 6 items before the trip (2 at a time, 100 ms each, 2 in flight at 250 ms finish at 300 ms),
    // then the 30 s break, then probes: the manual breaker lets 3 probes through and closes.
    assert!(
        start.elapsed() >= Duration::from_millis(30_250),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() <= Duration::from_millis(31_200),
        "{:?}",
        start.elapsed()
    );
    let transitions: Vec<(BreakerState, BreakerState)> = events.pick(|k| match k {
        EventKind::BreakerChanged { from, to, .. } => Some((from, to)),
        _ => None,
    });
    assert_eq!(
        transitions,
        [
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_stage_starts_attempts_at_the_set_rate() {
    let pipeline = SelfHealingPipeline::builder()
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..101u32), |_| async {
                Ok(())
            })
            .concurrency(16),
        )
        .build()
        .unwrap();
    pipeline
        .control("load")
        .unwrap()
        .set_rate(Some(Rate::new(20.0, 1).unwrap()));
    let start = Instant::now();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "101 permits at 20/s, the first free"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_a_critical_failure_not_a_crash() {
    let pipeline = SelfHealingPipeline::builder()
        .retry_policy(RetryPolicy::never())
        .stage(Stage::for_each(
            "analysis",
            ItemSource::list(vec!["boom"]),
            |_| async { panic!("index out of bounds") },
        ))
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.unwrap();
    assert_eq!(error.severity(), self_healing::Severity::Critical);
    assert_eq!(error.code(), Some("PANIC"));
    assert!(error.message().contains("index out of bounds"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_item_source_fails_the_stage_with_its_error() {
    let pipeline = SelfHealingPipeline::builder()
        .stage(Stage::for_each(
            "analysis",
            ItemSource::stream(|_: &()| {
                futures_util::stream::iter(vec![
                    Ok("a".to_owned()),
                    Err(StageError::new("items.txt: permission denied")),
                ])
            }),
            |_| async { Ok(()) },
        ))
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(
        report.error.unwrap().message(),
        "items.txt: permission denied"
    );
    assert_eq!(report.stages[0].items_completed, 1);
}

#[tokio::test(start_paused = true)]
async fn pipeline_metrics_are_readable_during_and_after_a_run() {
    let pipeline = Arc::new(
        SelfHealingPipeline::builder()
            .retry_policy(quick_retries(3))
            .stage(
                Stage::for_each(
                    "analysis",
                    ItemSource::iter(|_: &()| 0..10u32),
                    |ctx| async move {
                        sleep(Duration::from_millis(100)).await;
                        if *ctx.item() < 2 && ctx.attempt() == 1 {
                            return Err(StageError::new("ETIMEDOUT"));
                        }
                        Ok(())
                    },
                )
                .concurrency(2),
            )
            .stage(Stage::new("design", |_| async {
                sleep(Duration::from_secs(2)).await;
                Ok(())
            }))
            .build()
            .unwrap(),
    );
    let run = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move { pipeline.execute(()).await }
    });
    sleep(Duration::from_millis(250)).await;
    let during = pipeline.metrics();
    assert_eq!(during.total_duration, Duration::from_millis(250));
    assert_eq!(
        during.stage_durations.get("analysis"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(during.stages_completed, 0);
    assert_eq!(during.retry_count, 2);

    let report = run.await.unwrap();
    let m = &report.metrics;
    assert_eq!(report.status, RunStatus::Succeeded);
    // 12 attempts of 100 ms, two at a time, with a 100 ms backoff: 700 ms; then 2 s.
    assert_eq!(
        m.stage_durations.get("analysis"),
        Some(Duration::from_millis(700))
    );
    assert_eq!(
        m.stage_durations.get("design"),
        Some(Duration::from_secs(2))
    );
    assert_eq!(m.total_duration, Duration::from_millis(2700));
    assert_eq!((m.stages_completed, m.stages_failed), (2, 0));
    assert_eq!(
        (m.retry_count, m.healing_events, m.rollback_count),
        (2, 2, 0)
    );
    assert!(
        (m.error_rate - 2.0 / 13.0).abs() < 1e-12,
        "2 failed of 13 attempts: {}",
        m.error_rate
    );
    assert!(
        (m.throughput - 11.0 / 2.7).abs() < 1e-9,
        "11 units in 2.7 s: {}",
        m.throughput
    );
    assert_eq!(*m, pipeline.metrics(), "the report and a later read agree");
    let json = serde_json::to_value(m).unwrap();
    for key in [
        "totalDuration",
        "stageDurations",
        "stagesCompleted",
        "stagesFailed",
        "retryCount",
        "healingEvents",
        "rollbackCount",
        "errorRate",
        "throughput",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["stageDurations"]["design"], 2000.0);
}

#[tokio::test(start_paused = true)]
async fn built_in_metrics_are_sampled_per_stage_every_interval() {
    let collector = self_healing::MetricsCollector::builder()
        .sample_interval(Duration::from_secs(1))
        .retention_size(100)
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .metrics(collector.clone())
        .retry_policy(RetryPolicy::never())
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..100u32),
                |ctx| async move {
                    sleep(Duration::from_millis(if *ctx.item() % 10 == 9 {
                        900
                    } else {
                        100
                    }))
                    .await;
                    ctx.record("rowsWritten", 50.0);
                    Ok(())
                },
            )
            .concurrency(1),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);

    use self_healing::metrics::Scope;
    let scope = Scope::Stage("load");
    let duration = collector.get_stats_in(scope, "duration").unwrap();
    assert_eq!(
        (duration.count, duration.min, duration.max, duration.p95),
        (100, 100.0, 900.0, 900.0)
    );
    // 100 items over 18 s, one at a time: about 5.5 items per second in each full interval.
    let throughput = collector.get_stats_in(scope, "throughput").unwrap();
    assert!(throughput.count >= 17, "{throughput:?}");
    assert!((4.0..=10.0).contains(&throughput.p50), "{throughput:?}");
    assert_eq!(collector.get_stats_in(scope, "errorRate").unwrap().max, 0.0);
    assert_eq!(
        collector.get_stats_in(scope, "latencyP95").unwrap().last,
        900.0
    );
    assert_eq!(
        collector.get_stats_in(scope, "rowsWritten").unwrap().count,
        100
    );
    assert!(collector.get_stats("memoryUsage").unwrap().last > 0.0);
}

#[tokio::test(start_paused = true)]
async fn error_rate_waits_for_enough_attempts_carrying_quiet_intervals_over() {
    let collector = self_healing::MetricsCollector::builder()
        .sample_interval(Duration::from_secs(1))
        .error_rate_min_attempts(10)
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .metrics(collector.clone())
        .retry_policy(
            RetryPolicy::builder()
                .max_attempts(2)
                .initial_delay(Duration::ZERO)
                .build()
                .unwrap(),
        )
        .stage(
            // An attempt every 350 ms (never on an interval's edge); items 0 and 1 fail once
            // each, at the start.
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..16u32),
                |ctx| async move {
                    sleep(Duration::from_millis(350)).await;
                    if *ctx.item() < 2 && ctx.attempt() == 1 {
                        return Err(StageError::new("ECONNRESET"));
                    }
                    Ok(())
                },
            )
            .concurrency(1),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    // 2 failures in the first second's 2 attempts is no 100 % error rate: the first sample
    // waits for the fourth interval, when 11 attempts have been seen; the 7 after it are
    // too few for another.
    let samples = collector
        .find(self_healing::metrics::Scope::Stage("load"), "errorRate")
        .unwrap()
        .samples();
    assert_eq!(samples, [2.0 / 11.0]);

    let err = self_healing::MetricsCollector::builder()
        .error_rate_min_attempts(0)
        .build()
        .err()
        .unwrap();
    assert_eq!(err.field(), "errorRateMinAttempts");
}

#[tokio::test(start_paused = true)]
async fn a_slow_pacing_subscriber_bounds_what_waits_for_it_and_misses_nothing() {
    const LIMIT: usize = 100;
    const CONCURRENCY: usize = 4;
    let pipeline = SelfHealingPipeline::builder()
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..2000u32), |_| async {
                Ok(())
            })
            .concurrency(CONCURRENCY),
        )
        .build()
        .unwrap();
    let mut journal = pipeline.events().subscribe_pacing(|_| true, LIMIT);
    // A journal on a slow disk: a millisecond an event, while items take no time at all.
    let reader = tokio::spawn(async move {
        let (mut deepest, mut succeeded) = (0, 0);
        while let Some(event) = journal.recv().await {
            deepest = deepest.max(journal.backlog() + 1);
            match event.kind {
                EventKind::ItemSucceeded { .. } => succeeded += 1,
                EventKind::RunFinished { .. } => break,
                _ => {}
            }
            sleep(Duration::from_millis(1)).await;
        }
        (deepest, succeeded)
    });
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let (deepest, succeeded) = reader.await.unwrap();
    assert_eq!(succeeded, 2000, "lossless");
    // The limit, plus the events of the items already running when it was crossed (four
    // each) and of the stage and run around them.
    assert!(
        deepest <= LIMIT + 4 * CONCURRENCY + 8,
        "the backlog reached {deepest}"
    );
}

#[tokio::test(start_paused = true)]
async fn builders_reject_impossible_pipelines() {
    let empty = SelfHealingPipeline::<()>::builder().build().err().unwrap();
    assert_eq!(empty.field(), "stages");
    let twice = SelfHealingPipeline::<()>::builder()
        .stage(Stage::new("a", |_| async { Ok(()) }))
        .stage(Stage::new("a", |_| async { Ok(()) }))
        .build()
        .err()
        .unwrap();
    assert_eq!(twice.field(), "stages[1].name");
    let zero = SelfHealingPipeline::<()>::builder()
        .stage(
            Stage::for_each("a", ItemSource::iter(|_: &()| 0..1u32), |_| async {
                Ok(())
            })
            .concurrency(0),
        )
        .build()
        .err()
        .unwrap();
    assert_eq!(zero.field(), "stages[0].concurrency");
    let no_time = SelfHealingPipeline::<()>::builder()
        .stage(Stage::new("a", |_| async { Ok(()) }).timeout(Duration::ZERO))
        .build()
        .err()
        .unwrap();
    assert_eq!(
        no_time.to_string(),
        "invalid `stages[0].timeout`: must be longer than zero"
    );
}

/// What an earlier attempt of the run completed: stage "extract", and items 0-4 of "load".
fn earlier_attempt() -> Resume {
    let mut resume = Resume::default();
    resume.stage_completed("extract");
    for item in 0..5 {
        resume.item_completed("load", item.to_string());
    }
    resume
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_skips_what_was_completed_and_still_compensates_it() {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let undone = Arc::new(Mutex::new(Vec::new()));
    let (r, u) = (Arc::clone(&ran), Arc::clone(&undone));
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(|_: &Failure<'_>| Remedy::Rollback)
        .stage(Stage::new("extract", |_| async {
            panic!("completed before: must not run")
        }))
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..8u32), move |ctx| {
                r.lock().unwrap().push(*ctx.item());
                async { Ok(()) }
            })
            .rollback_item(move |ctx| {
                u.lock().unwrap().push(*ctx.item());
                async { Ok(()) }
            }),
        )
        .stage(Stage::new("publish", |_| async {
            Err(StageError::new("publish failed"))
        }))
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline
        .execute_with(
            (),
            RunOptions {
                run_id: Some(self_healing::RunId::new("run-1")),
                resume: Some(Arc::new(earlier_attempt())),
                ..RunOptions::default()
            },
        )
        .await;

    assert_eq!(report.status, RunStatus::RolledBack);
    assert_eq!(report.run_id.as_str(), "run-1");
    assert_eq!(*ran.lock().unwrap(), [5, 6, 7], "only what was left");
    assert_eq!(
        *undone.lock().unwrap(),
        [7, 6, 5, 4, 3, 2, 1, 0],
        "earlier items compensate too"
    );
    assert_eq!(
        events.count(|k| matches!(k, EventKind::StageSkipped { stage } if &**stage == "extract")),
        1
    );
    assert_eq!(
        events.count(|k| matches!(k, EventKind::ItemsSkipped { count: 5, .. })),
        1
    );
    assert_eq!(report.stages[0].items_completed, 8);
}

/// A pipeline whose two item stages compensate per item, whose `extract` stage has a
/// rollback hook, and whose last stage fails critically: everything it runs and undoes is
/// written down.
fn compensating_pipeline(log: Arc<Mutex<Vec<String>>>) -> SelfHealingPipeline<()> {
    let entry = |log: &Arc<Mutex<Vec<String>>>, what: &'static str| {
        let log = Arc::clone(log);
        move |ctx: self_healing::ItemContext<(), u32>| {
            log.lock()
                .unwrap()
                .push(format!("{what} {}/{}", ctx.stage(), ctx.item()));
            async { Ok(()) }
        }
    };
    let hook = {
        let log = Arc::clone(&log);
        move |_ctx: self_healing::StageContext<()>| {
            log.lock().unwrap().push("undo extract".to_owned());
            async { Ok(()) }
        }
    };
    let ran_publish = Arc::clone(&log);
    SelfHealingPipeline::builder()
        .supervisor(|_: &Failure<'_>| Remedy::Rollback)
        .stage(
            Stage::for_each(
                "extract",
                ItemSource::iter(|_: &()| 0..3u32),
                entry(&log, "run"),
            )
            .rollback_item(entry(&log, "undo"))
            .rollback(hook),
        )
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..4u32),
                entry(&log, "run"),
            )
            .rollback_item(entry(&log, "undo")),
        )
        .stage(Stage::new("publish", move |_| {
            ran_publish.lock().unwrap().push("run publish".to_owned());
            async { Err(StageError::critical("publish failed")) }
        }))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_rollback_cut_short_resumes_as_a_rollback_and_runs_nothing_forward() {
    // An earlier attempt completed every item, began rolling back after `publish` failed, and
    // compensated load/3 and load/2 before it was killed.
    let mut resume = Resume::default();
    resume.stage_completed("extract");
    resume.stage_completed("load");
    for item in [2, 0, 1] {
        resume.item_completed("extract", item.to_string());
    }
    for item in 0..4 {
        resume.item_completed("load", item.to_string());
    }
    resume.compensated("load", Some("3"));
    resume.compensated("load", Some("2"));
    resume.rolling_back("publish", StageError::critical("publish failed"));

    let log = Arc::new(Mutex::new(Vec::new()));
    let pipeline = compensating_pipeline(Arc::clone(&log));
    let events = Recorder::attach(&pipeline);
    let report = pipeline
        .execute_with(
            (),
            RunOptions {
                resume: Some(Arc::new(resume)),
                ..RunOptions::default()
            },
        )
        .await;

    assert_eq!(report.status, RunStatus::RolledBack);
    assert_eq!(report.error.unwrap().message(), "publish failed");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "undo load/1",
            "undo load/0",
            // extract completed 2, 0, 1 in that order: undone newest first.
            "undo extract/1",
            "undo extract/0",
            "undo extract/2",
            "undo extract",
        ],
        "what was left, newest first, and nothing forward"
    );
    assert_eq!(
        events.count(
            |k| matches!(k, EventKind::RollbackStarted { stage, .. } if &**stage == "publish")
        ),
        1
    );
    assert_eq!(
        events.count(|k| matches!(k, EventKind::StageStarted { .. })),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_after_a_resume_compensates_items_of_stages_it_skipped() {
    let mut resume = Resume::default();
    resume.stage_completed("extract");
    for item in 0..3 {
        resume.item_completed("extract", item.to_string());
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let report = compensating_pipeline(Arc::clone(&log))
        .execute_with(
            (),
            RunOptions {
                resume: Some(Arc::new(resume)),
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(report.status, RunStatus::RolledBack);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "run load/0",
            "run load/1",
            "run load/2",
            "run load/3",
            "run publish",
            "undo load/3",
            "undo load/2",
            "undo load/1",
            "undo load/0",
            "undo extract/2",
            "undo extract/1",
            "undo extract/0",
            "undo extract",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_at_least_what_the_failure_asks_for() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&starts);
    let pipeline = SelfHealingPipeline::builder()
        .stage(
            Stage::new("call", move |ctx| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push(Instant::now());
                    if ctx.attempt() == 1 {
                        Err(StageError::new("429 Too Many Requests")
                            .with_retry_after(Duration::from_secs(5)))
                    } else if ctx.attempt() == 2 {
                        // No hint: the policy's own backoff.
                        Err(StageError::new("ECONNRESET"))
                    } else {
                        Ok(())
                    }
                }
            })
            .retry_policy(quick_retries(3)),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[1] - starts[0], Duration::from_secs(5), "the hint");
    assert!(
        starts[2] - starts[1] < Duration::from_secs(1),
        "the backoff alone: {:?}",
        starts[2] - starts[1]
    );
}

#[tokio::test(start_paused = true)]
async fn time_spent_throttled_is_not_call_time_for_a_slow_call_breaker() {
    use self_healing::resilience::BreakerSettings;
    // Calls take 10 ms; a throttle of one a second keeps most items waiting far longer than
    // the slow-call threshold. Only the call itself is timed: the breaker stays closed.
    let pipeline = SelfHealingPipeline::<()>::builder()
        .circuit_breaker(BreakerSettings {
            failure_threshold: None,
            slow_call_rate_threshold: Some(50.0),
            slow_call_duration_threshold: Duration::from_millis(500),
            minimum_calls: std::num::NonZeroU32::new(2).unwrap(),
            ..BreakerSettings::default()
        })
        .stage(
            Stage::for_each("load", ItemSource::list((1..=6).collect()), |_| async {
                sleep(Duration::from_millis(10)).await;
                Ok(())
            })
            .concurrency(6),
        )
        .build()
        .unwrap();
    pipeline
        .control("load")
        .unwrap()
        .set_rate(Some(Rate::new(1.0, 1).unwrap()));
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert!(
        report.duration >= Duration::from_secs(4),
        "throttled: {report:?}"
    );
    let opened = events.pick(|k| match k {
        EventKind::BreakerChanged { to, .. } => Some(to),
        _ => None,
    });
    assert!(opened.is_empty(), "the breaker moved: {opened:?}");
}
