//! Triggers: the conditions under which a strategy acts. A strategy's triggers are OR-ed.
//!
//! `error` triggers match a failed attempt. The others look at the state of a stage (its
//! metrics, its health, how long it has run) and are evaluated both when an attempt fails and
//! on the healer's evaluation tick while the stage runs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{InvalidConfig, Severity, StageError};
use crate::event::{HealthStatus, TriggerKind};
use crate::health::CheckStatus;
use crate::metrics::{MetricsCollector, Scope, Series};

/// A comparison for `metrics` triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    /// Greater than (`gt` in files).
    Gt,
    /// Less than (`lt`).
    Lt,
    /// Greater than or equal (`gte`).
    Gte,
    /// Less than or equal (`lte`).
    Lte,
    /// Equal, within floating-point rounding (`eq`).
    Eq,
}

impl Operator {
    /// Whether `observed` compares with `value` as this operator says.
    pub fn holds(self, observed: f64, value: f64) -> bool {
        match self {
            Operator::Gt => observed > value,
            Operator::Lt => observed < value,
            Operator::Gte => observed >= value,
            Operator::Lte => observed <= value,
            Operator::Eq => (observed - value).abs() <= f64::EPSILON * value.abs().max(1.0),
        }
    }

    /// The operator as written in descriptions: `>`, `<`, `>=`, `<=` or `==`.
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Lt => "<",
            Operator::Gte => ">=",
            Operator::Lte => "<=",
            Operator::Eq => "==",
        }
    }
}

/// How far from the rolling mean a sample must be for an `anomaly` trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Sensitivity {
    /// 2 standard deviations.
    High,
    /// 3 standard deviations.
    #[default]
    Medium,
    /// 4 standard deviations.
    Low,
}

impl Sensitivity {
    /// How many standard deviations from the mean count as an anomaly.
    pub fn sigmas(self) -> f64 {
        match self {
            Sensitivity::High => 2.0,
            Sensitivity::Medium => 3.0,
            Sensitivity::Low => 4.0,
        }
    }
}

/// A condition under which a strategy acts.
#[derive(Clone)]
pub enum Trigger {
    /// A failed attempt, optionally narrowed by message, severity or code.
    Error(ErrorTrigger),
    /// A metric compared with a value.
    Metrics(MetricsTrigger),
    /// The stage's health, or one check's.
    HealthCheck(HealthTrigger),
    /// A stage running too long.
    Timeout(TimeoutTrigger),
    /// A metric sample far from its rolling mean.
    Anomaly(AnomalyTrigger),
    /// A predicate of your own.
    Custom(CustomTrigger),
}

impl Trigger {
    /// Matches failed attempts; narrow it with `pattern`, `severity`, `code` (all given must hold).
    pub fn error() -> ErrorTrigger {
        ErrorTrigger::default()
    }

    /// `metric` compared with `value` by `operator`.
    pub fn metrics(metric: impl Into<Arc<str>>, operator: Operator, value: f64) -> MetricsTrigger {
        MetricsTrigger {
            metric: metric.into(),
            operator,
            value,
            duration: None,
        }
    }

    /// The seed's short form: `metric` greater than `threshold`.
    pub fn threshold(metric: impl Into<Arc<str>>, threshold: f64) -> MetricsTrigger {
        Trigger::metrics(metric, Operator::Gt, threshold)
    }

    /// A stage's health (or one check's) at least as bad as `status`.
    pub fn health_check(status: HealthStatus) -> HealthTrigger {
        HealthTrigger {
            status,
            check: None,
            duration: None,
        }
    }

    /// A stage running longer than `threshold`.
    pub fn timeout(threshold: Duration) -> TimeoutTrigger {
        TimeoutTrigger { threshold }
    }

    /// A sample of `metric` further from its rolling mean than `sensitivity` allows.
    pub fn anomaly(metric: impl Into<Arc<str>>, sensitivity: Sensitivity) -> AnomalyTrigger {
        AnomalyTrigger {
            metric: metric.into(),
            sensitivity,
            min_samples: DEFAULT_MIN_SAMPLES,
        }
    }

    /// A predicate of your own over the stage's metrics and last error.
    pub fn custom(
        name: impl Into<Arc<str>>,
        predicate: impl Fn(&TriggerContext<'_>) -> bool + Send + Sync + 'static,
    ) -> CustomTrigger {
        CustomTrigger {
            name: name.into(),
            predicate: Arc::new(predicate),
        }
    }

    /// Which kind of trigger this is, as the history records it.
    pub fn kind(&self) -> TriggerKind {
        match self {
            Trigger::Error(_) => TriggerKind::Error,
            Trigger::Metrics(_) => TriggerKind::Metrics,
            Trigger::HealthCheck(_) => TriggerKind::HealthCheck,
            Trigger::Timeout(_) => TriggerKind::Timeout,
            Trigger::Anomaly(_) => TriggerKind::Anomaly,
            Trigger::Custom(_) => TriggerKind::Custom,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        match self {
            Trigger::Metrics(t) if !t.value.is_finite() => Err(InvalidConfig::new(
                "value",
                format!("{} is not a finite number", t.value),
            )),
            Trigger::Metrics(t) if t.metric.trim().is_empty() => Err(InvalidConfig::new(
                "metric",
                "a metrics trigger needs a metric",
            )),
            Trigger::Anomaly(t) if t.metric.trim().is_empty() => Err(InvalidConfig::new(
                "metric",
                "an anomaly trigger needs a metric",
            )),
            Trigger::Anomaly(t) if t.min_samples < 2 => Err(InvalidConfig::new(
                "minSamples",
                "at least 2 samples are needed for a standard deviation",
            )),
            Trigger::Timeout(t) if t.threshold.is_zero() => {
                Err(InvalidConfig::new("threshold", "must be longer than zero"))
            }
            Trigger::HealthCheck(t) if t.status == HealthStatus::Healthy => {
                Err(InvalidConfig::new(
                    "status",
                    "a health-check trigger fires on `unhealthy` or `degraded`",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether [`evaluate`](Self::evaluate) keeps memory between evaluations (sustained metrics
    /// and anomalies do; a custom predicate does not, and runs with no lock held).
    pub(crate) fn uses_memory(&self) -> bool {
        matches!(self, Trigger::Metrics(_) | Trigger::Anomaly(_))
    }

    /// Evaluates this trigger for `ctx`, using and updating `memory` for sustained and
    /// anomaly conditions.
    pub(crate) fn evaluate(
        &self,
        ctx: &TriggerContext<'_>,
        memory: &mut TriggerMemory,
    ) -> Option<Observed> {
        match self {
            Trigger::Error(t) => t.evaluate(ctx),
            Trigger::Metrics(t) => t.evaluate(ctx, memory),
            Trigger::HealthCheck(t) => t.evaluate(ctx),
            Trigger::Timeout(t) => {
                let running = ctx.running_for?;
                (running > t.threshold).then(|| Observed {
                    value: Some(running.as_secs_f64() * 1000.0),
                    description: format!("stage running {running:.0?}, over {:?}", t.threshold),
                })
            }
            Trigger::Anomaly(t) => t.evaluate(ctx, memory),
            Trigger::Custom(t) => (t.predicate)(ctx).then(|| Observed {
                value: None,
                description: format!("custom check `{}` held", t.name),
            }),
        }
    }
}

/// What a matching trigger saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    pub(crate) value: Option<f64>,
    pub(crate) description: String,
}

/// What a trigger remembers between evaluations, per strategy, trigger and stage.
#[derive(Debug, Default, Clone)]
pub(crate) struct TriggerMemory {
    /// Since when a metrics condition has held.
    since: Option<Instant>,
    /// How many samples the trigger had seen (the anomaly trigger: checked; a metrics trigger:
    /// the latest, first seen at `fresh_at`).
    seen: u64,
    fresh_at: Option<Instant>,
}

/// Matches a failed attempt. Every field given must hold.
#[derive(Debug, Clone, Default)]
pub struct ErrorTrigger {
    pattern: Option<Regex>,
    severity: Option<Severity>,
    code: Option<Arc<str>>,
    exhausted: Option<bool>,
    retryable: Option<bool>,
}

impl ErrorTrigger {
    /// The error's message or code matches `pattern`.
    pub fn pattern(mut self, pattern: Regex) -> Self {
        self.pattern = Some(pattern);
        self
    }

    /// [`pattern`](Self::pattern) from source text.
    pub fn pattern_str(self, pattern: &str) -> Result<Self, InvalidConfig> {
        let regex =
            Regex::new(pattern).map_err(|e| InvalidConfig::new("pattern", e.to_string()))?;
        Ok(self.pattern(regex))
    }

    /// Only errors of exactly this severity match.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }

    /// Only errors with exactly this code match.
    pub fn code(mut self, code: impl Into<Arc<str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// `true`: match only errors the stage's retry policy retries (its `retryableErrors`; a
    /// policy that names none retries every error), and only where one applies: the stage has a
    /// policy of its own, or the healer a global `retryPolicy`. `false`: only the others.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }

    /// `true`: match only once a retry strategy has given up on the error; `false`: only
    /// before. Unset matches both.
    pub fn exhausted(mut self, exhausted: bool) -> Self {
        self.exhausted = Some(exhausted);
        self
    }

    fn evaluate(&self, ctx: &TriggerContext<'_>) -> Option<Observed> {
        let error = ctx.error?;
        if let Some(wanted) = self.retryable {
            let retryable = ctx.retry_policy.is_some_and(|p| p.is_retryable(error));
            if retryable != wanted {
                return None;
            }
        }
        if let Some(pattern) = &self.pattern
            && !pattern.is_match(error.message())
            && !error.code().is_some_and(|c| pattern.is_match(c))
        {
            return None;
        }
        if self.severity.is_some_and(|s| s != error.severity()) {
            return None;
        }
        if self
            .code
            .as_deref()
            .is_some_and(|c| Some(c) != error.code())
        {
            return None;
        }
        if self.exhausted.is_some_and(|e| e != ctx.exhausted) {
            return None;
        }
        Some(Observed {
            value: None,
            description: error.to_string(),
        })
    }
}

impl From<ErrorTrigger> for Trigger {
    fn from(t: ErrorTrigger) -> Self {
        Trigger::Error(t)
    }
}

/// `metric operator value`, optionally held for `duration` before it matches.
#[derive(Debug, Clone)]
pub struct MetricsTrigger {
    metric: Arc<str>,
    operator: Operator,
    value: f64,
    duration: Option<Duration>,
}

impl MetricsTrigger {
    /// The condition must hold continuously this long (observed at every evaluation).
    pub fn sustained(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// A sampled metric (see [`SAMPLED`](crate::metrics::SAMPLED)) whose latest sample is older
    /// than two sample intervals says nothing about now, and matches nothing: an errorRate of
    /// 1.0 from before a quiet spell must not trip a breaker again once a cooldown is over.
    fn evaluate(&self, ctx: &TriggerContext<'_>, memory: &mut TriggerMemory) -> Option<Observed> {
        let series = ctx.series(&self.metric);
        let observed = series.as_ref().and_then(|s| s.last());
        let stale = match &series {
            Some(series) if crate::metrics::SAMPLED.contains(&&*self.metric) => {
                let recorded = series.recorded();
                if memory.seen != recorded || memory.fresh_at.is_none() {
                    memory.seen = recorded;
                    memory.fresh_at = Some(ctx.now);
                }
                memory.fresh_at.is_some_and(|at| {
                    ctx.now.saturating_duration_since(at) > ctx.metrics.sample_interval() * 2
                })
            }
            _ => false,
        };
        let holds = !stale && observed.is_some_and(|v| self.operator.holds(v, self.value));
        if !holds {
            memory.since = None;
            return None;
        }
        let observed = observed?;
        let since = *memory.since.get_or_insert(ctx.now);
        let held = ctx.now.saturating_duration_since(since);
        if self.duration.is_some_and(|d| held < d) {
            return None;
        }
        Some(Observed {
            value: Some(observed),
            description: match self.duration {
                Some(_) => format!(
                    "{} = {observed} {} {} for {held:.0?}",
                    self.metric,
                    self.operator.symbol(),
                    self.value
                ),
                None => format!(
                    "{} = {observed} {} {}",
                    self.metric,
                    self.operator.symbol(),
                    self.value
                ),
            },
        })
    }
}

impl From<MetricsTrigger> for Trigger {
    fn from(t: MetricsTrigger) -> Self {
        Trigger::Metrics(t)
    }
}

/// A stage's health, or one check's, at least as bad as `status`, optionally for `duration`.
#[derive(Debug, Clone)]
pub struct HealthTrigger {
    status: HealthStatus,
    check: Option<Arc<str>>,
    duration: Option<Duration>,
}

impl HealthTrigger {
    /// Only this check counts (by default, any check attached to the stage or to no stage).
    pub fn check(mut self, check: impl Into<Arc<str>>) -> Self {
        self.check = Some(check.into());
        self
    }

    /// The status must have lasted this long.
    pub fn sustained(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    fn evaluate(&self, ctx: &TriggerContext<'_>) -> Option<Observed> {
        let worst = ctx
            .health
            .iter()
            .filter(|h| match &self.check {
                Some(check) => h.check == *check,
                None => h.stage.as_deref().is_none_or(|s| s == ctx.stage),
            })
            .filter(|h| h.status >= self.status)
            .filter(|h| {
                self.duration
                    .is_none_or(|d| ctx.now.saturating_duration_since(h.since) >= d)
            })
            .max_by_key(|h| h.status)?;
        Some(Observed {
            value: None,
            description: format!(
                "check `{}` {} for {:.0?}",
                worst.check,
                worst.status,
                ctx.now.saturating_duration_since(worst.since)
            ),
        })
    }
}

impl From<HealthTrigger> for Trigger {
    fn from(t: HealthTrigger) -> Self {
        Trigger::HealthCheck(t)
    }
}

/// A stage running longer than `threshold`.
#[derive(Debug, Clone)]
pub struct TimeoutTrigger {
    threshold: Duration,
}

impl From<TimeoutTrigger> for Trigger {
    fn from(t: TimeoutTrigger) -> Self {
        Trigger::Timeout(t)
    }
}

/// Samples an anomaly trigger needs before it can fire, unless told otherwise.
pub const DEFAULT_MIN_SAMPLES: usize = 20;

/// A new sample of `metric` more than `sensitivity` standard deviations from the mean of the
/// samples before it in the window.
#[derive(Debug, Clone)]
pub struct AnomalyTrigger {
    metric: Arc<str>,
    sensitivity: Sensitivity,
    min_samples: usize,
}

impl AnomalyTrigger {
    /// Samples needed before the trigger can fire (default 20).
    pub fn min_samples(mut self, samples: usize) -> Self {
        self.min_samples = samples;
        self
    }

    /// Checks every sample that arrived since the last look, each against the samples before
    /// it in the window, and reports the one furthest out.
    fn evaluate(&self, ctx: &TriggerContext<'_>, memory: &mut TriggerMemory) -> Option<Observed> {
        let series = ctx.series(&self.metric)?;
        let recorded = series.recorded();
        let new = recorded.saturating_sub(memory.seen);
        if new == 0 {
            return None;
        }
        memory.seen = recorded;
        let samples = series.samples();
        let first_new = samples
            .len()
            .saturating_sub(new as usize)
            .max(self.min_samples);
        let (mut sum, mut sum_sq) = samples[..first_new.min(samples.len())]
            .iter()
            .fold((0.0, 0.0), |(s, q), v| (s + v, q + v * v));
        let mut worst: Option<(f64, f64, f64, f64)> = None; // (sigmas, value, mean, sd)
        for (n, &value) in samples.iter().enumerate().skip(first_new) {
            let count = n as f64;
            let mean = sum / count;
            let sd = (sum_sq / count - mean * mean).max(0.0).sqrt();
            let sigmas = if sd > 1e-9 * mean.abs().max(1.0) {
                (value - mean).abs() / sd
            } else if (value - mean).abs() > 1e-9 * mean.abs().max(1.0) {
                f64::INFINITY
            } else {
                0.0
            };
            if sigmas > self.sensitivity.sigmas() && worst.is_none_or(|w| sigmas > w.0) {
                worst = Some((sigmas, value, mean, sd));
            }
            sum += value;
            sum_sq += value * value;
        }
        let (sigmas, value, mean, sd) = worst?;
        Some(Observed {
            value: Some(value),
            description: format!(
                "{} = {value} is {sigmas:.1}σ from its mean {mean:.1} (σ {sd:.1}, limit {})",
                self.metric,
                self.sensitivity.sigmas()
            ),
        })
    }
}

impl From<AnomalyTrigger> for Trigger {
    fn from(t: AnomalyTrigger) -> Self {
        Trigger::Anomaly(t)
    }
}

type Predicate = Arc<dyn Fn(&TriggerContext<'_>) -> bool + Send + Sync>;

/// A predicate of your own (the seed's `check: (ctx) => …`).
#[derive(Clone)]
pub struct CustomTrigger {
    name: Arc<str>,
    predicate: Predicate,
}

impl fmt::Debug for CustomTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomTrigger")
            .field("name", &self.name)
            .finish()
    }
}

impl From<CustomTrigger> for Trigger {
    fn from(t: CustomTrigger) -> Self {
        Trigger::Custom(t)
    }
}

impl fmt::Debug for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Error(t) => t.fmt(f),
            Trigger::Metrics(t) => t.fmt(f),
            Trigger::HealthCheck(t) => t.fmt(f),
            Trigger::Timeout(t) => t.fmt(f),
            Trigger::Anomaly(t) => t.fmt(f),
            Trigger::Custom(t) => t.fmt(f),
        }
    }
}

/// What a trigger is evaluated against: one stage, its metrics (falling back to the run's), its
/// health, and the error that failed an attempt if that is why it is evaluated.
pub struct TriggerContext<'a> {
    pub(crate) stage: &'a str,
    pub(crate) error: Option<&'a StageError>,
    pub(crate) exhausted: bool,
    pub(crate) metrics: &'a MetricsCollector,
    pub(crate) running_for: Option<Duration>,
    pub(crate) health: &'a [CheckStatus],
    pub(crate) now: Instant,
    /// The retry policy that applies to the failed attempt: the stage's own, else the healer's
    /// global one when it has one; `None` when neither does, or on the tick.
    pub(crate) retry_policy: Option<&'a crate::resilience::RetryPolicy>,
}

impl fmt::Debug for TriggerContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerContext")
            .field("stage", &self.stage)
            .field("error", &self.error)
            .field("exhausted", &self.exhausted)
            .field("running_for", &self.running_for)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl<'a> TriggerContext<'a> {
    /// The stage being evaluated.
    pub fn stage(&self) -> &str {
        self.stage
    }

    /// The error being healed, when a failed attempt is why triggers are evaluated.
    pub fn last_error(&self) -> Option<&StageError> {
        self.error
    }

    /// The latest sample of `metric` in the stage's scope, or else in the run's.
    pub fn metric(&self, metric: &str) -> Option<f64> {
        self.series(metric)?.last()
    }

    /// The window of `metric` in the stage's scope, or else in the run's.
    pub fn series(&self, metric: &str) -> Option<Series> {
        self.metrics
            .find(Scope::Stage(self.stage), metric)
            .or_else(|| self.metrics.find(Scope::Run, metric))
    }

    /// How long the stage has been running, if it is.
    pub fn running_for(&self) -> Option<Duration> {
        self.running_for
    }

    /// The worst status among the checks attached to this stage or to no stage.
    pub fn health(&self) -> HealthStatus {
        self.health
            .iter()
            .filter(|h| h.stage.as_deref().is_none_or(|s| s == self.stage))
            .map(|h| h.status)
            .max()
            .unwrap_or_default()
    }
}
