//! A run as the store knows it: where it is, the process that drives it, and what it claims
//! from the store before it starts.

use serde::{Serialize, Serializer};

use self_healing::event::RunStatus;

use super::{Result, StoreError};

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

    /// Whether the run never recorded an end and no process drives it any more: killed, or its
    /// machine gone. Its stored status still says `running`; `run --resume` continues it.
    pub fn is_lost(&self, now_ms: i64) -> bool {
        self.status.is_unended() && !self.is_alive(now_ms)
    }

    /// Where the run is, for a person: its status, or `lost` when [`RunRow::is_lost`], so a
    /// killed run does not read as running forever (the API says the same with `live`).
    pub fn shown_status(&self, now_ms: i64) -> &'static str {
        if self.is_lost(now_ms) {
            "lost"
        } else {
            self.status.as_str()
        }
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
    /// Whether `run` is being resumed: it must then be in the store; a fresh id must not be.
    pub resuming: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunState, owner: Owner, heartbeat_ms: i64) -> RunRow {
        RunRow {
            id: "run-1".to_owned(),
            project: "p".to_owned(),
            status,
            started_ms: 0,
            finished_ms: None,
            error: None,
            owner: Some(owner),
            heartbeat_ms: Some(heartbeat_ms),
            stages: vec![],
            strategies: vec![],
        }
    }

    /// A process of this host that has exited (and been reaped).
    fn gone() -> Owner {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        Owner {
            host: host_name(),
            pid: child.id(),
        }
    }

    #[test]
    fn a_run_is_lost_when_its_process_is_gone_or_its_lease_ran_out() {
        let now = 1_000_000;
        let lease = LEASE.as_millis() as i64;
        let here = run(RunState::Running, Owner::this_process(), now);
        assert_eq!(here.shown_status(now), "running");
        // On this host a dead process is seen at once, without waiting out the lease.
        let killed = run(RunState::Running, gone(), now);
        assert!(killed.is_lost(now));
        assert_eq!(killed.shown_status(now), "lost");
        let rolling = run(RunState::RollingBack, gone(), now);
        assert_eq!(rolling.shown_status(now), "lost");
        // Elsewhere only the lease tells.
        let remote = Owner {
            host: format!("not-{}", host_name()),
            pid: 1,
        };
        let away = run(RunState::Running, remote, now);
        assert_eq!(away.shown_status(now + lease - 1), "running");
        assert_eq!(away.shown_status(now + lease), "lost");
        // An ended run is what it ended as, alive or not.
        let ended = run(RunState::Ended(RunStatus::Failed), gone(), now);
        assert!(!ended.is_lost(now + lease));
        assert_eq!(ended.shown_status(now + lease), "failed");
    }
}
