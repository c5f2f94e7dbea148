//! `throttle`: cap how fast a stage's attempts start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Action, Applied, SideAction, Subject, not_running};
use crate::BoxFuture;
use crate::error::InvalidConfig;
use crate::event::ActionKind;
use crate::pipeline::StageControl;
use crate::resilience::Rate;

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
#[derive(Debug, Clone)]
pub struct ThrottleAction {
    /// The cap put on the stage: permits per second, and burst.
    pub rate: Rate,
    /// When the stage gets its earlier rate back.
    pub restore: Restore,
    /// Stages capped by this action with `Restore::WhenHealthy`, and the rate they had before.
    capped: Arc<Mutex<HashMap<Arc<str>, Option<Rate>>>>,
}

impl ThrottleAction {
    /// Caps a stage at `rate`, lifted as `restore` says.
    pub fn new(rate: Rate, restore: Restore) -> Self {
        ThrottleAction {
            rate,
            restore,
            capped: Arc::default(),
        }
    }

    fn capped(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Option<Rate>>> {
        self.capped.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `throttle`'s `config`: `rate` permits per second (required), `burst`, and when to lift it:
/// `restoreAfter` a duration, or `restoreWhenHealthy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Attempts the stage may start per second, on average; required, above zero.
    pub rate: Option<f64>,
    /// How many attempts may start at once after a quiet spell; default 1.
    pub burst: Option<u32>,
    /// Lift the cap after this long (milliseconds or a string such as `"5m"`); default never.
    #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub restore_after: Option<Duration>,
    /// Lift the cap once the strategy's triggers no longer match; not with `restoreAfter`.
    pub restore_when_healthy: Option<bool>,
}

impl ThrottleConfig {
    /// The action; fails if `rate` is missing or not positive, `burst` is 0, or both ways of
    /// lifting the cap are given.
    pub fn build(&self) -> Result<ThrottleAction, InvalidConfig> {
        let rate = self.rate.ok_or_else(|| {
            InvalidConfig::new("rate", "throttle needs a `rate` (permits per second)")
        })?;
        let restore = match (self.restore_after, self.restore_when_healthy) {
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
        Ok(ThrottleAction::new(
            Rate::new(rate, self.burst.unwrap_or(1))?,
            restore,
        ))
    }
}

impl From<ThrottleAction> for Action {
    fn from(action: ThrottleAction) -> Self {
        Action::Side(Arc::new(action))
    }
}

impl SideAction for ThrottleAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Throttle
    }

    fn apply<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        let applied = match subject.control() {
            None => not_running(),
            Some(control) => {
                let previous = control.rate();
                if previous == Some(self.rate) {
                    Applied::failed(format!("already throttled at {}/s", self.rate.per_second()))
                } else {
                    control.set_rate(Some(self.rate));
                    match self.restore {
                        Restore::Never => {}
                        Restore::After(after) => {
                            let (control, rate) = (Arc::clone(control), self.rate);
                            tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                if control.rate() == Some(rate) {
                                    control.set_rate(previous);
                                }
                            });
                        }
                        Restore::WhenHealthy => {
                            self.capped()
                                .entry(Arc::clone(subject.stage))
                                .or_insert(previous);
                        }
                    }
                    Applied::done(format!(
                        "rate capped at {}/s (burst {})",
                        self.rate.per_second(),
                        self.rate.burst()
                    ))
                }
            }
        };
        Box::pin(std::future::ready(applied))
    }

    fn on_quiet(&self, stage: &StageControl) {
        if let Some(previous) = self.capped().remove(stage.stage()) {
            stage.set_rate(previous);
        }
    }
}
