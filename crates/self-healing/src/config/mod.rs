//! The seed's healing configuration as data: strategies, triggers, action configs, the global
//! `retryPolicy` and `circuitBreaker`, `metricsCollector` settings and the healing budget, and
//! the whole section, [`HealingConfig`], which builds the healer, the collector and the health
//! monitor from them.
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

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

mod healing;

pub use crate::error::{did_you_mean, no_such};
pub use crate::resilience::RetryPolicyConfig;
pub use healing::{
    AlertThresholdConfig, AlertsConfig, BuildCheck, Healing, HealingConfig, HealthMonitorConfig,
    ThresholdsConfig,
};

use crate::de::{
    Registration, Tagged, deserialize_tagged, deserialize_variant, list, tagged_schema,
    variant_defaults, variant_schemas,
};
use crate::error::{InvalidConfig, Severity};
use crate::event::{ActionKind, HealthStatus};
use crate::healing::{
    Action, CircuitBreakConfig, CustomConfig, FailoverConfig, HealingStrategy, Mode, NotifyAction,
    Operator, RestartAction, RetryAction, RollbackConfig, ScaleConfig, Sensitivity, ThrottleConfig,
    Trigger,
};
use crate::metrics::{BUILT_IN, MetricsCollector};
use crate::resilience::{BreakerSettings, HalfOpenRule, SlidingWindow};

use crate::duration::option::deserialize as opt_duration;

/// The seed's `circuitBreaker` (`timeout` is the seed's name for `breakDuration`), with
/// resilience4j's rate keys: a breaker opens on `failureThreshold` consecutive failures, on a
/// `failureRateThreshold` or `slowCallRateThreshold` percentage of the calls in its sliding
/// window once it holds `minimumNumberOfCalls`, whichever comes first. Also the settings of a
/// named breaker stages share (`healing.breakers`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = break_duration_alias)]
pub struct CircuitBreakerConfig {
    /// Whether stages get a circuit breaker at all; default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consecutive failures that open the breaker; at least 1. Default 5, or off when a rate
    /// threshold is given.
    pub failure_threshold: Option<u32>,
    /// Successful probes that close it again; defaults to `halfOpenRequests`, at least 1.
    pub success_threshold: Option<u32>,
    /// How long the breaker stays open before it lets probes through; default 60 s.
    #[serde(default, alias = "breakDuration", deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub timeout: Option<Duration>,
    /// Probes let through while half-open; default 3, at least 1.
    pub half_open_requests: Option<u32>,
    /// Open when at least this percentage (1–100) of the window's calls failed.
    pub failure_rate_threshold: Option<f32>,
    /// Open when at least this percentage (1–100) of the window's calls were slow.
    pub slow_call_rate_threshold: Option<f32>,
    /// A call at least this long is slow; default 60 s.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub slow_call_duration_threshold: Option<Duration>,
    /// `count-based` (the last `slidingWindowSize` calls, the default) or `time-based` (the
    /// calls of the last `slidingWindowSize` seconds).
    pub sliding_window_type: Option<SlidingWindowType>,
    /// Calls, or seconds, the window holds; default 100.
    pub sliding_window_size: Option<u32>,
    /// No rate is judged before the window holds this many calls; default 100.
    pub minimum_number_of_calls: Option<u32>,
    /// How half-open decides: `first-failure` (the default: the first failed probe reopens)
    /// or `rate` (resilience4j's: all `halfOpenRequests` probes run, then their rates are
    /// judged against the thresholds).
    pub half_open_rule: Option<HalfOpenRuleConfig>,
}

/// `halfOpenRule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HalfOpenRuleConfig {
    /// The first failed probe reopens.
    FirstFailure,
    /// The probes' rates decide, as in resilience4j.
    Rate,
}

/// resilience4j's `slidingWindowType`; `COUNT_BASED` and `TIME_BASED` are read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(transform = resilience4j_names)]
pub enum SlidingWindowType {
    /// The last N calls.
    #[serde(alias = "COUNT_BASED")]
    CountBased,
    /// The calls of the last N seconds.
    #[serde(alias = "TIME_BASED")]
    TimeBased,
}

fn yes() -> bool {
    true
}

/// The schema's side of `timeout`'s `alias`: the seed's `breakDuration` is the same setting,
/// given once.
fn break_duration_alias(schema: &mut Schema) {
    let timeout = schema
        .get("properties")
        .and_then(|p| p.get("timeout"))
        .cloned();
    if let (Some(timeout), Some(properties)) = (timeout, schema.get_mut("properties")) {
        properties["breakDuration"] = timeout;
        schema.insert(
            "not".into(),
            serde_json::json!({ "required": ["timeout", "breakDuration"] }),
        );
    }
}

/// The schema's side of [`SlidingWindowType`]'s aliases.
fn resilience4j_names(schema: &mut Schema) {
    if let Some(serde_json::Value::Array(names)) = schema.get_mut("oneOf") {
        for (name, same) in [("COUNT_BASED", "count-based"), ("TIME_BASED", "time-based")] {
            names.push(serde_json::json!({
                "description": format!("resilience4j's name of `{same}`."),
                "type": "string",
                "const": name,
            }));
        }
    }
}

impl CircuitBreakerConfig {
    /// `None` when disabled.
    pub fn build(&self) -> Result<Option<BreakerSettings>, InvalidConfig> {
        if !self.enabled {
            return Ok(None);
        }
        let defaults = BreakerSettings::default();
        let positive = |field: &'static str, value: u32| {
            NonZeroU32::new(value).ok_or_else(|| InvalidConfig::new(field, "must be at least 1"))
        };
        let half_open_requests = match self.half_open_requests {
            Some(n) => positive("halfOpenRequests", n)?,
            None => defaults.half_open_requests,
        };
        let rated =
            self.failure_rate_threshold.is_some() || self.slow_call_rate_threshold.is_some();
        let failure_threshold = match self.failure_threshold {
            Some(n) => Some(positive("failureThreshold", n)?),
            None if rated => None,
            None => defaults.failure_threshold,
        };
        let size = match self.sliding_window_size {
            Some(n) => positive("slidingWindowSize", n)?,
            None => NonZeroU32::new(100).expect("100 is not zero"),
        };
        let settings = BreakerSettings {
            failure_threshold,
            success_threshold: match self.success_threshold {
                Some(n) => positive("successThreshold", n)?,
                None => half_open_requests,
            },
            break_duration: self.timeout.unwrap_or(defaults.break_duration),
            half_open_requests,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            slow_call_duration_threshold: self
                .slow_call_duration_threshold
                .unwrap_or(defaults.slow_call_duration_threshold),
            sliding_window: match self.sliding_window_type {
                None | Some(SlidingWindowType::CountBased) => SlidingWindow::Count(size),
                Some(SlidingWindowType::TimeBased) => {
                    SlidingWindow::Time(Duration::from_secs(u64::from(size.get())))
                }
            },
            minimum_calls: match self.minimum_number_of_calls {
                Some(n) => positive("minimumNumberOfCalls", n)?,
                None => defaults.minimum_calls,
            },
            half_open_rule: match self.half_open_rule {
                None | Some(HalfOpenRuleConfig::FirstFailure) => HalfOpenRule::FirstFailure,
                Some(HalfOpenRuleConfig::Rate) => HalfOpenRule::Rate,
            },
        };
        settings.validate()?;
        Ok(Some(settings))
    }
}

/// The seed's `metricsCollector`, plus `errorRateMinAttempts`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsCollectorConfig {
    /// How often the built-in metrics are sampled; default 5 s.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub sample_interval: Option<Duration>,
    /// How many samples each metric's window keeps; default 1000.
    pub retention_size: Option<usize>,
    /// The fewest attempts an `errorRate` sample is computed over; default 10.
    pub error_rate_min_attempts: Option<u64>,
    /// Metrics of your own besides the built-ins: kept from the start, and usable by triggers.
    #[serde(default)]
    pub metrics: Vec<String>,
}

impl MetricsCollectorConfig {
    /// Builds the collector, with defaults for the settings not given.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetConfig {
    /// The most healing actions allowed in any `window`, across all strategies; at least 1.
    pub max_actions: u32,
    /// The length of the sliding window.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    #[schemars(with = "crate::duration::Written")]
    pub window: Duration,
}

/// One trigger, tagged by `type`; one typed struct per kind.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerConfig {
    /// `type: error`.
    Error(ErrorTriggerConfig),
    /// `type: metrics`.
    Metrics(MetricsTriggerConfig),
    /// `type: health-check`.
    HealthCheck(HealthCheckTriggerConfig),
    /// `type: timeout`.
    Timeout(TimeoutTriggerConfig),
    /// `type: anomaly`.
    Anomaly(AnomalyTriggerConfig),
    /// `type: custom`.
    Custom(CustomTriggerConfig),
}

/// `error`: every key given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorTriggerConfig {
    /// A regular expression the error's message or code must match.
    pub pattern: Option<String>,
    /// The severity the error must have, exactly.
    pub severity: Option<Severity>,
    /// The code the error must have, exactly.
    pub code: Option<String>,
    /// `true`: match only once retries gave up on the error; `false`: only before. Unset: both.
    pub exhausted: Option<bool>,
    /// `true`: only errors the failing stage's retry policy retries; `false`: only the others.
    pub retryable: Option<bool>,
}

/// `metrics`: `metric operator value`, or the short `threshold` (gt), held for `duration`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsTriggerConfig {
    /// The metric's name: a built-in one or one declared in `metricsCollector.metrics`.
    pub metric: String,
    /// How the metric is compared with `value`; default `gt`.
    pub operator: Option<Operator>,
    /// The value the metric is compared with; give it or `threshold`, not both.
    pub value: Option<f64>,
    /// Short for `operator: gt` with this `value`.
    pub threshold: Option<f64>,
    /// How long the condition must hold before the trigger matches; default: at once.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub duration: Option<Duration>,
}

/// `health-check`: a check at least as bad as `status`, for `duration`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckTriggerConfig {
    /// The status that matches, and any worse one.
    pub status: HealthStatus,
    /// Only this check counts; by default, any check attached to the stage or to no stage.
    pub check: Option<String>,
    /// How long the status must have lasted; default: at once.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub duration: Option<Duration>,
}

/// `timeout`: a stage running longer than `threshold`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutTriggerConfig {
    /// How long the stage may run before the trigger matches.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    #[schemars(with = "crate::duration::Written")]
    pub threshold: Duration,
}

/// `anomaly`: a sample of `metric` `sensitivity` standard deviations from its rolling mean.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnomalyTriggerConfig {
    /// The metric's name: a built-in one or one declared in `metricsCollector.metrics`.
    pub metric: String,
    /// How far from the rolling mean a sample must be: `high` (2 standard deviations), `medium`
    /// (3, the default) or `low` (4).
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// Samples needed before the trigger can match; default 20.
    pub min_samples: Option<usize>,
}

/// `custom` in a file: matches while its `command`'s latest run exited 0.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTriggerConfig {
    /// The program and its arguments (no shell); at least the program.
    pub command: Vec<String>,
}

impl Tagged for TriggerConfig {
    const TAG: &'static str = "type";
    crate::tagged_variants!(TriggerConfig {
        "error" => Error,
        "metrics" => Metrics,
        "health-check" => HealthCheck,
        "timeout" => Timeout,
        "anomaly" => Anomaly,
        "custom" => Custom,
    });

    fn misplaced(key: &str, tag: &str, takes: &[&str]) -> String {
        format!(
            "`{key}` does not apply to {tag} triggers (they take {})",
            list(takes)
        )
    }
}

impl<'de> Deserialize<'de> for TriggerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_tagged(deserializer)
    }
}

impl JsonSchema for TriggerConfig {
    fn schema_name() -> Cow<'static, str> {
        "TriggerConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        tagged_schema::<Self>(generator)
    }
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
            TriggerConfig::Error(c) => {
                let mut t = Trigger::error();
                if let Some(pattern) = &c.pattern {
                    t = t.pattern_str(pattern)?;
                }
                if let Some(severity) = c.severity {
                    t = t.severity(severity);
                }
                if let Some(code) = &c.code {
                    t = t.code(code.as_str());
                }
                if let Some(exhausted) = c.exhausted {
                    t = t.exhausted(exhausted);
                }
                if let Some(retryable) = c.retryable {
                    t = t.retryable(retryable);
                }
                t.into()
            }
            TriggerConfig::Metrics(c) => {
                known(&c.metric)?;
                let (operator, value) = match (c.operator, c.value, c.threshold) {
                    (None, None, Some(threshold)) => (Operator::Gt, threshold),
                    (operator, Some(value), None) => (operator.unwrap_or(Operator::Gt), value),
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
                let mut t = Trigger::metrics(c.metric.as_str(), operator, value);
                if let Some(duration) = c.duration {
                    t = t.sustained(duration);
                }
                t.into()
            }
            TriggerConfig::HealthCheck(c) => {
                let mut t = Trigger::health_check(c.status);
                if let Some(check) = &c.check {
                    t = t.check(check.as_str());
                }
                if let Some(duration) = c.duration {
                    t = t.sustained(duration);
                }
                t.into()
            }
            TriggerConfig::Timeout(c) => Trigger::timeout(c.threshold).into(),
            TriggerConfig::Anomaly(c) => {
                known(&c.metric)?;
                let mut t = Trigger::anomaly(c.metric.as_str(), c.sensitivity);
                if let Some(samples) = c.min_samples {
                    t = t.min_samples(samples);
                }
                t.into()
            }
            TriggerConfig::Custom(c) => command_trigger(&c.command)?,
        };
        trigger.validate()?;
        Ok(trigger)
    }
}

/// An action's `config`, one typed struct per action: the registration of every action a file
/// can name. Keys of another action's `config` are refused with what this one takes.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionConfig {
    /// Settings of `retry`.
    Retry(RetryPolicyConfig),
    /// Settings of `rollback`.
    Rollback(RollbackConfig),
    /// Settings of `restart`.
    Restart(RestartAction),
    /// Settings of `scale`.
    Scale(ScaleConfig),
    /// Settings of `failover`.
    Failover(FailoverConfig),
    /// Settings of `circuit-break`.
    CircuitBreak(CircuitBreakConfig),
    /// Settings of `throttle`.
    Throttle(ThrottleConfig),
    /// Settings of `notify`.
    Notify(NotifyAction),
    /// Settings of `custom`.
    Custom(CustomConfig),
}

impl Tagged for ActionConfig {
    const TAG: &'static str = "action";
    const VARIANTS: &'static [&'static str] = &ActionKind::NAMES;

    /// `hold` is no strategy's action: it has no variant.
    fn registered<R: Registration<Self>>(tag: &str, with: R) -> Option<R::Output> {
        let kind: ActionKind = tag.parse().ok()?;
        Some(match kind {
            ActionKind::Retry => with.variant(ActionConfig::Retry),
            ActionKind::Rollback => with.variant(ActionConfig::Rollback),
            ActionKind::Restart => with.variant(ActionConfig::Restart),
            ActionKind::Scale => with.variant(ActionConfig::Scale),
            ActionKind::Failover => with.variant(ActionConfig::Failover),
            ActionKind::CircuitBreak => with.variant(ActionConfig::CircuitBreak),
            ActionKind::Throttle => with.variant(ActionConfig::Throttle),
            ActionKind::Notify => with.variant(ActionConfig::Notify),
            ActionKind::Custom => with.variant(ActionConfig::Custom),
            ActionKind::Hold => return None,
        })
    }

    /// The key's path already names it: `config.breakDuration`: does not apply to retry.
    fn misplaced(_key: &str, tag: &str, takes: &[&str]) -> String {
        if takes.is_empty() {
            format!("does not apply to {tag} (it takes no config)")
        } else {
            format!("does not apply to {tag} (it takes {})", takes.join(", "))
        }
    }
}

impl ActionConfig {
    /// The settings of `action` when a file gives no `config`.
    pub fn defaults(action: ActionKind) -> Result<Self, InvalidConfig> {
        if action == ActionKind::Hold {
            return Err(InvalidConfig::new("config", NOT_A_STRATEGY_ACTION));
        }
        variant_defaults(action.as_str()).map_err(|e| InvalidConfig::new("config", e.to_string()))
    }

    /// Builds the action these settings describe.
    pub fn build(&self) -> Result<Action, InvalidConfig> {
        Ok(match self {
            ActionConfig::Retry(c) => RetryAction::from_config(c)?.into(),
            ActionConfig::Rollback(c) => c.build()?.into(),
            ActionConfig::Restart(c) => (*c).into(),
            ActionConfig::Scale(c) => c.build()?,
            ActionConfig::Failover(_) => crate::healing::FailoverAction.into(),
            ActionConfig::CircuitBreak(c) => c.build()?.into(),
            ActionConfig::Throttle(c) => c.build()?.into(),
            ActionConfig::Notify(c) => c.clone().into(),
            ActionConfig::Custom(c) => c.build()?.into(),
        })
    }
}

/// Why `action: hold` is refused.
const NOT_A_STRATEGY_ACTION: &str =
    "`hold` is not an action a strategy takes: a stage's `dependsOn` holds its work";

/// One strategy, with the seed's keys. `config` holds the action's settings, typed by `action`.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyConfig {
    /// The strategy's name, unique among the strategies.
    pub name: String,
    /// Higher goes first; default 0.
    pub priority: i64,
    /// The strategy acts when any of these matches.
    pub triggers: Vec<TriggerConfig>,
    /// The action as written; [`build`](Self::build) says if it names none.
    pub action: String,
    /// The action's settings; `None` when `action` names no action.
    pub config: Option<ActionConfig>,
    /// The least time between two actions of this strategy on one stage; `None`: no cooldown.
    pub cooldown: Option<Duration>,
    /// Whether the strategy takes part at all; default true.
    pub enabled: bool,
    /// Whether it acts or only records what it would have done; default `act`.
    pub mode: Mode,
    /// The stages it applies to; `None` for every stage.
    pub stages: Option<Vec<String>>,
    /// Where a person finds what to do about the alerts it raises (its `notify`, its retries
    /// exhausted…); `None`: the project's.
    pub runbook: Option<String>,
}

impl StrategyConfig {
    /// Builds the strategy. `metrics` are the names its triggers may use (empty: any).
    pub fn build(&self, metrics: &[String]) -> Result<HealingStrategy, InvalidConfig> {
        if self.action == ActionKind::Hold.as_str() {
            return Err(InvalidConfig::new("action", NOT_A_STRATEGY_ACTION));
        }
        let kind: ActionKind = self.action.parse().map_err(|e: InvalidConfig| {
            InvalidConfig::new(
                "action",
                format!(
                    "{}{}",
                    e.reason(),
                    did_you_mean(&self.action, ActionKind::NAMES.into_iter())
                ),
            )
        })?;
        let action = match &self.config {
            Some(config) => config.build(),
            None => ActionConfig::defaults(kind)?.build(),
        }
        .map_err(|e| e.within("config"))?;
        let mut strategy = HealingStrategy::new(self.name.as_str(), action)
            .priority(self.priority)
            .enabled(self.enabled)
            .mode(self.mode)
            .cooldown(self.cooldown.unwrap_or_default());
        if let Some(stages) = &self.stages {
            strategy = strategy.stages(stages.iter().map(String::as_str));
        }
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
}

const STRATEGY_KEYS: &[&str] = &[
    "name", "priority", "triggers", "action", "config", "cooldown", "enabled", "mode", "stages",
    "runbook",
];

impl<'de> Deserialize<'de> for StrategyConfig {
    /// By hand, so `config` is read straight from the file as the struct `action` names (its
    /// errors keep their line and column) instead of through a buffer.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StrategyVisitor)
    }
}

/// The schema of what [`StrategyConfig`]'s `Deserialize` reads: the keys of
/// `STRATEGY_KEYS`, `action` one of the strategies' actions and `config` the settings of the one
/// it names, each action's from [`ActionConfig`]'s registration.
impl JsonSchema for StrategyConfig {
    fn schema_name() -> Cow<'static, str> {
        "StrategyConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let described = |mut schema: Schema, description: &str| {
            schema.insert("description".into(), description.into());
            schema
        };
        let by_action: Vec<serde_json::Value> = variant_schemas::<ActionConfig>(generator)
            .into_iter()
            .map(|(action, config)| {
                serde_json::json!({
                    "if": { "properties": { "action": { "const": action } }, "required": ["action"] },
                    "then": { "properties": { "config": config } }
                })
            })
            .collect();
        json_schema!({
            "description": "A strategy: when any of its triggers matches, it takes its action.",
            "type": "object",
            "properties": {
                "name": described(generator.subschema_for::<String>(), "The strategy's name, unique among the strategies."),
                "priority": described(json_schema!({ "type": "integer", "default": 0 }), "Higher goes first; default 0."),
                "triggers": described(generator.subschema_for::<Vec<TriggerConfig>>(), "The strategy acts when any of these matches; only an adaptive `scale` goes without."),
                "action": described(json_schema!({ "enum": ActionConfig::VARIANTS }), "The action it takes; its settings go in `config`."),
                "config": described(json_schema!({ "type": "object" }), "The settings of the action `action` names (its defaults when left out)."),
                "cooldown": described(generator.subschema_for::<crate::duration::Written>(), "The least time between two actions of this strategy on one stage; default none."),
                "enabled": described(json_schema!({ "type": "boolean", "default": true }), "Whether the strategy takes part at all; default true."),
                "mode": described(generator.subschema_for::<Mode>(), "`act` (the default) or `dry-run`: only record what it would have done."),
                "stages": described(generator.subschema_for::<Vec<String>>(), "The stages it applies to; default every stage."),
                "runbook": described(generator.subschema_for::<String>(), "Where a person finds what to do about the alerts it raises; default the project's."),
            },
            "required": ["name", "action"],
            "additionalProperties": false,
            "allOf": by_action,
        })
    }
}

struct StrategyVisitor;

/// A duration as users write it, as one map value.
#[derive(Deserialize)]
#[serde(transparent)]
struct DurationValue(#[serde(deserialize_with = "crate::duration::deserialize")] Duration);

impl<'de> Visitor<'de> for StrategyVisitor {
    type Value = StrategyConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a strategy: name, triggers, action and its config")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrategyConfig, A::Error> {
        let mut name = None;
        let mut priority = None;
        let mut triggers = None;
        let mut action: Option<String> = None;
        let mut config = None;
        let mut config_before_action: Option<serde_json::Value> = None;
        let mut cooldown = None;
        let mut enabled = None;
        let mut mode = None;
        let mut stages = None;
        let mut runbook = None;
        fn once<T, E: de::Error>(slot: &Option<T>, key: &'static str) -> Result<(), E> {
            match slot {
                Some(_) => Err(E::duplicate_field(key)),
                None => Ok(()),
            }
        }
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => {
                    once(&name, "name")?;
                    name = Some(map.next_value::<String>()?);
                }
                "priority" => {
                    once(&priority, "priority")?;
                    priority = Some(map.next_value::<i64>()?);
                }
                "triggers" => {
                    once(&triggers, "triggers")?;
                    triggers = Some(map.next_value::<Vec<TriggerConfig>>()?);
                }
                "action" => {
                    once(&action, "action")?;
                    action = Some(map.next_value::<String>()?);
                }
                "config" => {
                    if config.is_some() || config_before_action.is_some() {
                        return Err(de::Error::duplicate_field("config"));
                    }
                    match action.as_deref().map(str::parse::<ActionKind>) {
                        Some(Ok(kind)) if kind != ActionKind::Hold => {
                            config = Some(map.next_value_seed(ConfigSeed(kind))?);
                        }
                        _ => config_before_action = Some(map.next_value()?),
                    }
                }
                "cooldown" => {
                    once(&cooldown, "cooldown")?;
                    cooldown = Some(map.next_value::<DurationValue>()?.0);
                }
                "enabled" => {
                    once(&enabled, "enabled")?;
                    enabled = Some(map.next_value::<bool>()?);
                }
                "mode" => {
                    once(&mode, "mode")?;
                    mode = Some(map.next_value::<Mode>()?);
                }
                "stages" => {
                    once(&stages, "stages")?;
                    stages = Some(map.next_value::<Vec<String>>()?);
                }
                "runbook" => {
                    once(&runbook, "runbook")?;
                    runbook = Some(map.next_value::<String>()?);
                }
                other => return Err(de::Error::unknown_field(other, STRATEGY_KEYS)),
            }
        }
        let action = action.ok_or_else(|| de::Error::missing_field("action"))?;
        // `hold` has no config: `build` refuses it, with the strategy's other errors.
        let kind = action
            .parse::<ActionKind>()
            .ok()
            .filter(|kind| *kind != ActionKind::Hold);
        let config = match (config, config_before_action, kind) {
            (Some(config), _, _) => Some(config),
            // Written before `action`: read from a buffer, so its errors have only their path.
            (None, Some(value), Some(kind)) => Some(
                de::DeserializeSeed::deserialize(ConfigSeed(kind), value)
                    .map_err(|e| de::Error::custom(format!("config: {e}")))?,
            ),
            (None, None, Some(kind)) => {
                Some(ActionConfig::defaults(kind).map_err(de::Error::custom)?)
            }
            (None, _, None) => None,
        };
        Ok(StrategyConfig {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            priority: priority.unwrap_or_default(),
            // Checked when built: only an adaptive scale goes without.
            triggers: triggers.unwrap_or_default(),
            action,
            config,
            cooldown,
            enabled: enabled.unwrap_or(true),
            mode: mode.unwrap_or_default(),
            stages,
            runbook,
        })
    }
}

/// Reads a `config` map as the struct of one action.
struct ConfigSeed(ActionKind);

impl<'de> de::DeserializeSeed<'de> for ConfigSeed {
    type Value = ActionConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ActionConfig, D::Error> {
        struct ConfigVisitor(ActionKind);

        impl<'de> Visitor<'de> for ConfigVisitor {
            type Value = ActionConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the settings of {}", self.0)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ActionConfig, A::Error> {
                deserialize_variant(self.0.as_str(), map)
            }
        }

        deserializer.deserialize_map(ConfigVisitor(self.0))
    }
}

/// A `custom` trigger from a file: the command runs in the background at each evaluation (one
/// run at a time) and the trigger matches while its latest run exited 0.
fn command_trigger(command: &[String]) -> Result<Trigger, InvalidConfig> {
    crate::process::check_argv(command)?;
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
                let ok = crate::process::run_owned(&argv, &[("MIGRATIONPILOT_STAGE", stage)])
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

#[cfg(test)]
mod tests;
