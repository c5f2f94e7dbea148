//! The seam between the executor and whatever decides how to heal a failed attempt.
//!
//! When an attempt fails, the executor asks its [`Supervisor`] for a [`Remedy`] and carries it
//! out: wait and retry, switch to the failover handler, restart the stage, roll the run back, or
//! give up. The default supervisor, [`RetrySupervisor`], applies the stage's
//! [`RetryPolicy`]; the `AutoHealer` in `healing` is a richer one behind the same trait.

use std::sync::Arc;
use std::time::Duration;

use super::StageControl;
use crate::BoxFuture;
use crate::error::StageError;
use crate::event::{ActionKind, EventBus, HandlerKind, RunId};
use crate::metrics::MetricsCollector;
use crate::resilience::{BreakerSettings, Jitter, RetryPolicy, Transition, WindowStats};

/// What a stage's own machinery changed by itself ([`Supervisor::stage_changed`]).
#[derive(Debug, Clone)]
pub enum StageChange {
    /// Its circuit breaker changed state by its own rules or its timer (not by a request:
    /// those are recorded by whoever asked).
    Breaker {
        /// The breaker's name: a shared breaker's, else `circuitBreaker` (the stage's own).
        name: Arc<str>,
        /// The change.
        transition: Transition,
        /// The calls it had seen when it left closed (or sees now).
        window: WindowStats,
        /// Its settings.
        settings: BreakerSettings,
    },
    /// Its adaptive controller moved its concurrency.
    Adapted {
        /// The limit before.
        from: usize,
        /// The limit after.
        to: usize,
    },
}

/// A failed attempt, as the supervisor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The run the attempt belongs to.
    pub run: &'a RunId,
    /// The stage whose attempt failed.
    pub stage: &'a str,
    /// The item's key, for a stage that fans out.
    pub item: Option<&'a str>,
    /// Attempts made so far for this unit of work, the failed one included.
    pub attempt: u32,
    /// Why it failed.
    pub error: &'a StageError,
    /// Which handler failed.
    pub handler: HandlerKind,
    /// Whether the stage has a failover handler to switch to.
    pub can_fail_over: bool,
    /// How often this stage was restarted in this run.
    pub restarts: u32,
    /// The stage's effective retry policy: its own, else the pipeline's.
    pub retry_policy: &'a RetryPolicy,
    /// Whether the stage has a retry policy of its own.
    pub stage_policy: bool,
    /// The pipeline's source of retry jitter.
    pub jitter: &'a Jitter,
}

impl Failure<'_> {
    /// How long a retry of this attempt waits under `policy`: its backoff, or longer when the
    /// error asks for it ([`StageError::retry_after`], a command's `retryAfter`).
    pub fn retry_delay(&self, policy: &RetryPolicy) -> Duration {
        self.jitter
            .delay(policy, self.attempt)
            .max(self.error.retry_after().unwrap_or_default())
    }
}

/// What to do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Run the same work again after this wait.
    Retry {
        /// How long to wait before the next attempt; `Duration::ZERO` retries at once.
        after: Duration,
    },
    /// Switch the stage to its failover handler and run the work again at once. Without a
    /// failover handler this fails the work.
    Failover,
    /// Stop the stage, run its reset hook, and run it again from its start.
    Restart,
    /// Stop, and compensate all completed work in reverse order; the run ends rolled back.
    Rollback,
    /// Give up: the stage and the run fail.
    Fail,
}

impl Remedy {
    /// The healing action this remedy applies, if it is one.
    pub fn action(self) -> Option<ActionKind> {
        match self {
            Remedy::Retry { .. } => Some(ActionKind::Retry),
            Remedy::Failover => Some(ActionKind::Failover),
            Remedy::Restart => Some(ActionKind::Restart),
            Remedy::Rollback => Some(ActionKind::Rollback),
            Remedy::Fail => None,
        }
    }
}

/// Decides how to heal a failed attempt. Asynchronous so a supervisor can journal its decision
/// before the pipeline acts on it.
///
/// A plain closure is a supervisor too:
///
/// ```
/// use self_healing::pipeline::{Failure, Remedy, Supervisor};
///
/// let roll_back_critical = |failure: &Failure<'_>| {
///     if failure.error.severity() == self_healing::Severity::Critical {
///         Remedy::Rollback
///     } else {
///         Remedy::Fail
///     }
/// };
/// fn takes(_: impl Supervisor) {}
/// takes(roll_back_critical);
/// ```
pub trait Supervisor: Send + Sync + 'static {
    /// What to do about `failure`; the executor carries it out.
    fn on_failure<'a>(&'a self, failure: &'a Failure<'a>) -> BoxFuture<'a, Remedy>;

    /// Called as each attempt starts (`attempt` 1 for new work), inline: keep it quick. A
    /// retry budget counts first attempts here.
    fn attempt_started(&self, _stage: &str, _attempt: u32) {}

    /// Called as a run starts, with what a supervisor needs to watch and steer it.
    fn run_started(&self, _run: &RunScope) {}

    /// Called when a stage's own machinery changed something by itself (its breaker by its
    /// rules or timer, its adaptive controller its concurrency), inline: keep it quick. A healer
    /// records these in its history, beside what it decides.
    fn stage_changed(&self, _run: Option<&RunId>, _stage: &Arc<str>, _change: &StageChange) {}

    /// Called as a run ends, after its last event but `run-finished`.
    fn run_finished(&self, _run: &RunId) {}

    /// The retry policy of stages that have none of their own, unless the pipeline's builder
    /// was given one (the seed's global `retryPolicy`).
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }

    /// Breaker settings every stage gets, unless the pipeline's builder was given some (the
    /// seed's global `circuitBreaker`).
    fn circuit_breaker(&self) -> Option<BreakerSettings> {
        None
    }

    /// Named breakers stages may share ([`Stage::breaker`](crate::pipeline::EachStage::breaker)),
    /// unless the pipeline's builder was given one of the same name.
    fn shared_breakers(&self) -> Vec<(Arc<str>, BreakerSettings)> {
        Vec::new()
    }
}

/// A running pipeline, as a supervisor sees it: its events, metrics and stage controls.
#[derive(Clone)]
pub struct RunScope {
    /// The run's id.
    pub run: RunId,
    /// The pipeline's name.
    pub pipeline: Arc<str>,
    /// The bus the run's events are published on.
    pub bus: EventBus,
    /// The pipeline's metrics.
    pub metrics: MetricsCollector,
    /// Every stage's live controls, in stage order.
    pub controls: Vec<Arc<StageControl>>,
}

impl RunScope {
    /// The live controls of the stage named `stage`, if there is one.
    pub fn control(&self, stage: &str) -> Option<&Arc<StageControl>> {
        self.controls.iter().find(|c| c.stage() == stage)
    }
}

impl std::fmt::Debug for RunScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunScope")
            .field("run", &self.run)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl<F> Supervisor for F
where
    F: for<'a> Fn(&Failure<'a>) -> Remedy + Send + Sync + 'static,
{
    fn on_failure<'a>(&'a self, failure: &'a Failure<'a>) -> BoxFuture<'a, Remedy> {
        let remedy = self(failure);
        Box::pin(std::future::ready(remedy))
    }
}

/// Retries by the stage's [`RetryPolicy`], then fails. Jitter comes from the pipeline's
/// [`Jitter`], so a seeded pipeline retries on the same schedule every time.
///
/// ```
/// use std::time::Duration;
/// use self_healing::pipeline::{Failure, Remedy, RetrySupervisor};
/// use self_healing::event::{HandlerKind, RunId};
/// use self_healing::resilience::Jitter;
/// use self_healing::{RetryPolicy, StageError};
///
/// let policy = RetryPolicy::builder().max_attempts(2).initial_delay(Duration::from_secs(1)).build().unwrap();
/// let (error, run, jitter) = (StageError::new("ECONNRESET"), RunId::new("r"), Jitter::seeded(7));
/// let failure = |attempt| Failure {
///     run: &run, stage: "load", item: None, attempt, error: &error,
///     handler: HandlerKind::Primary, can_fail_over: false, restarts: 0, retry_policy: &policy,
///     stage_policy: false, jitter: &jitter,
/// };
/// assert_eq!(RetrySupervisor.decide(&failure(1)), Remedy::Retry { after: Duration::from_secs(1) });
/// assert_eq!(RetrySupervisor.decide(&failure(2)), Remedy::Fail);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RetrySupervisor;

impl RetrySupervisor {
    /// The remedy the retry policy alone gives.
    pub fn decide(&self, failure: &Failure<'_>) -> Remedy {
        let policy = failure.retry_policy;
        if policy.should_retry(failure.attempt, failure.error) {
            Remedy::Retry {
                after: failure.retry_delay(policy),
            }
        } else {
            Remedy::Fail
        }
    }
}

impl Supervisor for RetrySupervisor {
    fn on_failure<'a>(&'a self, failure: &'a Failure<'a>) -> BoxFuture<'a, Remedy> {
        Box::pin(std::future::ready(self.decide(failure)))
    }
}
