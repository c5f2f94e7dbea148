//! A generic webhook: the alerts as JSON.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Notifier;
use crate::error::{InvalidConfig, Severity};

/// `webhook`: POSTs each group of alerts as `{"alerts": [ALERT, …]}` to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// The channel's name in records (default `webhook`).
    pub name: Option<String>,
    /// The URL to POST to (http or https).
    pub url: String,
    /// Alerts below this severity are not sent; `None` means `warning`.
    pub min_severity: Option<Severity>,
}

impl WebhookConfig {
    /// The runnable channel; fails if `url` is not an http(s) URL.
    #[cfg(feature = "http")]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Ok(Arc::new(super::post::JsonChannel {
            post: super::post::JsonPost::new(
                self.name.as_deref().unwrap_or("webhook"),
                "url",
                &self.url,
                self.min_severity,
            )?,
            body: |alerts| serde_json::json!({ "alerts": alerts }),
        }))
    }

    /// Always fails: webhook channels need the `http` feature.
    #[cfg(not(feature = "http"))]
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        Err(super::needs_http("webhook"))
    }
}
