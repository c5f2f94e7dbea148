//! What a run returns.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::StageError;
use crate::event::{EventKind, RunId, RunStatus};
use crate::metrics::PipelineMetrics;

/// How one stage ended. Also what `on_stage_complete` hooks receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageReport {
    /// The stage's name.
    pub stage: Arc<str>,
    /// From the stage's start to its end, restarts included; milliseconds on the wire.
    #[serde(with = "crate::serde_ms")]
    pub duration: Duration,
    /// Units completed: items, or 1 for a stage that does not fan out.
    pub items_completed: u64,
    /// How often the stage was restarted in this run (0 in a report made `from_event`).
    pub restarts: u32,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<StageError>,
}

impl StageReport {
    /// Whether the stage succeeded.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// The report a stage-end event describes (restarts are not in the event, so 0).
    pub fn from_event(kind: &EventKind) -> Option<StageReport> {
        let (stage, duration, items, error) = match kind {
            EventKind::StageSucceeded {
                stage,
                duration,
                items,
            } => (stage, duration, items, None),
            EventKind::StageFailed {
                stage,
                duration,
                items,
                error,
            } => (stage, duration, items, Some(error.clone())),
            _ => return None,
        };
        Some(StageReport {
            stage: Arc::clone(stage),
            duration: *duration,
            items_completed: *items,
            restarts: 0,
            error,
        })
    }
}

/// A compensation that failed during a rollback. The rollback went on past it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompensationFailure {
    /// The stage whose compensation failed.
    pub stage: Arc<str>,
    /// The item's key, for an item's compensation; `None` for the stage's `rollback` hook.
    pub item: Option<Arc<str>>,
    /// Why it failed.
    pub error: StageError,
}

/// The outcome of [`SelfHealingPipeline::execute`](super::SelfHealingPipeline::execute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// The run's id.
    pub run_id: RunId,
    /// How the run ended.
    pub status: RunStatus,
    /// How long the run took; milliseconds on the wire.
    #[serde(with = "crate::serde_ms")]
    pub duration: Duration,
    /// The stages that ran, in order, up to the one that ended the run.
    pub stages: Vec<StageReport>,
    /// The error that failed or rolled back the run.
    pub error: Option<StageError>,
    /// Compensations that failed during a rollback; empty otherwise.
    pub compensation_failures: Vec<CompensationFailure>,
    /// The run's totals at its end.
    pub metrics: PipelineMetrics,
}

impl RunReport {
    /// Whether the run ended `succeeded`.
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Succeeded
    }
}
