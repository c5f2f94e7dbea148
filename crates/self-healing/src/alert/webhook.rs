//! A generic webhook: the alert as JSON.

use std::sync::Arc;

use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `webhook`: POSTs every alert as JSON to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL to POST to (http or https).
    pub url: String,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

impl WebhookConfig {
    /// The runnable channel; fails if `url` is not an http(s) URL.
    #[cfg(feature = "http")]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Ok(Arc::new(Webhook(super::post::JsonPost::new(
            "webhook",
            "url",
            &self.url,
            self.min_severity,
        )?)))
    }

    /// Always fails: webhook channels need the `http` feature.
    #[cfg(not(feature = "http"))]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(super::needs_http("webhook"))
    }
}

#[cfg(feature = "http")]
/// The alert as the webhook receives it.
pub(super) fn body(alert: &super::Alert) -> serde_json::Value {
    serde_json::to_value(alert).unwrap_or_default()
}

#[cfg(feature = "http")]
struct Webhook(super::post::JsonPost);

#[cfg(feature = "http")]
impl Notifier for Webhook {
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
