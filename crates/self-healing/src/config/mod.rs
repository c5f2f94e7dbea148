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

use std::num::NonZeroU32;
use std::time::Duration;

use schemars::{JsonSchema, Schema};
use serde::Deserialize;

mod healing;
mod strategy;
mod trigger;

pub use crate::error::{did_you_mean, no_such};
pub use crate::resilience::RetryPolicyConfig;
pub use healing::{
    AlertThresholdConfig, AlertsConfig, BuildCheck, Healing, HealingConfig, HealthMonitorConfig,
    ThresholdsConfig,
};
pub use strategy::{ActionConfig, StrategyConfig};
pub use trigger::{
    AnomalyTriggerConfig, CustomTriggerConfig, ErrorTriggerConfig, HealthCheckTriggerConfig,
    MetricsTriggerConfig, TimeoutTriggerConfig, TriggerConfig,
};

use crate::error::InvalidConfig;
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

#[cfg(test)]
mod tests;
