//! The seed's `PipelineMetrics`: one run's totals, kept up to date from the event bus.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::event::{Event, EventKind};
use crate::healing::ActionKind;

/// A run's totals, with exactly the seed's fields. Durations serialize as milliseconds.
///
/// `errorRate` is failed attempts over all attempts; `throughput` is completed units of work
/// (items, or a stage's single unit) per second of run time. `retryCount` counts retries (not
/// first attempts), `healingEvents` every healing action applied, `rollbackCount` every
/// rollback of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineMetrics {
    #[serde(with = "crate::serde_ms")]
    pub total_duration: Duration,
    pub stage_durations: StageDurations,
    pub stages_completed: u32,
    pub stages_failed: u32,
    pub retry_count: u64,
    pub healing_events: u64,
    pub rollback_count: u64,
    pub error_rate: f64,
    pub throughput: f64,
}

/// Stage durations in the order the stages ran; a stage still running shows its time so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageDurations(pub Vec<(Arc<str>, Duration)>);

impl StageDurations {
    pub fn get(&self, stage: &str) -> Option<Duration> {
        self.0.iter().find(|(s, _)| &**s == stage).map(|(_, d)| *d)
    }

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

/// The running totals behind [`PipelineMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    started: Option<Instant>,
    finished: Option<Instant>,
    stages: Vec<StageTime>,
    stages_completed: u32,
    stages_failed: u32,
    retries: u64,
    healing_events: u64,
    rollbacks: u64,
    attempts: u64,
    failed_attempts: u64,
    units_completed: u64,
}

#[derive(Debug)]
struct StageTime {
    stage: Arc<str>,
    started: Instant,
    finished: Option<Duration>,
}

impl Tally {
    /// Counts one event. Only run and stage boundaries read the clock: per-item events are
    /// most of the traffic and a clock read costs more than the rest of this.
    pub(crate) fn on_event(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { .. } => {
                *self = Tally {
                    started: Some(Instant::now()),
                    ..Tally::default()
                }
            }
            EventKind::RunFinished { .. } => self.finished = Some(Instant::now()),
            EventKind::StageStarted { stage } => self.stages.push(StageTime {
                stage: Arc::clone(stage),
                started: Instant::now(),
                finished: None,
            }),
            EventKind::StageSucceeded {
                stage, duration, ..
            } => {
                self.stages_completed += 1;
                self.finish_stage(stage, *duration);
            }
            EventKind::StageFailed {
                stage, duration, ..
            } => {
                self.stages_failed += 1;
                self.finish_stage(stage, *duration);
            }
            EventKind::AttemptSucceeded { item, .. } => {
                self.attempts += 1;
                if item.is_none() {
                    self.units_completed += 1;
                }
            }
            EventKind::AttemptFailed { .. } => {
                self.attempts += 1;
                self.failed_attempts += 1;
            }
            EventKind::ItemSucceeded { .. } => self.units_completed += 1,
            EventKind::HealingApplied { action, .. } => {
                self.healing_events += 1;
                match action {
                    ActionKind::Retry => self.retries += 1,
                    ActionKind::Rollback => self.rollbacks += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }

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

    pub(crate) fn snapshot(&self, now: Instant) -> PipelineMetrics {
        let Some(started) = self.started else {
            return PipelineMetrics::default();
        };
        let total = self
            .finished
            .unwrap_or(now)
            .saturating_duration_since(started);
        let mut stage_durations: Vec<(Arc<str>, Duration)> = Vec::new();
        for time in &self.stages {
            let d = time
                .finished
                .unwrap_or_else(|| now.saturating_duration_since(time.started));
            // A restarted stage appears once, with its time summed.
            match stage_durations.iter_mut().find(|(s, _)| *s == time.stage) {
                Some((_, sum)) => *sum += d,
                None => stage_durations.push((Arc::clone(&time.stage), d)),
            }
        }
        PipelineMetrics {
            total_duration: total,
            stage_durations: StageDurations(stage_durations),
            stages_completed: self.stages_completed,
            stages_failed: self.stages_failed,
            retry_count: self.retries,
            healing_events: self.healing_events,
            rollback_count: self.rollbacks,
            error_rate: if self.attempts == 0 {
                0.0
            } else {
                self.failed_attempts as f64 / self.attempts as f64
            },
            throughput: if total.is_zero() {
                0.0
            } else {
                self.units_completed as f64 / total.as_secs_f64()
            },
        }
    }
}
