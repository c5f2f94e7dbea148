//! Steering a running pipeline from other processes: the run polls the store for queued
//! actions, the healing mode and strategy overrides, and applies them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use self_healing::event::{EventKind, RunId};
use self_healing::healing::{
    ActionKind, AutoHealer, HealingRecord, Outcome, StrategyOverride, TriggerKind, TriggerMatch,
};
use self_healing::pipeline::SelfHealingPipeline;

use crate::store::{ControlRequest, Store};

/// How often a running pipeline looks for requests.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The actions `healing trigger` can ask for.
pub const ACTIONS: [&str; 4] = ["restart", "rollback", "failover", "circuit-break"];

/// Polls until dropped.
pub async fn poll(
    store: Arc<dyn Store>,
    project: Arc<str>,
    pipeline: Arc<SelfHealingPipeline<()>>,
    healer: AutoHealer,
    run: RunId,
) {
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
                apply(&pipeline, &run, request);
            }
        }
    }
}

/// Carries out one request and records it in the healing history.
fn apply(pipeline: &SelfHealingPipeline<()>, run: &RunId, request: ControlRequest) {
    let reason = format!("requested by an operator (request {})", request.id);
    let (outcome, detail) = match (pipeline.control(&request.stage), request.action.as_str()) {
        (None, _) => (
            Outcome::Failed,
            format!("the pipeline has no stage `{}`", request.stage),
        ),
        (Some(control), "restart") => {
            control.request_restart(reason);
            (Outcome::Succeeded, "restart requested".to_owned())
        }
        (Some(control), "rollback") => {
            control.request_rollback(reason);
            (Outcome::Succeeded, "rollback requested".to_owned())
        }
        (Some(control), "failover") => {
            if control.set_failed_over(true) {
                applied(
                    pipeline,
                    run,
                    &request.stage,
                    ActionKind::Failover,
                    "switched to the failover handler by an operator",
                );
                (
                    Outcome::Succeeded,
                    "switched to the failover handler".to_owned(),
                )
            } else {
                (
                    Outcome::Failed,
                    "no failover handler, or already switched".to_owned(),
                )
            }
        }
        (Some(control), "circuit-break") => {
            control.breaker().trip(None);
            applied(
                pipeline,
                run,
                &request.stage,
                ActionKind::CircuitBreak,
                "breaker opened by an operator",
            );
            (Outcome::Succeeded, "breaker opened".to_owned())
        }
        (Some(_), other) => (
            Outcome::Failed,
            format!("`{other}` cannot be triggered by hand"),
        ),
    };
    let action = request.action.parse().unwrap_or(ActionKind::Custom);
    let record = HealingRecord {
        at: std::time::SystemTime::now(),
        run: Some(run.clone()),
        stage: Some(request.stage.as_str().into()),
        item: None,
        strategy: "manual".into(),
        trigger: TriggerMatch {
            kind: TriggerKind::Manual,
            index: 0,
            observed: None,
            description: format!("healing trigger, request {}", request.id),
        },
        action,
        outcome,
        detail,
        duration: Duration::ZERO,
    };
    pipeline
        .events()
        .publish(Some(run), EventKind::HealingDecision { record });
}

/// Publishes an action applied here (restart and rollback are published by the pipeline when it
/// carries them out).
fn applied(
    pipeline: &SelfHealingPipeline<()>,
    run: &RunId,
    stage: &str,
    action: ActionKind,
    detail: &str,
) {
    pipeline.events().publish(
        Some(run),
        EventKind::HealingApplied {
            stage: stage.into(),
            item: None,
            action,
            detail: detail.to_owned(),
        },
    );
}
