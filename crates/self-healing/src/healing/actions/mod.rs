//! Actions: what a strategy does when its triggers match. One module per action, each with its
//! settings and what it does.
//!
//! Actions come in two kinds, distinct in the type. A [`DecisiveAction`] (retry, rollback,
//! restart, failover, custom) decides the fate of failed work: the first one applied decides and
//! lower ones are superseded. A [`SideAction`] (scale, circuit-break, throttle, notify) acts
//! beside it, and every matching one runs.
//!
//! Adding an action is a module here implementing one of the two traits, plus its variant of
//! [`ActionKind`] (the vocabulary the history and the exporter use) and its `config` in files.

mod circuit_break;
mod custom;
mod failover;
mod notify;
mod restart;
mod retry;
mod rollback;
mod scale;
mod throttle;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use circuit_break::{CircuitBreakAction, CircuitBreakConfig};
pub use custom::{ActionContext, CustomAction, CustomConfig};
pub use failover::{FailoverAction, FailoverConfig};
pub use notify::NotifyAction;
pub use restart::RestartAction;
pub use retry::RetryAction;
pub use rollback::{RollbackAction, RollbackConfig};
pub use scale::{AdaptiveScale, ScaleAction, ScaleConfig, ScaleDirection, ScaleMode, Scaler};
pub use throttle::{Restore, ThrottleAction, ThrottleConfig};

use crate::BoxFuture;
use crate::alert::Alerting;
use crate::error::{InvalidConfig, StageError};
use crate::event::{ActionKind, Outcome, RunId, TriggerMatch};
use crate::metrics::MetricsCollector;
use crate::pipeline::{Failure, Remedy, RunScope, StageControl, StageRequest};
use crate::resilience::{AdaptiveSettings, RetryBudget, RetryPolicy};

/// A healing action with its settings (the seed's `action` plus `config`).
///
/// ```
/// use std::time::Duration;
/// use self_healing::healing::{Action, CircuitBreakAction, RollbackAction, ScaleAction};
///
/// let rollback: Action = RollbackAction.into();
/// let scale: Action = ScaleAction::up(2).max_instances(10).into();
/// let breaker: Action = CircuitBreakAction::new(Duration::from_secs(60), 3)?.into();
/// assert!(rollback.is_decisive() && !scale.is_decisive() && !breaker.is_decisive());
/// # Ok::<(), self_healing::InvalidConfig>(())
/// ```
#[derive(Clone)]
pub enum Action {
    /// Decides the fate of failed work.
    Decisive(Arc<dyn DecisiveAction>),
    /// Acts beside whatever decides.
    Side(Arc<dyn SideAction>),
}

impl Action {
    /// `retry` with its own policy.
    pub fn retry(policy: RetryPolicy) -> Self {
        RetryAction::with_policy(policy).into()
    }

    /// A remedy of your own; see [`CustomAction`].
    pub fn custom<F, Fut>(handler: F) -> Self
    where
        F: Fn(ActionContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Remedy, StageError>> + Send + 'static,
    {
        CustomAction::new(handler).into()
    }

    /// Which action this is, as the history records it.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Decisive(action) => action.kind(),
            Action::Side(action) => action.kind(),
        }
    }

    /// The action's own retry budget, if it has one (see [`DecisiveAction::retry_budget`]).
    pub fn retry_budget(&self) -> Option<&RetryBudget> {
        match self {
            Action::Decisive(action) => action.retry_budget(),
            Action::Side(_) => None,
        }
    }

    /// The AIMD settings the action gives the stages its strategy covers, when it runs all the
    /// time they run rather than on a match (see [`SideAction::adaptive_concurrency`]).
    pub(crate) fn adaptive_concurrency(&self) -> Option<AdaptiveSettings> {
        match self {
            Action::Decisive(_) => None,
            Action::Side(action) => action.adaptive_concurrency(),
        }
    }

    /// True when the action decides the fate of failed work (retry, rollback, restart, failover,
    /// custom).
    pub fn is_decisive(&self) -> bool {
        matches!(self, Action::Decisive(_))
    }

    /// The action's settings, if it is a `T`: `action.downcast_ref::<ScaleAction>()`.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        let any: &dyn Any = match self {
            Action::Decisive(action) => &**action,
            Action::Side(action) => &**action,
        };
        any.downcast_ref()
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        match self {
            Action::Decisive(action) => action.validate(),
            Action::Side(action) => action.validate(),
        }
    }

    /// Whether the action acts only on a failed attempt that is not yet given up on (retry):
    /// such actions take no part in the evaluation tick or in an exhausted error's dispatch.
    pub(crate) fn needs_fresh_failure(&self) -> bool {
        match self {
            Action::Decisive(action) => action.needs_fresh_failure(),
            Action::Side(_) => false,
        }
    }

    /// The action with `maxAttempts` changed by an operator (`healing configure`); only retry
    /// has attempts to change.
    pub(crate) fn with_max_attempts(
        &self,
        attempts: u32,
        global: &RetryPolicy,
    ) -> Result<Action, InvalidConfig> {
        match self {
            Action::Decisive(action) => action.with_max_attempts(attempts, global),
            Action::Side(action) => Err(no_attempts(action.kind())),
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Decisive(action) => action.fmt(f),
            Action::Side(action) => action.fmt(f),
        }
    }
}

/// An action that decides the fate of failed work: retry, rollback, restart, failover, custom.
pub trait DecisiveAction: Any + fmt::Debug + Send + Sync {
    /// Which action this is, as the history records it.
    fn kind(&self) -> ActionKind;

    /// Heals a failed attempt: its [`Applied::remedy`] goes back to the executor.
    fn on_failure<'a>(
        &'a self,
        subject: &'a Subject<'a>,
        failure: &'a Failure<'a>,
    ) -> BoxFuture<'a, Applied>;

    /// Acts on a running stage from the evaluation tick or for an operator, through the
    /// stage's controls.
    fn on_stage<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied>;

    /// Whether it acts only on a failed attempt not yet given up on (retry): such an action
    /// takes no part in the evaluation tick or in an exhausted error's dispatch. Default: no.
    fn needs_fresh_failure(&self) -> bool {
        false
    }

    /// Checks the settings when the healer is built; the error names the bad setting. Default:
    /// accepts any.
    fn validate(&self) -> Result<(), InvalidConfig> {
        Ok(())
    }

    /// The retry budget of its own the action spends (retry's `config.budget`): the healer
    /// counts first attempts for it. Asked of the action, so that the healer needs to know no
    /// action's type. Default: none.
    fn retry_budget(&self) -> Option<&RetryBudget> {
        None
    }

    /// This action with `maxAttempts` set by an operator (`healing configure`). Default:
    /// refused, since attempts belong to retry.
    fn with_max_attempts(
        &self,
        _attempts: u32,
        _global: &RetryPolicy,
    ) -> Result<Action, InvalidConfig> {
        Err(no_attempts(self.kind()))
    }
}

/// An action beside the decision: scale, circuit-break, throttle, notify.
pub trait SideAction: Any + fmt::Debug + Send + Sync {
    /// Which action this is, as the history records it.
    fn kind(&self) -> ActionKind;

    /// Acts on `subject`, for a failed attempt or on the evaluation tick.
    fn apply<'a>(&'a self, subject: &'a Subject<'a>) -> BoxFuture<'a, Applied>;

    /// Called on the evaluation tick for a running stage this action's strategy did not match:
    /// a chance to undo what it did (a throttle lifting its cap).
    fn on_quiet(&self, _stage: &StageControl) {}

    /// Settings for an AIMD controller of the concurrency of the stages the strategy covers,
    /// when the action is one: the healer then installs it as each run starts and never
    /// applies the action on a match, and the strategy takes no triggers. Asked of the action,
    /// so that the healer needs to know no action's type. Default: none, the action acts on
    /// matches.
    fn adaptive_concurrency(&self) -> Option<AdaptiveSettings> {
        None
    }

    /// Checks the settings when the healer is built; the error names the bad setting. Default:
    /// accepts any.
    fn validate(&self) -> Result<(), InvalidConfig> {
        Ok(())
    }
}

fn no_attempts(kind: ActionKind) -> InvalidConfig {
    InvalidConfig::new(
        "maxAttempts",
        format!("the strategy acts with {kind}, not retry"),
    )
}

/// What an action acts on, and with what.
#[derive(Debug)]
pub struct Subject<'a> {
    /// The running pipeline, when there is one.
    pub scope: Option<&'a RunScope>,
    /// The pipeline's name.
    pub project: &'a Arc<str>,
    /// The stage acted on.
    pub stage: &'a Arc<str>,
    /// The item, when a failed attempt of one is why the action runs.
    pub item: Option<&'a Arc<str>>,
    /// The strategy whose action this is (`manual` for an operator's).
    pub strategy: &'a Arc<str>,
    /// The trigger that matched, and what it saw.
    pub trigger: &'a TriggerMatch,
    /// Why it acts, as a restart or rollback request carries it: `strategy `x`: errorRate =
    /// 0.6 > 0.5`.
    pub reason: &'a str,
    /// The wall-clock time the healer acts at.
    pub at: SystemTime,
    /// The healer's global `retryPolicy`.
    pub retry_policy: &'a RetryPolicy,
    /// The healer's global retry budget, every retry's.
    pub retry_budget: Option<&'a RetryBudget>,
    /// The healer's alerting.
    pub alerts: &'a Alerting,
    /// Whether healing is in manual mode: only alerts act.
    pub manual: bool,
}

impl Subject<'_> {
    /// The running pipeline's run, when there is one.
    pub fn run(&self) -> Option<&RunId> {
        self.scope.map(|s| &s.run)
    }

    /// The stage's live controls, while its pipeline runs.
    pub fn control(&self) -> Option<&Arc<StageControl>> {
        self.scope.and_then(|s| s.control(self.stage))
    }

    /// The running pipeline's metrics, when there is one.
    pub fn metrics(&self) -> Option<&MetricsCollector> {
        self.scope.map(|s| &s.metrics)
    }
}

/// What an action did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// How the work goes on from here.
    pub effect: Effect,
    /// What exactly: the retry's delay, the new concurrency, why it could not act.
    pub detail: String,
    /// How much longer than its backoff a retry budget made a retry wait.
    pub budget_wait: Option<Duration>,
}

/// How an action's work goes on once it returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// It could not act, or acting did not heal.
    Failed,
    /// A retry whose attempts are spent: the error goes round again as exhausted, so other
    /// strategies take over.
    Exhausted,
    /// A remedy for the failed attempt: the executor carries it out and announces it.
    Remedy(Remedy),
    /// To ask of the running stage once the decision is recorded (so the journal has it
    /// before the stage acts): the executor announces it when it carries it out.
    Requested(StageRequest),
    /// Done now: the healer announces it as applied.
    Done,
}

impl Applied {
    /// It could not act, or acting did not heal.
    pub fn failed(detail: impl Into<String>) -> Self {
        Applied::new(Effect::Failed, detail)
    }

    /// A remedy for the failed attempt, which the executor carries out.
    pub fn remedy(remedy: Remedy, detail: impl Into<String>) -> Self {
        Applied::new(Effect::Remedy(remedy), detail)
    }

    /// `request` for the running stage, made once the decision is recorded.
    pub fn requested(request: StageRequest, detail: impl Into<String>) -> Self {
        Applied::new(Effect::Requested(request), detail)
    }

    /// Done now.
    pub fn done(detail: impl Into<String>) -> Self {
        Applied::new(Effect::Done, detail)
    }

    /// Any `effect`, with its `detail`.
    pub fn new(effect: Effect, detail: impl Into<String>) -> Self {
        Applied {
            effect,
            detail: detail.into(),
            budget_wait: None,
        }
    }

    /// The same, for a retry a budget held `wait` longer than its backoff.
    pub fn held_by_budget(mut self, wait: Duration) -> Self {
        self.budget_wait = Some(wait);
        self
    }

    /// Whether it counts as succeeded or failed in the history: failed for `Failed` and
    /// `Exhausted`, succeeded otherwise.
    pub fn outcome(&self) -> Outcome {
        match self.effect {
            Effect::Failed | Effect::Exhausted => Outcome::Failed,
            Effect::Remedy(_) | Effect::Requested(_) | Effect::Done => Outcome::Succeeded,
        }
    }

    /// The remedy for the failed attempt, if this is one.
    pub fn remedy_for_failure(&self) -> Option<Remedy> {
        match self.effect {
            Effect::Remedy(remedy) => Some(remedy),
            _ => None,
        }
    }
}

/// The failure `applied` when a stage-only action has no running stage to act on.
fn not_running() -> Applied {
    Applied::failed("not applied: the stage is not running")
}
