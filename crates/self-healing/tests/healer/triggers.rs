//! Each trigger kind, matched on a failed attempt or on the evaluation tick.

use super::*;

#[tokio::test(start_paused = true)]
async fn error_trigger_retry_heals_transient_errors_with_jittered_backoff() {
    let healer = AutoHealer::builder()
        .strategy(retry_transient())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(Stage::new("analysis", move |_| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(StageError::new("read ECONNRESET"))
                } else {
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap();
    let start = Instant::now();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.metrics.retry_count, 2);
    // Jittered exponential waits: [0.5 s, 1 s] then [1 s, 2 s].
    let waited = start.elapsed();
    assert!(waited >= ms(1500) && waited <= ms(3000), "{waited:?}");
    let records = records_of(&healer, "retry-transient");
    assert_eq!(outcomes(&records), [Outcome::Succeeded, Outcome::Succeeded]);
    assert_eq!(records[0].trigger.kind, TriggerKind::Error);
    assert!(
        records[0].detail.starts_with("attempt 2 of 5 in"),
        "{}",
        records[0].detail
    );
    assert_eq!(records[0].stage.as_deref(), Some("analysis"));
    assert!(records[0].run.is_some());
}

#[tokio::test(start_paused = true)]
async fn metrics_trigger_circuit_breaker_stops_calls_to_a_dead_downstream() {
    let healer = AutoHealer::builder()
        .strategy(retry_transient())
        .strategy(circuit_breaker())
        .build()
        .unwrap();
    let outage_ends = Instant::now() + Duration::from_secs(30);
    let calls_while_down = Arc::new(AtomicU32::new(0));
    let down = Arc::clone(&calls_while_down);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .metrics(fast_metrics())
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..40u32), move |_| {
                let down = Arc::clone(&down);
                async move {
                    sleep(ms(100)).await;
                    if Instant::now() < outage_ends {
                        down.fetch_add(1, Ordering::SeqCst);
                        return Err(StageError::new("connect ECONNREFUSED"));
                    }
                    Ok(())
                }
            })
            .concurrency(4),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let breaks = records_of(&healer, "circuit-breaker");
    assert_eq!(count(&breaks, Outcome::Succeeded), 1, "{breaks:#?}");
    let tripped = breaks
        .iter()
        .find(|r| r.outcome == Outcome::Succeeded)
        .unwrap();
    assert_eq!(tripped.trigger.kind, TriggerKind::Metrics);
    assert!(tripped.trigger.observed.unwrap() > 0.5);
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
    // Only the first second or two of the 30 s outage reached the downstream.
    let down = calls_while_down.load(Ordering::SeqCst);
    assert!(down <= 4 * 20, "{down} calls while the downstream was down");
}

#[tokio::test(start_paused = true)]
async fn metrics_trigger_scale_on_latency_respects_cooldown_and_max_instances() {
    let healer = AutoHealer::builder()
        .strategy(scale_on_latency())
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .metrics(fast_metrics())
        .stage(
            Stage::for_each(
                "generation",
                ItemSource::iter(|_: &()| 0..1500u32),
                |_| async {
                    sleep(Duration::from_secs(6)).await;
                    Ok(())
                },
            )
            .concurrency(2),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    let changes: Vec<(usize, usize)> = events.pick(|k| match k {
        EventKind::ConcurrencyChanged { from, to, .. } => Some((from, to)),
        _ => None,
    });
    assert_eq!(
        changes,
        [(2, 4), (4, 6), (6, 8), (8, 10)],
        "+2 per cooldown up to maxInstances"
    );
    let records = records_of(&healer, "scale-on-latency");
    assert_eq!(count(&records, Outcome::Succeeded), 4);
    assert!(count(&records, Outcome::SkippedCooldown) > 1000);
    let at_max = records
        .iter()
        .find(|r| r.outcome == Outcome::Failed)
        .expect("a scale past the bound");
    assert_eq!(at_max.detail, "concurrency already at its bound of 10");
    assert!(records[0].trigger.observed.unwrap() > 5000.0);
}

#[tokio::test(start_paused = true)]
async fn error_trigger_rollback_critical_compensates_in_reverse() {
    let healer = AutoHealer::builder()
        .strategy(retry_transient())
        .strategy(rollback_critical())
        .build()
        .unwrap();
    let undone = Arc::new(Mutex::new(Vec::new()));
    let u = Arc::clone(&undone);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::for_each(
                "analysis",
                ItemSource::list(vec!["a.cbl", "b.cbl"]),
                |_| async { Ok(()) },
            )
            .rollback_item(move |ctx| {
                u.lock().unwrap().push(ctx.key().to_owned());
                async { Ok(()) }
            }),
        )
        .stage(Stage::new("generation", |_| async {
            Err(StageError::critical("target schema corrupted"))
        }))
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::RolledBack);
    assert_eq!(*undone.lock().unwrap(), ["b.cbl", "a.cbl"]);
    let records = records_of(&healer, "rollback-critical");
    assert_eq!(outcomes(&records), [Outcome::Succeeded]);
    assert_eq!(records[0].trigger.kind, TriggerKind::Error);
    assert!(
        records_of(&healer, "retry-transient").is_empty(),
        "the message is not transient"
    );
}

#[tokio::test(start_paused = true)]
async fn health_check_trigger_rolls_back_after_sixty_seconds_unhealthy() {
    let healer = AutoHealer::builder()
        .strategy(rollback_critical())
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .cancel_grace(Duration::from_secs(5))
        .stage(Stage::new("validation", |_| async {
            sleep(Duration::from_secs(3600)).await;
            Ok(())
        }))
        .build()
        .unwrap();
    // The API answers until 10 s, then stops: two failed checks make it unhealthy.
    let up = Arc::new(AtomicBool::new(true));
    let answering = Arc::clone(&up);
    let monitor = HealthMonitor::builder()
        .thresholds(2, 1)
        .check(
            CheckSpec::new(
                "api-health",
                CustomCheck::new("api answers", move || {
                    let up = answering.load(Ordering::SeqCst);
                    async move { up }
                }),
            )
            .stage("validation"),
        )
        .build()
        .unwrap();
    healer.watch(&monitor);
    let probe = monitor.clone();
    tokio::spawn(async move {
        sleep(Duration::from_secs(10)).await;
        up.store(false, Ordering::SeqCst);
        probe.check_all().await;
        probe.check_all().await;
        assert_eq!(probe.status("api-health"), Some(HealthStatus::Unhealthy));
    });
    let start = Instant::now();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::RolledBack);
    assert_eq!(report.error.unwrap().code(), Some("ROLLBACK_REQUESTED"));
    // Unhealthy from 10 s; sustained 60 s; seen at the next 1 s tick; the attempt in flight
    // then gets its 5 s grace before it is abandoned.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(75) && took <= Duration::from_secs(76),
        "{took:?}"
    );
    let records = records_of(&healer, "rollback-critical");
    assert_eq!(records[0].outcome, Outcome::Succeeded);
    // While the stage winds down the trigger still matches: the cooldown holds it back.
    assert!(
        records[1..]
            .iter()
            .all(|r| r.outcome == Outcome::SkippedCooldown),
        "{records:#?}"
    );
    assert_eq!(records[0].trigger.kind, TriggerKind::HealthCheck);
    assert_eq!(records[0].trigger.index, 1);
    assert!(
        records[0].trigger.description.contains("api-health"),
        "{}",
        records[0].trigger.description
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_trigger_restarts_a_stuck_stage_after_its_reset() {
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new(
                "restart-stuck",
                RestartAction {
                    max_restarts: Some(1),
                },
            )
            .trigger(Trigger::timeout(Duration::from_secs(30))),
        )
        .build()
        .unwrap();
    let cleaned = Arc::new(AtomicBool::new(false));
    let (check, clean) = (Arc::clone(&cleaned), Arc::clone(&cleaned));
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::new("validation", move |_| {
                let stuck = !check.load(Ordering::SeqCst);
                async move {
                    sleep(if stuck {
                        Duration::from_secs(3600)
                    } else {
                        Duration::from_secs(5)
                    })
                    .await;
                    Ok(())
                }
            })
            .reset(move |_| {
                clean.store(true, Ordering::SeqCst);
                async { Ok(()) }
            }),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let start = Instant::now();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.stages[0].restarts, 1);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(31 + 5),
        "restarted at the first tick past 30 s"
    );
    let records = records_of(&healer, "restart-stuck");
    assert_eq!(outcomes(&records), [Outcome::Succeeded]);
    assert_eq!(records[0].trigger.kind, TriggerKind::Timeout);
    assert_eq!(
        events.count(|k| matches!(
            k,
            EventKind::HealingApplied {
                action: self_healing::healing::ActionKind::Restart,
                ..
            }
        )),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn anomaly_trigger_notifies_on_a_slow_outlier_but_not_before_enough_samples() {
    let notifier = Arc::new(RecordingNotifier::default());
    let healer = AutoHealer::builder()
        .notifier(notifier.clone())
        .strategy(
            HealingStrategy::new(
                "page-on-anomaly",
                NotifyAction {
                    severity: Severity::Critical,
                    message: None,
                },
            )
            .trigger(Trigger::anomaly("duration", Sensitivity::Medium).min_samples(30)),
        )
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(Stage::for_each(
            "migrate",
            ItemSource::iter(|_: &()| 0..200u32),
            |ctx| async move {
                // Items 5 and 120 are outliers; 5 comes before the trigger has 30 samples.
                let ms_ = match *ctx.item() {
                    5 | 120 => 2000,
                    n => 100 + u64::from(n % 7) * 3,
                };
                sleep(ms(ms_)).await;
                Ok(())
            },
        ))
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    let records = records_of(&healer, "page-on-anomaly");
    assert_eq!(outcomes(&records), [Outcome::Succeeded], "{records:#?}");
    assert_eq!(records[0].trigger.kind, TriggerKind::Anomaly);
    assert_eq!(records[0].trigger.observed, Some(2000.0));
    // Delivery runs in the background, after the group wait.
    healer.alerts().settle(ms(60_000)).await;
    let alerts = notifier.alerts.lock().unwrap();
    assert_eq!(
        alerts.len(),
        2,
        "fired, then resolved by the run's success: {alerts:#?}"
    );
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert_eq!(alerts[0].fingerprint(), "pipeline/migrate/page-on-anomaly");
    assert_eq!(alerts[0].value, Some(2000.0));
    assert!(alerts[1].is_resolved());
}

#[tokio::test(start_paused = true)]
async fn custom_trigger_custom_fix_drains_the_queue_once_per_cooldown() {
    let fixes = Arc::new(AtomicU32::new(0));
    let healer = AutoHealer::builder()
        .strategy(custom_fix(Arc::clone(&fixes)))
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(Stage::new("migrate", |ctx| async move {
            ctx.record("queueDepth", 20000.0);
            sleep(Duration::from_secs(10)).await;
            Ok(())
        }))
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        fixes.load(Ordering::SeqCst),
        1,
        "the fix emptied the queue, so it ran once"
    );
    let records = records_of(&healer, "custom-fix");
    assert_eq!(outcomes(&records), [Outcome::Succeeded]);
    assert_eq!(records[0].trigger.kind, TriggerKind::Custom);
}

#[tokio::test(start_paused = true)]
async fn metrics_trigger_rollback_on_failure_rolls_back_a_run_whose_error_rate_climbs() {
    let healer = AutoHealer::builder()
        .strategy(rollback_on_failure())
        .strategy(retry_transient())
        .build()
        .unwrap();
    let undone = Arc::new(AtomicU32::new(0));
    let u = Arc::clone(&undone);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .metrics(fast_metrics())
        .cancel_grace(SEC)
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..1000u32),
                |ctx| async move {
                    sleep(ms(100)).await;
                    // One item in five times out on its first attempt: an error rate near 0.17.
                    if *ctx.item() % 5 == 0 && ctx.attempt() == 1 {
                        return Err(StageError::new("ETIMEDOUT"));
                    }
                    Ok(())
                },
            )
            .concurrency(4)
            .rollback_item(move |_| {
                u.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::RolledBack);
    let records = records_of(&healer, "rollback-on-failure");
    // On a failed attempt the higher-priority retry decides and the rollback is superseded;
    // on the evaluation tick nothing outranks it and it rolls the run back.
    let (acted, rest): (Vec<_>, Vec<_>) = records
        .iter()
        .partition(|r| r.outcome == Outcome::Succeeded);
    assert_eq!(acted.len(), 1, "{records:#?}");
    assert!(
        rest.iter().all(|r| r.outcome == Outcome::Superseded),
        "{records:#?}"
    );
    assert!(acted[0].trigger.observed.unwrap() > 0.1);
    let completed = report.stages[0].items_completed;
    assert!(
        completed > 0 && completed < 1000,
        "stopped early: {completed}"
    );
    assert_eq!(
        u64::from(undone.load(Ordering::SeqCst)),
        completed,
        "every completed item compensated"
    );
}

#[tokio::test(start_paused = true)]
async fn a_metric_sample_gone_stale_does_not_trigger_again_after_cooldown() {
    // A burst of failures makes one errorRate sample of 1.0; then the stage goes on slowly and
    // successfully, with too few attempts an interval for a new sample. Once the cooldown is
    // over, the old sample is no evidence of anything: the strategy must not act on it again.
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new(
                "retry",
                Action::retry(
                    RetryPolicy::builder()
                        .max_attempts(50)
                        .initial_delay(ms(10))
                        .build()
                        .unwrap(),
                ),
            )
            .trigger(Trigger::error()),
        )
        .strategy(
            HealingStrategy::new(
                "circuit-breaker",
                CircuitBreakAction::new(ms(1000), 1).unwrap(),
            )
            .priority(20)
            .trigger(Trigger::metrics(
                "errorRate",
                self_healing::healing::Operator::Gt,
                0.5,
            ))
            .cooldown(ms(3000)),
        )
        .build()
        .unwrap();
    let start = Instant::now();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .metrics(fast_metrics())
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..6u32),
                move |_| async move {
                    if start.elapsed() < ms(900) {
                        sleep(ms(50)).await;
                        return Err(StageError::new("ECONNREFUSED"));
                    }
                    sleep(ms(10_000)).await;
                    Ok(())
                },
            )
            .concurrency(4),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert!(
        report.duration > ms(15_000),
        "long enough for several cooldowns"
    );
    let breaks = records_of(&healer, "circuit-breaker");
    assert_eq!(count(&breaks, Outcome::Succeeded), 1, "{breaks:#?}");
}

#[test]
fn a_custom_trigger_may_call_back_into_the_healer() {
    // The predicate reads the history, the budget and the strategies, and reconfigures its own
    // strategy: none of it may wait on a lock the healer holds while it evaluates triggers.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let calls = runtime.block_on(async {
            let me: Arc<std::sync::OnceLock<AutoHealer>> = Arc::default();
            let inside = Arc::clone(&me);
            let calls = Arc::new(AtomicU32::new(0));
            let counted = Arc::clone(&calls);
            let healer = AutoHealer::builder()
                .budget(100, Duration::from_secs(60))
                .strategy(
                    HealingStrategy::new("look-inside", RetryAction::global()).trigger(
                        Trigger::custom("reentrant", move |_| {
                            let healer = inside.get().expect("set before the run");
                            let _ = (healer.history(), healer.budget(), healer.strategies());
                            healer
                                .configure(
                                    "look-inside",
                                    &StrategyOverride {
                                        priority: Some(1),
                                        ..StrategyOverride::default()
                                    },
                                )
                                .unwrap();
                            counted.fetch_add(1, Ordering::SeqCst);
                            true
                        }),
                    ),
                )
                .build()
                .unwrap();
            me.set(healer.clone()).unwrap();
            let flaky = Arc::new(AtomicU32::new(0));
            let pipeline = healer
                .install(SelfHealingPipeline::builder())
                .stage(Stage::new("load", move |_| {
                    let n = flaky.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n == 0 {
                            Err(StageError::new("once"))
                        } else {
                            Ok(())
                        }
                    }
                }))
                .build()
                .unwrap();
            assert_eq!(pipeline.execute(()).await.status, RunStatus::Succeeded);
            calls.load(Ordering::SeqCst)
        });
        done.send(calls).unwrap();
    });
    let calls = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the run finished: a predicate calling the healer did not deadlock it");
    assert!(calls >= 1, "the predicate ran");
}
