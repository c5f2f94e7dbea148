//! Steering a running pipeline from other processes: the run polls the store for queued
//! actions, the healing mode and strategy overrides, and applies them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use self_healing::event::RunId;
use self_healing::healing::{ActionKind, AutoHealer, StrategyOverride};

use crate::store::{ControlRequest, Store};

/// How often a running pipeline looks for requests.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The actions `healing trigger` can ask for.
pub const ACTIONS: [&str; 4] = ["restart", "rollback", "failover", "circuit-break"];

/// Polls until dropped.
pub async fn poll(store: Arc<dyn Store>, project: Arc<str>, healer: AutoHealer, run: RunId) {
    let claimant = format!("run {run} pid {}", std::process::id());
    let mut applied: HashMap<String, StrategyOverride> = HashMap::new();
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticks.tick().await;
        if let Ok(mode) = store.healing_mode(&project).await {
            healer.set_enabled(mode.enabled);
        }
        if let Ok(overrides) = store.overrides(&project).await {
            for (strategy, changes) in overrides {
                if applied.get(&strategy) == Some(&changes) {
                    continue;
                }
                if let Err(error) = healer.configure(&strategy, &changes) {
                    eprintln!("  ! override of `{strategy}` not applied: {error}");
                }
                applied.insert(strategy, changes);
            }
        }
        if let Ok(requests) = store.claim(&project, &claimant).await {
            for request in requests {
                apply(&healer, &run, request).await;
            }
        }
    }
}

/// Carries out one request through the healer, which records it in its history under `manual`.
async fn apply(healer: &AutoHealer, run: &RunId, request: ControlRequest) {
    let reason = format!("requested by an operator (request {})", request.id);
    match request.action.parse::<ActionKind>() {
        Ok(action) => {
            healer.trigger(run, &request.stage, action, &reason).await;
        }
        Err(error) => eprintln!("  ! request {} not applied: {error}", request.id),
    }
}
