//! Alerts and the channels that deliver them.
//!
//! An [`Alert`] has a lifecycle: it **fires** when its condition starts and is **resolved** when
//! it ends, under one stable fingerprint (project, stage, alert name). The [`Alerting`] service
//! applies the routing rules ([`Rules`]: a critical alert inhibits the warning of the same
//! fingerprint, alerts that fire within `groupWait` go out together, a firing alert repeats no
//! more often than `repeatInterval`), journals every alert and delivery in an [`Outbox`] before
//! delivering, and delivers in the background with retries, so a dead or slow channel never holds
//! up healing and an undelivered alert survives a crash. [`Alerting::watch_run`] derives the healing
//! alerts from a run's events (rollback, retries exhausted, restart limit, breaker opened) and
//! the built-in ones ([`RUN_FAILED`], [`RUN_STUCK`], [`CHECK_DOWN`]; [`RUN_LOST`] is raised by
//! whoever finds a run lost), and resolves them when the stage or run later succeeds, the
//! breaker closes or the check recovers. Each alert carries a runbook ([`Runbooks`]).
//!
//! A [`Notifier`] is one channel: Slack, PagerDuty, email, a webhook, Alertmanager, or your own.

mod alertmanager;
mod builtin;
mod channel;
mod dispatch;
mod email;
mod outbox;
mod pagerduty;
#[cfg(feature = "http")]
mod post;
mod router;
mod slack;
mod watch;
mod webhook;

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use alertmanager::AlertmanagerConfig;
pub use builtin::{
    BuiltinAlert, BuiltinAlerts, CHECK_DOWN, RUN_FAILED, RUN_LOST, RUN_STUCK, Runbooks, what_to_do,
};
pub use channel::ChannelConfig;
pub use dispatch::{Alerting, AlertingBuilder};
pub use email::{EmailConfig, SmtpConfig, SmtpTls};
pub use outbox::{Delivery, MAX_ATTEMPTS, MemoryOutbox, Outbox};
pub use pagerduty::{PAGERDUTY_EVENTS, PagerDutyConfig};
pub use router::{Notice, Router, Rules};
pub use slack::SlackConfig;
pub use watch::{
    BREAKER_OPEN, HEALING_BUDGET, RESTART_LIMIT, RETRIES_EXHAUSTED_ALERT, ROLLBACK, WatchStart,
};
pub use webhook::WebhookConfig;

use crate::BoxFuture;
use crate::error::Severity;

/// Whether an alert's condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// The condition ended.
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert, firing or resolved. Its [`fingerprint`](Self::fingerprint) (project, stage, name)
/// is the same for both, so channels that deduplicate (PagerDuty, Alertmanager) can resolve what
/// they were told fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// What kind of alert it is: a metric's threshold (`errorRate`), a built-in alert
    /// (`run-failed`, `run-lost`, `run-stuck`, `check-down`), a healing alert (`rollback`,
    /// `retries-exhausted`, `restart-limit`, `healing-budget`, `circuit-breaker-open`) or the
    /// `notify` strategy's name.
    pub name: Arc<str>,
    /// The project (pipeline) it is about.
    pub project: Arc<str>,
    /// The stage it concerns, if any.
    #[serde(default)]
    pub stage: Option<Arc<str>>,
    /// What it is about within its stage, if an alert of its name can be about several: the
    /// health check of a `check-down`, the run of a `run-lost`. Part of its fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Arc<str>>,
    /// How serious it is; channels skip alerts below their minimum severity.
    pub severity: Severity,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// A one-line summary (channels add the project).
    pub title: String,
    /// The details.
    pub message: String,
    /// The value that made it fire (a metric's), if there is one.
    #[serde(default)]
    pub value: Option<f64>,
    /// The strategy that raised it, if a strategy did.
    #[serde(default)]
    pub strategy: Option<Arc<str>>,
    /// When its condition started; milliseconds since the Unix epoch on the wire.
    #[serde(with = "crate::serde_ms::system_time")]
    pub starts_at: SystemTime,
    /// When its condition ended; `None` while firing.
    #[serde(default, with = "crate::serde_ms::system_time_opt")]
    pub ends_at: Option<SystemTime>,
    /// Where a person finds what to do about it (a URL, usually): the `runbook` of what raised
    /// it, else the project's (`alerts.runbook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<Arc<str>>,
}

impl Alert {
    /// A firing alert that starts now, with no stage, value or strategy; its message is the
    /// title until set.
    pub fn firing(
        severity: Severity,
        project: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
        title: impl Into<String>,
    ) -> Self {
        let title = title.into();
        Alert {
            name: name.into(),
            project: project.into(),
            stage: None,
            subject: None,
            severity,
            status: AlertStatus::Firing,
            message: title.clone(),
            title,
            value: None,
            strategy: None,
            starts_at: SystemTime::now(),
            ends_at: None,
            runbook: None,
        }
    }

    /// The same alert for `stage`.
    pub fn on_stage(mut self, stage: impl Into<Arc<str>>) -> Self {
        self.stage = Some(stage.into());
        self
    }

    /// The same alert with this message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// `project/stage/name` (`-` for no stage), and `/subject` when it has one: the same for
    /// the alert firing and resolved.
    pub fn fingerprint(&self) -> String {
        let print = fingerprint(&self.project, self.stage.as_deref(), &self.name);
        match &self.subject {
            Some(subject) => format!("{print}/{subject}"),
            None => print,
        }
    }

    /// Whether its condition ended.
    pub fn is_resolved(&self) -> bool {
        self.status == AlertStatus::Resolved
    }
}

/// The fingerprint of the alert `name` of `project` on `stage`.
pub fn fingerprint(project: &str, stage: Option<&str>, name: &str) -> String {
    format!("{project}/{}/{name}", stage.unwrap_or("-"))
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{channel}: {reason}")]
pub struct NotifyError {
    /// The name of the channel that failed.
    pub channel: String,
    /// What went wrong, without the channel's secrets.
    pub reason: String,
}

/// An alert channel. It delivers a group of alerts (those that fired or resolved together,
/// within `groupWait`) as one message where the channel allows; delivery should be idempotent
/// per fingerprint, since after a crash a group may be delivered again.
pub trait Notifier: Send + Sync + 'static {
    /// Delivers `alerts`, never empty; an error means none can be taken as delivered.
    fn notify<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>>;

    /// The channel's name in records and errors (unique among a pipeline's channels).
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

/// Whether a runbook is a web address a channel may link to (`http://` or `https://`): a
/// link of any other scheme is not made, the text is shown instead.
pub fn is_web_address(runbook: &str) -> bool {
    let lower = runbook.trim_start().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://"))
        && !runbook.contains(['<', '>', '|', '\n', ' '])
}

/// A plain-text line for an alert: `[critical] payroll: errorRate at 0.42 … (stage analysis)`.
pub fn summary(alert: &Alert) -> String {
    let state = match alert.status {
        AlertStatus::Firing => alert.severity.as_str(),
        AlertStatus::Resolved => "resolved",
    };
    let stage = alert
        .stage
        .as_deref()
        .map(|s| format!(" (stage {s})"))
        .unwrap_or_default();
    let value = alert.value.map(|v| format!(" [{v}]")).unwrap_or_default();
    format!("[{state}] {}: {}{stage}{value}", alert.project, alert.title)
}
