//! `failover`: switch the stage to its alternate handler.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Action, Applied, DecisiveAction, Subject, not_running};
use crate::BoxFuture;
use crate::event::{ActionKind, HandlerKind};
use crate::pipeline::{Failure, Remedy};

/// `failover`. It has no settings: the stage declares its alternate handler.
/// `StageControl::set_failed_over(false)` switches back.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailoverAction;

/// `failover`'s `config`: it takes none (the stage declares its alternate handler).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {}

impl From<FailoverAction> for Action {
    fn from(action: FailoverAction) -> Self {
        Action::Decisive(std::sync::Arc::new(action))
    }
}

impl DecisiveAction for FailoverAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Failover
    }

    fn on_failure<'a>(
        &'a self,
        _: &'a Subject<'a>,
        failure: &'a Failure<'a>,
    ) -> BoxFuture<'a, Applied> {
        let applied = if !failure.can_fail_over {
            Applied::failed("the stage has no failover handler")
        } else if failure.handler == HandlerKind::Failover {
            Applied::failed("the failover handler failed too")
        } else {
            Applied::remedy(Remedy::Failover, "switching to the failover handler")
        };
        Box::pin(std::future::ready(applied))
    }

    fn on_stage<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        let applied = match subject.control().filter(|c| c.is_running()) {
            None => not_running(),
            Some(control) if control.set_failed_over(true) => {
                Applied::done("switched to the failover handler")
            }
            Some(control) if control.can_fail_over() => {
                Applied::failed("already on the failover handler")
            }
            Some(_) => Applied::failed("the stage has no failover handler"),
        };
        Box::pin(std::future::ready(applied))
    }
}
