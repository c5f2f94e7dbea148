//! Alert channels that mask the file's secrets in what they send.

use std::sync::Arc;

use self_healing::Severity;
use serde::Deserialize;

use self_healing::alert::{Alert, Alerting, AlertingBuilder, ChannelConfig, Notifier, NotifyError};
use self_healing::config::AlertsConfig;

use crate::secrets::Secrets;

/// An alert channel that masks the run's secrets in every alert it sends (its text, labels,
/// stage and item).
pub(crate) struct MaskedNotifier {
    inner: Arc<dyn Notifier>,
    secrets: Secrets,
}

impl std::fmt::Debug for MaskedNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedNotifier")
            .field("channel", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl MaskedNotifier {
    /// `inner` as a channel that masks `secrets`.
    pub(crate) fn wrap(inner: Arc<dyn Notifier>, secrets: Secrets) -> Arc<dyn Notifier> {
        Arc::new(MaskedNotifier { inner, secrets })
    }
}

impl Notifier for MaskedNotifier {
    fn notify<'a>(
        &'a self,
        alerts: &'a [Alert],
    ) -> self_healing::BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            if self.secrets.is_empty() {
                return self.inner.notify(alerts).await;
            }
            let clean: Vec<Alert> = alerts
                .iter()
                .map(|alert| self.secrets.mask_value(alert.clone()))
                .collect();
            self.inner.notify(&clean).await
        })
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn min_severity(&self) -> Severity {
        self.inner.min_severity()
    }
}

/// A project's `alerts` settings as the store keeps them (as written, `${NAME}`s
/// unsubstituted; a bare channel list from older versions), built with the variables `lookup`
/// gives: how `serve` reaches the project's channels, with its routing rules, runbooks and
/// built-in alerts' settings. The channels must build; the rest falls back to the defaults
/// when it cannot be read here (a variable this process lacks), said in `StoredAlerts::unread`.
/// Secret values are masked in what the channels send.
pub fn stored_alerts(
    raw: &serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<StoredAlerts, String> {
    let (channels, mut rest) = match raw {
        serde_json::Value::Array(_) => (raw.clone(), serde_json::json!({})),
        serde_json::Value::Object(settings) => {
            let mut rest = settings.clone();
            let channels = rest.remove("channels").unwrap_or(serde_json::json!([]));
            (channels, serde_json::Value::Object(rest))
        }
        _ => return Err("the kept alert settings are not a map".into()),
    };
    let env = crate::env::Env::new(lookup);
    let configs: Vec<ChannelConfig> =
        serde::Deserialize::deserialize(crate::env::Substituting::new(channels, &env))
            .map_err(|e| e.to_string())?;
    // Settings kept were checked when their run loaded the file.
    let (config, unread) =
        match AlertsConfig::deserialize(crate::env::Substituting::new(rest.take(), &env)) {
            Ok(config) => (config, None),
            Err(error) => (AlertsConfig::default(), Some(error.to_string())),
        };
    let mut secrets = env.into_secrets();
    secrets.add_environment();
    let (runbooks, builtins) = config.settings(&[], &mut |_, _| {});
    let mut alerting = Alerting::builder()
        .rules(config.rules())
        .runbooks(runbooks)
        .builtins(builtins);
    for channel in &configs {
        let inner = channel.build().map_err(|e| e.to_string())?;
        alerting = alerting.channel(MaskedNotifier::wrap(inner, secrets.clone()));
    }
    Ok(StoredAlerts {
        alerting,
        secrets,
        unread,
    })
}

/// What [`stored_alerts`] builds.
pub struct StoredAlerts {
    /// The project's alerting, but for its outbox and owner.
    pub alerting: AlertingBuilder,
    /// The secrets to mask in what is kept.
    pub secrets: Secrets,
    /// Why the settings but the channels could not be read here, if they could not.
    pub unread: Option<String>,
}

impl std::fmt::Debug for StoredAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAlerts")
            .field("alerting", &self.alerting)
            .field("unread", &self.unread)
            .finish_non_exhaustive()
    }
}
