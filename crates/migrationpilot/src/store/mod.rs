//! The durable store: the journal of every run, the queries the command line and the API ask,
//! and the control plane operators steer through.
//!
//! Four small traits, [`Journal`], [`Queries`], [`Control`] and [`Alerts`], make a [`Store`].
//! Events become rows through one backend-neutral [`projection`]; strategy overrides merge by the
//! library's [`StrategyOverride::merge`]. Every query is written once, in `sql/`, and compiled
//! for each backend, which keeps only its schema (migrations) and its dialect (`dialect.rs`):
//! SQLite is the embedded default; PostgreSQL (feature `postgres`, on by default) is the store
//! several machines share, with a [`work`] queue its runs hand their attempts to.
//!
//! Beside the traits: a run and the process that drives it (`run.rs`), what queries answer
//! (`rows.rs`), the journal read back as one stream (`cursor.rs`), and the store as the
//! alerting's outbox (`outbox.rs`).

#[cfg(test)]
mod conformance;
mod cursor;
mod dialect;
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
pub mod projection;
mod rows;
mod run;
mod sqlite;
#[cfg(feature = "postgres")]
mod test_database;
pub mod work;

use std::sync::Arc;
use std::time::SystemTime;

use self_healing::BoxFuture;
use self_healing::PipelineMetrics;
use self_healing::alert::{Alert, Delivery};
use self_healing::event::{ActionKind, Event, RunId};
use self_healing::healing::{HealingRecord, StrategyOverride};
use self_healing::pipeline::Resume;

pub use cursor::{JournalCursor, JournalEntry, JournalTable, event_place};
pub use outbox::StoreOutbox;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use rows::{
    AlertRow, ChaosRow, CheckSeen, Claimed, ControlRequest, DeliveryRow, EventRow, FailureCount,
    HealingMode, HealthRow, LogEntry, LogFilter, LogOutput, LogRow, RefusedRequest, RunDetail,
    SampleRow, StageRow,
};
pub use run::{DeclaredCheck, LEASE, Owner, RunClaim, RunRow, RunState};
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

/// How a command opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Runs and workers: the store is made where there is none, and migrated.
    Create,
    /// Commands that change an existing store (steering, `serve`'s outbox): it is neither made
    /// nor migrated; without one, the command says there is no store.
    Existing,
    /// Commands that only read: as [`Existing`](Self::Existing), and opened read-only, so a
    /// store the user may only read can be read.
    ReadOnly,
}

/// A result whose error is a [`StoreError`].
pub type Result<T> = std::result::Result<T, StoreError>;

/// How many runs of a project keep their logs and samples; older runs' are pruned as a new
/// run starts.
pub const KEEP_RUNS: i64 = 20;

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

    /// The run's attempt logs that `filter` picks after the one numbered `after`, in the
    /// order they were kept (as the attempts ended), at most `limit`, without their output:
    /// a listing stays small however much the attempts wrote.
    fn log_entries<'a>(
        &'a self,
        run: &'a str,
        filter: &'a LogFilter,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>>>;

    /// One attempt's output, by the id [`Queries::log_entries`] gave it; `None` when the run
    /// has no such log (never had it, or it was pruned).
    fn log_output<'a>(&'a self, run: &'a str, id: i64) -> BoxFuture<'a, Result<Option<LogOutput>>>;

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
    fn work_queue(&self) -> Option<&dyn work::WorkQueue>;

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

    /// Keeps `alert` as firing unless it fires already, in one step: whether this call raised
    /// it. Of several processes that would raise the same alert at once (`run-lost`), one does.
    fn raise_once<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<bool>>;

    /// `project`'s firing alerts.
    fn firing_alerts<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<Alert>>>;

    /// `project`'s alerts, firing first, then the most recently changed, with their deliveries.
    fn alerts<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<AlertRow>>>;

    /// Keeps the project's `alerts` settings as its file declares them (channels, routing,
    /// runbooks, built-in alerts), `${NAME}`s unsubstituted (secrets stay in the environment),
    /// so `serve` can deliver what a run left owed and raise `run-lost`.
    fn set_alert_settings<'a>(
        &'a self,
        project: &'a str,
        settings: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<()>>;

    /// The project's `alerts` settings as kept: `None` when no run of it kept any. Stores an
    /// earlier version wrote hold the channel list alone.
    fn alert_settings<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>>>;

    /// The projects that owe deliveries, with their `alerts` settings as kept.
    fn owing_projects(&self) -> BoxFuture<'_, Result<Vec<Owing>>>;
}

/// Everything a backend provides.
pub trait Store: Journal + Queries + Control + Alerts + 'static {}

impl<T: Journal + Queries + Control + Alerts + 'static> Store for T {}

/// Opens the store a URL names, making and migrating it if need be (see [`open_with`]).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, Access::Create).await
}

/// Opens the store a URL names as `access` allows: `sqlite://PATH` (or a bare path), or
/// `postgres://…` / `postgresql://…` in a build with the `postgres` feature. Any other scheme,
/// and an empty path, are refused.
pub async fn open_with(url: &str, access: Access) -> Result<Arc<dyn Store>> {
    let shown = self_healing::health::redact_url(url);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PostgresStore::open_with(url, access).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Unusable(format!(
            "`{shown}`: this build of migrationpilot has no PostgreSQL store (built without its `postgres` feature, which the default build has); build it with `--features postgres`, or use sqlite://PATH"
        )));
    }
    let path = match url.split_once("://") {
        Some(("sqlite", path)) => path,
        Some((scheme, _)) => {
            return Err(StoreError::Unusable(format!(
                "`{shown}`: `{scheme}://` is not a store; give sqlite://PATH or postgres://…"
            )));
        }
        None => url.strip_prefix("sqlite:").unwrap_or(url),
    };
    if path.trim().is_empty() {
        return Err(StoreError::Unusable(format!(
            "`{shown}` names no file: give sqlite://PATH"
        )));
    }
    Ok(Arc::new(
        SqliteStore::open_with(std::path::Path::new(path), access).await?,
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
