//! Cooldowns, the budget, manual mode and dry runs, priorities, live configuration and validation.

use super::*;

/// A stage that holds one persistent fault (a 20000-deep queue) for one virtual hour.
async fn one_hour_of_persistent_fault(healer: &AutoHealer) -> Recorder {
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(Stage::new("migrate", |ctx| async move {
            ctx.record("queueDepth", 20000.0);
            sleep(Duration::from_secs(3600)).await;
            Ok(())
        }))
        .build()
        .unwrap();
    let events = Recorder::attach(&pipeline);
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    events
}

fn page_on_queue(cooldown: Duration) -> HealingStrategy {
    HealingStrategy::new("page-on-queue", NotifyAction::default())
        .trigger(Trigger::threshold("queueDepth", 10000.0))
        .cooldown(cooldown)
}

#[tokio::test(start_paused = true)]
async fn cooldown_allows_exactly_one_action_per_period_over_an_hour() {
    let notifier = Arc::new(RecordingNotifier::default());
    let healer = AutoHealer::builder()
        .notifier(notifier.clone())
        .strategy(page_on_queue(Duration::from_secs(7 * 60)))
        .build()
        .unwrap();
    one_hour_of_persistent_fault(&healer).await;
    healer.alerts().settle(ms(60_000)).await;

    let records = records_of(&healer, "page-on-queue");
    // Every 7 minutes from the first tick in 3600 s: ⌈3600 / 420⌉ = 9.
    assert_eq!(count(&records, Outcome::Succeeded), 9);
    assert_eq!(count(&records, Outcome::SkippedCooldown), records.len() - 9);
    // One alert, not nine: it keeps firing within the repeat interval; the run's success
    // resolves it. An hour in which no attempt finished is also a stuck run, from 30 minutes
    // on, until the run's end.
    let states = |name: &str| -> Vec<AlertStatus> {
        notifier
            .alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| &*a.name == name)
            .map(|a| a.status)
            .collect()
    };
    assert_eq!(
        states("page-on-queue"),
        [AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert_eq!(
        states(RUN_STUCK),
        [AlertStatus::Firing, AlertStatus::Resolved]
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_actions_per_window_and_alerts_once_per_exhaustion() {
    let notifier = Arc::new(RecordingNotifier::default());
    let healer = AutoHealer::builder()
        .notifier(notifier.clone())
        .budget(5, Duration::from_secs(7 * 60))
        .strategy(page_on_queue(Duration::ZERO))
        .build()
        .unwrap();
    let events = one_hour_of_persistent_fault(&healer).await;
    healer.alerts().settle(ms(60_000)).await;

    let records = records_of(&healer, "page-on-queue");
    // 5 actions in each 7-minute window: 9 windows start within the hour.
    assert_eq!(count(&records, Outcome::Succeeded), 45);
    assert_eq!(count(&records, Outcome::SkippedBudget), records.len() - 45);
    // The budget alert fires once per exhaustion (each a repeat within the repeat interval,
    // so sent once), and resolves with the run's success.
    let budget: Vec<AlertStatus> = notifier
        .alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.title.ends_with("healing budget spent"))
        .map(|a| a.status)
        .collect();
    assert_eq!(budget, [AlertStatus::Firing, AlertStatus::Resolved]);
    assert_eq!(
        events.count(|k| matches!(k, EventKind::AlertDelivered { .. })),
        3,
        "the firing group, `run-stuck` 30 minutes in and the resolved group, each one delivery to the one channel"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_mode_still_alerts_and_dry_runs_record_exactly_what_would_have_happened() {
    for dry in ["healer disabled", "strategy in dry-run"] {
        let notifier = Arc::new(RecordingNotifier::default());
        let strategy = page_on_queue(Duration::from_secs(7 * 60));
        let healer = AutoHealer::builder()
            .notifier(notifier.clone())
            .strategy(if dry == "strategy in dry-run" {
                strategy.mode(Mode::DryRun)
            } else {
                strategy
            })
            .enabled(dry != "healer disabled")
            .build()
            .unwrap();
        let events = one_hour_of_persistent_fault(&healer).await;
        healer.alerts().settle(ms(60_000)).await;

        let records = records_of(&healer, "page-on-queue");
        let applied = events.count(|k| matches!(k, EventKind::HealingApplied { .. }));
        if dry == "healer disabled" {
            // Manual mode stops remedies, not alerts: the notify strategy still acts, and
            // says so.
            assert_eq!(count(&records, Outcome::Succeeded), 9, "{dry}");
            assert!(
                records[0].detail.contains("manual mode"),
                "{:?}",
                records[0]
            );
            assert_eq!(
                notifier
                    .alerts
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| &*a.name == "page-on-queue")
                    .count(),
                2,
                "fired and resolved"
            );
            assert_eq!(applied, 9, "{dry}");
        } else {
            assert_eq!(count(&records, Outcome::WouldHave), 9, "{dry}");
            assert_eq!(count(&records, Outcome::Succeeded), 0, "{dry}");
            assert!(
                notifier
                    .alerts
                    .lock()
                    .unwrap()
                    .iter()
                    .all(|a| &*a.name == RUN_STUCK),
                "{dry}: nothing acts (a stuck run is still said)"
            );
            assert_eq!(applied, 0, "{dry}");
        }
        assert_eq!(
            events.count(|k| matches!(k, EventKind::HealingDecision { .. })),
            records.len(),
            "{dry}: every decision is on the bus"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn superseded_matches_are_recorded_and_side_actions_still_run() {
    let notifier = Arc::new(RecordingNotifier::default());
    let healer = AutoHealer::builder()
        .notifier(notifier.clone())
        .strategy(
            HealingStrategy::new("retry-it", RetryAction::global())
                .priority(5)
                .trigger(Trigger::error()),
        )
        .strategy(
            HealingStrategy::new("roll-back-first", RollbackAction)
                .priority(50)
                .trigger(Trigger::error()),
        )
        .strategy(
            HealingStrategy::new("tell-someone", NotifyAction::default()).trigger(Trigger::error()),
        )
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(Stage::new("load", |_| async {
            Err(StageError::new("boom"))
        }))
        .build()
        .unwrap();
    let report = pipeline.execute(()).await;
    healer.alerts().settle(ms(60_000)).await;

    assert_eq!(report.status, RunStatus::RolledBack);
    let summary: Vec<(String, Outcome)> = healer
        .history()
        .iter()
        .map(|r| (r.strategy.to_string(), r.outcome))
        .collect();
    assert_eq!(
        summary,
        [
            ("roll-back-first".to_owned(), Outcome::Succeeded),
            ("retry-it".to_owned(), Outcome::Superseded),
            ("tell-someone".to_owned(), Outcome::Succeeded),
        ]
    );
    // The notify strategy's alert, the rollback's own critical alert, and the run's failure.
    let mut names: Vec<String> = notifier
        .alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a.name, a.severity))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "rollback critical",
            "run-failed critical",
            "tell-someone warning"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn configure_changes_a_strategy_for_the_next_decision() {
    let healer = AutoHealer::builder()
        .retry_policy(
            RetryPolicy::builder()
                .max_attempts(2)
                .initial_delay(ms(10))
                .build()
                .unwrap(),
        )
        .strategy(HealingStrategy::new("retry", RetryAction::global()).trigger(Trigger::error()))
        .build()
        .unwrap();
    healer
        .configure(
            "retry",
            &StrategyOverride {
                max_attempts: Some(4),
                ..StrategyOverride::default()
            },
        )
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
        .stage(Stage::new("load", |ctx| async move {
            if ctx.attempt() < 4 {
                Err(StageError::new("flaky"))
            } else {
                Ok(())
            }
        }))
        .build()
        .unwrap();
    assert_eq!(pipeline.execute(()).await.status, RunStatus::Succeeded);

    let wrong = healer
        .configure("nope", &StrategyOverride::default())
        .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "invalid `strategy`: no strategy is named `nope`"
    );
    let not_retry = AutoHealer::builder()
        .strategy(HealingStrategy::new("rb", RollbackAction).trigger(Trigger::error()))
        .build()
        .unwrap()
        .configure(
            "rb",
            &StrategyOverride {
                max_attempts: Some(3),
                ..StrategyOverride::default()
            },
        )
        .unwrap_err();
    assert_eq!(not_retry.field(), "maxAttempts");
}

#[test]
fn impossible_strategies_are_rejected_with_their_path() {
    let no_trigger = AutoHealer::builder()
        .strategy(HealingStrategy::new("x", RollbackAction))
        .build()
        .unwrap_err();
    assert_eq!(no_trigger.field(), "strategies[0].triggers");
    let bad_scale = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("s", ScaleAction::up(1).max_instances(2).min_instances(3))
                .trigger(Trigger::error()),
        )
        .build()
        .unwrap_err();
    assert_eq!(bad_scale.field(), "strategies[0].config.maxInstances");
    let healthy = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("h", RollbackAction)
                .trigger(Trigger::health_check(HealthStatus::Healthy)),
        )
        .build()
        .unwrap_err();
    assert_eq!(healthy.field(), "strategies[0].triggers[0].status");
    let twice = AutoHealer::builder()
        .strategy(HealingStrategy::new("a", RollbackAction).trigger(Trigger::error()))
        .strategy(HealingStrategy::new("a", RollbackAction).trigger(Trigger::error()))
        .build()
        .unwrap_err();
    assert_eq!(twice.field(), "strategies[1].name");
    assert_eq!(
        AutoHealer::builder()
            .budget(0, SEC)
            .build()
            .unwrap_err()
            .field(),
        "budget.maxActions"
    );
    assert!(Trigger::error().pattern_str("(unclosed").is_err());
}
