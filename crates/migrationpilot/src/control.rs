//! Steering a running pipeline from other processes: the run polls the store for the healing
//! mode, strategy overrides and queued actions, and hands them to its healer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use self_healing::event::RunId;
use self_healing::healing::{AutoHealer, StrategyOverride};

use crate::store::{Store, StoreError};

/// How often a running pipeline looks for requests.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The actions `healing trigger` can ask for.
pub const ACTIONS: [&str; 4] = ["restart", "rollback", "failover", "circuit-break"];

/// What a running pipeline takes from the store.
pub struct Steering {
    store: Arc<dyn Store>,
    project: Arc<str>,
    healer: AutoHealer,
    run: RunId,
    /// The file's `healing.enabled`: off in the file or in the store means off.
    file_enabled: bool,
    applied: HashMap<String, StrategyOverride>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("project", &self.project)
            .field("run", &self.run)
            .field("file_enabled", &self.file_enabled)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Steering for the run `run` of `project`, applied to `healer`. Nothing is read from the
    /// store until [`sync`](Self::sync) or [`poll`](Self::poll).
    pub fn new(store: Arc<dyn Store>, project: Arc<str>, healer: AutoHealer, run: RunId) -> Self {
        let file_enabled = healer.is_enabled();
        Steering {
            store,
            project,
            healer,
            run,
            file_enabled,
            applied: HashMap::new(),
        }
    }

    /// Applies the healing mode and the overrides the store holds now.
    pub async fn sync(&mut self) -> Result<(), StoreError> {
        let mode = self.store.healing_mode(&self.project).await?;
        self.healer.set_enabled(self.file_enabled && mode.enabled);
        for (strategy, changes) in self.store.overrides(&self.project).await? {
            if self.applied.get(&strategy) == Some(&changes) {
                continue;
            }
            if let Err(error) = self.healer.configure(&strategy, &changes) {
                eprintln!("  ! override of `{strategy}` not applied: {error}");
            }
            self.applied.insert(strategy, changes);
        }
        Ok(())
    }

    /// Carries out the queued actions through the healer, which records each in its history
    /// under `manual`.
    async fn act(&mut self) -> Result<(), StoreError> {
        let claimant = format!("run {} pid {}", self.run, std::process::id());
        let claimed = self.store.claim(&self.project, &claimant).await?;
        for refused in claimed.refused {
            eprintln!(
                "  ! request {} refused: `{}` is not an action this migrationpilot knows (stage `{}`)",
                refused.id, refused.action, refused.stage
            );
        }
        for request in claimed.requests {
            let reason = format!("requested by an operator (request {})", request.id);
            self.healer
                .trigger(&self.run, &request.stage, request.action, &reason)
                .await;
        }
        Ok(())
    }

    /// Polls until dropped. A store that cannot be read is reported once when it starts
    /// failing and once when it is back; the run goes on meanwhile.
    pub async fn poll(mut self) {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        let mut failing = false;
        loop {
            ticks.tick().await;
            let result = match self.sync().await {
                Ok(()) => self.act().await,
                Err(error) => Err(error),
            };
            match (result, failing) {
                (Err(error), false) => {
                    eprintln!("  ! steering paused, the store cannot be read: {error}");
                    failing = true;
                }
                (Ok(()), true) => {
                    eprintln!("  steering resumed");
                    failing = false;
                }
                _ => {}
            }
        }
    }
}
