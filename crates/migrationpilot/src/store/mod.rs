//! The durable store: the journal of every run, the queries the command line and the API ask,
//! and the control plane operators steer through.
//!
//! Four small traits, [`Journal`], [`Queries`], [`Control`] and [`Alerts`], make a [`Store`].
//! Events become rows through one backend-neutral [`projection`]; strategy overrides merge by the
//! library's [`StrategyOverride::merge`]. Every query is written once, in `sql/`, and compiled
//! for each backend, which keeps only its schema (migrations) and its dialect (`dialect.rs`): SQLite is the
//! embedded default; PostgreSQL (built with `--features postgres`) is the store several machines
//! share, with a [`work`] queue its runs hand their attempts to.

#[cfg(test)]
mod conformance;
mod dialect;
#[cfg(feature = "postgres")]
mod postgres;
pub mod projection;
mod sqlite;
#[cfg(feature = "postgres")]
mod test_database;
pub mod work;

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use self_healing::BoxFuture;
use self_healing::PipelineMetrics;
use self_healing::alert::{Alert, AlertStatus, Delivery, Outbox};
use self_healing::event::{ActionKind, Event, EventKind, HealthStatus, RunId, RunStatus};
use self_healing::healing::{HealingRecord, StrategyOverride};
use self_healing::pipeline::Resume;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
#[cfg(feature = "postgres")]
pub use test_database::TestDatabase;

/// A store failure. Journaling stops the run when it fails: a run that cannot record what it
/// does must not go on doing it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("store {0}")]
    Database(#[from] sqlx::Error),
    /// The request or what the store holds makes no sense: the message says what.
    #[error("store: {0}")]
    Invalid(String),
    /// The file or server cannot serve as a store: it is not a database, cannot be reached,
    /// or a newer version made it. The message names the file, or the URL without its password.
    #[error("{0}")]
    Unusable(String),
}

/// A result whose error is a [`StoreError`].
pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a run is: running, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Started and not ended yet (or its process died before it could record an end).
    Running,
    /// Compensating its completed work after a rollback was decided, and not ended yet.
    RollingBack,
    /// Ended, with this status.
    Ended(RunStatus),
}

impl RunState {
    /// The kebab-case name stored and printed: `running`, or the ended run's status.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::RollingBack => "rolling-back",
            RunState::Ended(status) => status.as_str(),
        }
    }

    /// How a row spells it back; anything else is a store this version cannot read.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "running" => RunState::Running,
            "rolling-back" => RunState::RollingBack,
            "succeeded" => RunState::Ended(RunStatus::Succeeded),
            "failed" => RunState::Ended(RunStatus::Failed),
            "rolled-back" => RunState::Ended(RunStatus::RolledBack),
            "cancelled" => RunState::Ended(RunStatus::Cancelled),
            other => {
                return Err(StoreError::Invalid(format!(
                    "a run has the unknown status `{other}`"
                )));
            }
        })
    }
}

impl RunState {
    /// Whether the run has not recorded an end: it runs, or its process died.
    pub fn is_unended(self) -> bool {
        matches!(self, RunState::Running | RunState::RollingBack)
    }

    /// Whether `run --resume` may continue it: it did not end, was cancelled, or failed.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            RunState::Running
                | RunState::RollingBack
                | RunState::Ended(RunStatus::Cancelled | RunStatus::Failed)
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A run as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    /// The run id.
    pub id: String,
    /// The project the run belongs to.
    pub project: String,
    /// Running, or how it ended.
    pub status: RunState,
    /// When the run first started (resuming keeps it), in milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// When the run ended, in milliseconds since the Unix epoch; `None` while it has not ended.
    pub finished_ms: Option<i64>,
    /// The error that ended the run; `None` while running, or when it succeeded or was
    /// cancelled.
    pub error: Option<String>,
    /// The process driving the run (`host:pid`); `None` for runs journaled without a claim.
    pub owner: Option<Owner>,
    /// When its owner last said it was alive, in milliseconds since the Unix epoch.
    pub heartbeat_ms: Option<i64>,
    /// The pipeline's stages, in order, as the run declared them.
    pub stages: Vec<String>,
    /// The healer's strategies, as the run declared them.
    pub strategies: Vec<String>,
}

impl RunRow {
    /// Whether a process still drives the run: it has not ended, its owner renewed its lease
    /// within [`LEASE`], and an owner on this host is still a live process.
    pub fn is_alive(&self, now_ms: i64) -> bool {
        let fresh = self
            .heartbeat_ms
            .is_some_and(|beat| now_ms - beat < LEASE.as_millis() as i64);
        self.status.is_unended() && fresh && self.owner.as_ref().is_none_or(Owner::may_be_alive)
    }
}

/// How long a run's owner may go without renewing its lease before the run counts as dead.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(10);

/// The process that drives a run: its host and process id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The host's name.
    pub host: String,
    /// The process id on that host.
    pub pid: u32,
}

impl Owner {
    /// This process.
    pub fn this_process() -> Self {
        Owner {
            host: host_name(),
            pid: std::process::id(),
        }
    }

    /// `host:pid` as stored; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (host, pid) = text.rsplit_once(':')?;
        Some(Owner {
            host: host.to_owned(),
            pid: pid.parse().ok()?,
        })
    }

    /// False only when the owner is on this host and its process is gone.
    pub fn may_be_alive(&self) -> bool {
        self.host != host_name() || process_exists(self.pid)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.pid)
    }
}

impl Serialize for Owner {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The machine's host name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Whether a process with this id exists on this host.
#[cfg(unix)]
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for the process without sending anything.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    true
}

/// What a run takes from the store before it starts: that no other process drives a run of
/// its project, and the names operators may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClaim {
    /// The project.
    pub project: String,
    /// The run: a fresh id, or the one being resumed.
    pub run: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// This process.
    pub owner: Owner,
    /// The pipeline's stages, in order.
    pub stages: Vec<String>,
    /// The healer's strategies.
    pub strategies: Vec<String>,
    /// The checks the file declares, for `health`.
    pub checks: Vec<DeclaredCheck>,
}

/// A check a pipeline file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredCheck {
    /// The check's name.
    pub name: String,
    /// The stage it is attached to.
    pub stage: Option<String>,
    /// What it checks, with secrets redacted.
    pub target: String,
}

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

/// Something the journal gained, in any project: an event, an item completion, a healing
/// decision or the collector's samples, each as the event it was on the bus. What `serve`
/// streams and what its Prometheus exporter counts.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// The project.
    pub project: String,
    /// The table it was read from: its own position is `cursor`'s for that table.
    pub table: JournalTable,
    /// Where a reader that has seen this entry (and those before it) goes on from.
    pub cursor: JournalCursor,
    /// The event. A completion, decision or sample read back from its own table carries
    /// `seq` 0: the journal keeps its place in the stream, not on the bus.
    pub event: Event,
}

impl Serialize for JournalEntry {
    /// `{project, run, id, kind, stage, item, event}`: `id` is the cursor, `event` the event as
    /// `run --json-events` prints it.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let event = serde_json::to_value(&self.event).map_err(serde::ser::Error::custom)?;
        let (stage, item) = event_place(&self.event.kind);
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("project", &self.project)?;
        map.serialize_entry("run", &self.event.run)?;
        map.serialize_entry("id", &self.cursor.to_string())?;
        map.serialize_entry("kind", &event["type"])?;
        map.serialize_entry("stage", &stage)?;
        map.serialize_entry("item", &item)?;
        map.serialize_entry("event", &event)?;
        map.end()
    }
}

/// The stage and item an event concerns.
pub fn event_place(kind: &EventKind) -> (Option<&str>, Option<&str>) {
    let item = match kind {
        EventKind::ItemStarted { item, .. }
        | EventKind::ItemSucceeded { item, .. }
        | EventKind::ItemFailed { item, .. }
        | EventKind::ItemAbandoned { item, .. } => Some(&**item),
        EventKind::AttemptStarted { item, .. }
        | EventKind::AttemptSucceeded { item, .. }
        | EventKind::AttemptFailed { item, .. }
        | EventKind::AttemptOutput { item, .. }
        | EventKind::HealingApplied { item, .. }
        | EventKind::CompensationFinished { item, .. } => item.as_deref(),
        EventKind::HealingDecision { record } => record.item.as_deref(),
        _ => None,
    };
    (kind.stage().map(|s| &**s), item)
}

/// How far a reader has followed the journal: the last event, completion, decision and sample
/// seen. Written `e17.i20.h5.s9`, as the `id` of a streamed entry, so a client that reconnects
/// with it misses nothing still in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalCursor {
    /// The last event's id.
    pub event: i64,
    /// The last completion's position.
    pub item: i64,
    /// The last decision's id.
    pub healing: i64,
    /// The last sample's position.
    pub sample: i64,
}

/// The tables the journal is read back from, in the order [`JournalCursor`] writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalTable {
    /// Events.
    Event,
    /// Item completions.
    Item,
    /// Healing decisions.
    Healing,
    /// The collector's samples.
    Sample,
}

impl JournalTable {
    /// Every table, in cursor order.
    pub const ALL: [JournalTable; 4] = [
        JournalTable::Event,
        JournalTable::Item,
        JournalTable::Healing,
        JournalTable::Sample,
    ];
}

impl JournalCursor {
    /// The last position seen in `table`.
    pub fn position(&self, table: JournalTable) -> i64 {
        match table {
            JournalTable::Event => self.event,
            JournalTable::Item => self.item,
            JournalTable::Healing => self.healing,
            JournalTable::Sample => self.sample,
        }
    }

    /// The last position seen in `table`, to move.
    pub fn position_mut(&mut self, table: JournalTable) -> &mut i64 {
        match table {
            JournalTable::Event => &mut self.event,
            JournalTable::Item => &mut self.item,
            JournalTable::Healing => &mut self.healing,
            JournalTable::Sample => &mut self.sample,
        }
    }

    /// Whether a reader at this cursor has already seen `entry`.
    pub fn covers(&self, entry: &JournalEntry) -> bool {
        self.position(entry.table) >= entry.cursor.position(entry.table)
    }

    /// The furthest of the two in each table.
    pub fn furthest(self, other: JournalCursor) -> JournalCursor {
        JournalCursor {
            event: self.event.max(other.event),
            item: self.item.max(other.item),
            healing: self.healing.max(other.healing),
            sample: self.sample.max(other.sample),
        }
    }

    /// Whether this cursor is at or past `other` in every table.
    pub fn reaches(&self, other: &JournalCursor) -> bool {
        JournalTable::ALL
            .iter()
            .all(|t| self.position(*t) >= other.position(*t))
    }
}

impl std::fmt::Display for JournalCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "e{}.i{}.h{}.s{}",
            self.event, self.item, self.healing, self.sample
        )
    }
}

impl std::str::FromStr for JournalCursor {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let wrong = || format!("`{text}` is not a journal position (like e17.i20.h5.s9)");
        let mut parts = text.split('.');
        let mut next = |tag: char| -> std::result::Result<i64, String> {
            parts
                .next()
                .and_then(|p| p.strip_prefix(tag))
                .and_then(|n| n.parse().ok())
                .filter(|n: &i64| *n >= 0)
                .ok_or_else(wrong)
        };
        let cursor = JournalCursor {
            event: next('e')?,
            item: next('i')?,
            healing: next('h')?,
            sample: next('s')?,
        };
        match parts.next() {
            None => Ok(cursor),
            Some(_) => Err(wrong()),
        }
    }
}

/// How many runs of a project keep their logs and samples; older runs' are pruned as a new
/// run starts.
pub const KEEP_RUNS: i64 = 20;

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

/// Writes a run's events: the group commit of the journal.
pub trait Journal: Send + Sync {
    /// Appends a batch of `project`'s events in one transaction, with the rows they project
    /// into (runs, stages, items, compensations, healing history, health).
    fn append<'a>(
        &'a self,
        project: &'a str,
        events: &'a [Arc<Event>],
    ) -> BoxFuture<'a, Result<()>>;

    /// Keeps a run's `PipelineMetrics` as it ended.
    fn record_metrics<'a>(
        &'a self,
        run: &'a str,
        metrics: &'a PipelineMetrics,
    ) -> BoxFuture<'a, Result<()>>;

    /// Records what the project's checks last found (status, when, why it failed).
    fn checks_seen<'a>(
        &'a self,
        project: &'a str,
        seen: &'a [CheckSeen],
    ) -> BoxFuture<'a, Result<()>>;
}

/// What the command line, the API and a resuming run read.
pub trait Queries: Send + Sync {
    /// The project's latest run, if `run --resume` may continue it (see
    /// [`RunState::is_resumable`]).
    fn unfinished_run<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Option<RunRow>>> {
        Box::pin(async move {
            let latest = self.runs(project, 1).await?.into_iter().next();
            Ok(latest.filter(|run| run.status.is_resumable()))
        })
    }

    /// The project's runs, newest first.
    fn runs<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<RunRow>>>;

    /// Every project the store knows, by name.
    fn projects(&self) -> BoxFuture<'_, Result<Vec<String>>>;

    /// A run with its stages and metrics; `None` for a run the store does not know.
    fn run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<Option<RunDetail>>>;

    /// The run's journaled events after the one numbered `after`, oldest first, at most
    /// `limit`.
    fn events<'a>(
        &'a self,
        run: &'a str,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<EventRow>>>;

    /// What the metrics collector sampled during the run, oldest first (one metric's, or all).
    fn samples<'a>(
        &'a self,
        run: &'a str,
        metric: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SampleRow>>>;

    /// The run's attempt logs that `filter` picks, in the order the attempts ended.
    fn logs<'a>(
        &'a self,
        run: &'a str,
        filter: &'a LogFilter,
    ) -> BoxFuture<'a, Result<Vec<LogRow>>>;

    /// What the journal gained after `cursor`, at most `limit` of each kind, oldest first
    /// (each kind in its own order), each with the cursor after it; and the cursor past all
    /// that was read, entries that could not be read back included.
    fn journal_since(
        &self,
        cursor: JournalCursor,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<JournalEntry>, JournalCursor)>>;

    /// Where the journal ends now: a cursor past everything in it.
    fn journal_end(&self) -> BoxFuture<'_, Result<JournalCursor>>;

    /// What earlier attempts of `run` did, for `run --resume`: completed stages and items in
    /// completion order, compensations that ran, and the rollback it was in, if any.
    fn resume<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<Resume>>;

    /// Healing decisions, newest first.
    fn history<'a>(
        &'a self,
        project: &'a str,
        limit: u32,
        since_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<HealingRecord>>>;

    /// The project's checks, by name: every check its latest run declared, and any other that
    /// reported a status.
    fn health<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<HealthRow>>>;

    /// Whether healing acts for the project (enabled unless someone disabled it).
    fn healing_mode<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<HealingMode>>;

    /// The project's strategy overrides, each merged, by strategy name.
    fn overrides<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, StrategyOverride)>>>;
}

/// How operators steer, and how a run takes its project.
pub trait Control: Send + Sync {
    /// The queue several machines share runs through; `None` for a store that cannot be
    /// shared (SQLite): its runs work every item themselves.
    fn work_queue(&self) -> Option<&dyn work::WorkQueue> {
        None
    }

    /// Takes `claim.run` for this process, or refuses with the run of the project that is
    /// still alive (see [`RunRow::is_alive`]). One transaction, so two processes cannot both
    /// take a project. The run's row records its owner, its lease, and its stage, strategy and
    /// check names.
    fn claim_run<'a>(&'a self, claim: &'a RunClaim) -> BoxFuture<'a, Result<Option<RunRow>>>;

    /// Renews the lease of `run`, which `owner` drives.
    fn heartbeat<'a>(&'a self, run: &'a str, owner: &'a Owner) -> BoxFuture<'a, Result<()>>;

    /// Turns healing on or off for the project; off is manual mode, with `reason` shown.
    fn set_healing_mode<'a>(
        &'a self,
        project: &'a str,
        enabled: bool,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Merges `changes` into the project's override of `strategy`
    /// ([`StrategyOverride::merge`]).
    fn set_override<'a>(
        &'a self,
        project: &'a str,
        strategy: &'a str,
        changes: &'a StrategyOverride,
    ) -> BoxFuture<'a, Result<()>>;

    /// Queues an action for the project's running pipeline; returns its id.
    fn enqueue<'a>(
        &'a self,
        project: &'a str,
        action: ActionKind,
        stage: &'a str,
    ) -> BoxFuture<'a, Result<i64>>;

    /// Takes the project's queued requests, each by exactly one claimant. A request for an
    /// action this version does not know is refused, never guessed at.
    fn claim<'a>(&'a self, project: &'a str, claimant: &'a str) -> BoxFuture<'a, Result<Claimed>>;
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

/// A project that owes alert deliveries, and its channels as kept (`None` if never kept).
pub type Owing = (String, Option<serde_json::Value>);

/// Alerts and their deliveries: the outbox of `self_healing::alert` kept in the store, so an
/// alert survives a crash and goes out on the next start.
pub trait Alerts: Send + Sync {
    /// Keeps `alert`'s state and owes it to each of `channels`, in one transaction; the owed
    /// deliveries are `owner`'s until it takes, attempts or releases them.
    fn keep_alert<'a>(
        &'a self,
        owner: &'a str,
        alert: &'a Alert,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<()>>;

    /// Takes the deliveries owed (of `project`, or every project's) that are `owner`'s,
    /// nobody's, or whose taker's `lease` expired, for `owner`.
    fn take_deliveries<'a>(
        &'a self,
        owner: &'a str,
        lease: std::time::Duration,
        project: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Delivery>>>;

    /// Records `owner`'s try: delivered (`error` is `None`, whoever holds them now), or still
    /// owed with the error if `owner` still holds them (`dead` after
    /// [`MAX_ATTEMPTS`](self_healing::alert::MAX_ATTEMPTS) tries).
    fn delivery_attempted<'a>(
        &'a self,
        owner: &'a str,
        ids: &'a [i64],
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Gives up the owed deliveries `owner` holds, for the next process at once.
    fn release_deliveries<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<()>>;

    /// `project`'s firing alerts.
    fn firing_alerts<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<Alert>>>;

    /// `project`'s alerts, firing first, then the most recently changed, with their deliveries.
    fn alerts<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<AlertRow>>>;

    /// Keeps the project's alert channels as its file declares them, `${NAME}`s unsubstituted
    /// (secrets stay in the environment), so `serve` can deliver what a run left owed.
    fn set_channels<'a>(
        &'a self,
        project: &'a str,
        channels: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<()>>;

    /// The projects that owe deliveries, with their channels as kept.
    fn owing_projects(&self) -> BoxFuture<'_, Result<Vec<Owing>>>;
}

/// A store as the alerting's outbox. Alerts are kept with the secrets it knows masked in their
/// text, as the journal keeps events.
#[derive(Clone)]
pub struct StoreOutbox {
    store: Arc<dyn Store>,
    project: Option<String>,
    secrets: crate::env::Secrets,
}

impl StoreOutbox {
    /// The outbox of `project` (deliveries of other projects are not taken), or of every
    /// project, masking `secrets` in what it keeps.
    pub fn new(store: Arc<dyn Store>, project: Option<&str>, secrets: crate::env::Secrets) -> Self {
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
            let masked = Alert {
                title: self.secrets.mask(&alert.title).into_owned(),
                message: self.secrets.mask(&alert.message).into_owned(),
                ..alert.clone()
            };
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

/// Everything a backend provides.
pub trait Store: Journal + Queries + Control + Alerts + 'static {}

impl<T: Journal + Queries + Control + Alerts + 'static> Store for T {}

/// Opens the store a URL names: `sqlite://PATH` (or a bare path), or `postgres://…` /
/// `postgresql://…` in a build with the `postgres` feature.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PostgresStore::open(url).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Unusable(format!(
            "`{}`: this build of migrationpilot has no PostgreSQL store; build it with `--features postgres`, or use sqlite://PATH",
            self_healing::health::redact_url(url)
        )));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    Ok(Arc::new(
        SqliteStore::open(std::path::Path::new(path)).await?,
    ))
}

/// The default store: `journal.db` in the user's data directory.
pub fn default_url() -> Option<String> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".local/share"))
        })?;
    Some(format!(
        "sqlite://{}",
        data.join("migrationpilot/journal.db").display()
    ))
}

/// [`self_healing::clock::unix_millis`], as SQLite stores integers.
pub fn millis(at: SystemTime) -> i64 {
    i64::try_from(self_healing::clock::unix_millis(at)).unwrap_or(i64::MAX)
}

/// `2026-11-28T03:04:05Z` for milliseconds since the epoch (UTC, no leap seconds).
pub fn iso8601(ms: i64) -> String {
    self_healing::clock::iso8601(ms)
}
