//! The work queue several machines share a run through (PostgreSQL only): the coordinating
//! `run` queues each attempt of a stage's command as a job, workers (and the run itself) claim
//! jobs under a lease they renew, run them and record what came of them; the run reads the
//! results back and heals as if it had run them itself.

use std::time::Duration;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use self_healing::event::AttemptOutput;
use self_healing::{BoxFuture, StageError};

use super::Result;

/// Which of a stage's commands a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The stage's `command`.
    Command,
    /// Its `failover`.
    Failover,
    /// Its `rollback` (a compensation).
    Rollback,
    /// Its `reset` (before a restart).
    Reset,
}

impl Role {
    /// The name the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Command => "command",
            Role::Failover => "failover",
            Role::Rollback => "rollback",
            Role::Reset => "reset",
        }
    }

    /// The role a stored name names.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "command" => Role::Command,
            "failover" => Role::Failover,
            "rollback" => Role::Rollback,
            "reset" => Role::Reset,
            _ => return None,
        })
    }
}

/// One attempt to run, as the coordinating run queues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The run it belongs to.
    pub run: String,
    /// The run's project.
    pub project: String,
    /// The stage whose command runs.
    pub stage: String,
    /// The item, for a stage with items.
    pub item: Option<String>,
    /// The item's idempotency key.
    pub key: Option<String>,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Which of the stage's commands.
    pub role: Role,
    /// The worker the last attempt of this item failed on: it alone may take the job for a
    /// moment ([`PREFERRED_FOR`]), so a retry happens where the attempt failed.
    pub prefer: Option<String>,
}

/// How often the queue is looked at when no notification arrives (a lost `LISTEN`
/// connection): by workers for jobs, by runs for results.
pub const POLL: Duration = Duration::from_millis(500);

/// How long a job stays with the worker it prefers before any worker may take it.
pub const PREFERRED_FOR: Duration = Duration::from_secs(1);

/// A job a worker took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id in the queue.
    pub id: i64,
    /// Which version of its run's file it runs (a digest of the file as kept): a run resumed
    /// with a changed file is built afresh.
    pub file: String,
    /// What to run.
    pub job: NewJob,
}

/// What came of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The worker that ran it.
    pub worker: String,
    /// Why the attempt failed; `None` when it succeeded.
    pub error: Option<StageError>,
    /// Its log: the tails of both streams, secrets masked.
    pub output: AttemptOutput,
    /// The `{"metric": NAME, "value": X}` lines it printed, in order.
    pub metrics: Vec<(String, f64)>,
}

/// A run's pipeline file as its coordinator read it: `${NAME}`s unsubstituted, so each worker
/// takes them (and the secrets among them) from its own environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    /// The project.
    pub project: String,
    /// The file's name (its extension says its format); workers read it from their
    /// `--workdir`.
    pub name: String,
    /// Its text as written.
    pub text: String,
}

/// Which jobs a worker takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these projects' (all when empty).
    pub projects: Vec<String>,
    /// Only this run's (a coordinator working its own run).
    pub run: Option<String>,
}

/// The work queue (see the module's documentation).
pub trait WorkQueue: Send + Sync {
    /// Keeps the file `run` runs, for the workers.
    fn keep_file<'a>(&'a self, run: &'a str, file: &'a RunFile) -> BoxFuture<'a, Result<()>>;

    /// The file `run` runs, if it was kept, and its digest (see [`Job::file`]).
    fn run_file<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<Option<(RunFile, String)>>>;

    /// Queues `jobs` in one statement; returns their ids in order, and wakes the workers.
    fn queue_jobs<'a>(&'a self, jobs: &'a [NewJob]) -> BoxFuture<'a, Result<Vec<i64>>>;

    /// Takes up to `limit` jobs for `worker` under a lease of `lease`: queued ones, and
    /// leased ones whose lease ran out (their worker died or was cut off), oldest first,
    /// skipping rows another worker is taking (`FOR UPDATE SKIP LOCKED`). Times are the
    /// server's, so machines' clocks need not agree.
    fn claim_jobs<'a>(
        &'a self,
        worker: &'a str,
        filter: &'a Filter,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Job>>>;

    /// Renews `worker`'s lease on `ids`; returns those it no longer holds (cancelled by the
    /// run, or taken by another worker after the lease ran out): their processes should stop.
    fn renew_jobs<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [i64],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>>;

    /// Records what came of jobs `worker` ran, and wakes the runs waiting for them. A job
    /// cancelled meanwhile keeps its status.
    fn finish_jobs<'a>(
        &'a self,
        worker: &'a str,
        results: &'a [(i64, JobResult)],
    ) -> BoxFuture<'a, Result<()>>;

    /// The results of those of `ids` that are finished.
    fn job_results<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<Vec<(i64, JobResult)>>>;

    /// Cancels jobs not finished: their workers stop them at their next renewal.
    fn cancel_jobs<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<()>>;

    /// Cancels every unfinished job of `run`: a coordinator taking the run over starts afresh.
    fn cancel_run_jobs<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<u64>>;

    /// A wake-up each time jobs are queued (`queued`) or finished (`finished`), as
    /// `LISTEN/NOTIFY` delivers them; it ends when the connection is lost (pollers go on
    /// polling).
    fn notifications(&self, topic: Topic) -> BoxFuture<'_, Result<BoxStream<'static, ()>>>;
}

/// What a [`WorkQueue::notifications`] stream wakes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Jobs were queued.
    Queued,
    /// Jobs finished.
    Finished,
}
