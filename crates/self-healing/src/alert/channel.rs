//! The channels a configuration file declares, tagged by `type`, each with its typed config.

use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

use super::Notifier;
use super::alertmanager::AlertmanagerConfig;
use super::email::EmailConfig;
use super::pagerduty::PagerDutyConfig;
use super::slack::SlackConfig;
use super::webhook::WebhookConfig;
use crate::de::{Tagged, deserialize_tagged, list, tagged_schema};
use crate::error::InvalidConfig;

/// One alert channel as a file declares it (the seed's `alerts.channels`).
///
/// ```
/// use self_healing::alert::ChannelConfig;
///
/// let slack: ChannelConfig = serde_json::from_str(
///     r#"{"type": "slack", "webhook": "https://hooks.slack.example/services/T/B/x", "minSeverity": "critical"}"#,
/// )?;
/// # #[cfg(feature = "http")]
/// assert_eq!(slack.build()?.min_severity(), self_healing::Severity::Critical);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelConfig {
    /// `type: slack`: a message to a Slack incoming webhook.
    Slack(SlackConfig),
    /// `type: pagerduty`: an event to the PagerDuty Events API v2.
    Pagerduty(PagerDutyConfig),
    /// `type: email`: a plain-text message over SMTP.
    Email(EmailConfig),
    /// `type: webhook`: the alerts as JSON, POSTed to a URL.
    Webhook(WebhookConfig),
    /// `type: alertmanager`: Prometheus Alertmanager's API v2.
    Alertmanager(AlertmanagerConfig),
}

impl Tagged for ChannelConfig {
    const TAG: &'static str = "type";
    crate::tagged_variants!(ChannelConfig {
        "slack" => Slack,
        "pagerduty" => Pagerduty,
        "email" => Email,
        "webhook" => Webhook,
        "alertmanager" => Alertmanager,
    });

    fn misplaced(key: &str, tag: &str, takes: &[&str]) -> String {
        format!(
            "`{key}` does not apply to {tag} channels (they take {})",
            list(takes)
        )
    }
}

impl<'de> Deserialize<'de> for ChannelConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_tagged(deserializer)
    }
}

impl JsonSchema for ChannelConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ChannelConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        tagged_schema::<Self>(generator)
    }
}

impl ChannelConfig {
    /// The runnable channel; the error names the setting that cannot work.
    pub fn build(&self) -> Result<Arc<dyn Notifier>, InvalidConfig> {
        match self {
            ChannelConfig::Slack(c) => c.build(),
            ChannelConfig::Pagerduty(c) => c.build(),
            ChannelConfig::Email(c) => c.build(),
            ChannelConfig::Webhook(c) => c.build(),
            ChannelConfig::Alertmanager(c) => c.build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_reads_its_own_channel_and_an_unknown_type_is_refused() {
        let webhook: ChannelConfig =
            serde_json::from_str(r#"{"type": "webhook", "url": "https://hooks.example/x"}"#)
                .unwrap();
        assert!(matches!(webhook, ChannelConfig::Webhook(_)), "{webhook:?}");
        let expected = "unknown variant `teams`, expected one of `slack`, `pagerduty`, `email`, \
                        `webhook`, `alertmanager`";
        let error = serde_json::from_str::<ChannelConfig>(r#"{"type": "teams"}"#).unwrap_err();
        assert!(error.to_string().starts_with(expected), "{error}");
        // Asked directly, an unknown type is the same error, not a webhook missing its `url`.
        let error = ChannelConfig::variant("teams", serde_json::json!({})).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }

    #[cfg(feature = "email")]
    #[test]
    fn the_seeds_email_channel_with_only_recipients_builds() {
        let email: ChannelConfig = serde_json::from_str(
            r#"{"type": "email", "recipients": ["oncall@example.com"], "minSeverity": "critical"}"#,
        )
        .unwrap();
        let built = email.build().unwrap();
        assert_eq!(built.name(), "email");
        let wrong = super::super::SmtpConfig::from_url("smtp://u:hunter2@mail:x").unwrap_err();
        assert!(wrong.reason().contains("has no valid port"), "{wrong}");
        assert!(!wrong.to_string().contains("hunter2"), "{wrong}");
    }
}
