//! Alert channels that mask the file's secrets in what they send.

use std::sync::Arc;

use self_healing::Severity;
use self_healing::alert::{Alert, Notifier, NotifyError};

use crate::env::Secrets;

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

/// The alert channels a project's file declared, as the store keeps them (`${NAME}`s
/// unsubstituted), built with the variables `lookup` gives: how `serve` reaches them. Secret
/// values are masked in what the channels send.
pub fn stored_channels(
    raw: &serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Arc<dyn Notifier>>, String> {
    let env = crate::env::Env::new(lookup);
    let configs: Vec<self_healing::alert::ChannelConfig> =
        serde::Deserialize::deserialize(crate::env::Substituting::new(raw.clone(), &env))
            .map_err(|e| e.to_string())?;
    let mut secrets = env.into_secrets();
    secrets.add_environment();
    configs
        .iter()
        .map(|config| {
            let inner = config.build().map_err(|e| e.to_string())?;
            Ok(MaskedNotifier::wrap(inner, secrets.clone()))
        })
        .collect()
}
