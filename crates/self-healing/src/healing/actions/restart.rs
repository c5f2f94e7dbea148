//! `restart`: stop the stage, run its `reset` hook, run it again from its start.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Action, Applied, DecisiveAction, Subject, not_running};
use crate::BoxFuture;
use crate::event::ActionKind;
use crate::pipeline::{Failure, Remedy, StageRequest};

/// Settings of `restart`, also its `config` in files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartAction {
    /// Restarts this strategy may cause per stage and run; the stage's own limit still holds.
    pub max_restarts: Option<u32>,
}

impl RestartAction {
    fn over_limit(&self, restarts: u32) -> Option<Applied> {
        let max = self.max_restarts?;
        (restarts >= max).then(|| {
            Applied::failed(format!(
                "{} of {max} reached",
                crate::event::RESTART_LIMIT_REACHED
            ))
        })
    }
}

impl From<RestartAction> for Action {
    fn from(action: RestartAction) -> Self {
        Action::Decisive(std::sync::Arc::new(action))
    }
}

impl DecisiveAction for RestartAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Restart
    }

    fn on_failure<'a>(
        &'a self,
        _: &'a Subject<'a>,
        failure: &'a Failure<'a>,
    ) -> BoxFuture<'a, Applied> {
        let applied = self
            .over_limit(failure.restarts)
            .unwrap_or_else(|| Applied::remedy(Remedy::Restart, "restarting the stage"));
        Box::pin(std::future::ready(applied))
    }

    fn on_stage<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        let applied = match subject.control().filter(|c| c.is_running()) {
            Some(control) => self.over_limit(control.restarts()).unwrap_or_else(|| {
                Applied::requested(
                    StageRequest::Restart {
                        reason: subject.reason.to_owned(),
                    },
                    "restart requested",
                )
            }),
            None => not_running(),
        };
        Box::pin(std::future::ready(applied))
    }
}
