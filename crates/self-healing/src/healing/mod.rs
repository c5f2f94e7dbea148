//! The AutoHealer: strategies, their triggers and actions, and the gate that keeps them in
//! check.
//!
//! An [`AutoHealer`] is a [`Supervisor`]: [`install`](AutoHealer::install) it on a pipeline's
//! builder and every failed attempt is matched against its strategies; while a run goes on it
//! also evaluates state triggers on a tick and acts through the stages'
//! [`StageControl`](crate::pipeline::StageControl)s. It reads health from the monitors it
//! [`watch`](AutoHealer::watch)es. Its decisions are [`HealingRecord`]s, the vocabulary of which
//! lives in [`event`](crate::event) and is re-exported here.

mod actions;
mod gate;
mod healer;
mod strategy;
mod thresholds;
mod trigger;

pub use crate::event::{ActionKind, HealingRecord, Outcome, TriggerKind, TriggerMatch};
pub use crate::pipeline::{Failure, Remedy, RetrySupervisor, RunScope, Supervisor};
pub use actions::{
    Action, ActionContext, AdaptiveScale, Applied, CircuitBreakAction, CircuitBreakConfig,
    CustomAction, CustomConfig, DecisiveAction, Effect, FailoverAction, FailoverConfig,
    NotifyAction, RestartAction, Restore, RetryAction, RollbackAction, RollbackConfig, ScaleAction,
    ScaleConfig, ScaleDirection, ScaleMode, Scaler, SideAction, Subject, ThrottleAction,
    ThrottleConfig,
};
pub use gate::Budget;
pub use healer::{
    ADAPTED_EVERY, AutoHealer, AutoHealerBuilder, DEFAULT_EVALUATION_INTERVAL,
    DEFAULT_HISTORY_CAPACITY, DEPENDS_ON, MANUAL, RETRY_POLICY,
};
pub use strategy::{HealingStrategy, Mode, StrategyOverride, StrategySettings};
pub use thresholds::AlertThreshold;
pub use trigger::{
    AnomalyTrigger, CustomTrigger, DEFAULT_MIN_SAMPLES, ErrorTrigger, HealthTrigger,
    MetricsTrigger, Operator, Sensitivity, TimeoutTrigger, Trigger, TriggerContext,
};
