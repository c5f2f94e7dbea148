//! The seed's whole strategy list against its faults, and one healer serving several runs.

use super::*;

#[tokio::test(start_paused = true)]
async fn the_seed_strategy_list_picks_the_right_action_for_each_fault() {
    // (scenario, stage handler behaviour, the strategy that must act)
    async fn run(scenario: &str) -> (AutoHealer, RunStatus) {
        let fixes = Arc::new(AtomicU32::new(0));
        let healer = seed_strategies(fixes).build().unwrap();
        let scenario = scenario.to_owned();
        let pipeline = SelfHealingPipeline::builder()
            .supervisor(healer.clone())
            .seed(5)
            .metrics(fast_metrics())
            .stage(
                Stage::for_each("stage", ItemSource::iter(|_: &()| 0..60u32), move |ctx| {
                    let scenario = scenario.clone();
                    async move {
                        match scenario.as_str() {
                            "econnreset" => {
                                sleep(ms(100)).await;
                                if *ctx.item() == 3 && ctx.attempt() == 1 {
                                    return Err(StageError::new("socket hang up: ECONNRESET"));
                                }
                            }
                            "critical" => {
                                sleep(ms(100)).await;
                                if *ctx.item() == 3 {
                                    return Err(StageError::critical(
                                        "checksum mismatch in target",
                                    ));
                                }
                            }
                            "error-rate" => {
                                sleep(ms(100)).await;
                                if *ctx.item() % 5 < 3 && ctx.attempt() == 1 {
                                    return Err(StageError::new("ETIMEDOUT"));
                                }
                            }
                            "latency" => sleep(Duration::from_secs(6)).await,
                            "queue" => {
                                if *ctx.item() == 0 {
                                    ctx.record("queueDepth", 20000.0);
                                }
                                sleep(ms(100)).await;
                            }
                            _ => unreachable!(),
                        }
                        Ok(())
                    }
                })
                .concurrency(4),
            )
            .build()
            .unwrap();
        let report = pipeline.execute(()).await;
        (healer, report.status)
    }
    let acted = |healer: &AutoHealer| -> Vec<String> {
        let mut names: Vec<String> = healer
            .history()
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .map(|r| r.strategy.to_string())
            .collect();
        names.dedup();
        names
    };

    let (healer, status) = run("econnreset").await;
    assert_eq!(
        (status, acted(&healer)),
        (RunStatus::Succeeded, vec!["retry-transient".to_owned()])
    );

    let (healer, status) = run("critical").await;
    assert_eq!(
        (status, acted(&healer)),
        (RunStatus::RolledBack, vec!["rollback-critical".to_owned()])
    );

    let (healer, status) = run("error-rate").await;
    assert_eq!(status, RunStatus::Succeeded);
    let names = acted(&healer);
    assert!(names.contains(&"circuit-breaker".to_owned()), "{names:?}");
    let observed = records_of(&healer, "circuit-breaker")[0]
        .trigger
        .observed
        .unwrap();
    assert!(observed > 0.5, "tripped at an error rate of {observed}");
    assert!(
        !names
            .iter()
            .any(|n| n == "rollback-critical" || n == "scale-on-latency"),
        "{names:?}"
    );

    let (healer, status) = run("latency").await;
    assert_eq!(
        (status, acted(&healer)),
        (RunStatus::Succeeded, vec!["scale-on-latency".to_owned()])
    );
    assert_eq!(
        records_of(&healer, "scale-on-latency")[0].trigger.observed,
        Some(6000.0)
    );

    let (healer, status) = run("queue").await;
    assert_eq!(
        (status, acted(&healer)),
        (RunStatus::Succeeded, vec!["custom-fix".to_owned()])
    );
}

#[tokio::test(start_paused = true)]
async fn one_healer_watches_several_pipelines_running_at_once() {
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("restart-stuck", RestartAction::default())
                .trigger(Trigger::timeout(Duration::from_secs(30)))
                .cooldown(Duration::from_secs(600)),
        )
        .build()
        .unwrap();
    let make = |name: &'static str| {
        let cleaned = Arc::new(AtomicBool::new(false));
        let (check, clean) = (Arc::clone(&cleaned), cleaned);
        SelfHealingPipeline::builder()
            .name(name)
            .supervisor(healer.clone())
            .stage(
                Stage::new("validation", move |_| {
                    let stuck = !check.load(Ordering::SeqCst);
                    async move {
                        sleep(Duration::from_secs(if stuck { 3600 } else { 1 })).await;
                        Ok(())
                    }
                })
                .reset(move |_| {
                    clean.store(true, Ordering::SeqCst);
                    async { Ok(()) }
                }),
            )
            .build()
            .unwrap()
    };
    let (first, second) = (make("first"), make("second"));
    let (a, b) = tokio::join!(first.execute(()), second.execute(()));

    assert_eq!(
        (a.status, b.status),
        (RunStatus::Succeeded, RunStatus::Succeeded)
    );
    assert_eq!((a.stages[0].restarts, b.stages[0].restarts), (1, 1));
    let runs: std::collections::HashSet<_> = records_of(&healer, "restart-stuck")
        .into_iter()
        .filter(|r| r.outcome == Outcome::Succeeded)
        .map(|r| r.run.unwrap())
        .collect();
    assert_eq!(
        runs.len(),
        2,
        "each run was restarted by its own evaluation"
    );
}
