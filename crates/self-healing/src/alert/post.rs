//! What the HTTP channels share: a JSON POST to a URL whose secret never shows in errors.

use std::time::Duration;

use super::NotifyError;
use crate::error::{InvalidConfig, Severity};
use crate::http::{shown, without_url};

/// How long one delivery may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A channel endpoint: its name in records, where it posts, and from which severity on.
#[derive(Debug, Clone)]
pub(super) struct JsonPost {
    pub(super) name: String,
    url: String,
    client: reqwest::Client,
    pub(super) min_severity: Severity,
}

impl JsonPost {
    /// `field` names the URL's key in errors (`webhook`, `url`).
    pub(super) fn new(
        name: &str,
        field: &'static str,
        url: &str,
        min_severity: Option<Severity>,
    ) -> Result<Self, InvalidConfig> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| InvalidConfig::new(field, format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(InvalidConfig::new(
                field,
                format!("`{}` is not an http(s) URL", shown(url)),
            ));
        }
        let client = crate::http::client("alerts", Some(TIMEOUT))
            .map_err(|e| InvalidConfig::new(field, format!("cannot make an HTTP client: {e}")))?;
        Ok(JsonPost {
            name: name.to_owned(),
            url: url.to_owned(),
            client,
            min_severity: min_severity.unwrap_or(Severity::Warning),
        })
    }

    pub(super) async fn post(&self, body: &serde_json::Value) -> Result<(), NotifyError> {
        let failed = |reason: String| NotifyError {
            channel: self.name.clone(),
            reason,
        };
        let response = self
            .client
            .post(&self.url)
            .json(body)
            .send()
            .await
            .map_err(|e| failed(without_url(&crate::error_chain(&e), &self.url)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(failed(format!(
                "{} answered {}",
                shown(&self.url),
                response.status()
            )))
        }
    }
}

/// A channel that POSTs one JSON body per group of alerts, made by `body`.
pub(super) struct JsonChannel {
    pub(super) post: JsonPost,
    pub(super) body: fn(&[super::Alert]) -> serde_json::Value,
}

impl super::Notifier for JsonChannel {
    fn notify<'a>(
        &'a self,
        alerts: &'a [super::Alert],
    ) -> crate::BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move { self.post.post(&(self.body)(alerts)).await })
    }

    fn name(&self) -> &str {
        &self.post.name
    }

    fn min_severity(&self) -> Severity {
        self.post.min_severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, ChannelConfig, WebhookConfig};

    #[test]
    fn a_bad_url_is_refused_without_showing_its_secret() {
        let error = JsonPost::new(
            "slack",
            "webhook",
            "ftp://hooks.slack.example/services/T/B/s3cr3tT0ken",
            None,
        )
        .unwrap_err();
        assert!(!error.to_string().contains("s3cr3tT0ken"), "{error}");
    }

    #[tokio::test]
    async fn a_failed_delivery_names_the_host_not_the_secret() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener); // nothing listens: the POST fails
        let notifier = ChannelConfig::Webhook(WebhookConfig {
            name: None,
            url: format!("http://{address}/services/T0001/B0002/s3cr3tT0ken"),
            min_severity: None,
        })
        .build()
        .unwrap();
        let alert = Alert::firing(Severity::Critical, "p", "x", "t");
        let error = notifier.notify(&[alert]).await.unwrap_err();
        assert!(!error.to_string().contains("s3cr3tT0ken"), "{error}");
    }
}
