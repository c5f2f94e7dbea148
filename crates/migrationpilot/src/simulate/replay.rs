//! `simulate --replay RUN`: a recorded run's attempts (their outcomes, codes and durations)
//! and its checks' health changes, read from the journal, become the model a file's healing is
//! run against in virtual time. Replaying a run against its own file gives back its outcome;
//! against a changed file, what that file would have done with last night's failures.
//!
//! Each attempt the replay makes takes the recorded attempt with the same stage, item and
//! attempt number (the n-th time it is asked for, the n-th recorded in time: a restart asks
//! again). One the recording lacks (a changed file retries more) is drawn from that stage's
//! recorded attempt that started nearest in time, and counted as drawn; in a stage the
//! recording never reached, attempts succeed at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use self_healing::event::{Event, EventKind, HealthStatus};
use self_healing::health::{Check, CheckError};
use self_healing::{BoxFuture, PipelineMetrics, RunStatus, StageContext, StageError};

use crate::build::{Attempt, Runner};
use crate::store::work::Role;
use crate::store::{Store, StoreError};

/// What one recorded attempt did.
#[derive(Debug, Clone)]
struct Recorded {
    /// From the run's start to the attempt's start.
    at: Duration,
    took: Duration,
    outcome: Result<(), StageError>,
}

/// (stage, item, attempt number): a failover's attempts count on from its stage's.
type Key = (String, Option<String>, u32);

/// A recorded run, as the replay needs it.
#[derive(Debug, Default)]
pub struct Recording {
    /// The run's id.
    pub run: String,
    /// How it ended, if it did.
    pub status: Option<RunStatus>,
    /// Its totals as it ended, if it did.
    pub metrics: Option<PipelineMetrics>,
    /// Its healing decisions.
    pub decisions: u64,
    /// Its attempts.
    pub attempts: u64,
    attempts_by_key: HashMap<Key, Vec<Recorded>>,
    /// Each stage's attempts, by start.
    by_stage: HashMap<String, Vec<Recorded>>,
    /// Each check's changes: (from the run's start, status).
    health: HashMap<String, Vec<(Duration, HealthStatus)>>,
    /// Each compensation, by stage and item (`None`: the stage's own): how long it took
    /// (from the rollback's start or the compensation before it) and how it ended.
    compensations: HashMap<(String, Option<String>), Recorded>,
}

/// The most journal rows read at once.
const PAGE: u32 = 1000;

/// How far apart a failure's end and a log's time may be for the log to be that failure's.
const PAIRED: Duration = Duration::from_millis(250);

/// Why a run cannot be replayed.
#[derive(Debug)]
pub enum Unreplayable {
    /// The store failed.
    Store(StoreError),
    /// The run is not one a replay can take, and why.
    Refused(String),
}

impl From<StoreError> for Unreplayable {
    fn from(error: StoreError) -> Self {
        Unreplayable::Store(error)
    }
}

impl Recording {
    /// Reads `run` from `store`. Refused (with why) when the store does not know it, when it
    /// was resumed (its journal holds several passes), or when its attempt logs were pruned
    /// (its successful attempts are known only from them).
    ///
    /// The journal keeps every failed attempt (its duration and error) and the end of every
    /// attempt (its log); a successful attempt's duration is not journaled, so it is taken to
    /// be the median of its stage's failed attempts, or, in a stage where none failed, the
    /// stage's time per attempt at its concurrency.
    pub async fn read(store: &dyn Store, run: &str) -> Result<Self, Unreplayable> {
        let Some(detail) = store.run(run).await? else {
            return Err(Unreplayable::Refused(format!(
                "the store has no run `{run}`"
            )));
        };
        let t0 = detail.run.started_ms;
        let offset = |ms: i64| Duration::from_millis(u64::try_from(ms - t0).unwrap_or(0));
        let mut recording = Recording {
            run: run.to_owned(),
            status: match detail.run.status {
                crate::store::RunState::Ended(status) => Some(status),
                _ => None,
            },
            metrics: detail.metrics,
            ..Recording::default()
        };
        // Failed attempts and health changes, from the events.
        let mut failed: HashMap<Key, Vec<Recorded>> = HashMap::new();
        let mut passes = 0;
        let mut concurrency_of: HashMap<String, usize> = HashMap::new();
        let mut compensated = Duration::ZERO;
        let mut after = 0;
        loop {
            let rows = store.events(run, after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            for row in rows {
                const READ: [&str; 6] = [
                    "run-started",
                    "attempt-failed",
                    "health-changed",
                    "stage-started",
                    "rollback-started",
                    "compensation-finished",
                ];
                if !READ.contains(&row.kind.as_str()) {
                    continue;
                }
                let event: Event = serde_json::from_value(row.event)
                    .map_err(|e| StoreError::Invalid(format!("an event of {run}: {e}")))?;
                let at = offset(row.at);
                match event.kind {
                    EventKind::AttemptFailed {
                        stage,
                        item,
                        attempt,
                        duration,
                        error,
                    } => failed
                        .entry((stage.to_string(), item.map(|i| i.to_string()), attempt))
                        .or_default()
                        .push(Recorded {
                            at: at.saturating_sub(duration),
                            took: duration,
                            outcome: Err(error),
                        }),
                    EventKind::RunStarted { .. } => passes += 1,
                    EventKind::RollbackStarted { .. } => compensated = at,
                    EventKind::CompensationFinished { stage, item, error } => {
                        recording.compensations.insert(
                            (stage.to_string(), item.map(|i| i.to_string())),
                            Recorded {
                                at: compensated,
                                took: at.saturating_sub(compensated),
                                outcome: error.map_or(Ok(()), Err),
                            },
                        );
                        // Compensations run one after the other.
                        compensated = at;
                    }
                    EventKind::StageStarted {
                        stage, concurrency, ..
                    } => {
                        concurrency_of.insert(stage.to_string(), concurrency);
                    }
                    EventKind::HealthChanged { change } => recording
                        .health
                        .entry(change.check.to_string())
                        .or_default()
                        .push((at, change.new_status)),
                    _ => {}
                }
            }
        }
        if passes > 1 {
            return Err(Unreplayable::Refused(format!(
                "run {run} was resumed: its journal holds {passes} passes, and a replay takes one"
            )));
        }
        // Every attempt's end, from the logs; those that did not fail succeeded.
        let mut ended: Vec<(String, Option<String>, u32, Duration)> = Vec::new();
        let mut after = 0;
        let every = crate::store::LogFilter::default();
        loop {
            let entries = store.log_entries(run, &every, after, PAGE).await?;
            let Some(last) = entries.last() else { break };
            after = last.id;
            for entry in entries {
                let attempt = u32::try_from(entry.attempt).unwrap_or(0);
                ended.push((entry.stage, entry.item, attempt, offset(entry.at)));
            }
        }
        if ended.is_empty() && detail.stages.iter().any(|stage| stage.items > 0) {
            return Err(Unreplayable::Refused(format!(
                "the attempt logs of run {run} were pruned (a project keeps its last 20 runs'): \
                 its successful attempts are known only from them"
            )));
        }
        let mut failures_of: HashMap<&str, Vec<Duration>> = HashMap::new();
        for ((stage, ..), recorded) in &failed {
            failures_of
                .entry(stage)
                .or_default()
                .extend(recorded.iter().map(|r| r.took));
        }
        let typical: HashMap<String, Duration> = detail
            .stages
            .iter()
            .map(|stage| {
                let took = match failures_of.get_mut(stage.stage.as_str()) {
                    Some(durations) => {
                        durations.sort();
                        durations[durations.len() / 2]
                    }
                    None => {
                        let attempts = ended.iter().filter(|e| e.0 == stage.stage).count();
                        let concurrency = concurrency_of
                            .get(&stage.stage)
                            .copied()
                            .unwrap_or(1)
                            .max(1);
                        let per = stage.duration_ms.unwrap_or(0.0) * concurrency as f64
                            / attempts.max(1) as f64;
                        Duration::from_secs_f64((per / 1000.0).max(0.0))
                    }
                };
                (stage.stage.clone(), took)
            })
            .collect();
        // A log is its attempt's failure when one ended with it (the failure is journaled as the
        // log is kept): the same attempt number comes again after a restart, failing or not.
        for (stage, item, attempt, end) in ended {
            let place = (stage, item, attempt);
            let failure = failed.get_mut(&place).and_then(|failures| {
                let i = failures
                    .iter()
                    .position(|f| (f.at + f.took).abs_diff(end) <= PAIRED)?;
                Some(failures.remove(i))
            });
            let recorded = failure.unwrap_or_else(|| {
                let took = typical.get(&place.0).copied().unwrap_or_default();
                Recorded {
                    at: end.saturating_sub(took),
                    took,
                    outcome: Ok(()),
                }
            });
            recording.add(place, recorded);
        }
        // Failures without a log (cut short before it was kept).
        for (place, failures) in failed {
            for recorded in failures {
                recording.add(place.clone(), recorded);
            }
        }
        // The n-th time a key is asked for, its n-th attempt in time.
        for attempts in recording.attempts_by_key.values_mut() {
            attempts.sort_by_key(|a| a.at);
        }
        for attempts in recording.by_stage.values_mut() {
            attempts.sort_by_key(|a| a.at);
        }
        recording.decisions = store
            .history(&detail.run.project, u32::MAX, Some(t0))
            .await?
            .iter()
            .filter(|record| record.run.as_ref().is_some_and(|r| r.as_str() == run))
            .count() as u64;
        Ok(recording)
    }

    fn add(&mut self, (stage, item, attempt): (String, Option<String>, u32), recorded: Recorded) {
        self.attempts += 1;
        self.by_stage
            .entry(stage.clone())
            .or_default()
            .push(recorded.clone());
        self.attempts_by_key
            .entry((stage, item, attempt))
            .or_default()
            .push(recorded);
    }

    /// The check's recorded status at `t`: its latest change by then, healthy before any.
    fn status_at(&self, check: &str, t: Duration) -> HealthStatus {
        self.health
            .get(check)
            .and_then(|changes| changes.iter().rev().find(|(at, _)| *at <= t))
            .map_or(HealthStatus::Healthy, |(_, status)| *status)
    }
}

/// Answers a replay's attempts from the recording.
#[derive(Debug)]
pub struct Replayer {
    recording: Arc<Recording>,
    start: Instant,
    /// How many times each key was asked for.
    asked: Mutex<HashMap<Key, usize>>,
    answered: AtomicU64,
    drawn: AtomicU64,
}

impl Replayer {
    /// A replayer whose time zero is now: make it as the run starts.
    pub fn new(recording: Arc<Recording>) -> Self {
        Replayer {
            recording,
            start: Instant::now(),
            asked: Mutex::default(),
            answered: AtomicU64::new(0),
            drawn: AtomicU64::new(0),
        }
    }

    /// Attempts made.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Attempts the recording lacked, drawn from their stage's recorded behaviour.
    pub fn drawn(&self) -> u64 {
        self.drawn.load(Ordering::Relaxed)
    }

    /// What attempt `key` does: the recorded one, or one drawn.
    fn answer(&self, key: Key) -> (Duration, Result<(), StageError>) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let n = {
            let mut asked = self.asked.lock().expect("not poisoned");
            let n = asked.entry(key.clone()).or_default();
            *n += 1;
            *n - 1
        };
        if let Some(recorded) = self
            .recording
            .attempts_by_key
            .get(&key)
            .and_then(|all| all.get(n))
        {
            return (recorded.took, recorded.outcome.clone());
        }
        self.drawn.fetch_add(1, Ordering::Relaxed);
        let now = self.start.elapsed();
        match self.recording.by_stage.get(&key.0) {
            Some(attempts) if !attempts.is_empty() => {
                let i = attempts.partition_point(|a| a.at <= now);
                let nearest = [i.checked_sub(1), (i < attempts.len()).then_some(i)]
                    .into_iter()
                    .flatten()
                    .min_by_key(|&j| attempts[j].at.abs_diff(now))
                    .expect("one of them exists");
                (attempts[nearest].took, attempts[nearest].outcome.clone())
            }
            // A stage the recording never reached: no failure was seen in it.
            _ => (Duration::ZERO, Ok(())),
        }
    }

    /// The probe of `check`: failing while the recording had it unhealthy or degraded.
    pub fn probe(self: &Arc<Self>, check: &str) -> Arc<dyn Check> {
        Arc::new(RecordedCheck {
            replayer: Arc::clone(self),
            check: check.to_owned(),
        })
    }
}

impl Runner for Replayer {
    fn run<'a>(
        &'a self,
        attempt: Attempt<'a>,
        _stage: &'a StageContext<()>,
    ) -> BoxFuture<'a, Result<(), StageError>> {
        Box::pin(async move {
            match attempt.role {
                Role::Command | Role::Failover => {}
                Role::Rollback => {
                    let place = (attempt.stage.to_owned(), attempt.item.map(str::to_owned));
                    let Some(recorded) = self.recording.compensations.get(&place) else {
                        // Not compensated in the recording: done at once.
                        return Ok(());
                    };
                    tokio::time::sleep(recorded.took).await;
                    return recorded.outcome.clone();
                }
                // A reset is not journaled as an attempt: done at once.
                Role::Reset => return Ok(()),
            }
            let key = (
                attempt.stage.to_owned(),
                attempt.item.map(str::to_owned),
                attempt.attempt,
            );
            let (took, outcome) = self.answer(key);
            tokio::time::sleep(took).await;
            outcome
        })
    }
}

/// A check answering as the recording had it.
struct RecordedCheck {
    replayer: Arc<Replayer>,
    check: String,
}

impl Check for RecordedCheck {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        let t = self.replayer.start.elapsed();
        let status = self.replayer.recording.status_at(&self.check, t);
        Box::pin(async move {
            match status {
                HealthStatus::Healthy => Ok(()),
                other => Err(CheckError::new(format!("recorded {}", other.as_str()))),
            }
        })
    }

    fn target(&self) -> String {
        format!("{} as recorded", self.check)
    }
}

impl Recording {
    /// Of `stages`, those the recording has no attempt of: a replay's attempts there succeed
    /// at once.
    pub fn unreached<'s>(&self, stages: &[&'s str]) -> Vec<&'s str> {
        stages
            .iter()
            .filter(|stage| !self.by_stage.contains_key(**stage))
            .copied()
            .collect()
    }
}
