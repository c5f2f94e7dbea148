//! `rollback`: stop, and compensate completed work in reverse order; the run ends rolled back.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Action, Applied, DecisiveAction, Subject, not_running};
use crate::BoxFuture;
use crate::error::InvalidConfig;
use crate::event::ActionKind;
use crate::pipeline::{Failure, Remedy, StageRequest};

/// `rollback`. It has no settings: compensation runs newest first, every completed item and
/// stage, and a failed compensation does not stop the others.
#[derive(Debug, Clone, Copy, Default)]
pub struct RollbackAction;

/// `rollback`'s `config`: the seed's `strategy`, whose one value is `immediate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackConfig {
    /// How to roll back: `immediate` (the default, and the only value).
    pub strategy: Option<String>,
}

impl RollbackConfig {
    /// The action; fails if `strategy` is anything but `immediate`.
    pub fn build(&self) -> Result<RollbackAction, InvalidConfig> {
        match self.strategy.as_deref() {
            None | Some("immediate") => Ok(RollbackAction),
            Some(other) => Err(InvalidConfig::new(
                "strategy",
                format!("`{other}` is not a rollback strategy: the one there is, is `immediate`"),
            )),
        }
    }
}

impl From<RollbackAction> for Action {
    fn from(action: RollbackAction) -> Self {
        Action::Decisive(std::sync::Arc::new(action))
    }
}

impl DecisiveAction for RollbackAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Rollback
    }

    fn on_failure<'a>(&'a self, _: &'a Subject<'a>, _: &'a Failure<'a>) -> BoxFuture<'a, Applied> {
        Box::pin(std::future::ready(Applied::remedy(
            Remedy::Rollback,
            "rolling the run back",
        )))
    }

    fn on_stage<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        let applied = match subject.control().filter(|c| c.is_running()) {
            Some(_) => Applied::requested(
                StageRequest::Rollback {
                    reason: subject.reason.to_owned(),
                },
                "rollback requested",
            ),
            None => not_running(),
        };
        Box::pin(std::future::ready(applied))
    }
}
