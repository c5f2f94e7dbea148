//! Slack: an incoming webhook, one readable message per group of alerts.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `slack`: the incoming `webhook` URL (keep it in `${SLACK_WEBHOOK}`: it is a secret).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackConfig {
    /// The channel's name in records (default `slack`).
    pub name: Option<String>,
    /// The incoming webhook URL (http or https).
    pub webhook: String,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

impl SlackConfig {
    /// The runnable channel; fails if `webhook` is not an http(s) URL.
    #[cfg(feature = "http")]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Ok(Arc::new(super::post::JsonChannel {
            post: super::post::JsonPost::new(
                self.name.as_deref().unwrap_or("slack"),
                "webhook",
                &self.webhook,
                self.min_severity,
            )?,
            body,
        }))
    }

    /// Always fails: Slack channels need the `http` feature.
    #[cfg(not(feature = "http"))]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(super::needs_http("slack"))
    }
}

/// The message Slack shows: a line per alert (severity or `RESOLVED`, title, project, stage,
/// subject, value), then each alert's details and its runbook (a link when it is a web
/// address).
#[cfg(feature = "http")]
pub(super) fn body(alerts: &[super::Alert]) -> serde_json::Value {
    let mut text = String::new();
    for alert in alerts {
        let state = match alert.status {
            super::AlertStatus::Firing => alert.severity.as_str().to_uppercase(),
            super::AlertStatus::Resolved => "RESOLVED".to_owned(),
        };
        let stage = alert
            .stage
            .as_deref()
            .map(|s| format!(" · stage `{s}`"))
            .unwrap_or_default();
        let subject = alert
            .subject
            .as_deref()
            .map(|c| format!(" · `{c}`"))
            .unwrap_or_default();
        let value = alert
            .value
            .map(|v| format!(" · value {v}"))
            .unwrap_or_default();
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "*[{state}] {}: {}*\nproject `{}`{stage}{subject}{value}\n{}",
            alert.project, alert.title, alert.project, alert.message
        ));
        match alert.runbook.as_deref() {
            Some(runbook) if super::is_web_address(runbook) => {
                text.push_str(&format!("\n<{runbook}|Runbook>"));
            }
            Some(runbook) => text.push_str(&format!("\nRunbook: {runbook}")),
            None => {}
        }
    }
    serde_json::json!({ "text": text })
}
