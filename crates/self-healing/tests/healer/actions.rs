//! What each action does to a running pipeline.

use super::*;

#[tokio::test(start_paused = true)]
async fn exhausted_retries_are_dispatched_again_so_a_rollback_takes_over() {
    let healer = AutoHealer::builder()
        .retry_policy(
            RetryPolicy::builder()
                .max_attempts(3)
                .initial_delay(ms(10))
                .build()
                .unwrap(),
        )
        .strategy(
            HealingStrategy::new("retry", RetryAction::global())
                .priority(10)
                .trigger(Trigger::error().pattern_str("ECONNRESET").unwrap()),
        )
        .strategy(
            HealingStrategy::new("give-up", RollbackAction)
                .priority(1)
                .trigger(Trigger::error().exhausted(true)),
        )
        .build()
        .unwrap();
    let undone = Arc::new(AtomicBool::new(false));
    let u = Arc::clone(&undone);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::new("extract", |_| async { Ok(()) }).rollback(move |_| {
                u.store(true, Ordering::SeqCst);
                async { Ok(()) }
            }),
        )
        .stage(Stage::new("load", |_| async {
            Err(StageError::new("ECONNRESET"))
        }))
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::RolledBack);
    assert!(undone.load(Ordering::SeqCst));
    let history = healer.history();
    let summary: Vec<(&str, Outcome)> = history.iter().map(|r| (&*r.strategy, r.outcome)).collect();
    assert_eq!(
        summary,
        [
            ("retry", Outcome::Succeeded),
            ("retry", Outcome::Succeeded),
            ("retry", Outcome::Failed),
            ("give-up", Outcome::Succeeded),
        ]
    );
    assert_eq!(history[2].detail, "retries exhausted after 3 attempt(s)");
}

#[tokio::test(start_paused = true)]
async fn failover_action_switches_a_failing_stage_to_its_alternate() {
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("use-slow-validator", FailoverAction)
                .trigger(Trigger::error().code("VALIDATOR_DOWN")),
        )
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::for_each(
                "validation",
                ItemSource::iter(|_: &()| 0..5u32),
                |_| async {
                    Err(StageError::new("fast validator unreachable").with_code("VALIDATOR_DOWN"))
                },
            )
            .failover(|_| async { Ok(()) }),
        )
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        outcomes(&records_of(&healer, "use-slow-validator")),
        [Outcome::Succeeded]
    );
    assert!(pipeline.control("validation").unwrap().is_failed_over());
}

#[tokio::test(start_paused = true)]
async fn throttle_action_caps_the_rate_and_restores_it_once_healthy() {
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new(
                "ease-off",
                ThrottleAction::new(Rate::new(5.0, 1).unwrap(), Restore::WhenHealthy),
            )
            .trigger(Trigger::threshold("errorRate", 0.3)),
        )
        .strategy(retry_transient())
        .build()
        .unwrap();
    let overloaded_until = Instant::now() + Duration::from_secs(5);
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .metrics(fast_metrics())
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..300u32),
                move |_| async move {
                    sleep(ms(50)).await;
                    if Instant::now() < overloaded_until {
                        Err(StageError::new("ETIMEDOUT: target overloaded"))
                    } else {
                        Ok(())
                    }
                },
            )
            .concurrency(4),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let rates: Vec<Option<f64>> = events.pick(|k| match k {
        EventKind::ThrottleChanged { rate, .. } => Some(rate),
        _ => None,
    });
    assert_eq!(rates.first(), Some(&Some(5.0)), "{rates:?}");
    assert_eq!(
        rates.last(),
        Some(&None),
        "restored once the error rate fell: {rates:?}"
    );
    assert!(count(&records_of(&healer, "ease-off"), Outcome::Succeeded) >= 1);
}

/// Records what an external scaler is asked to do.
#[derive(Default)]
struct RecordingScaler(Mutex<Vec<(String, usize, usize)>>);

impl self_healing::healing::Scaler for RecordingScaler {
    fn scale<'a>(
        &'a self,
        stage: &'a str,
        from: usize,
        to: usize,
    ) -> self_healing::BoxFuture<'a, Result<(), StageError>> {
        self.0.lock().unwrap().push((stage.to_owned(), from, to));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn an_external_scaler_follows_scale_and_a_timed_throttle_lifts_itself() {
    let scaler = Arc::new(RecordingScaler::default());
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new(
                "scale-down-when-deep",
                ScaleAction::down(3).min_instances(2).scaler(scaler.clone()),
            )
            .trigger(Trigger::threshold("queueDepth", 100.0))
            .cooldown(Duration::from_secs(3600)),
        )
        .strategy(
            HealingStrategy::new(
                "slow-down-for-a-minute",
                ThrottleAction::new(
                    Rate::new(2.0, 1).unwrap(),
                    Restore::After(Duration::from_secs(60)),
                ),
            )
            .trigger(Trigger::threshold("queueDepth", 100.0))
            .cooldown(Duration::from_secs(3600)),
        )
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..4000u32),
                |ctx| async move {
                    if *ctx.item() == 0 {
                        ctx.record("queueDepth", 500.0);
                    }
                    sleep(ms(10)).await;
                    Ok(())
                },
            )
            .concurrency(8),
        )
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let start = Instant::now();
    let report = pipeline.execute(()).await;

    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(*scaler.0.lock().unwrap(), [("load".to_owned(), 8, 5)]);
    assert_eq!(pipeline.control("load").unwrap().concurrency(), 5);
    let rates: Vec<Option<f64>> = events.pick(|k| match k {
        EventKind::ThrottleChanged { rate, .. } => Some(rate),
        _ => None,
    });
    assert_eq!(rates, [Some(2.0), None], "capped, then lifted after 60 s");
    // 800 items/s until the tick at 1 s; 2/s for the throttled minute; then the remaining
    // ~3080 items five at a time, 10 ms each: about 67 s in all.
    let took = start.elapsed();
    assert!(
        took > Duration::from_secs(66) && took < Duration::from_secs(69),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_operators_action_goes_through_the_healer_and_its_history() {
    let healer = AutoHealer::builder()
        .enabled(false) // manual mode: strategies stand still, operators still act
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let pipeline = Arc::new(
        healer
            .install(SelfHealingPipeline::builder())
            .stage(Stage::new("load", |_| async { Ok(()) }))
            .stage(
                Stage::new("migrate", move |_| {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n == 0 {
                            sleep(Duration::from_secs(3600)).await; // stuck until restarted
                        }
                        Ok(())
                    }
                })
                .reset(|_| async { Ok(()) }),
            )
            .build()
            .unwrap(),
    );
    let recorder = Recorder::attach(&pipeline);
    let running = Arc::clone(&pipeline);
    let run = tokio::spawn(async move { running.execute(()).await });
    sleep(Duration::from_secs(5)).await;
    let run_id = pipeline.current_run().unwrap();

    let idle = healer
        .trigger(&run_id, "load", ActionKind::Restart, "by hand")
        .await;
    assert_eq!(
        (idle.outcome, idle.strategy.as_ref()),
        (Outcome::Failed, "manual")
    );
    assert!(idle.detail.contains("not running"), "{}", idle.detail);
    let unknown = healer
        .trigger(&run_id, "lod", ActionKind::Restart, "by hand")
        .await;
    assert!(
        unknown.detail.contains("no stage `lod`") && unknown.detail.contains("load, migrate"),
        "{}",
        unknown.detail
    );
    let restart = healer
        .trigger(&run_id, "migrate", ActionKind::Restart, "request 7")
        .await;
    assert_eq!(restart.outcome, Outcome::Succeeded, "{restart:?}");
    assert_eq!(restart.trigger.kind, TriggerKind::Manual);
    assert_eq!(restart.trigger.description, "request 7");

    let report = run.await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
    let manual: Vec<Outcome> = healer
        .history()
        .iter()
        .filter(|r| &*r.strategy == "manual")
        .map(|r| r.outcome)
        .collect();
    assert_eq!(
        manual,
        [Outcome::Failed, Outcome::Failed, Outcome::Succeeded]
    );
    let decisions = recorder.count(|k| matches!(k, EventKind::HealingDecision { .. }));
    assert_eq!(decisions, 3, "each is on the bus for the journal");
    let applied = recorder.pick(|k| match k {
        EventKind::HealingApplied { action, detail, .. } => Some((action, detail)),
        _ => None,
    });
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(applied[0].1.contains("request 7"), "{applied:?}");
}
