//! Prometheus Alertmanager: its `/api/v2/alerts`, with labels, annotations, `startsAt` and, once
//! resolved, `endsAt`.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `alertmanager`: the Alertmanager's base `url` (`http://alertmanager:9093`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// The channel's name in records (default `alertmanager`).
    pub name: Option<String>,
    /// The Alertmanager's base URL; alerts go to `URL/api/v2/alerts`.
    pub url: String,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

impl AlertmanagerConfig {
    /// The runnable channel; fails if `url` is not an http(s) URL.
    #[cfg(feature = "http")]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        let url = format!("{}/api/v2/alerts", self.url.trim_end_matches('/'));
        Ok(Arc::new(super::post::JsonChannel {
            post: super::post::JsonPost::new(
                self.name.as_deref().unwrap_or("alertmanager"),
                "url",
                &url,
                self.min_severity,
            )?,
            body,
        }))
    }

    /// Always fails: Alertmanager channels need the `http` feature.
    #[cfg(not(feature = "http"))]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(super::needs_http("alertmanager"))
    }
}

/// The alerts as Alertmanager's API v2 takes them. `alertname`, `project`, `stage`, `subject`
/// and `severity` are labels (so Alertmanager's own grouping and inhibition can use them), the
/// runbook the `runbook_url` annotation; a resolved alert carries its `endsAt`, a firing one an
/// `endsAt` a day ahead.
#[cfg(feature = "http")]
pub(super) fn body(alerts: &[super::Alert]) -> serde_json::Value {
    const FIRING_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|alert| {
            let mut labels = serde_json::json!({
                "alertname": alert.name.as_ref(),
                "project": alert.project.as_ref(),
                "severity": alert.severity.as_str(),
                "source": "migrationpilot",
            });
            if let Some(stage) = &alert.stage {
                labels["stage"] = serde_json::json!(stage.as_ref());
            }
            if let Some(subject) = &alert.subject {
                labels["subject"] = serde_json::json!(subject.as_ref());
            }
            let mut body = serde_json::json!({
                "labels": labels,
                "annotations": {
                    "summary": format!("{}: {}", alert.project, alert.title),
                    "description": alert.message,
                },
                "startsAt": crate::clock::rfc3339(alert.starts_at),
            });
            if let Some(value) = alert.value {
                body["annotations"]["value"] = serde_json::json!(value.to_string());
            }
            if let Some(runbook) = &alert.runbook {
                body["annotations"]["runbook_url"] = serde_json::json!(runbook.as_ref());
            }
            // A firing alert holds for a day unless resolved or sent again (Alertmanager
            // would otherwise take it as resolved after its resolve_timeout, 5 min by default,
            // while repeats come every repeatInterval, 4 h by default).
            let ends_at = alert
                .ends_at
                .unwrap_or_else(|| std::time::SystemTime::now() + FIRING_FOR);
            body["endsAt"] = serde_json::json!(crate::clock::rfc3339(ends_at));
            body
        })
        .collect();
    serde_json::Value::Array(alerts)
}
