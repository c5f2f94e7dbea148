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
//! bus.publish(None, EventKind::StageStarted { stage: "analysis".into() });
//! let event = journal.recv().await.unwrap();
//! assert_eq!(event.seq, 1);
//! assert!(matches!(&event.kind, EventKind::StageStarted { stage } if &**stage == "analysis"));
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
pub use healing::{ActionKind, HealingRecord, Outcome, TriggerKind, TriggerMatch};
pub use health::{HealthChange, HealthStatus};

use crate::error::StageError;
use crate::resilience::BreakerState;
use crate::serde_ms;

/// Identifies one execution of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Arc<str>);

impl RunId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        RunId(id.into())
    }

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
    Primary,
    Failover,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
}

impl RunStatus {
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
    #[serde(rename_all = "camelCase")]
    RunStarted {
        pipeline: Arc<str>,
        stages: Vec<Arc<str>>,
    },
    #[serde(rename_all = "camelCase")]
    RunFinished {
        status: RunStatus,
        #[serde(with = "serde_ms")]
        duration: Duration,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StageError>,
    },
    StageStarted {
        stage: Arc<str>,
    },
    StageSucceeded {
        stage: Arc<str>,
        #[serde(with = "serde_ms")]
        duration: Duration,
        items: u64,
    },
    StageFailed {
        stage: Arc<str>,
        #[serde(with = "serde_ms")]
        duration: Duration,
        items: u64,
        error: StageError,
    },
    ItemStarted {
        stage: Arc<str>,
        item: Arc<str>,
    },
    ItemSucceeded {
        stage: Arc<str>,
        item: Arc<str>,
        attempts: u32,
        #[serde(with = "serde_ms")]
        duration: Duration,
    },
    ItemFailed {
        stage: Arc<str>,
        item: Arc<str>,
        attempts: u32,
        error: StageError,
    },
    /// A resumed run skipped this stage: an earlier attempt of the run completed it.
    StageSkipped {
        stage: Arc<str>,
    },
    /// A resumed run did not run again `count` items an earlier attempt of the run completed.
    ItemsSkipped {
        stage: Arc<str>,
        count: u64,
    },
    /// The item was in flight when the run was cancelled or its stage stopped; it did not
    /// complete and will run again on resume.
    ItemAbandoned {
        stage: Arc<str>,
        item: Arc<str>,
    },
    AttemptStarted {
        stage: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        attempt: u32,
        handler: HandlerKind,
    },
    AttemptSucceeded {
        stage: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        attempt: u32,
        #[serde(with = "serde_ms")]
        duration: Duration,
    },
    AttemptFailed {
        stage: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        attempt: u32,
        #[serde(with = "serde_ms")]
        duration: Duration,
        error: StageError,
    },
    /// A remedy was applied: `detail` says what exactly (the retry delay, the new concurrency…).
    HealingApplied {
        stage: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        action: ActionKind,
        detail: String,
    },
    /// A compensation (rollback hook) ran for a completed stage or item.
    CompensationFinished {
        stage: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<Arc<str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<StageError>,
    },
    BreakerChanged {
        stage: Arc<str>,
        from: BreakerState,
        to: BreakerState,
    },
    ConcurrencyChanged {
        stage: Arc<str>,
        from: usize,
        to: usize,
    },
    /// A health check changed status.
    HealthChanged {
        change: HealthChange,
    },
    /// A healing decision, acted on or not (see the healer's history).
    HealingDecision {
        record: HealingRecord,
    },
    /// An alert channel could not deliver after its retries.
    #[serde(rename_all = "camelCase")]
    AlertFailed {
        channel: String,
        dedup_key: String,
        error: String,
    },
    /// `rate` is permits per second; `None` means unlimited.
    ThrottleChanged {
        stage: Arc<str>,
        rate: Option<f64>,
    },
}

impl EventKind {
    /// The stage the event concerns, if any.
    pub fn stage(&self) -> Option<&Arc<str>> {
        use EventKind::*;
        match self {
            RunStarted { .. } | RunFinished { .. } | AlertFailed { .. } => None,
            HealingDecision { record } => record.stage.as_ref(),
            HealthChanged { change } => change.stage.as_ref(),
            StageStarted { stage }
            | StageSkipped { stage }
            | ItemsSkipped { stage, .. }
            | StageSucceeded { stage, .. }
            | StageFailed { stage, .. }
            | ItemStarted { stage, .. }
            | ItemSucceeded { stage, .. }
            | ItemFailed { stage, .. }
            | ItemAbandoned { stage, .. }
            | AttemptStarted { stage, .. }
            | AttemptSucceeded { stage, .. }
            | AttemptFailed { stage, .. }
            | HealingApplied { stage, .. }
            | CompensationFinished { stage, .. }
            | BreakerChanged { stage, .. }
            | ConcurrencyChanged { stage, .. }
            | ThrottleChanged { stage, .. } => Some(stage),
        }
    }
}

/// An [`EventKind`] with its place in the bus's order, its wall-clock time and its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Milliseconds since the Unix epoch on the wire.
    #[serde(with = "serde_ms::system_time")]
    pub at: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    #[serde(flatten)]
    pub kind: EventKind,
}
