//! The AutoHealer on paused time: every trigger kind and every action, driven through real
//! pipelines with the seed's strategies, plus cooldown, budget and dry-run accounting.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::event::EventKind;
use self_healing::healing::{
    Action, AutoHealer, AutoHealerBuilder, CircuitBreakAction, HealingRecord, HealingStrategy,
    Mode, NotifyAction, Outcome, Remedy, RestartAction, Restore, ScaleAction, Sensitivity,
    StrategyOverride, ThrottleAction, Trigger, TriggerKind,
};
use self_healing::health::{CheckSpec, CustomCheck, HealthMonitor, HealthStatus};
use self_healing::metrics::{MetricsCollector, Scope};
use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
use self_healing::resilience::{Backoff, BreakerState, Rate, RetryPolicy};
use self_healing::{RunStatus, Severity, StageError};
use tokio::time::{Instant, sleep};

mod common;
use common::{Recorder, RecordingNotifier};

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// The seed's strategies, translated one to one.

fn retry_transient() -> HealingStrategy {
    HealingStrategy::new(
        "retry-transient",
        Action::retry(
            RetryPolicy::builder()
                .max_attempts(5)
                .backoff(Backoff::Exponential)
                .initial_delay(ms(1000))
                .max_delay(ms(30000))
                .jitter(true)
                .jitter_seed(11)
                .build()
                .unwrap(),
        ),
    )
    .priority(10)
    .trigger(
        Trigger::error()
            .pattern_str("ECONNRESET|ETIMEDOUT|ECONNREFUSED")
            .unwrap(),
    )
    .cooldown(Duration::ZERO)
}

fn circuit_breaker() -> HealingStrategy {
    HealingStrategy::new(
        "circuit-breaker",
        Action::CircuitBreak(CircuitBreakAction::new(ms(60000), 3).unwrap()),
    )
    .priority(20)
    .trigger(Trigger::metrics(
        "errorRate",
        self_healing::healing::Operator::Gt,
        0.5,
    ))
    .cooldown(ms(120000))
}

fn scale_on_latency() -> HealingStrategy {
    HealingStrategy::new(
        "scale-on-latency",
        Action::Scale(ScaleAction::up(2).max_instances(10)),
    )
    .priority(30)
    .trigger(Trigger::metrics(
        "latencyP95",
        self_healing::healing::Operator::Gt,
        5000.0,
    ))
    .cooldown(ms(300000))
}

fn rollback_critical() -> HealingStrategy {
    HealingStrategy::new("rollback-critical", Action::Rollback)
        .priority(100)
        .trigger(Trigger::error().severity(Severity::Critical))
        .trigger(Trigger::health_check(HealthStatus::Unhealthy).sustained(ms(60000)))
        .cooldown(ms(600000))
}

/// `custom-fix`: clears the dead-letter queue (here: records it empty) and retries.
fn custom_fix(fixes: Arc<AtomicU32>) -> HealingStrategy {
    HealingStrategy::new(
        "custom-fix",
        Action::custom(move |ctx| {
            let fixes = Arc::clone(&fixes);
            async move {
                fixes.fetch_add(1, Ordering::SeqCst);
                ctx.metrics
                    .record_in(Scope::Stage(&ctx.stage), "queueDepth", 0.0);
                Ok(Remedy::Retry {
                    after: Duration::ZERO,
                })
            }
        }),
    )
    .priority(50)
    .trigger(Trigger::custom("queueDepth > 10000", |ctx| {
        ctx.metric("queueDepth")
            .is_some_and(|depth| depth > 10000.0)
    }))
    .cooldown(ms(300000))
}

fn rollback_on_failure() -> HealingStrategy {
    HealingStrategy::new("rollback-on-failure", Action::Rollback)
        .trigger(Trigger::threshold("errorRate", 0.1))
        .cooldown(ms(300000))
}

/// The seed's whole strategy list from "Strategy Configuration".
fn seed_strategies(fixes: Arc<AtomicU32>) -> AutoHealerBuilder {
    AutoHealer::builder()
        .strategy(retry_transient())
        .strategy(circuit_breaker())
        .strategy(scale_on_latency())
        .strategy(rollback_critical())
        .strategy(custom_fix(fixes))
        .seed(5)
}

fn fast_metrics() -> MetricsCollector {
    MetricsCollector::builder()
        .sample_interval(SEC)
        .retention_size(1000)
        .build()
        .unwrap()
}

fn records_of(healer: &AutoHealer, strategy: &str) -> Vec<HealingRecord> {
    healer
        .history()
        .into_iter()
        .filter(|r| &*r.strategy == strategy)
        .collect()
}

fn outcomes(records: &[HealingRecord]) -> Vec<Outcome> {
    records.iter().map(|r| r.outcome).collect()
}

fn count(records: &[HealingRecord], outcome: Outcome) -> usize {
    records.iter().filter(|r| r.outcome == outcome).count()
}

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
            HealingStrategy::new("retry", Action::Retry(None))
                .priority(10)
                .trigger(Trigger::error().pattern_str("ECONNRESET").unwrap()),
        )
        .strategy(
            HealingStrategy::new("give-up", Action::Rollback)
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
                Action::Restart(RestartAction {
                    max_restarts: Some(1),
                }),
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
                Action::Notify(NotifyAction {
                    severity: Severity::Critical,
                    message: None,
                }),
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
    // Delivery runs in the background; let it finish.
    sleep(ms(1)).await;
    let alerts = notifier.alerts.lock().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert_eq!(alerts[0].dedup_key, "pipeline/migrate/page-on-anomaly");
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
async fn failover_action_switches_a_failing_stage_to_its_alternate() {
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("use-slow-validator", Action::Failover)
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
                Action::Throttle(ThrottleAction {
                    rate: Rate::new(5.0, 1).unwrap(),
                    restore: Restore::WhenHealthy,
                }),
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
async fn the_seed_strategy_list_picks_the_right_action_for_each_fault() {
    // (scenario, stage handler behaviour, the strategy that must act)
    async fn run(scenario: &str) -> (AutoHealer, RunStatus) {
        let fixes = Arc::new(AtomicU32::new(0));
        let healer = seed_strategies(fixes).build().unwrap();
        let scenario = scenario.to_owned();
        let pipeline = SelfHealingPipeline::builder()
            .supervisor(healer.clone())
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
    HealingStrategy::new("page-on-queue", Action::Notify(NotifyAction::default()))
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
    sleep(ms(1)).await;

    let records = records_of(&healer, "page-on-queue");
    // Every 7 minutes from the first tick in 3600 s: ⌈3600 / 420⌉ = 9.
    assert_eq!(count(&records, Outcome::Succeeded), 9);
    assert_eq!(notifier.alerts.lock().unwrap().len(), 9);
    assert_eq!(count(&records, Outcome::SkippedCooldown), records.len() - 9);
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
    one_hour_of_persistent_fault(&healer).await;
    sleep(ms(1)).await;

    let records = records_of(&healer, "page-on-queue");
    // 5 actions in each 7-minute window: 9 windows start within the hour.
    assert_eq!(count(&records, Outcome::Succeeded), 45);
    assert_eq!(count(&records, Outcome::SkippedBudget), records.len() - 45);
    let titles = notifier.titles();
    let budget_alerts = titles
        .iter()
        .filter(|t| t.ends_with("healing budget spent"))
        .count();
    assert_eq!(
        budget_alerts, 9,
        "one alert per exhaustion, not per skipped action"
    );
    assert_eq!(titles.len(), 45 + 9);
}

#[tokio::test(start_paused = true)]
async fn disabled_healing_and_dry_runs_record_exactly_what_would_have_happened() {
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
        sleep(ms(1)).await;

        let records = records_of(&healer, "page-on-queue");
        assert_eq!(count(&records, Outcome::WouldHave), 9, "{dry}");
        assert_eq!(count(&records, Outcome::Succeeded), 0, "{dry}");
        assert!(
            notifier.alerts.lock().unwrap().is_empty(),
            "{dry}: nothing acts"
        );
        assert_eq!(
            events.count(|k| matches!(k, EventKind::HealingApplied { .. })),
            0,
            "{dry}"
        );
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
            HealingStrategy::new("retry-it", Action::Retry(None))
                .priority(5)
                .trigger(Trigger::error()),
        )
        .strategy(
            HealingStrategy::new("roll-back-first", Action::Rollback)
                .priority(50)
                .trigger(Trigger::error()),
        )
        .strategy(
            HealingStrategy::new("tell-someone", Action::Notify(NotifyAction::default()))
                .trigger(Trigger::error()),
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
    sleep(ms(1)).await;

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
    assert_eq!(notifier.alerts.lock().unwrap().len(), 1);
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
        .strategy(HealingStrategy::new("retry", Action::Retry(None)).trigger(Trigger::error()))
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
        .strategy(HealingStrategy::new("rb", Action::Rollback).trigger(Trigger::error()))
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
        .strategy(HealingStrategy::new("x", Action::Rollback))
        .build()
        .unwrap_err();
    assert_eq!(no_trigger.field(), "strategies[0].triggers");
    let bad_scale = AutoHealer::builder()
        .strategy(
            HealingStrategy::new(
                "s",
                Action::Scale(ScaleAction::up(1).max_instances(2).min_instances(3)),
            )
            .trigger(Trigger::error()),
        )
        .build()
        .unwrap_err();
    assert_eq!(bad_scale.field(), "strategies[0].config.maxInstances");
    let healthy = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("h", Action::Rollback)
                .trigger(Trigger::health_check(HealthStatus::Healthy)),
        )
        .build()
        .unwrap_err();
    assert_eq!(healthy.field(), "strategies[0].triggers[0].status");
    let twice = AutoHealer::builder()
        .strategy(HealingStrategy::new("a", Action::Rollback).trigger(Trigger::error()))
        .strategy(HealingStrategy::new("a", Action::Rollback).trigger(Trigger::error()))
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
                Action::Scale(ScaleAction::down(3).min_instances(2).scaler(scaler.clone())),
            )
            .trigger(Trigger::threshold("queueDepth", 100.0))
            .cooldown(Duration::from_secs(3600)),
        )
        .strategy(
            HealingStrategy::new(
                "slow-down-for-a-minute",
                Action::Throttle(ThrottleAction {
                    rate: Rate::new(2.0, 1).unwrap(),
                    restore: Restore::After(Duration::from_secs(60)),
                }),
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
async fn one_healer_watches_several_pipelines_running_at_once() {
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("restart-stuck", Action::Restart(RestartAction::default()))
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
                Action::CircuitBreak(CircuitBreakAction::new(ms(1000), 1).unwrap()),
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
