//! PagerDuty: the Events API v2, `trigger` and `resolve` under one `dedup_key`.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// Where the Events API v2 takes events, unless `url` says otherwise.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// `pagerduty`: the integration's `routingKey` (a secret: keep it in `${…}`), and `url` to
/// send elsewhere than the Events API v2 endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The channel's name in records (default `pagerduty`).
    pub name: Option<String>,
    /// The integration's routing key; must not be empty.
    pub routing_key: String,
    /// Where to send events; `None` means the Events API v2 (`PAGERDUTY_EVENTS`).
    pub url: Option<String>,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

impl PagerDutyConfig {
    /// The runnable channel; fails if the routing key is empty or the URL is not http(s).
    #[cfg(feature = "http")]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        if self.routing_key.trim().is_empty() {
            return Err(InvalidConfig::new("routingKey", "is empty"));
        }
        Ok(Arc::new(PagerDuty {
            post: super::post::JsonPost::new(
                self.name.as_deref().unwrap_or("pagerduty"),
                "url",
                self.url.as_deref().unwrap_or(PAGERDUTY_EVENTS),
                self.min_severity,
            )?,
            routing_key: self.routing_key.clone(),
        }))
    }

    /// Always fails: PagerDuty channels need the `http` feature.
    #[cfg(not(feature = "http"))]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(super::needs_http("pagerduty"))
    }
}

/// The Events API v2 event for `alert`: `trigger` while firing, `resolve` once resolved, under
/// the alert's fingerprint as `dedup_key`, its runbook in `links` (in the details when it is
/// not a web address). PagerDuty's severities are
/// `critical`, `error`, `warning` and `info`.
#[cfg(feature = "http")]
pub(super) fn body(routing_key: &str, alert: &super::Alert) -> serde_json::Value {
    let dedup_key = alert.fingerprint();
    if alert.is_resolved() {
        return serde_json::json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let mut event = serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": super::summary(alert),
            "source": alert.project.as_ref(),
            "severity": alert.severity.as_str(),
            "timestamp": crate::clock::rfc3339(alert.starts_at),
            "component": alert.stage.as_deref(),
            "group": alert.project.as_ref(),
            "class": alert.name.as_ref(),
            "custom_details": {
                "message": alert.message,
                "value": alert.value,
                "strategy": alert.strategy.as_deref(),
            },
        },
    });
    if let Some(subject) = &alert.subject {
        event["payload"]["custom_details"]["subject"] = serde_json::json!(subject.as_ref());
    }
    match alert.runbook.as_deref() {
        Some(runbook) if super::is_web_address(runbook) => {
            event["links"] = serde_json::json!([{ "href": runbook, "text": "Runbook" }]);
        }
        Some(runbook) => event["payload"]["custom_details"]["runbook"] = serde_json::json!(runbook),
        None => {}
    }
    event
}

#[cfg(feature = "http")]
struct PagerDuty {
    post: super::post::JsonPost,
    routing_key: String,
}

#[cfg(feature = "http")]
impl Notifier for PagerDuty {
    /// One event per alert: the Events API takes one at a time.
    fn notify<'a>(
        &'a self,
        alerts: &'a [super::Alert],
    ) -> crate::BoxFuture<'a, Result<(), super::NotifyError>> {
        Box::pin(async move {
            for alert in alerts {
                self.post.post(&body(&self.routing_key, alert)).await?;
            }
            Ok(())
        })
    }

    fn name(&self) -> &str {
        &self.post.name
    }

    fn min_severity(&self) -> Severity {
        self.post.min_severity
    }
}
