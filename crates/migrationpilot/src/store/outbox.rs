//! The store as the alerting's outbox.

use std::sync::Arc;

use self_healing::BoxFuture;
use self_healing::alert::{Alert, Delivery, Outbox};

use super::Store;

/// A store as the alerting's outbox. Alerts are kept with the secrets it knows masked in their
/// text, as the journal keeps events.
#[derive(Clone)]
pub struct StoreOutbox {
    store: Arc<dyn Store>,
    project: Option<String>,
    secrets: crate::secrets::Secrets,
}

impl StoreOutbox {
    /// The outbox of `project` (deliveries of other projects are not taken), or of every
    /// project, masking `secrets` in what it keeps.
    pub fn new(
        store: Arc<dyn Store>,
        project: Option<&str>,
        secrets: crate::secrets::Secrets,
    ) -> Self {
        StoreOutbox {
            store,
            project: project.map(str::to_owned),
            secrets,
        }
    }
}

impl std::fmt::Debug for StoreOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOutbox")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl Outbox for StoreOutbox {
    fn enqueue<'a>(
        &'a self,
        owner: &'a str,
        alert: &'a Alert,
        channels: &'a [String],
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let masked = self.secrets.mask_value(alert.clone());
            self.store
                .keep_alert(owner, &masked, channels)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn take<'a>(
        &'a self,
        owner: &'a str,
        lease: std::time::Duration,
    ) -> BoxFuture<'a, std::result::Result<Vec<Delivery>, String>> {
        Box::pin(async move {
            self.store
                .take_deliveries(owner, lease, self.project.as_deref())
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn attempted<'a>(
        &'a self,
        owner: &'a str,
        ids: &'a [i64],
        error: Option<&'a str>,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            self.store
                .delivery_attempted(owner, ids, error)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn release<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            self.store
                .release_deliveries(owner)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn firing<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Vec<Alert>, String>> {
        Box::pin(async move {
            self.store
                .firing_alerts(project)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
