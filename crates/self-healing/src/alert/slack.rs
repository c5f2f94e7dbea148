//! Slack: an incoming webhook, one readable message per alert.

use std::sync::Arc;

use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `slack`: the incoming `webhook` URL (keep it in `${SLACK_WEBHOOK}`: it is a secret).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (http or https).
    pub webhook: String,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

impl SlackConfig {
    /// The runnable channel; fails if `webhook` is not an http(s) URL.
    #[cfg(feature = "http")]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Ok(Arc::new(Slack(super::post::JsonPost::new(
            "slack",
            "webhook",
            &self.webhook,
            self.min_severity,
        )?)))
    }

    /// Always fails: Slack channels need the `http` feature.
    #[cfg(not(feature = "http"))]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(super::needs_http("slack"))
    }
}

#[cfg(feature = "http")]
/// The message Slack shows.
pub(super) fn body(alert: &super::Alert) -> serde_json::Value {
    serde_json::json!({
        "text": format!("*[{}] {}*\n{}", alert.severity, alert.title, alert.message),
    })
}

#[cfg(feature = "http")]
struct Slack(super::post::JsonPost);

#[cfg(feature = "http")]
impl Notifier for Slack {
    fn notify<'a>(
        &'a self,
        alert: &'a super::Alert,
    ) -> crate::BoxFuture<'a, Result<(), super::NotifyError>> {
        Box::pin(async move { self.0.post(&body(alert)).await })
    }

    fn name(&self) -> &str {
        self.0.name
    }

    fn min_severity(&self) -> Severity {
        self.0.min_severity
    }
}
