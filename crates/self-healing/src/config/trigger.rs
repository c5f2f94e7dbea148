//! Triggers as a file writes them: one typed struct per kind, tagged by `type`, each building
//! the runtime [`Trigger`]; a `custom` trigger runs its command.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

use crate::de::{Tagged, deserialize_tagged, list, tagged_schema};
use crate::error::{InvalidConfig, Severity, did_you_mean};
use crate::event::HealthStatus;
use crate::healing::{Operator, Sensitivity, Trigger};

use crate::duration::option::deserialize as opt_duration;

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
    /// [`MetricsCollectorConfig::known_metrics`](crate::config::MetricsCollectorConfig::known_metrics));
    /// an empty list accepts any name.
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
