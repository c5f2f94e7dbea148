//! `notify`: alert people through the healer's channels.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Action, Applied, SideAction, Subject};
use crate::BoxFuture;
use crate::alert::{Alert, Notice};
use crate::error::Severity;
use crate::event::ActionKind;

/// Settings of `notify`, also its `config` in files.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifyAction {
    /// The alert's severity; default `warning`.
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

impl From<NotifyAction> for Action {
    fn from(action: NotifyAction) -> Self {
        Action::Side(Arc::new(action))
    }
}

impl SideAction for NotifyAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Notify
    }

    fn apply<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied> {
        let project = subject.project;
        let message = self.message.clone().unwrap_or_else(|| {
            format!(
                "{} on stage `{}`: {}",
                subject.strategy, subject.stage, subject.trigger.description
            )
        });
        let mut alert = Alert::firing(
            self.severity,
            Arc::clone(project),
            Arc::clone(subject.strategy),
            subject.strategy.to_string(),
        )
        .on_stage(Arc::clone(subject.stage))
        .message(message);
        alert.strategy = Some(Arc::clone(subject.strategy));
        alert.value = subject.trigger.observed;
        alert.starts_at = subject.at;
        let channels = subject
            .alerts
            .channels()
            .iter()
            .filter(|c| self.severity >= c.min_severity())
            .count();
        let manual = if subject.manual {
            " (healing is in manual mode: alerts still go out)"
        } else {
            ""
        };
        let applied = match subject.alerts.fire(alert) {
            _ if channels == 0 => {
                Applied::failed(format!("no alert channel takes severity {}", self.severity))
            }
            Notice::Send(_) | Notice::Lowered { .. } => {
                Applied::done(format!("alert to {channels} channel(s){manual}"))
            }
            Notice::Inhibited => Applied::done(format!(
                "alert inhibited: a critical alert of the same fingerprint fires{manual}"
            )),
            Notice::Held | Notice::Nothing => Applied::done(format!(
                "alert already sent, repeated after the repeat interval{manual}"
            )),
        };
        Box::pin(std::future::ready(applied))
    }
}
