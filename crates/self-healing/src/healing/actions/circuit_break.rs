//! `circuit-break`: open the stage's breaker; work waits instead of burning attempts.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Action, Applied, SideAction, Subject, not_running};
use crate::BoxFuture;
use crate::error::InvalidConfig;
use crate::event::ActionKind;
use crate::resilience::BreakerSettings;

/// Settings of `circuit-break`: the seed's `breakDuration`, `halfOpenRequests` and
/// `successThreshold` (default: every probe must succeed).
#[derive(Debug, Clone, Copy)]
pub struct CircuitBreakAction {
    /// How long the breaker stays open before it lets probes through; longer than zero.
    pub break_duration: Duration,
    /// How many probe attempts the half-open breaker lets through.
    pub half_open_requests: NonZeroU32,
    /// How many probes must succeed to close it again, at most `half_open_requests`; `None`
    /// means all of them.
    pub success_threshold: Option<NonZeroU32>,
}

impl CircuitBreakAction {
    /// A break of `break_duration` then `half_open_requests` probes, all of which must succeed;
    /// fails if the duration is zero or there are no probes.
    pub fn new(break_duration: Duration, half_open_requests: u32) -> Result<Self, InvalidConfig> {
        let action = CircuitBreakAction {
            break_duration,
            half_open_requests: NonZeroU32::new(half_open_requests)
                .ok_or_else(|| InvalidConfig::new("halfOpenRequests", "must be at least 1"))?,
            success_threshold: None,
        };
        SideAction::validate(&action)?;
        Ok(action)
    }

    /// The break and probes a breaker already has (what an operator's `circuit-break` uses).
    pub fn like(settings: &BreakerSettings) -> Self {
        CircuitBreakAction {
            break_duration: settings.break_duration,
            half_open_requests: settings.half_open_requests,
            success_threshold: Some(settings.success_threshold),
        }
    }
}

/// `circuit-break`'s `config`; the defaults are a 60 s break and 3 probes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakConfig {
    /// How long the breaker stays open (milliseconds or a string such as `"60s"`);
    /// default 60 s.
    #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub break_duration: Option<Duration>,
    /// How many probes the half-open breaker lets through; default 3, at least 1.
    pub half_open_requests: Option<u32>,
    /// How many probes must succeed to close it; default all of them.
    pub success_threshold: Option<u32>,
}

impl CircuitBreakConfig {
    /// The action, with the defaults filled in; the error names the setting that is out of range.
    pub fn build(&self) -> Result<CircuitBreakAction, InvalidConfig> {
        let mut action = CircuitBreakAction::new(
            self.break_duration.unwrap_or(Duration::from_secs(60)),
            self.half_open_requests.unwrap_or(3),
        )?;
        if let Some(successes) = self.success_threshold {
            action.success_threshold = Some(
                NonZeroU32::new(successes)
                    .ok_or_else(|| InvalidConfig::new("successThreshold", "must be at least 1"))?,
            );
            SideAction::validate(&action)?;
        }
        Ok(action)
    }
}

impl From<CircuitBreakAction> for Action {
    fn from(action: CircuitBreakAction) -> Self {
        Action::Side(Arc::new(action))
    }
}

impl SideAction for CircuitBreakAction {
    fn kind(&self) -> ActionKind {
        ActionKind::CircuitBreak
    }

    fn apply<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        let applied = match subject.control() {
            None => not_running(),
            Some(control) => {
                let breaker = control.breaker();
                let mut settings = breaker.settings();
                settings.break_duration = self.break_duration;
                settings.half_open_requests = self.half_open_requests;
                settings.success_threshold =
                    self.success_threshold.unwrap_or(self.half_open_requests);
                match breaker.set_settings(settings) {
                    Err(error) => Applied::failed(error.to_string()),
                    Ok(()) => {
                        breaker.trip(Some(self.break_duration));
                        Applied::done(format!(
                            "breaker open for {:?}, then {} probe(s)",
                            self.break_duration, self.half_open_requests
                        ))
                    }
                }
            }
        };
        Box::pin(std::future::ready(applied))
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
