//! The AutoHealer on paused time: every trigger kind and every action, driven through real
//! pipelines with the seed's strategies, plus cooldown, budget and dry-run accounting.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::alert::{AlertStatus, RUN_STUCK};
use self_healing::event::{ActionKind, EventKind};
use self_healing::healing::{
    Action, AutoHealer, AutoHealerBuilder, CircuitBreakAction, FailoverAction, HealingRecord,
    HealingStrategy, Mode, NotifyAction, Outcome, Remedy, RestartAction, Restore, RetryAction,
    RollbackAction, ScaleAction, Sensitivity, StrategyOverride, ThrottleAction, Trigger,
    TriggerKind,
};
use self_healing::health::{CheckSpec, CustomCheck, HealthMonitor, HealthStatus};
use self_healing::metrics::{MetricsCollector, Scope};
use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
use self_healing::resilience::{Backoff, BreakerState, Rate, RetryPolicy};
use self_healing::{RunStatus, Severity, StageError};
use tokio::time::{Instant, sleep};

#[path = "../common/mod.rs"]
mod common;

mod actions;
mod effectiveness;
mod gate;
mod scenarios;
mod triggers;

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
        CircuitBreakAction::new(ms(60000), 3).unwrap(),
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
    HealingStrategy::new("scale-on-latency", ScaleAction::up(2).max_instances(10))
        .priority(30)
        .trigger(Trigger::metrics(
            "latencyP95",
            self_healing::healing::Operator::Gt,
            5000.0,
        ))
        .cooldown(ms(300000))
}

fn rollback_critical() -> HealingStrategy {
    HealingStrategy::new("rollback-critical", RollbackAction)
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
    HealingStrategy::new("rollback-on-failure", RollbackAction)
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
