//! Alerts and the channels that deliver them.
//!
//! A [`Notifier`] is one channel (Slack, PagerDuty, email, a webhook…). The healer's `notify`
//! action and its healing budget hand [`Alert`]s to a [`Dispatcher`], which delivers them in the
//! background with retries so a dead channel never holds up healing; a failed delivery is
//! published on the event bus as `alert-failed`.

mod channel;
mod dispatch;
mod email;
mod pagerduty;
#[cfg(feature = "http")]
mod post;
mod slack;
mod webhook;

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

pub use channel::ChannelConfig;
pub use dispatch::Dispatcher;
pub use email::EmailConfig;
pub use pagerduty::{PAGERDUTY_EVENTS, PagerDutyConfig};
pub use slack::SlackConfig;
pub use webhook::WebhookConfig;

use crate::BoxFuture;
use crate::error::Severity;

/// One alert. `dedup_key` is stable for the same project, stage and cause, so a channel that
/// deduplicates (PagerDuty) groups repeats and can resolve them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// How serious it is; channels skip alerts below their minimum severity.
    pub severity: Severity,
    /// A one-line summary.
    pub title: String,
    /// The details; the title unless set otherwise.
    pub message: String,
    /// The name of the pipeline the alert is about.
    pub project: Arc<str>,
    /// The stage it concerns, if any.
    pub stage: Option<Arc<str>>,
    /// The strategy that raised it, if a strategy did.
    pub strategy: Option<Arc<str>>,
    /// Identifies repeats of the same alert, for channels that group or resolve them.
    pub dedup_key: String,
    /// Milliseconds since the Unix epoch on the wire.
    #[serde(serialize_with = "crate::serde_ms::system_time::serialize")]
    pub at: SystemTime,
    /// True when this alert says an earlier one with the same key is over.
    pub resolved: bool,
}

impl Alert {
    /// A firing alert, now, with no stage or strategy; `message` is the title until set.
    pub fn new(
        severity: Severity,
        project: impl Into<Arc<str>>,
        title: impl Into<String>,
        dedup_key: impl Into<String>,
    ) -> Self {
        let title = title.into();
        Alert {
            severity,
            message: title.clone(),
            title,
            project: project.into(),
            stage: None,
            strategy: None,
            dedup_key: dedup_key.into(),
            at: SystemTime::now(),
            resolved: false,
        }
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{channel}: {reason}")]
pub struct NotifyError {
    /// The name of the channel that failed.
    pub channel: String,
    /// What went wrong, without the channel's secret URL.
    pub reason: String,
}

/// An alert channel. One required method; delivery should be idempotent per `dedup_key`.
pub trait Notifier: Send + Sync + 'static {
    /// Delivers `alert`; an error means it was not delivered.
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>>;

    /// The channel's name in records and errors.
    fn name(&self) -> &str {
        "notifier"
    }

    /// Alerts below this severity are not sent to this channel (the seed's `minSeverity`).
    fn min_severity(&self) -> Severity {
        Severity::Warning
    }
}

/// The error of an HTTP channel in a build without the `http` feature.
#[cfg(not(feature = "http"))]
fn needs_http(kind: &str) -> crate::error::InvalidConfig {
    crate::error::InvalidConfig::new(
        "type",
        format!("`{kind}` channels need the `http` feature, which this build does not have"),
    )
}
