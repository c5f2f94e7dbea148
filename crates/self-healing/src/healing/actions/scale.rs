//! `scale`: change a stage's concurrency, and optionally something outside the process.

use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, Applied, SideAction, Subject, not_running};
use crate::BoxFuture;
use crate::error::{InvalidConfig, StageError};
use crate::event::ActionKind;
use crate::resilience::AdaptiveSettings;

/// Which way `scale` moves a stage's concurrency (`up` or `down` in files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleDirection {
    /// Raise the concurrency (the default).
    #[default]
    Up,
    /// Lower the concurrency.
    Down,
}

/// Settings of `scale`: the seed's `direction`, `amount`, `maxInstances`, `minInstances`.
#[derive(Clone)]
pub struct ScaleAction {
    /// Which way to scale.
    pub direction: ScaleDirection,
    /// How much to change the concurrency by; at least 1.
    pub amount: usize,
    /// The highest concurrency scaling up reaches; `None` means no limit.
    pub max_instances: Option<usize>,
    /// The lowest concurrency scaling down reaches; at least 1 (the default).
    pub min_instances: usize,
    /// Something outside the process to scale as well (a worker pool, a deployment).
    pub scaler: Option<Arc<dyn Scaler>>,
}

/// Scales something outside the process when `scale` acts. One required method.
pub trait Scaler: Send + Sync + 'static {
    /// Scales what `stage` runs on from concurrency `from` to `to`, before the stage's own
    /// concurrency changes; an error stops the scaling.
    fn scale<'a>(
        &'a self,
        stage: &'a str,
        from: usize,
        to: usize,
    ) -> BoxFuture<'a, Result<(), StageError>>;
}

impl ScaleAction {
    /// Scales up by `amount`, with no maximum and a minimum of 1.
    pub fn up(amount: usize) -> Self {
        ScaleAction {
            direction: ScaleDirection::Up,
            amount,
            max_instances: None,
            min_instances: 1,
            scaler: None,
        }
    }

    /// Scales down by `amount`, to no lower than 1.
    pub fn down(amount: usize) -> Self {
        ScaleAction {
            direction: ScaleDirection::Down,
            ..ScaleAction::up(amount)
        }
    }

    /// Caps scaling up at `max`.
    pub fn max_instances(mut self, max: usize) -> Self {
        self.max_instances = Some(max);
        self
    }

    /// Stops scaling down at `min`.
    pub fn min_instances(mut self, min: usize) -> Self {
        self.min_instances = min;
        self
    }

    /// Also scales something outside the process with `scaler`.
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

/// How `scale` decides the concurrency (`mode` in files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleMode {
    /// By `amount` in `direction` when the strategy's triggers match (the seed's; the default).
    #[default]
    Step,
    /// All the time its stages run, from each attempt's latency ([`AdaptiveScale`]).
    Adaptive,
}

/// `scale`'s `config`: the seed's keys, plus a `command` (argv, no shell) run as the external
/// scaler with `MIGRATIONPILOT_STAGE`, `MIGRATIONPILOT_FROM` and `MIGRATIONPILOT_TO`; or, with
/// `mode: adaptive`, `minInstances`, `maxInstances` and `latencyTolerance`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleConfig {
    /// `step` (the default) or `adaptive`.
    pub mode: Option<ScaleMode>,
    /// Adaptive mode: how much slower than the healthy baseline answers may get; default 1.5.
    pub latency_tolerance: Option<f64>,
    /// `up` (the default) or `down`.
    pub direction: Option<ScaleDirection>,
    /// How much to change the concurrency by; default 1.
    pub amount: Option<usize>,
    /// The highest concurrency to scale up to; default no limit.
    pub max_instances: Option<usize>,
    /// The lowest concurrency to scale down to; default 1.
    pub min_instances: Option<usize>,
    /// An external scaler to run (program and arguments, no shell); default none.
    pub command: Option<Vec<String>>,
}

impl ScaleConfig {
    /// The action, with the defaults filled in; the error names the setting that is out of range.
    pub fn build(&self) -> Result<Action, InvalidConfig> {
        if self.mode == Some(ScaleMode::Adaptive) {
            for (key, given) in [
                ("direction", self.direction.is_some()),
                ("amount", self.amount.is_some()),
                ("command", self.command.is_some()),
            ] {
                if given {
                    return Err(InvalidConfig::new(
                        key,
                        "does not apply to `mode: adaptive` (it takes minInstances, maxInstances, latencyTolerance)",
                    ));
                }
            }
            let max = self.max_instances.ok_or_else(|| {
                InvalidConfig::new("maxInstances", "`mode: adaptive` needs a maxInstances")
            })?;
            let mut settings = AdaptiveSettings::new(self.min_instances.unwrap_or(1), max);
            if let Some(tolerance) = self.latency_tolerance {
                settings.tolerance = tolerance;
            }
            settings.validate()?;
            return Ok(AdaptiveScale(settings).into());
        }
        if self.latency_tolerance.is_some() {
            return Err(InvalidConfig::new(
                "latencyTolerance",
                "applies to `mode: adaptive`",
            ));
        }
        self.step().map(Action::from)
    }

    fn step(&self) -> Result<ScaleAction, InvalidConfig> {
        let amount = self.amount.unwrap_or(1);
        let mut scale = match self.direction.unwrap_or_default() {
            ScaleDirection::Up => ScaleAction::up(amount),
            ScaleDirection::Down => ScaleAction::down(amount),
        };
        if let Some(max) = self.max_instances {
            scale = scale.max_instances(max);
        }
        if let Some(min) = self.min_instances {
            scale = scale.min_instances(min);
        }
        if let Some(command) = &self.command {
            crate::process::check_argv(command)?;
            scale = scale.scaler(Arc::new(CommandScaler(command.clone())));
        }
        SideAction::validate(&scale)?;
        Ok(scale)
    }
}

/// An external scaler that runs a command with the old and new concurrency.
struct CommandScaler(Vec<String>);

impl Scaler for CommandScaler {
    fn scale<'a>(
        &'a self,
        stage: &'a str,
        from: usize,
        to: usize,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let env = [
                ("MIGRATIONPILOT_STAGE", stage.to_owned()),
                ("MIGRATIONPILOT_FROM", from.to_string()),
                ("MIGRATIONPILOT_TO", to.to_string()),
            ];
            crate::process::run_owned(&self.0, &env).await
        })
    }
}

impl From<ScaleAction> for Action {
    fn from(action: ScaleAction) -> Self {
        Action::Side(Arc::new(action))
    }
}

impl SideAction for ScaleAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Scale
    }

    fn apply<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        Box::pin(async move {
            let Some(control) = subject.control() else {
                return not_running();
            };
            let from = control.concurrency();
            let to = self.target(from);
            if to == from {
                return Applied::failed(format!("concurrency already at its bound of {from}"));
            }
            if let Some(scaler) = &self.scaler
                && let Err(error) = scaler.scale(subject.stage, from, to).await
            {
                return Applied::failed(format!("external scaler failed: {error}"));
            }
            match control.set_concurrency(to) {
                Ok(_) => Applied::done(format!("concurrency {from} → {to}")),
                Err(error) => Applied::failed(error.to_string()),
            }
        })
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

/// `scale` with `mode: adaptive`: the stages its strategy covers get an AIMD controller of
/// their concurrency ([`AdaptiveLimit`](crate::resilience::AdaptiveLimit)) while they run,
/// within `minInstances`..=`maxInstances`. The healer installs it as each run starts (it takes
/// no triggers); every change is a `concurrency-changed` event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveScale(pub AdaptiveSettings);

impl From<AdaptiveScale> for Action {
    fn from(action: AdaptiveScale) -> Self {
        Action::Side(Arc::new(action))
    }
}

impl SideAction for AdaptiveScale {
    fn kind(&self) -> ActionKind {
        ActionKind::Scale
    }

    /// Never called by the healer, which installs the controller as each run starts and on
    /// each evaluation tick (the strategy has no triggers to match).
    fn apply<'a>(&'a self, _: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        Box::pin(std::future::ready(Applied::failed(
            "adaptive concurrency runs from the start of each run; it is not applied on a match",
        )))
    }

    fn adaptive_concurrency(&self) -> Option<AdaptiveSettings> {
        Some(self.0)
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        self.0.validate()
    }
}
