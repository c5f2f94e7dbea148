//! Actions: what a strategy does when its triggers match, with each action's settings.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BoxFuture;
use crate::error::{InvalidConfig, Severity, StageError};
use crate::event::{ActionKind, RunId};
use crate::metrics::MetricsCollector;
use crate::pipeline::{Remedy, StageControl};
use crate::resilience::{Rate, RetryPolicy};

/// A healing action with its settings (the seed's `action` plus `config`).
#[derive(Clone)]
pub enum Action {
    /// Run the failed work again. `None` uses the healer's global `retryPolicy`.
    Retry(Option<RetryPolicy>),
    /// Compensate completed work in reverse order and end the run rolled back.
    Rollback,
    /// Stop the stage, run its reset hook, run it from its start.
    Restart(RestartAction),
    /// Change the stage's concurrency.
    Scale(ScaleAction),
    /// Switch the stage to its failover handler.
    Failover,
    /// Open the stage's circuit breaker.
    CircuitBreak(CircuitBreakAction),
    /// Cap the stage's rate.
    Throttle(ThrottleAction),
    /// Alert people through the healer's notifiers.
    Notify(NotifyAction),
    /// Your own remedy.
    Custom(CustomAction),
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Retry(_) => ActionKind::Retry,
            Action::Rollback => ActionKind::Rollback,
            Action::Restart(_) => ActionKind::Restart,
            Action::Scale(_) => ActionKind::Scale,
            Action::Failover => ActionKind::Failover,
            Action::CircuitBreak(_) => ActionKind::CircuitBreak,
            Action::Throttle(_) => ActionKind::Throttle,
            Action::Notify(_) => ActionKind::Notify,
            Action::Custom(_) => ActionKind::Custom,
        }
    }

    pub fn retry(policy: RetryPolicy) -> Self {
        Action::Retry(Some(policy))
    }

    pub fn custom<F, Fut>(handler: F) -> Self
    where
        F: Fn(ActionContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Remedy, StageError>> + Send + 'static,
    {
        Action::Custom(CustomAction {
            handler: Arc::new(move |ctx| Box::pin(handler(ctx))),
        })
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        match self {
            Action::Scale(scale) => scale.validate(),
            Action::CircuitBreak(breaker) => breaker.validate(),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Retry(policy) => f.debug_tuple("Retry").field(policy).finish(),
            Action::Rollback => f.write_str("Rollback"),
            Action::Restart(a) => a.fmt(f),
            Action::Scale(a) => a.fmt(f),
            Action::Failover => f.write_str("Failover"),
            Action::CircuitBreak(a) => a.fmt(f),
            Action::Throttle(a) => a.fmt(f),
            Action::Notify(a) => a.fmt(f),
            Action::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Settings of `restart`.
#[derive(Debug, Clone, Default)]
pub struct RestartAction {
    /// Restarts this strategy may cause per stage and run; the stage's own limit still holds.
    pub max_restarts: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleDirection {
    #[default]
    Up,
    Down,
}

/// Settings of `scale`: the seed's `direction`, `amount`, `maxInstances`, `minInstances`.
#[derive(Clone)]
pub struct ScaleAction {
    pub direction: ScaleDirection,
    pub amount: usize,
    pub max_instances: Option<usize>,
    pub min_instances: usize,
    /// Something outside the process to scale as well (a worker pool, a deployment).
    pub scaler: Option<Arc<dyn Scaler>>,
}

impl ScaleAction {
    pub fn up(amount: usize) -> Self {
        ScaleAction {
            direction: ScaleDirection::Up,
            amount,
            max_instances: None,
            min_instances: 1,
            scaler: None,
        }
    }

    pub fn down(amount: usize) -> Self {
        ScaleAction {
            direction: ScaleDirection::Down,
            ..ScaleAction::up(amount)
        }
    }

    pub fn max_instances(mut self, max: usize) -> Self {
        self.max_instances = Some(max);
        self
    }

    pub fn min_instances(mut self, min: usize) -> Self {
        self.min_instances = min;
        self
    }

    pub fn scaler(mut self, scaler: Arc<dyn Scaler>) -> Self {
        self.scaler = Some(scaler);
        self
    }

    /// The concurrency this action moves `current` to.
    pub fn target(&self, current: usize) -> usize {
        match self.direction {
            ScaleDirection::Up => current
                .saturating_add(self.amount)
                .min(self.max_instances.unwrap_or(usize::MAX)),
            ScaleDirection::Down => current.saturating_sub(self.amount).max(self.min_instances),
        }
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        if self.amount == 0 {
            return Err(InvalidConfig::new("amount", "must be at least 1"));
        }
        if self.min_instances == 0 {
            return Err(InvalidConfig::new("minInstances", "must be at least 1"));
        }
        if let Some(max) = self.max_instances
            && max < self.min_instances
        {
            return Err(InvalidConfig::new(
                "maxInstances",
                format!("{max} is below minInstances {}", self.min_instances),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for ScaleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaleAction")
            .field("direction", &self.direction)
            .field("amount", &self.amount)
            .field("max_instances", &self.max_instances)
            .field("min_instances", &self.min_instances)
            .field("scaler", &self.scaler.is_some())
            .finish()
    }
}

/// Scales something outside the process when `scale` acts. One required method.
pub trait Scaler: Send + Sync + 'static {
    fn scale<'a>(
        &'a self,
        stage: &'a str,
        from: usize,
        to: usize,
    ) -> BoxFuture<'a, Result<(), StageError>>;
}

/// Settings of `circuit-break`: the seed's `breakDuration`, `halfOpenRequests` and
/// `successThreshold` (default: every probe must succeed).
#[derive(Debug, Clone, Copy)]
pub struct CircuitBreakAction {
    pub break_duration: Duration,
    pub half_open_requests: NonZeroU32,
    pub success_threshold: Option<NonZeroU32>,
}

impl CircuitBreakAction {
    pub fn new(break_duration: Duration, half_open_requests: u32) -> Result<Self, InvalidConfig> {
        let action = CircuitBreakAction {
            break_duration,
            half_open_requests: NonZeroU32::new(half_open_requests)
                .ok_or_else(|| InvalidConfig::new("halfOpenRequests", "must be at least 1"))?,
            success_threshold: None,
        };
        action.validate()?;
        Ok(action)
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        if self.break_duration.is_zero() {
            return Err(InvalidConfig::new(
                "breakDuration",
                "must be longer than zero",
            ));
        }
        if self
            .success_threshold
            .is_some_and(|s| s > self.half_open_requests)
        {
            return Err(InvalidConfig::new(
                "successThreshold",
                "cannot be more than halfOpenRequests",
            ));
        }
        Ok(())
    }
}

/// When a `throttle` gives the stage its earlier rate back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// Keep the cap until something else changes it.
    Never,
    /// After this long.
    After(Duration),
    /// Once the strategy's triggers no longer match the stage.
    WhenHealthy,
}

/// Settings of `throttle`.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleAction {
    pub rate: Rate,
    pub restore: Restore,
}

/// Settings of `notify`.
#[derive(Debug, Clone)]
pub struct NotifyAction {
    pub severity: Severity,
    /// Defaults to a description of what matched.
    pub message: Option<String>,
}

impl Default for NotifyAction {
    fn default() -> Self {
        NotifyAction {
            severity: Severity::Warning,
            message: None,
        }
    }
}

type CustomFn =
    Arc<dyn Fn(ActionContext) -> BoxFuture<'static, Result<Remedy, StageError>> + Send + Sync>;

/// A remedy of your own (the seed's `handler`). When it heals a failed attempt, the
/// [`Remedy`] it returns decides that attempt's fate (`Remedy::Retry { after: ZERO }` to run it
/// again at once); when it runs on the evaluation tick, the remedy is ignored.
#[derive(Clone)]
pub struct CustomAction {
    pub(crate) handler: CustomFn,
}

/// What a custom action is given.
#[derive(Clone)]
pub struct ActionContext {
    pub run: Option<RunId>,
    pub stage: Arc<str>,
    pub item: Option<Arc<str>>,
    pub strategy: Arc<str>,
    /// The error being healed, if a failed attempt is why the action runs.
    pub error: Option<StageError>,
    pub metrics: MetricsCollector,
    /// The stage's live controls, when the pipeline is running.
    pub control: Option<Arc<StageControl>>,
}
