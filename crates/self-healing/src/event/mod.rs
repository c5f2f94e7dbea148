//! Typed events and the bus that carries them.
//!
//! Every observable fact of a run (run, stage, item and attempt started/succeeded/failed, healing
//! actions, breaker, concurrency and throttle changes) is one [`Event`] published on the
//! pipeline's [`EventBus`]. The metrics collector, the healer, the journal and the exporter all
//! read from it; nothing counts the same fact in a second place.
//!
//! # Back-pressure rule
//!
//! Publishing never waits and never fails. Subscribers choose one of three deliveries:
//!
//! | delivery | how | when it falls behind |
//! |---|---|---|
//! | [`EventSink`] ([`EventBus::add_sink`]) | called inline, on the publishing task | it cannot: it must do bounded, non-blocking work (counters, ring buffers) |
//! | [`Subscription`] ([`EventBus::subscribe`]) | its own unbounded queue | nothing is dropped; the backlog grows and [`Subscription::backlog`] shows it. For the journal and the healer: an event that must be recorded is never lost |
//! | [`LossySubscription`] ([`EventBus::subscribe_lossy`]) | a shared ring of fixed capacity | the oldest events are overwritten and the next receive returns [`Received::Lagged`] with the count: never silent. For dashboards and live views |
//!
//! Events carry a sequence number that increases by one per event of a bus; every
//! [`Subscription`] receives events in that order.
//!
//! ```
//! use self_healing::event::{EventBus, EventKind};
//!
//! # tokio_test_block_on(async {
//! let bus = EventBus::new();
//! let mut journal = bus.subscribe();
//! bus.publish(None, EventKind::StageStarted { stage: "analysis".into(), concurrency: 1 });
//! let event = journal.recv().await.unwrap();
//! assert_eq!(event.seq, 1);
//! assert!(matches!(&event.kind, EventKind::StageStarted { stage, .. } if &**stage == "analysis"));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod bus;
mod healing;
mod health;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use bus::{
    DEFAULT_LOSSY_CAPACITY, EventBus, EventSink, LossySubscription, Received, Subscription,
};
pub use healing::{
    ActionKind, HealingRecord, Outcome, RESTART_LIMIT_REACHED, RETRIES_EXHAUSTED, TriggerKind,
    TriggerMatch,
};
pub use health::{HealthChange, HealthStatus};

use crate::error::StageError;
use crate::resilience::BreakerState;
use crate::serde_ms;

/// Identifies one execution of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Arc<str>);

impl RunId {
    /// A run id from any string.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        RunId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which handler ran an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerKind {
    /// The stage's own handler.
    Primary,
    /// The stage's failover handler, used once healing has failed the stage over.
    Failover,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Every stage completed.
    Succeeded,
    /// A stage failed and the run stopped there.
    Failed,
    /// A stage failed and the completed work was compensated (rolled back).
    RolledBack,
    /// The run was cancelled before it completed.
    Cancelled,
}

impl RunStatus {
    /// The kebab-case name used on the wire: `succeeded`, `failed`, `rolled-back` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::RolledBack => "rolled-back",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// One observable fact. `stage` names the stage; `item` is the item's key (see
/// `pipeline::Item`) for work that fans out, `None` for a stage's single unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    /// A run began.
    #[serde(rename_all = "camelCase")]
    RunStarted {
        /// The pipeline's name.
        pipeline: Arc<str>,
        /// The names of its stages, in order.
        stages: Vec<Arc<str>>,
    },
    /// A run ended.
    #[serde(rename_all = "camelCase")]
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// How long the whole run took; milliseconds on the wire.
        #[serde(with = "serde_ms")]
        duration: Duration,
        /// The error that ended the run; `None` when it succeeded or was cancelled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StageError>,
    },
    /// A stage began.
    StageStarted {
        /// The stage's name.
        stage: Arc<str>,
        /// How many of its items may run at once as it starts (1 for a stage without items).
        #[serde(default = "one")]
        concurrency: usize,
    },
    /// A stage completed all its work.
    StageSucceeded {
        /// The stage's name.
        stage: Arc<str>,
        /// Time from the stage's start to its end, restarts included; milliseconds on the wire.
        #[serde(with = "serde_ms")]
        duration: Duration,
        /// Units completed, counting those skipped on resume (1 for a stage without items).
        items: u64,
    },
    /// A stage ended without completing: it failed, triggered a rollback or was cancelled.
    StageFailed {
        /// The stage's name.
        stage: Arc<str>,
        /// Time from the stage's start to its end, restarts included; milliseconds on the wire.
        #[serde(with = "serde_ms")]
        duration: Duration,
        /// Units completed before it ended, counting those skipped on resume.
        items: u64,
        /// Why it ended; a cancelled stage reports code `CANCELLED`.
        error: StageError,
    },
    /// An item completed.
    ItemSucceeded {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key.
        item: Arc<str>,
        /// Attempts it took, counting from 1.
        attempts: u32,
        /// Time from its first attempt's start to its last attempt's end; milliseconds on the wire.
        #[serde(with = "serde_ms")]
        duration: Duration,
    },
    /// An item failed and will not be attempted again: the supervisor gave up on it.
    ItemFailed {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key.
        item: Arc<str>,
        /// Attempts made, the failed last one included.
        attempts: u32,
        /// The error of the last attempt.
        error: StageError,
    },
    /// A resumed run skipped this stage: an earlier attempt of the run completed it.
    StageSkipped {
        /// The stage's name.
        stage: Arc<str>,
    },
    /// A resumed run did not run again `count` items an earlier attempt of the run completed.
    ItemsSkipped {
        /// The stage's name.
        stage: Arc<str>,
        /// How many items were skipped.
        count: u64,
    },
    /// The item was in flight when the run was cancelled or its stage stopped; it did not
    /// complete and will run again on resume.
    ItemAbandoned {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key.
        item: Arc<str>,
    },
    /// An attempt of a stage's unit of work is about to run.
    AttemptStarted {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key; `None` for a stage without items.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        /// The attempt number, counting from 1.
        attempt: u32,
        /// Which handler runs it.
        handler: HandlerKind,
    },
    /// An attempt returned `Ok`.
    AttemptSucceeded {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key; `None` for a stage without items.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        /// The attempt number, counting from 1.
        attempt: u32,
        /// How long the attempt ran; milliseconds on the wire.
        #[serde(with = "serde_ms")]
        duration: Duration,
    },
    /// An attempt returned an error, timed out or panicked.
    AttemptFailed {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key; `None` for a stage without items.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        /// The attempt number, counting from 1.
        attempt: u32,
        /// How long the attempt ran; milliseconds on the wire.
        #[serde(with = "serde_ms")]
        duration: Duration,
        /// What it failed with.
        error: StageError,
    },
    /// A remedy was applied: `detail` says what exactly (the retry delay, the new concurrency…).
    HealingApplied {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key; `None` when the remedy concerns the whole stage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        /// Which remedy.
        action: ActionKind,
        /// A human-readable description of what was done.
        detail: String,
    },
    /// The run stops going forward and compensates its completed work, newest first: `stage`
    /// failed with `error` and a rollback was decided. Published again when a resumed run goes
    /// on with a rollback an earlier attempt began.
    RollbackStarted {
        /// The stage whose failure began the rollback.
        stage: Arc<str>,
        /// Why the run rolls back.
        error: StageError,
    },
    /// What an attempt wrote (a command's standard output and error, bounded), as its handler
    /// attached it.
    AttemptOutput {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key; `None` for a stage's single unit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        /// The attempt's number, from 1.
        attempt: u32,
        /// What it wrote (boxed, as the decision is: it is large, and most events carry none).
        #[serde(flatten)]
        output: Box<AttemptOutput>,
    },
    /// The metrics collector's windows at the end of a sample interval: what changed in them.
    MetricsSampled {
        /// One value per window that received samples in the interval.
        samples: Vec<MetricSample>,
    },
    /// A compensation (rollback hook) ran for a completed stage or item.
    CompensationFinished {
        /// The stage's name.
        stage: Arc<str>,
        /// The item's key; `None` for the stage's own compensation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        /// Why the compensation failed; `None` when it succeeded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StageError>,
    },
    /// A stage's circuit breaker changed state.
    BreakerChanged {
        /// The stage's name.
        stage: Arc<str>,
        /// The state before.
        from: BreakerState,
        /// The state after.
        to: BreakerState,
    },
    /// A stage's concurrency limit changed.
    ConcurrencyChanged {
        /// The stage's name.
        stage: Arc<str>,
        /// The limit before.
        from: usize,
        /// The limit after.
        to: usize,
    },
    /// The checks a stage depends on (`dependsOn`) that are unhealthy now changed: while
    /// `heldBy` names any, the stage starts no new attempt; empty, its work resumed.
    #[serde(rename_all = "camelCase")]
    StageHeld {
        /// The stage's name.
        stage: Arc<str>,
        /// The unhealthy checks it waits for, in name order; empty when it waits for none.
        #[serde(alias = "held_by")]
        held_by: Vec<Arc<str>>,
    },
    /// A health check changed status.
    HealthChanged {
        /// What changed.
        change: HealthChange,
    },
    /// A healing decision, acted on or not (see the healer's history).
    HealingDecision {
        /// The decision (boxed: it is large, and rare beside the events of every attempt).
        record: Box<HealingRecord>,
    },
    /// An alert channel delivered alerts.
    AlertDelivered {
        /// The channel's name.
        channel: String,
        /// The fingerprints of the alerts delivered.
        alerts: Vec<String>,
    },
    /// An alert channel could not deliver after its retries: the alerts stay owed in the
    /// outbox.
    AlertFailed {
        /// The channel's name.
        channel: String,
        /// The fingerprints of the alerts not delivered.
        alerts: Vec<String>,
        /// Why delivery failed.
        error: String,
    },
    /// `rate` is permits per second; `None` means unlimited.
    ThrottleChanged {
        /// The stage's name.
        stage: Arc<str>,
        /// The new rate in permits per second; `None` means unlimited.
        rate: Option<f64>,
    },
    /// The run injects faults on purpose (`run --chaos`): what it injects and the seed its
    /// failures are drawn from. Published once, as the run starts.
    ChaosInjecting {
        /// Each fault, as `run --chaos` reads it (`fail=30%,code=ECONNRESET,stage=load`).
        faults: Vec<String>,
        /// The seed the injected failures are drawn from: the same seed draws the same ones.
        seed: u64,
    },
}

impl EventKind {
    /// The stage the event concerns, if any.
    pub fn stage(&self) -> Option<&Arc<str>> {
        use EventKind::*;
        match self {
            RunStarted { .. }
            | RunFinished { .. }
            | AlertDelivered { .. }
            | AlertFailed { .. }
            | ChaosInjecting { .. }
            | MetricsSampled { .. } => None,
            HealingDecision { record } => record.stage.as_ref(),
            HealthChanged { change } => change.stage.as_ref(),
            StageStarted { stage, .. }
            | StageSkipped { stage }
            | ItemsSkipped { stage, .. }
            | StageSucceeded { stage, .. }
            | StageFailed { stage, .. }
            | ItemSucceeded { stage, .. }
            | ItemFailed { stage, .. }
            | ItemAbandoned { stage, .. }
            | AttemptStarted { stage, .. }
            | AttemptSucceeded { stage, .. }
            | AttemptFailed { stage, .. }
            | AttemptOutput { stage, .. }
            | HealingApplied { stage, .. }
            | RollbackStarted { stage, .. }
            | CompensationFinished { stage, .. }
            | BreakerChanged { stage, .. }
            | ConcurrencyChanged { stage, .. }
            | StageHeld { stage, .. }
            | ThrottleChanged { stage, .. } => Some(stage),
        }
    }
}

fn one() -> usize {
    1
}

/// The end of what an attempt wrote on its two streams: the last bytes of each, and how many
/// were cut before them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptOutput {
    /// The tail of its standard output.
    pub stdout: String,
    /// The tail of its standard error.
    pub stderr: String,
    /// Bytes of standard output cut before the tail.
    #[serde(default)]
    pub stdout_cut: u64,
    /// Bytes of standard error cut before the tail.
    #[serde(default)]
    pub stderr_cut: u64,
}

/// One sample of the metrics collector: a window's latest value at the end of a sample
/// interval, for a stage or (`stage: None`) for the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// The stage; `None` for the run's own scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Arc<str>>,
    /// The metric's name (`errorRate`, `latencyP95`, or a declared one).
    pub metric: Arc<str>,
    /// Its value, in the metric's own unit (milliseconds for `latencyP95`).
    pub value: f64,
}

/// An [`EventKind`] with its place in the bus's order, its wall-clock time and its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the bus's order: 1 for the first event, then one more per event.
    pub seq: u64,
    /// Milliseconds since the Unix epoch on the wire.
    #[serde(with = "serde_ms::system_time")]
    pub at: SystemTime,
    /// The run the event belongs to; `None` for events outside a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    /// What happened; its fields are flattened into the event on the wire.
    #[serde(flatten)]
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every attempt publishes events, each moved into the bus's `Arc`: what is large and rare
    /// (a decision, an attempt's output, an error) is boxed so the common ones stay small.
    #[test]
    fn an_event_stays_small() {
        assert_eq!(size_of::<StageError>(), size_of::<usize>());
        assert!(
            size_of::<EventKind>() <= 72,
            "{} bytes",
            size_of::<EventKind>()
        );
        assert!(size_of::<Event>() <= 112, "{} bytes", size_of::<Event>());
    }
}
