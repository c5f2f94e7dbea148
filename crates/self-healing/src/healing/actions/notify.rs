//! `notify`: alert people through the healer's channels.

use std::sync::Arc;

use serde::Deserialize;

use super::{Action, Applied, SideAction, Subject};
use crate::BoxFuture;
use crate::alert::Alert;
use crate::error::Severity;
use crate::event::ActionKind;

/// Settings of `notify`, also its `config` in files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
        let alert = Alert {
            severity: self.severity,
            title: format!("{project}: {}", subject.strategy),
            message,
            dedup_key: format!("{project}/{}/{}", subject.stage, subject.strategy),
            project: Arc::clone(project),
            stage: Some(Arc::clone(subject.stage)),
            strategy: Some(Arc::clone(subject.strategy)),
            at: subject.at,
            resolved: false,
        };
        let failures = subject.scope.map(|s| (s.bus.clone(), s.run.clone()));
        let sent = subject.alerts.dispatch(alert, failures);
        let applied = if sent == 0 {
            Applied::failed(format!("no alert channel takes severity {}", self.severity))
        } else {
            Applied::done(format!("alert sent to {sent} channel(s)"))
        };
        Box::pin(std::future::ready(applied))
    }
}
