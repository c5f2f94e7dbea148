//! Delivery: every alert to every channel that takes its severity, in the background, retried
//! by a [`RetryPolicy`], so a dead or slow channel never holds up healing.

use std::sync::Arc;

use super::{Alert, Notifier};
use crate::error::StageError;
use crate::event::{EventBus, EventKind, RunId};
use crate::resilience::RetryPolicy;

/// Hands alerts to channels. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::sync::{Arc, Mutex};
/// use self_healing::alert::{Alert, Dispatcher, Notifier, NotifyError};
/// use self_healing::{BoxFuture, Severity};
///
/// #[derive(Default)]
/// struct Inbox(Mutex<Vec<String>>);
/// impl Notifier for Inbox {
///     fn notify<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), NotifyError>> {
///         self.0.lock().unwrap().push(alert.title.clone());
///         Box::pin(async { Ok(()) })
///     }
/// }
/// let inbox = Arc::new(Inbox::default());
/// let alerts = Dispatcher::new(vec![inbox.clone()]);
/// let alert = Alert::new(Severity::Critical, "p", "budget spent", "p/budget");
/// assert_eq!(alerts.dispatch(alert, None), 1);
/// tokio::task::yield_now().await;
/// assert_eq!(*inbox.0.lock().unwrap(), ["budget spent"]);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct Dispatcher {
    notifiers: Arc<[Arc<dyn Notifier>]>,
    retry: RetryPolicy,
}

impl Dispatcher {
    /// Delivers with three tries per channel, 1 s then 2 s apart.
    pub fn new(notifiers: Vec<Arc<dyn Notifier>>) -> Self {
        Dispatcher {
            notifiers: notifiers.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// How each delivery is retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The channels.
    pub fn notifiers(&self) -> &[Arc<dyn Notifier>] {
        &self.notifiers
    }

    /// Hands `alert` to every channel whose `minSeverity` it meets and returns how many took
    /// it. Delivery runs in the background; a channel that still fails after its retries is
    /// published on `failures` (a run's bus) as `alert-failed`.
    pub fn dispatch(&self, alert: Alert, failures: Option<(EventBus, RunId)>) -> usize {
        let alert = Arc::new(alert);
        let mut sent = 0;
        for notifier in self.notifiers.iter() {
            if alert.severity < notifier.min_severity() {
                continue;
            }
            sent += 1;
            let (notifier, alert) = (Arc::clone(notifier), Arc::clone(&alert));
            let (retry, failures) = (self.retry.clone(), failures.clone());
            tokio::spawn(async move {
                let delivered = retry
                    .run(|_| async {
                        notifier
                            .notify(&alert)
                            .await
                            .map_err(|e| StageError::new(e.reason))
                    })
                    .await;
                if let (Err(error), Some((bus, run))) = (delivered, failures) {
                    bus.publish(
                        Some(&run),
                        EventKind::AlertFailed {
                            channel: notifier.name().into(),
                            dedup_key: alert.dedup_key.clone(),
                            error: error.message().to_owned(),
                        },
                    );
                }
            });
        }
        sent
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field(
                "channels",
                &self.notifiers.iter().map(|n| n.name()).collect::<Vec<_>>(),
            )
            .field("retry", &self.retry)
            .finish()
    }
}
