//! The healing alerts, derived from a run's events: what fires them and what resolves them.

use std::sync::Arc;

use super::{Alert, Alerting};
use crate::error::CODE_RESTART_LIMIT;
use crate::error::Severity;
use crate::event::{
    ActionKind, Event, EventBus, EventKind, Outcome, RESTART_LIMIT_REACHED, RETRIES_EXHAUSTED,
    RunId, RunStatus,
};
use crate::resilience::BreakerState;

/// The alert a rollback raises; resolved when the stage or a later run succeeds.
pub const ROLLBACK: &str = "rollback";
/// The alert a retry strategy that spent its attempts raises.
pub const RETRIES_EXHAUSTED_ALERT: &str = "retries-exhausted";
/// The alert a restart refused by its limit raises.
pub const RESTART_LIMIT: &str = "restart-limit";
/// The alert an opened circuit breaker raises; resolved when it closes.
pub const BREAKER_OPEN: &str = "circuit-breaker-open";
/// The alert a spent healing budget raises; resolved when the run succeeds.
pub const HEALING_BUDGET: &str = "healing-budget";

fn wanted(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::RollbackStarted { .. }
            | EventKind::HealingDecision { .. }
            | EventKind::StageFailed { .. }
            | EventKind::BreakerChanged { .. }
            | EventKind::StageSucceeded { .. }
            | EventKind::RunFinished { .. }
    )
}

impl Alerting {
    /// Follows `bus` for the run `run` until it finishes, raising `project`'s healing alerts:
    /// `rollback` (critical), `retries-exhausted`, `restart-limit` and `circuit-breaker-open`
    /// (warnings), each on its stage. A stage that succeeds resolves its alerts; a run that
    /// succeeds resolves every alert of the project, those earlier runs left firing included;
    /// a breaker that closes resolves its alert.
    pub fn watch_run(&self, bus: &EventBus, project: &str, run: &RunId) {
        let mut events = bus.subscribe_to(wanted);
        let this = self.clone();
        let project: Arc<str> = project.into();
        let run = run.clone();
        // Counted as busy, so `settle` after a run waits for its end to be handled.
        self.spawn_owing(async move {
            while let Some(event) = events.recv().await {
                if event.run.as_ref() != Some(&run) {
                    continue;
                }
                this.on_event(&project, &event);
                if matches!(event.kind, EventKind::RunFinished { .. }) {
                    break;
                }
            }
        });
    }

    fn on_event(&self, project: &Arc<str>, event: &Event) {
        let on =
            |name: &str, severity: Severity, stage: &Arc<str>, title: String, message: String| {
                Alert {
                    starts_at: event.at,
                    ..Alert::firing(severity, Arc::clone(project), name, title)
                        .on_stage(Arc::clone(stage))
                        .message(message)
                }
            };
        match &event.kind {
            EventKind::RollbackStarted { stage, error } => {
                self.fire(on(
                    ROLLBACK,
                    Severity::Critical,
                    stage,
                    format!("rolling back after stage `{stage}` failed"),
                    format!("completed work is being compensated: {error}"),
                ));
            }
            EventKind::HealingDecision { record } if record.outcome == Outcome::Failed => {
                let Some(stage) = &record.stage else { return };
                let name = match record.action {
                    ActionKind::Retry if record.detail.starts_with(RETRIES_EXHAUSTED) => {
                        RETRIES_EXHAUSTED_ALERT
                    }
                    ActionKind::Restart if record.detail.starts_with(RESTART_LIMIT_REACHED) => {
                        RESTART_LIMIT
                    }
                    _ => return,
                };
                let mut alert = on(
                    name,
                    Severity::Warning,
                    stage,
                    match name {
                        RETRIES_EXHAUSTED_ALERT => format!("retries exhausted on `{stage}`"),
                        _ => format!("restart limit reached on `{stage}`"),
                    },
                    format!("strategy `{}`: {}", record.strategy, record.detail),
                );
                alert.strategy = Some(Arc::clone(&record.strategy));
                self.fire(alert);
            }
            // The stage's own restart limit, reached without a strategy's.
            EventKind::StageFailed { stage, error, .. }
                if error.code() == Some(CODE_RESTART_LIMIT) =>
            {
                self.fire(on(
                    RESTART_LIMIT,
                    Severity::Warning,
                    stage,
                    format!("restart limit reached on `{stage}`"),
                    error.to_string(),
                ));
            }
            EventKind::BreakerChanged { stage, to, .. } => match to {
                BreakerState::Open | BreakerState::ForcedOpen => {
                    self.fire(on(
                        BREAKER_OPEN,
                        Severity::Warning,
                        stage,
                        format!("circuit breaker open on `{stage}`"),
                        "work on the stage waits until the breaker lets probes through".into(),
                    ));
                }
                BreakerState::Closed | BreakerState::ForcedClosed => {
                    self.resolve(
                        &super::fingerprint(project, Some(stage), BREAKER_OPEN),
                        None,
                    );
                }
                BreakerState::HalfOpen => {}
            },
            EventKind::StageSucceeded { stage, .. } => {
                self.resolve_where(|a| {
                    a.project == *project
                        && a.stage.as_deref() == Some(&**stage)
                        && a.name.as_ref() != BREAKER_OPEN
                });
            }
            EventKind::RunFinished {
                status: RunStatus::Succeeded,
                ..
            } => {
                self.resolve_where(|a| a.project == *project);
            }
            _ => {}
        }
    }
}
