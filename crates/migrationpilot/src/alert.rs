//! Alert channels from pipeline files: Slack incoming webhooks, PagerDuty Events API v2 and
//! generic webhooks, all HTTPS POSTs of JSON.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use self_healing::BoxFuture;
use self_healing::InvalidConfig;
use self_healing::Severity;
use self_healing::alert::{Alert, Notifier, NotifyError};

use crate::file::ChannelFile;

const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// The channel a file declares.
pub fn channel(file: &ChannelFile) -> Result<Arc<dyn Notifier>, InvalidConfig> {
    let (kind, url, min_severity) = match file {
        ChannelFile::Slack {
            webhook,
            min_severity,
        } => (Kind::Slack, webhook.clone(), *min_severity),
        ChannelFile::Webhook { url, min_severity } => (Kind::Webhook, url.clone(), *min_severity),
        ChannelFile::Pagerduty {
            routing_key,
            min_severity,
        } => {
            if routing_key.trim().is_empty() {
                return Err(InvalidConfig::new("routingKey", "is empty"));
            }
            (
                Kind::PagerDuty(routing_key.clone()),
                PAGERDUTY_EVENTS.to_owned(),
                *min_severity,
            )
        }
        ChannelFile::Email { .. } => {
            return Err(InvalidConfig::new(
                "type",
                "email channels are not available in this version: use slack, pagerduty or webhook",
            ));
        }
    };
    let field = if matches!(kind, Kind::Slack) {
        "webhook"
    } else {
        "url"
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| InvalidConfig::new(field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(InvalidConfig::new(
            field,
            format!("`{}` is not an http(s) URL", shown(&url)),
        ));
    }
    self_healing_checks::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| InvalidConfig::new(field, format!("cannot make an HTTP client: {e}")))?;
    Ok(Arc::new(HttpChannel {
        name: match &kind {
            Kind::Slack => "slack",
            Kind::PagerDuty(_) => "pagerduty",
            Kind::Webhook => "webhook",
        },
        kind,
        url,
        client,
        min_severity: min_severity.unwrap_or(Severity::Warning),
    }))
}

enum Kind {
    Slack,
    PagerDuty(String),
    Webhook,
}

struct HttpChannel {
    name: &'static str,
    kind: Kind,
    url: String,
    client: reqwest::Client,
    min_severity: Severity,
}

impl HttpChannel {
    fn body(&self, alert: &Alert) -> serde_json::Value {
        match &self.kind {
            Kind::Slack => json!({
                "text": format!("*[{}] {}*\n{}", alert.severity, alert.title, alert.message),
            }),
            Kind::Webhook => serde_json::to_value(alert).unwrap_or_default(),
            Kind::PagerDuty(routing_key) => json!({
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
            }),
        }
    }
}

impl Notifier for HttpChannel {
    fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let failed = |reason: String| NotifyError {
                channel: self.name.to_owned(),
                reason,
            };
            let response = self
                .client
                .post(&self.url)
                .json(&self.body(alert))
                .send()
                .await
                .map_err(|e| failed(without_url(&self_healing::error_chain(&e), &self.url)))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(failed(format!(
                    "{} answered {}",
                    shown(&self.url),
                    response.status()
                )))
            }
        })
    }

    fn name(&self) -> &str {
        self.name
    }

    fn min_severity(&self) -> Severity {
        self.min_severity
    }
}

/// A channel URL as it may be shown: scheme and host only. Webhook URLs carry their secret in the
/// path (`/services/T…/B…/…`), which no general redaction can recognise.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}/…",
            parsed.scheme(),
            parsed.host_str().unwrap_or("?")
        ),
        Err(_) => "the channel URL".to_owned(),
    }
}

/// An error message with the channel URL (however it appears in it) replaced by its shown form.
fn without_url(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &shown(url));
    if let Ok(parsed) = reqwest::Url::parse(url) {
        out = out.replace(parsed.as_str(), &shown(url));
        let path = parsed.path();
        if path.len() > 1 {
            out = out.replace(path, "/…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_never_show() {
        let hook = "https://hooks.slack.example/services/T0001/B0002/s3cr3tT0ken";
        assert_eq!(shown(hook), "https://hooks.slack.example/…");
        let message = format!("error sending request for url ({hook}): connection refused");
        let clean = without_url(&message, hook);
        assert!(!clean.contains("s3cr3tT0ken"), "{clean}");
        let error = channel(&ChannelFile::Slack {
            webhook: "ftp://hooks.slack.example/services/T/B/s3cr3tT0ken".into(),
            min_severity: None,
        })
        .err()
        .unwrap();
        assert!(!error.to_string().contains("s3cr3tT0ken"), "{error}");
    }

    #[tokio::test]
    async fn a_failed_delivery_names_the_host_not_the_secret() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener); // nothing listens: the POST fails
        let hook = format!("http://{address}/services/T0001/B0002/s3cr3tT0ken");
        let notifier = channel(&ChannelFile::Webhook {
            url: hook,
            min_severity: None,
        })
        .unwrap();
        let alert = Alert {
            severity: Severity::Critical,
            title: "t".into(),
            message: "m".into(),
            project: "p".into(),
            stage: None,
            strategy: None,
            dedup_key: "p/x".into(),
            at: std::time::SystemTime::now(),
            resolved: false,
        };
        let error = notifier.notify(&alert).await.unwrap_err();
        assert!(!error.to_string().contains("s3cr3tT0ken"), "{error}");
    }
}
