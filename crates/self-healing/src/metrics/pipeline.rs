//! The seed's `PipelineMetrics`: one run's totals, kept up to date from the event bus.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

use crate::event::{ActionKind, Event, EventKind};

/// A run's totals, with exactly the seed's fields. Durations serialize as milliseconds.
///
/// `errorRate` is failed attempts over all attempts; `throughput` is completed units of work
/// (items, or a stage's single unit) per second of run time. `retryCount` counts retries (not
/// first attempts), `healingEvents` every healing action applied, `rollbackCount` every
/// rollback of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineMetrics {
    /// Time since the run started, up to its end once it finished; milliseconds on the wire.
    #[serde(with = "crate::serde_ms")]
    pub total_duration: Duration,
    /// Each stage's time, in the order the stages ran; on the wire, a map of stage name to
    /// milliseconds.
    pub stage_durations: StageDurations,
    /// Stages that succeeded.
    pub stages_completed: u32,
    /// Stages that ended without succeeding (failed, rolled back or cancelled).
    pub stages_failed: u32,
    /// Retries applied; first attempts are not counted.
    pub retry_count: u64,
    /// Healing actions applied, of every kind.
    pub healing_events: u64,
    /// Rollbacks applied.
    pub rollback_count: u64,
    /// Failed attempts over all attempts, from 0 to 1.
    pub error_rate: f64,
    /// Completed units of work per second of run time.
    pub throughput: f64,
}

/// Stage durations in the order the stages ran; a stage still running shows its time so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageDurations(pub Vec<(Arc<str>, Duration)>);

impl StageDurations {
    /// The time of `stage`, or `None` if it has not started.
    pub fn get(&self, stage: &str) -> Option<Duration> {
        self.0.iter().find(|(s, _)| &**s == stage).map(|(_, d)| *d)
    }

    /// Each stage's name and time, in the order the stages ran.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.0.iter().map(|(s, d)| (&**s, *d))
    }
}

impl Serialize for StageDurations {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (stage, duration) in &self.0 {
            map.serialize_entry(&**stage, &(duration.as_secs_f64() * 1000.0))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StageDurations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = StageDurations;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of stage name to milliseconds")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StageDurations, A::Error> {
                let mut stages = Vec::new();
                while let Some((stage, ms)) = map.next_entry::<String, f64>()? {
                    let duration = Duration::try_from_secs_f64(ms / 1000.0)
                        .map_err(serde::de::Error::custom)?;
                    stages.push((Arc::from(stage), duration));
                }
                Ok(StageDurations(stages))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

impl fmt::Display for PipelineMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "totalDuration    {:>10.1} ms", ms(self.total_duration))?;
        for (stage, duration) in self.stage_durations.iter() {
            writeln!(f, "  {stage:<15}{:>10.1} ms", ms(duration))?;
        }
        writeln!(f, "stagesCompleted  {:>10}", self.stages_completed)?;
        writeln!(f, "stagesFailed     {:>10}", self.stages_failed)?;
        writeln!(f, "retryCount       {:>10}", self.retry_count)?;
        writeln!(f, "healingEvents    {:>10}", self.healing_events)?;
        writeln!(f, "rollbackCount    {:>10}", self.rollback_count)?;
        writeln!(f, "errorRate        {:>10.4}", self.error_rate)?;
        write!(f, "throughput       {:>10.1} /s", self.throughput)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The running totals behind [`PipelineMetrics`]. The counts are atomics, so the per-item events
/// that move them (most of the traffic, from every worker thread at once) take no lock; only run
/// and stage boundaries take the lock on the times.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    times: Mutex<Times>,
    stages_completed: AtomicU32,
    stages_failed: AtomicU32,
    retries: AtomicU64,
    healing_events: AtomicU64,
    rollbacks: AtomicU64,
    attempts: AtomicU64,
    failed_attempts: AtomicU64,
    units_completed: AtomicU64,
    /// When the run's latest successful attempt ended (its event's time), in microseconds
    /// since the Unix epoch; 0 before the first.
    last_success: AtomicU64,
}

#[derive(Debug, Default)]
struct Times {
    started: Option<Instant>,
    finished: Option<Instant>,
    stages: Vec<StageTime>,
}

#[derive(Debug)]
struct StageTime {
    stage: Arc<str>,
    started: Instant,
    finished: Option<Duration>,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Tally {
    /// Counts one event. Only run and stage boundaries read the clock or take the lock.
    pub(crate) fn on_event(&self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { .. } => {
                let mut times = self.times();
                *times = Times {
                    started: Some(Instant::now()),
                    ..Times::default()
                };
                for counter in [
                    &self.retries,
                    &self.healing_events,
                    &self.rollbacks,
                    &self.attempts,
                    &self.failed_attempts,
                    &self.units_completed,
                    &self.last_success,
                ] {
                    counter.store(0, Ordering::Relaxed);
                }
                self.stages_completed.store(0, Ordering::Relaxed);
                self.stages_failed.store(0, Ordering::Relaxed);
            }
            EventKind::RunFinished { .. } => self.times().finished = Some(Instant::now()),
            EventKind::StageStarted { stage, .. } => self.times().stages.push(StageTime {
                stage: Arc::clone(stage),
                started: Instant::now(),
                finished: None,
            }),
            EventKind::StageSucceeded {
                stage, duration, ..
            } => {
                self.stages_completed.fetch_add(1, Ordering::Relaxed);
                self.times().finish_stage(stage, *duration);
            }
            EventKind::StageFailed {
                stage, duration, ..
            } => {
                self.stages_failed.fetch_add(1, Ordering::Relaxed);
                self.times().finish_stage(stage, *duration);
            }
            EventKind::AttemptSucceeded { item, .. } => {
                add(&self.attempts);
                if item.is_none() {
                    add(&self.units_completed);
                }
                let at = event.at.duration_since(UNIX_EPOCH).unwrap_or_default();
                let micros = u64::try_from(at.as_micros()).unwrap_or(u64::MAX).max(1);
                self.last_success.fetch_max(micros, Ordering::Relaxed);
            }
            EventKind::AttemptFailed { .. } => {
                add(&self.attempts);
                add(&self.failed_attempts);
            }
            EventKind::ItemSucceeded { .. } => add(&self.units_completed),
            EventKind::HealingApplied { action, .. } => {
                add(&self.healing_events);
                match action {
                    ActionKind::Retry => add(&self.retries),
                    ActionKind::Rollback => add(&self.rollbacks),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// When the run's latest successful attempt ended.
    pub(crate) fn last_success(&self) -> Option<SystemTime> {
        match self.last_success.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(UNIX_EPOCH + Duration::from_micros(micros)),
        }
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn snapshot(&self, now: Instant) -> PipelineMetrics {
        let times = self.times();
        let Some(started) = times.started else {
            return PipelineMetrics::default();
        };
        let total = times
            .finished
            .unwrap_or(now)
            .saturating_duration_since(started);
        let mut stage_durations: Vec<(Arc<str>, Duration)> = Vec::new();
        for time in &times.stages {
            let d = time
                .finished
                .unwrap_or_else(|| now.saturating_duration_since(time.started));
            // A restarted stage appears once, with its time summed.
            match stage_durations.iter_mut().find(|(s, _)| *s == time.stage) {
                Some((_, sum)) => *sum += d,
                None => stage_durations.push((Arc::clone(&time.stage), d)),
            }
        }
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let attempts = get(&self.attempts);
        PipelineMetrics {
            total_duration: total,
            stage_durations: StageDurations(stage_durations),
            stages_completed: self.stages_completed.load(Ordering::Relaxed),
            stages_failed: self.stages_failed.load(Ordering::Relaxed),
            retry_count: get(&self.retries),
            healing_events: get(&self.healing_events),
            rollback_count: get(&self.rollbacks),
            error_rate: if attempts == 0 {
                0.0
            } else {
                get(&self.failed_attempts) as f64 / attempts as f64
            },
            throughput: if total.is_zero() {
                0.0
            } else {
                get(&self.units_completed) as f64 / total.as_secs_f64()
            },
        }
    }
}

impl Times {
    fn finish_stage(&mut self, stage: &Arc<str>, duration: Duration) {
        if let Some(time) = self
            .stages
            .iter_mut()
            .rev()
            .find(|t| t.stage == *stage && t.finished.is_none())
        {
            time.finished = Some(duration);
        }
    }
}
