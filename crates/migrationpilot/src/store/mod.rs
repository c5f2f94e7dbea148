//! The durable store: the journal of every run, the queries the command line and the API ask,
//! and the control plane operators steer through.
//!
//! Three small traits, [`Journal`], [`Queries`] and [`Control`], make a [`Store`]. Events become
//! rows through one backend-neutral [`projection`]; strategy overrides merge by the library's
//! [`StrategyOverride::merge`]. A backend is its SQL: SQLite is the embedded default.

pub mod projection;
mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use self_healing::BoxFuture;
use self_healing::event::{ActionKind, Event, HealthStatus, RunId, RunStatus};
use self_healing::healing::{HealingRecord, StrategyOverride};

pub use sqlite::SqliteStore;

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
}

/// A result whose error is a [`StoreError`].
pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a run is: running, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Started and not ended yet (or its process died before it could record an end).
    Running,
    /// Ended, with this status.
    Ended(RunStatus),
}

impl RunState {
    /// The kebab-case name stored and printed: `running`, or the ended run's status.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Ended(status) => status.as_str(),
        }
    }

    /// How a row spells it back; anything else is a store this version cannot read.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "running" => RunState::Running,
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

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunState {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A run as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// What earlier attempts of a run completed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompletedWork {
    /// The names of the stages that succeeded.
    pub stages: HashSet<String>,
    /// The items that succeeded, as (stage name, item key).
    pub items: HashSet<(String, String)>,
}

impl self_healing::pipeline::Completed for CompletedWork {
    fn stage(&self, stage: &str) -> bool {
        self.stages.contains(stage)
    }

    fn item(&self, stage: &str, item: &str) -> bool {
        self.items.contains(&(stage.to_owned(), item.to_owned()))
    }
}

/// A health check's last known status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthRow {
    /// The check's name.
    pub check: String,
    /// The stage the check is attached to; `None` for a check attached to none.
    pub stage: Option<String>,
    /// The status the check last changed to.
    pub status: HealthStatus,
    /// When it changed to that status, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// Whether healing acts for a project, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Writes a run's events: the group commit of the journal.
pub trait Journal: Send + Sync {
    /// Appends a batch of `project`'s events in one transaction, with the rows they project
    /// into (runs, stages, items, healing history, health).
    fn append<'a>(
        &'a self,
        project: &'a str,
        events: &'a [Arc<Event>],
    ) -> BoxFuture<'a, Result<()>>;
}

/// What the command line, the API and a resuming run read.
pub trait Queries: Send + Sync {
    /// The project's latest run that did not finish (crashed, or cancelled).
    fn unfinished_run<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Option<RunRow>>>;

    /// The project's runs, newest first.
    fn runs<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<RunRow>>>;

    /// What earlier attempts of `run` completed, for `run --resume`.
    fn completed<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<CompletedWork>>;

    /// Healing decisions, newest first.
    fn history<'a>(
        &'a self,
        project: &'a str,
        limit: u32,
        since_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<HealingRecord>>>;

    /// Each health check's last known status, by check name.
    fn health<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<HealthRow>>>;

    /// The project's healing mode: enabled, with no reason, for a project never set.
    fn healing_mode<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<HealingMode>>;

    /// The project's strategy overrides, as (strategy name, override), by strategy name.
    fn overrides<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, StrategyOverride)>>>;
}

/// How operators steer: the healing mode, strategy overrides and queued actions.
pub trait Control: Send + Sync {
    /// Turns healing on or off for the project, with the operator's reason if given.
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

    /// Takes the project's queued requests, each by exactly one claimant.
    fn claim<'a>(
        &'a self,
        project: &'a str,
        claimant: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ControlRequest>>>;
}

/// Everything a backend provides.
pub trait Store: Journal + Queries + Control + 'static {}

impl<T: Journal + Queries + Control + 'static> Store for T {}

/// Opens the store a URL names: `sqlite://PATH` (or a bare path).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Invalid(format!(
            "`{}`: a PostgreSQL store is not available in this version; use sqlite://PATH",
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
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_795_835_045_000), "2026-11-28T03:04:05Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
