//! What a simulated run has in place of the world: a [`Model`] answering every attempt, one
//! probe every health check asks, and a channel that keeps alerts instead of sending them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::alert::{Alert, Notifier, NotifyError};
use self_healing::chaos::Downstream;
use self_healing::health::{Check, CustomCheck};
use self_healing::{BoxFuture, StageContext, StageError};

use crate::build::{Attempt, Modelled, Runner};
use crate::store::work::Role;

/// How long a health check's probe of the model takes.
const PROBE: Duration = Duration::from_millis(5);

/// Answers a simulated run's attempts: a calling stage's command calls the dependency, any
/// other stage's command does local work; a `reset` clears what the dependency leaked; a
/// rollback and a failover (to a healthy alternate) succeed after the healthy latency.
#[derive(Debug)]
pub struct Model {
    downstream: Arc<Downstream>,
    callers: Vec<String>,
    local: Duration,
    healthy: Duration,
    /// Per stage, the ordinal of each item the stage called with (by a hash of its key: a
    /// million items take 16 MB, not their keys' copies), in the order first seen.
    ordinals: Mutex<HashMap<String, HashMap<u64, u64>>>,
}

impl Model {
    /// A model in which `callers` call `downstream`; other stages' attempts take `local`.
    pub fn new(
        downstream: Arc<Downstream>,
        callers: Vec<String>,
        local: Duration,
        healthy: Duration,
    ) -> Self {
        Model {
            downstream,
            callers,
            local,
            healthy,
            ordinals: Mutex::default(),
        }
    }

    /// The distinct items each stage was called with.
    pub fn items_seen(&self) -> HashMap<String, u64> {
        self.ordinals
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(stage, items)| (stage.clone(), items.len() as u64))
            .collect()
    }

    fn ordinal(&self, stage: &str, item: Option<&str>) -> u64 {
        let key = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            item.unwrap_or_default().hash(&mut hasher);
            hasher.finish()
        };
        let mut ordinals = self.ordinals.lock().expect("not poisoned");
        if !ordinals.contains_key(stage) {
            ordinals.insert(stage.to_owned(), HashMap::new());
        }
        let items = ordinals.get_mut(stage).expect("inserted above");
        let next = items.len() as u64;
        *items.entry(key).or_insert(next)
    }

    /// The model as everything a build puts in place of the world; `alerts` counts what would
    /// have been sent.
    pub fn modelled(self: &Arc<Self>, alerts: Arc<Kept>) -> Modelled {
        let downstream = Arc::clone(&self.downstream);
        let probe: Arc<dyn Check> =
            Arc::new(CustomCheck::new("the modelled dependency", move || {
                let up = downstream.answers();
                async move {
                    tokio::time::sleep(PROBE).await;
                    up
                }
            }));
        Modelled {
            runner: Arc::clone(self) as Arc<dyn Runner>,
            check: Arc::new(move |_: &str| Arc::clone(&probe)),
            channel: alerts,
        }
    }
}

impl Runner for Model {
    fn run<'a>(
        &'a self,
        attempt: Attempt<'a>,
        _stage: &'a StageContext<()>,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            let calls = self.callers.iter().any(|c| c == attempt.stage);
            match attempt.role {
                Role::Command if calls => {
                    let ordinal = self.ordinal(attempt.stage, attempt.item);
                    self.downstream.call(ordinal).await
                }
                Role::Command => {
                    self.ordinal(attempt.stage, attempt.item);
                    tokio::time::sleep(self.local).await;
                    Ok(())
                }
                Role::Reset => {
                    if calls {
                        self.downstream.reset();
                    }
                    Ok(())
                }
                Role::Rollback | Role::Failover => {
                    tokio::time::sleep(self.healthy).await;
                    Ok(())
                }
            }
        })
    }
}

/// A channel that keeps count of the alerts it would have sent.
#[derive(Debug, Default)]
pub struct Kept {
    alerts: AtomicU64,
}

impl Kept {
    /// Alerts that would have gone out.
    pub fn count(&self) -> u64 {
        self.alerts.load(Ordering::Relaxed)
    }
}

impl Notifier for Kept {
    fn notify<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.alerts
            .fetch_add(alerts.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &str {
        "simulated"
    }
}
