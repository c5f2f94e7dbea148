//! PagerDuty: the Events API v2, `trigger` and `resolve` under one `dedup_key`.

use std::sync::Arc;

use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// Where the Events API v2 takes events, unless `url` says otherwise.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// `pagerduty`: the integration's `routingKey` (a secret: keep it in `${…}`), and `url` to
/// send elsewhere than the Events API v2 endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key; must not be empty.
    pub routing_key: String,
    /// Where to send events; `None` means `PAGERDUTY_EVENTS`.
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
                "pagerduty",
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

#[cfg(feature = "http")]
/// The Events API v2 event for `alert`.
pub(super) fn body(routing_key: &str, alert: &super::Alert) -> serde_json::Value {
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": if alert.resolved { "resolve" } else { "trigger" },
        "dedup_key": alert.dedup_key,
        "payload": {
            "summary": format!("{}: {}", alert.title, alert.message),
            "source": alert.project.as_ref(),
            "severity": alert.severity.as_str(),
            "component": alert.stage.as_deref(),
            "custom_details": { "strategy": alert.strategy.as_deref() },
        },
    })
}

#[cfg(feature = "http")]
struct PagerDuty {
    post: super::post::JsonPost,
    routing_key: String,
}

#[cfg(feature = "http")]
impl Notifier for PagerDuty {
    fn notify<'a>(
        &'a self,
        alert: &'a super::Alert,
    ) -> crate::BoxFuture<'a, Result<(), super::NotifyError>> {
        Box::pin(async move { self.post.post(&body(&self.routing_key, alert)).await })
    }

    fn name(&self) -> &str {
        self.post.name
    }

    fn min_severity(&self) -> Severity {
        self.post.min_severity
    }
}
