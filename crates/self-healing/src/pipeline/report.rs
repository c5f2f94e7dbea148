//! What a run returns.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::StageError;
use crate::event::{EventKind, RunId, RunStatus};
use crate::metrics::PipelineMetrics;

/// How one stage ended. Also what `on_stage_complete` hooks receive.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageReport {
    pub stage: Arc<str>,
    #[serde(with = "crate::serde_ms")]
    pub duration: Duration,
    /// Units completed: items, or 1 for a stage that does not fan out.
    pub items_completed: u64,
    pub restarts: u32,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<StageError>,
}

impl StageReport {
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompensationFailure {
    pub stage: Arc<str>,
    pub item: Option<Arc<str>>,
    pub error: StageError,
}

/// The outcome of [`SelfHealingPipeline::execute`](super::SelfHealingPipeline::execute).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub run_id: RunId,
    pub status: RunStatus,
    #[serde(with = "crate::serde_ms")]
    pub duration: Duration,
    /// The stages that ran, in order, up to the one that ended the run.
    pub stages: Vec<StageReport>,
    /// The error that failed or rolled back the run.
    pub error: Option<StageError>,
    pub compensation_failures: Vec<CompensationFailure>,
    pub metrics: PipelineMetrics,
}

impl RunReport {
    pub fn is_success(&self) -> bool {
        self.status == RunStatus::Succeeded
    }
}
