//! What the store's queries answer, row by row.

use serde::Serialize;

use self_healing::PipelineMetrics;
use self_healing::alert::{Alert, AlertStatus};
use self_healing::event::{ActionKind, HealthStatus};

use super::RunRow;

/// What a check's latest run found, as the health monitor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSeen {
    /// The check's name.
    pub name: String,
    /// Its status now.
    pub status: HealthStatus,
    /// When it last ran, in milliseconds since the Unix epoch.
    pub checked_ms: i64,
    /// Why its last run failed, redacted; `None` after a success.
    pub last_error: Option<String>,
}

/// A health check's last known status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRow {
    /// The check's name.
    pub check: String,
    /// The stage the check is attached to; `None` for a check attached to none.
    pub stage: Option<String>,
    /// What it checks, with secrets redacted; `None` for checks recorded before this was kept.
    pub target: Option<String>,
    /// Its latest status; `None` while it has not run yet.
    pub status: Option<HealthStatus>,
    /// When it changed to that status, in milliseconds since the Unix epoch.
    pub changed_ms: Option<i64>,
    /// When it last ran, in milliseconds since the Unix epoch; `None` while it has not run.
    pub checked_ms: Option<i64>,
    /// Why its last run failed, redacted.
    pub last_error: Option<String>,
}

/// Whether healing acts for a project, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealingMode {
    /// Whether healing acts on its own; `true` until an operator turns it off.
    pub enabled: bool,
    /// Why the operator set the mode, if they said.
    pub reason: Option<String>,
    /// When the mode was last set, in milliseconds since the Unix epoch; `None` if it never
    /// was.
    pub updated_ms: Option<i64>,
}

/// An action an operator asked a running pipeline to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlRequest {
    /// The request's id, as `enqueue` returned it.
    pub id: i64,
    /// The action to take.
    pub action: ActionKind,
    /// The stage to take it on.
    pub stage: String,
    /// When it was queued, in milliseconds since the Unix epoch.
    pub requested_ms: i64,
}

/// A run with its stages and, once it ended, its `PipelineMetrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    /// The run.
    pub run: RunRow,
    /// Its stages in the pipeline's order.
    pub stages: Vec<StageRow>,
    /// The seed's `PipelineMetrics` as the run ended; `None` while it has not.
    pub metrics: Option<PipelineMetrics>,
    /// Its failed attempts, counted by stage and code, the injected ones (`run --chaos`) apart;
    /// the most frequent first.
    pub failures: Vec<FailureCount>,
    /// The faults it injected on purpose (`run --chaos`), if any.
    pub chaos: Option<ChaosRow>,
}

/// What a `run --chaos` injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosRow {
    /// Each fault as written.
    pub faults: Vec<String>,
    /// The seed its failures were drawn from.
    pub seed: u64,
}

/// Failed attempts of one stage with one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureCount {
    /// The stage.
    pub stage: String,
    /// The errors' code; `None` for errors without one.
    pub code: Option<String>,
    /// Whether `run --chaos` injected them.
    pub injected: bool,
    /// How many attempts failed so.
    pub count: u64,
}

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRow {
    /// The stage's name.
    pub stage: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub status: &'static str,
    /// Units it completed.
    pub items: i64,
    /// When it (last) started, in milliseconds since the Unix epoch.
    pub started_ms: Option<i64>,
    /// When it ended.
    pub finished_ms: Option<i64>,
    /// How long it ran, in milliseconds, once it ended.
    pub duration_ms: Option<f64>,
}

/// A journaled event of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// Its place in the journal: later events have higher ids.
    pub id: i64,
    /// When it happened.
    pub at: i64,
    /// Its type (`attempt-failed`).
    pub kind: String,
    /// The stage it concerns.
    pub stage: Option<String>,
    /// The item it concerns.
    pub item: Option<String>,
    /// The event as `--json-events` prints it.
    pub event: serde_json::Value,
}

/// A sample of the metrics collector, as journaled.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleRow {
    /// When it was taken.
    pub at: i64,
    /// The stage; `None` for the run's own scope.
    pub stage: Option<String>,
    /// The metric.
    pub metric: String,
    /// Its value.
    pub value: f64,
}

/// An attempt's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRow {
    /// The stage.
    pub stage: String,
    /// The item; `None` for a stage's single unit.
    pub item: Option<String>,
    /// The attempt, from 1.
    pub attempt: i64,
    /// When the attempt ended.
    pub at: i64,
    /// The tail of its standard output.
    pub stdout: String,
    /// The tail of its standard error.
    pub stderr: String,
    /// Bytes of standard output cut before the tail.
    pub stdout_cut: i64,
    /// Bytes of standard error cut before the tail.
    pub stderr_cut: i64,
}

/// An attempt's log as a listing shows it: where it is and how much it holds, without the
/// output itself, so that listing a run of thousands of attempts costs a bounded page; the
/// output is read one attempt at a time ([`LogOutput`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// Its place among the logs: later logs have higher ids. Pass it as `after` to read on,
    /// or to read its output.
    pub id: i64,
    /// The stage.
    pub stage: String,
    /// The item; `None` for a stage's single unit.
    pub item: Option<String>,
    /// The attempt, from 1.
    pub attempt: i64,
    /// When the attempt ended.
    pub at: i64,
    /// Bytes of standard output kept.
    pub stdout_bytes: i64,
    /// Bytes of standard error kept.
    pub stderr_bytes: i64,
    /// Bytes of standard output cut before the tail.
    pub stdout_cut: i64,
    /// Bytes of standard error cut before the tail.
    pub stderr_cut: i64,
}

/// One attempt's output, as kept: at most the tail the library keeps per stream
/// (`self_healing::process::LOG_TAIL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOutput {
    /// The attempt, as listed.
    #[serde(flatten)]
    pub entry: LogEntry,
    /// The tail of its standard output.
    pub stdout: String,
    /// The tail of its standard error.
    pub stderr: String,
}

/// Which logs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only this stage's.
    pub stage: Option<String>,
    /// Only this item's.
    pub item: Option<String>,
    /// Only this attempt's.
    pub attempt: Option<i64>,
}

/// What a claim of queued requests took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The requests to carry out, oldest first.
    pub requests: Vec<ControlRequest>,
    /// Requests for an action this version does not know: taken off the queue, carried out
    /// never, reported.
    pub refused: Vec<RefusedRequest>,
}

/// A queued request naming no action this version knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRequest {
    /// The request's id.
    pub id: i64,
    /// The action as stored.
    pub action: String,
    /// The stage it names.
    pub stage: String,
}

impl Claimed {
    /// Sorts claimed rows `(id, action, stage, requested_ms)` into requests and refusals.
    pub fn from_rows(rows: Vec<(i64, String, String, i64)>) -> Self {
        let mut claimed = Claimed::default();
        for (id, action, stage, requested_ms) in rows {
            match action.parse::<ActionKind>() {
                Ok(action) => claimed.requests.push(ControlRequest {
                    id,
                    action,
                    stage,
                    requested_ms,
                }),
                Err(_) => claimed.refused.push(RefusedRequest { id, action, stage }),
            }
        }
        claimed
    }
}

/// One alert as the store keeps it, with what each channel was sent of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRow {
    /// The alert as it last fired or resolved.
    pub alert: Alert,
    /// `project/stage/name`.
    pub fingerprint: String,
    /// When it last changed, in milliseconds since the Unix epoch.
    pub updated_ms: i64,
    /// Its notifications, oldest first.
    pub deliveries: Vec<DeliveryRow>,
}

/// One notification of an alert to a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRow {
    /// The channel.
    pub channel: String,
    /// Whether it was about the alert firing or resolved.
    pub about: AlertStatus,
    /// `owed` (not delivered yet) or `delivered`.
    pub status: String,
    /// Tries so far (each a channel's full retry).
    pub attempts: i64,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// When it was owed, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When it was delivered.
    pub delivered_ms: Option<i64>,
}
