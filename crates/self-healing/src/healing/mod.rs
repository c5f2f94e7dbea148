//! The AutoHealer: strategies, their triggers and actions, and the gate that keeps them in
//! check.
//!
//! An [`AutoHealer`] is a [`Supervisor`]: [`install`](AutoHealer::install) it on a pipeline's
//! builder and every failed attempt is matched against its strategies; while a run goes on it
//! also evaluates state triggers on a tick and acts through the stages'
//! [`StageControl`](crate::pipeline::StageControl)s. It reads health from the monitors it
//! [`watch`](AutoHealer::watch)es. Its decisions are [`HealingRecord`]s, the vocabulary of which
//! lives in [`event`](crate::event) and is re-exported here.

mod action;
mod healer;
mod strategy;
mod trigger;

pub use crate::event::{ActionKind, HealingRecord, Outcome, TriggerKind, TriggerMatch};
pub use crate::pipeline::{Failure, Remedy, RetrySupervisor, RunScope, Supervisor};
pub use action::{
    Action, ActionContext, CircuitBreakAction, CustomAction, NotifyAction, RestartAction, Restore,
    ScaleAction, ScaleDirection, Scaler, ThrottleAction,
};
pub use healer::{
    AutoHealer, AutoHealerBuilder, Budget, DEFAULT_EVALUATION_INTERVAL, DEFAULT_HISTORY_CAPACITY,
};
pub use strategy::{HealingStrategy, Mode, StrategyOverride};
pub use trigger::{
    AnomalyTrigger, CustomTrigger, DEFAULT_MIN_SAMPLES, ErrorTrigger, HealthTrigger,
    MetricsTrigger, Operator, Sensitivity, TimeoutTrigger, Trigger, TriggerContext,
};
