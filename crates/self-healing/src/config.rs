//! The seed's healing configuration as data: strategies, triggers, action configs, the global
//! `retryPolicy` and `circuitBreaker`, `metricsCollector` settings and the healing budget.
//!
//! Keys are the seed's own (`maxAttempts`, `initialDelay`, `breakDuration`, `halfOpenRequests`…),
//! so its examples carry over line for line; a duration is integer milliseconds or a string such
//! as `"10s"`. Unknown keys are errors, and so are keys that belong to another action or trigger.
//! Each value [`build`](StrategyConfig::build)s its runtime object and names the setting at fault
//! when it cannot.
//!
//! What the Rust API takes as a closure, a file gives as a command (argv, no shell): a `custom`
//! trigger matches while its command's latest run exited 0, a `custom` action runs its command and
//! retries the failed work if it exits 0, and `scale` may call a `command` as its external scaler.
//! Each command gets `MIGRATIONPILOT_STAGE`, `MIGRATIONPILOT_STRATEGY` and, where they apply,
//! `MIGRATIONPILOT_ITEM`, `MIGRATIONPILOT_ERROR`, `MIGRATIONPILOT_FROM`, `MIGRATIONPILOT_TO`.
//!
//! ```
//! use self_healing::config::StrategyConfig;
//!
//! let strategy: StrategyConfig = serde_json::from_str(r#"{
//!     "name": "circuit-breaker",
//!     "priority": 20,
//!     "triggers": [{"type": "metrics", "metric": "errorRate", "operator": "gt", "value": 0.5}],
//!     "action": "circuit-break",
//!     "config": {"breakDuration": 60000, "halfOpenRequests": 3},
//!     "cooldown": "2m"
//! }"#)?;
//! let strategy = strategy.build(&[])?;
//! assert_eq!(strategy.settings().cooldown, std::time::Duration::from_secs(120));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

pub use crate::error::did_you_mean;
use crate::error::{InvalidConfig, Severity, StageError};
use crate::event::{ActionKind, HealthStatus};
use crate::healing::{
    Action, CircuitBreakAction, FailoverAction, HealingStrategy, Mode, NotifyAction, Operator,
    RestartAction, Restore, RetryAction, RollbackAction, ScaleAction, ScaleDirection, Scaler,
    Sensitivity, ThrottleAction, Trigger,
};
use crate::metrics::{BUILT_IN, MetricsCollector};
use crate::pipeline::Remedy;
use crate::resilience::{Backoff, BreakerSettings, Rate, RetryPolicy};

use crate::duration::option::deserialize as opt_duration;

/// The seed's `retryPolicy` (also the `config` of a `retry` strategy).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicyConfig {
    pub max_attempts: Option<u32>,
    pub backoff: Option<Backoff>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub initial_delay: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_delay: Option<Duration>,
    pub jitter: Option<bool>,
    #[serde(default)]
    pub retryable_errors: Vec<String>,
}

impl RetryPolicyConfig {
    /// Unset keys take their value from `base` (the global policy, or the defaults).
    pub fn build(&self, base: &RetryPolicy) -> Result<RetryPolicy, InvalidConfig> {
        let mut builder = RetryPolicy::builder()
            .max_attempts(self.max_attempts.unwrap_or(base.max_attempts()))
            .backoff(self.backoff.unwrap_or(base.backoff()))
            .initial_delay(self.initial_delay.unwrap_or(base.initial_delay()))
            .max_delay(self.max_delay.unwrap_or(base.max_delay()))
            .jitter(self.jitter.unwrap_or(base.jitter()));
        for pattern in &self.retryable_errors {
            builder = builder.retryable_pattern(pattern.clone());
        }
        builder.build()
    }
}

/// The seed's `circuitBreaker`: `timeout` is the seed's name for `breakDuration`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    #[serde(default, alias = "breakDuration", deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    pub half_open_requests: Option<u32>,
}

fn yes() -> bool {
    true
}

impl CircuitBreakerConfig {
    /// `None` when disabled.
    pub fn build(&self) -> Result<Option<BreakerSettings>, InvalidConfig> {
        if !self.enabled {
            return Ok(None);
        }
        let defaults = BreakerSettings::default();
        let positive = |field: &'static str, value: Option<u32>, default: NonZeroU32| match value {
            Some(v) => {
                NonZeroU32::new(v).ok_or_else(|| InvalidConfig::new(field, "must be at least 1"))
            }
            None => Ok(default),
        };
        let half_open_requests = positive(
            "halfOpenRequests",
            self.half_open_requests,
            defaults.half_open_requests,
        )?;
        let settings = BreakerSettings {
            failure_threshold: Some(positive(
                "failureThreshold",
                self.failure_threshold,
                defaults
                    .failure_threshold
                    .expect("the default opens on failures"),
            )?),
            success_threshold: positive(
                "successThreshold",
                self.success_threshold,
                half_open_requests,
            )?,
            break_duration: self.timeout.unwrap_or(defaults.break_duration),
            half_open_requests,
        };
        settings.validate()?;
        Ok(Some(settings))
    }
}

/// The seed's `metricsCollector`, plus `errorRateMinAttempts`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsCollectorConfig {
    #[serde(default, deserialize_with = "opt_duration")]
    pub sample_interval: Option<Duration>,
    pub retention_size: Option<usize>,
    pub error_rate_min_attempts: Option<u64>,
    #[serde(default)]
    pub metrics: Vec<String>,
}

impl MetricsCollectorConfig {
    pub fn build(&self) -> Result<MetricsCollector, InvalidConfig> {
        let mut builder = MetricsCollector::builder().metrics(self.metrics.clone());
        if let Some(interval) = self.sample_interval {
            builder = builder.sample_interval(interval);
        }
        if let Some(retention) = self.retention_size {
            builder = builder.retention_size(retention);
        }
        if let Some(attempts) = self.error_rate_min_attempts {
            builder = builder.error_rate_min_attempts(attempts);
        }
        builder.build()
    }

    /// The metric names triggers may use: the built-ins and the declared ones.
    pub fn known_metrics(&self) -> Vec<String> {
        BUILT_IN
            .iter()
            .map(|m| m.to_string())
            .chain(self.metrics.iter().cloned())
            .collect()
    }
}

/// The global healing budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetConfig {
    pub max_actions: u32,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub window: Duration,
}

/// One trigger, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TriggerConfig {
    Error {
        pattern: Option<String>,
        severity: Option<Severity>,
        code: Option<String>,
        exhausted: Option<bool>,
    },
    Metrics {
        metric: String,
        operator: Option<Operator>,
        value: Option<f64>,
        threshold: Option<f64>,
        #[serde(default, deserialize_with = "opt_duration")]
        duration: Option<Duration>,
    },
    #[serde(rename_all = "camelCase")]
    HealthCheck {
        status: HealthStatus,
        check: Option<String>,
        #[serde(default, deserialize_with = "opt_duration")]
        duration: Option<Duration>,
    },
    Timeout {
        #[serde(deserialize_with = "crate::duration::deserialize")]
        threshold: Duration,
    },
    #[serde(rename_all = "camelCase")]
    Anomaly {
        metric: String,
        #[serde(default)]
        sensitivity: Sensitivity,
        min_samples: Option<usize>,
    },
    Custom {
        command: Vec<String>,
    },
}

impl TriggerConfig {
    /// `metrics` are the names a trigger may refer to (see
    /// [`MetricsCollectorConfig::known_metrics`]); an empty list accepts any name.
    pub fn build(&self, metrics: &[String]) -> Result<Trigger, InvalidConfig> {
        let known = |metric: &str| {
            if metrics.is_empty() || metrics.iter().any(|m| m == metric) {
                Ok(())
            } else {
                Err(InvalidConfig::new(
                    "metric",
                    format!(
                        "`{metric}` is not a known metric{}; declare it in metricsCollector.metrics or use one of {}",
                        did_you_mean(metric, metrics.iter().map(String::as_str)),
                        metrics.join(", ")
                    ),
                ))
            }
        };
        let trigger = match self {
            TriggerConfig::Error {
                pattern,
                severity,
                code,
                exhausted,
            } => {
                let mut t = Trigger::error();
                if let Some(pattern) = pattern {
                    t = t.pattern_str(pattern)?;
                }
                if let Some(severity) = severity {
                    t = t.severity(*severity);
                }
                if let Some(code) = code {
                    t = t.code(code.as_str());
                }
                if let Some(exhausted) = exhausted {
                    t = t.exhausted(*exhausted);
                }
                t.into()
            }
            TriggerConfig::Metrics {
                metric,
                operator,
                value,
                threshold,
                duration,
            } => {
                known(metric)?;
                let (operator, value) = match (operator, value, threshold) {
                    (None, None, Some(threshold)) => (Operator::Gt, *threshold),
                    (operator, Some(value), None) => (operator.unwrap_or(Operator::Gt), *value),
                    (Some(_), None, Some(_)) => {
                        return Err(InvalidConfig::new(
                            "threshold",
                            "`threshold` is the short form of `operator: gt`: give `value` with an operator",
                        ));
                    }
                    (_, Some(_), Some(_)) => {
                        return Err(InvalidConfig::new(
                            "threshold",
                            "give `value` or `threshold`, not both",
                        ));
                    }
                    (_, None, None) => {
                        return Err(InvalidConfig::new(
                            "value",
                            "a metrics trigger needs `value` or `threshold`",
                        ));
                    }
                };
                let mut t = Trigger::metrics(metric.as_str(), operator, value);
                if let Some(duration) = duration {
                    t = t.sustained(*duration);
                }
                t.into()
            }
            TriggerConfig::HealthCheck {
                status,
                check,
                duration,
            } => {
                let mut t = Trigger::health_check(*status);
                if let Some(check) = check {
                    t = t.check(check.as_str());
                }
                if let Some(duration) = duration {
                    t = t.sustained(*duration);
                }
                t.into()
            }
            TriggerConfig::Timeout { threshold } => Trigger::timeout(*threshold).into(),
            TriggerConfig::Anomaly {
                metric,
                sensitivity,
                min_samples,
            } => {
                known(metric)?;
                let mut t = Trigger::anomaly(metric.as_str(), *sensitivity);
                if let Some(samples) = min_samples {
                    t = t.min_samples(*samples);
                }
                t.into()
            }
            TriggerConfig::Custom { command } => command_trigger(command)?,
        };
        trigger.validate()?;
        Ok(trigger)
    }
}

/// One strategy, with the seed's keys. `config` holds the action's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyConfig {
    pub name: String,
    #[serde(default)]
    pub priority: i64,
    pub triggers: Vec<TriggerConfig>,
    pub action: String,
    #[serde(default)]
    pub config: ActionConfig,
    #[serde(default, deserialize_with = "opt_duration")]
    pub cooldown: Option<Duration>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Mode,
}

/// Every key an action's `config` may have; [`StrategyConfig::build`] checks which apply to its
/// action.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionConfig {
    // retry
    pub max_attempts: Option<u32>,
    pub backoff: Option<Backoff>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub initial_delay: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_delay: Option<Duration>,
    pub jitter: Option<bool>,
    pub retryable_errors: Option<Vec<String>>,
    // rollback
    pub strategy: Option<String>,
    // restart
    pub max_restarts: Option<u32>,
    // scale
    pub direction: Option<ScaleDirection>,
    pub amount: Option<usize>,
    pub max_instances: Option<usize>,
    pub min_instances: Option<usize>,
    // circuit-break
    #[serde(default, deserialize_with = "opt_duration")]
    pub break_duration: Option<Duration>,
    pub half_open_requests: Option<u32>,
    pub success_threshold: Option<u32>,
    // throttle
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub restore_after: Option<Duration>,
    pub restore_when_healthy: Option<bool>,
    // notify
    pub severity: Option<Severity>,
    pub message: Option<String>,
    // custom, and scale's external scaler
    pub command: Option<Vec<String>>,
}

impl ActionConfig {
    fn given(&self) -> Vec<&'static str> {
        let keys: [(&'static str, bool); 22] = [
            ("maxAttempts", self.max_attempts.is_some()),
            ("backoff", self.backoff.is_some()),
            ("initialDelay", self.initial_delay.is_some()),
            ("maxDelay", self.max_delay.is_some()),
            ("jitter", self.jitter.is_some()),
            ("retryableErrors", self.retryable_errors.is_some()),
            ("strategy", self.strategy.is_some()),
            ("maxRestarts", self.max_restarts.is_some()),
            ("direction", self.direction.is_some()),
            ("amount", self.amount.is_some()),
            ("maxInstances", self.max_instances.is_some()),
            ("minInstances", self.min_instances.is_some()),
            ("breakDuration", self.break_duration.is_some()),
            ("halfOpenRequests", self.half_open_requests.is_some()),
            ("successThreshold", self.success_threshold.is_some()),
            ("rate", self.rate.is_some()),
            ("burst", self.burst.is_some()),
            ("restoreAfter", self.restore_after.is_some()),
            ("restoreWhenHealthy", self.restore_when_healthy.is_some()),
            ("severity", self.severity.is_some()),
            ("message", self.message.is_some()),
            ("command", self.command.is_some()),
        ];
        keys.iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| *key)
            .collect()
    }
}

/// The `config` keys each action takes.
fn keys_of(action: ActionKind) -> &'static [&'static str] {
    match action {
        ActionKind::Retry => &[
            "maxAttempts",
            "backoff",
            "initialDelay",
            "maxDelay",
            "jitter",
            "retryableErrors",
        ],
        ActionKind::Rollback => &["strategy"],
        ActionKind::Restart => &["maxRestarts"],
        ActionKind::Scale => &[
            "direction",
            "amount",
            "maxInstances",
            "minInstances",
            "command",
        ],
        ActionKind::Failover => &[],
        ActionKind::CircuitBreak => &["breakDuration", "halfOpenRequests", "successThreshold"],
        ActionKind::Throttle => &["rate", "burst", "restoreAfter", "restoreWhenHealthy"],
        ActionKind::Notify => &["severity", "message"],
        ActionKind::Custom => &["command"],
    }
}

impl StrategyConfig {
    /// Builds the strategy. `metrics` are the names its triggers may use (empty: any).
    pub fn build(&self, metrics: &[String]) -> Result<HealingStrategy, InvalidConfig> {
        let kind: ActionKind = self.action.parse().map_err(|e: InvalidConfig| {
            InvalidConfig::new(
                "action",
                format!(
                    "{}{}",
                    e.reason(),
                    did_you_mean(&self.action, ActionKind::ALL.iter().map(|a| a.as_str()))
                ),
            )
        })?;
        let allowed = keys_of(kind);
        if let Some(key) = self
            .config
            .given()
            .into_iter()
            .find(|k| !allowed.contains(k))
        {
            let takes = if allowed.is_empty() {
                "no config".to_owned()
            } else {
                allowed.join(", ")
            };
            return Err(InvalidConfig::new(
                format!("config.{key}"),
                format!("does not apply to {kind} (it takes {takes})"),
            ));
        }
        let action = self.action(kind).map_err(|e| e.within("config"))?;
        let mut strategy = HealingStrategy::new(self.name.as_str(), action)
            .priority(self.priority)
            .enabled(self.enabled)
            .mode(self.mode)
            .cooldown(self.cooldown.unwrap_or_default());
        for (i, trigger) in self.triggers.iter().enumerate() {
            strategy = strategy.trigger(
                trigger
                    .build(metrics)
                    .map_err(|e| e.within(format!("triggers[{i}]")))?,
            );
        }
        strategy.validate()?;
        Ok(strategy)
    }

    fn action(&self, kind: ActionKind) -> Result<Action, InvalidConfig> {
        let c = &self.config;
        Ok(match kind {
            ActionKind::Retry => {
                let given = RetryPolicyConfig {
                    max_attempts: c.max_attempts,
                    backoff: c.backoff,
                    initial_delay: c.initial_delay,
                    max_delay: c.max_delay,
                    jitter: c.jitter,
                    retryable_errors: c.retryable_errors.clone().unwrap_or_default(),
                };
                if given == RetryPolicyConfig::default() {
                    RetryAction::global().into() // the global retryPolicy
                } else {
                    Action::retry(given.build(&RetryPolicy::default())?)
                }
            }
            ActionKind::Rollback => match c.strategy.as_deref() {
                None | Some("immediate") => RollbackAction.into(),
                Some(other) => {
                    return Err(InvalidConfig::new(
                        "strategy",
                        format!(
                            "`{other}` is not a rollback strategy: the one there is, is `immediate`"
                        ),
                    ));
                }
            },
            ActionKind::Restart => RestartAction {
                max_restarts: c.max_restarts,
            }
            .into(),
            ActionKind::Scale => {
                let amount = c.amount.unwrap_or(1);
                let mut scale = match c.direction.unwrap_or_default() {
                    ScaleDirection::Up => ScaleAction::up(amount),
                    ScaleDirection::Down => ScaleAction::down(amount),
                };
                if let Some(max) = c.max_instances {
                    scale = scale.max_instances(max);
                }
                if let Some(min) = c.min_instances {
                    scale = scale.min_instances(min);
                }
                if let Some(command) = &c.command {
                    scale = scale.scaler(Arc::new(CommandScaler::new(command)?));
                }
                scale.into()
            }
            ActionKind::Failover => FailoverAction.into(),
            ActionKind::CircuitBreak => {
                let mut action = CircuitBreakAction::new(
                    c.break_duration.unwrap_or(Duration::from_secs(60)),
                    c.half_open_requests.unwrap_or(3),
                )?;
                if let Some(successes) = c.success_threshold {
                    action.success_threshold =
                        Some(NonZeroU32::new(successes).ok_or_else(|| {
                            InvalidConfig::new("successThreshold", "must be at least 1")
                        })?);
                }
                action.into()
            }
            ActionKind::Throttle => {
                let rate = c.rate.ok_or_else(|| {
                    InvalidConfig::new("rate", "throttle needs a `rate` (permits per second)")
                })?;
                let restore = match (c.restore_after, c.restore_when_healthy) {
                    (Some(_), Some(true)) => {
                        return Err(InvalidConfig::new(
                            "restoreAfter",
                            "give `restoreAfter` or `restoreWhenHealthy`, not both",
                        ));
                    }
                    (Some(after), _) => Restore::After(after),
                    (None, Some(true)) => Restore::WhenHealthy,
                    (None, _) => Restore::Never,
                };
                ThrottleAction::new(Rate::new(rate, c.burst.unwrap_or(1))?, restore).into()
            }
            ActionKind::Notify => NotifyAction {
                severity: c.severity.unwrap_or(Severity::Warning),
                message: c.message.clone(),
            }
            .into(),
            ActionKind::Custom => {
                let command = c.command.as_ref().ok_or_else(|| {
                    InvalidConfig::new("command", "a custom action in a file runs a `command`")
                })?;
                command_action(command)?
            }
        })
    }
}

fn check_argv(command: &[String]) -> Result<(), InvalidConfig> {
    if command.first().is_none_or(|p| p.is_empty()) {
        return Err(InvalidConfig::new("command", "needs a program to run"));
    }
    Ok(())
}

/// Runs a file's command (see [`crate::process::run`]) with owned environment values.
async fn run_command(argv: &[String], env: &[(&str, String)]) -> Result<(), StageError> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::process::run(argv, &env, None).await
}

/// A `custom` trigger from a file: the command runs in the background at each evaluation (one
/// run at a time) and the trigger matches while its latest run exited 0.
fn command_trigger(command: &[String]) -> Result<Trigger, InvalidConfig> {
    check_argv(command)?;
    let argv: Arc<[String]> = command.into();
    let latest = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    let name = format!("command {}", argv[0]);
    Ok(Trigger::custom(name, move |ctx| {
        if !running.swap(true, Ordering::AcqRel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (argv, latest, running) =
                (Arc::clone(&argv), Arc::clone(&latest), Arc::clone(&running));
            let stage = ctx.stage().to_owned();
            runtime.spawn(async move {
                let ok = run_command(&argv, &[("MIGRATIONPILOT_STAGE", stage)])
                    .await
                    .is_ok();
                latest.store(ok, Ordering::Release);
                running.store(false, Ordering::Release);
            });
        }
        latest.load(Ordering::Acquire)
    })
    .into())
}

/// A `custom` action from a file: runs the command; exit 0 retries the failed work at once.
fn command_action(command: &[String]) -> Result<Action, InvalidConfig> {
    check_argv(command)?;
    let argv: Arc<[String]> = command.into();
    Ok(Action::custom(move |ctx| {
        let argv = Arc::clone(&argv);
        async move {
            let mut env = vec![
                ("MIGRATIONPILOT_STAGE", ctx.stage.to_string()),
                ("MIGRATIONPILOT_STRATEGY", ctx.strategy.to_string()),
            ];
            if let Some(item) = &ctx.item {
                env.push(("MIGRATIONPILOT_ITEM", item.to_string()));
            }
            if let Some(error) = &ctx.error {
                env.push(("MIGRATIONPILOT_ERROR", error.message().to_owned()));
            }
            run_command(&argv, &env).await?;
            Ok(Remedy::Retry {
                after: Duration::ZERO,
            })
        }
    }))
}

/// An external scaler that runs a command with the old and new concurrency.
struct CommandScaler {
    argv: Vec<String>,
}

impl CommandScaler {
    fn new(command: &[String]) -> Result<Self, InvalidConfig> {
        check_argv(command)?;
        Ok(CommandScaler {
            argv: command.to_vec(),
        })
    }
}

impl Scaler for CommandScaler {
    fn scale<'a>(
        &'a self,
        stage: &'a str,
        from: usize,
        to: usize,
    ) -> crate::BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            run_command(
                &self.argv,
                &[
                    ("MIGRATIONPILOT_STAGE", stage.to_owned()),
                    ("MIGRATIONPILOT_FROM", from.to_string()),
                    ("MIGRATIONPILOT_TO", to.to_string()),
                ],
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests;
