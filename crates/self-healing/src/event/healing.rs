//! The healing vocabulary: which actions there are, what became of a decision, and the record
//! of one. The healer writes these; the journal, the exporter and the command line read them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::RunId;

/// The seed's healing actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Run the failed work again after a backoff.
    Retry,
    /// Stop the run and compensate completed work in reverse order.
    Rollback,
    /// Stop the stage, run its `reset` hook and run it again from its start.
    Restart,
    /// Change a stage's concurrency, and optionally something outside the process.
    Scale,
    /// Switch the stage to its alternate handler.
    Failover,
    /// Open the stage's circuit breaker, so work waits instead of spending attempts.
    CircuitBreak,
    /// Cap how fast the stage's attempts start.
    Throttle,
    /// Alert people through the healer's alert channels.
    Notify,
    /// A remedy supplied by the user.
    Custom,
    /// Hold a stage's new attempts while a health check it depends on (`dependsOn`) is
    /// unhealthy. Not a strategy's action: the stage's `dependsOn` asks for it.
    Hold,
}

impl ActionKind {
    /// Every action, in declaration order.
    pub const ALL: [ActionKind; 10] = every_variant!(ActionKind {
        Retry,
        Rollback,
        Restart,
        Scale,
        Failover,
        CircuitBreak,
        Throttle,
        Notify,
        Custom,
        Hold,
    });

    /// The names of the actions a strategy can take, in the order of [`ALL`](Self::ALL):
    /// every one but `hold`.
    pub const NAMES: [&'static str; ActionKind::STRATEGY_ACTIONS] = {
        let mut names = [""; ActionKind::STRATEGY_ACTIONS];
        let (mut i, mut n) = (0, 0);
        while i < ActionKind::ALL.len() {
            if ActionKind::ALL[i].strategy_takes() {
                names[n] = ActionKind::ALL[i].as_str();
                n += 1;
            }
            i += 1;
        }
        names
    };

    /// How many of [`ALL`](Self::ALL) a strategy can take: counted, so that [`NAMES`](Self::NAMES)
    /// follows `ALL` instead of a number kept by hand.
    const STRATEGY_ACTIONS: usize = {
        let (mut i, mut n) = (0, 0);
        while i < ActionKind::ALL.len() {
            if ActionKind::ALL[i].strategy_takes() {
                n += 1;
            }
            i += 1;
        }
        n
    };

    /// Whether a strategy can take the action: every one but `hold`, which a stage's
    /// `dependsOn` asks for. No `_` arm: a new action must say which it is.
    const fn strategy_takes(self) -> bool {
        match self {
            ActionKind::Hold => false,
            ActionKind::Retry
            | ActionKind::Rollback
            | ActionKind::Restart
            | ActionKind::Scale
            | ActionKind::Failover
            | ActionKind::CircuitBreak
            | ActionKind::Throttle
            | ActionKind::Notify
            | ActionKind::Custom => true,
        }
    }

    /// The kebab-case name used in configuration and on the wire (`retry`, `circuit-break`…).
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionKind::Retry => "retry",
            ActionKind::Rollback => "rollback",
            ActionKind::Restart => "restart",
            ActionKind::Scale => "scale",
            ActionKind::Failover => "failover",
            ActionKind::CircuitBreak => "circuit-break",
            ActionKind::Throttle => "throttle",
            ActionKind::Notify => "notify",
            ActionKind::Custom => "custom",
            ActionKind::Hold => "hold",
        }
    }

    /// Decisive actions decide the fate of failed work; the others act alongside them.
    pub fn is_decisive(self) -> bool {
        match self {
            ActionKind::Retry
            | ActionKind::Rollback
            | ActionKind::Restart
            | ActionKind::Failover
            | ActionKind::Custom => true,
            ActionKind::Scale
            | ActionKind::CircuitBreak
            | ActionKind::Throttle
            | ActionKind::Notify
            | ActionKind::Hold => false,
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionKind {
    type Err = crate::error::InvalidConfig;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                crate::error::InvalidConfig::new(
                    "action",
                    format!("`{s}` is not one of {}", ActionKind::NAMES.join(", ")),
                )
            })
    }
}

/// Which kind of trigger matched, as recorded in the healing history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    /// A failed attempt matched the trigger's pattern, severity or code.
    Error,
    /// A metric crossed its threshold.
    Metrics,
    /// A stage's health, or one check's, was at least as bad as the watched status.
    HealthCheck,
    /// A stage ran longer than its threshold.
    Timeout,
    /// A metric sample lay too far from its rolling mean.
    Anomaly,
    /// A user-supplied predicate matched.
    Custom,
    /// An operator asked for the action.
    Manual,
    /// The healing budget ran out.
    Budget,
    /// A circuit breaker's own rules (its failures, rates, break and probes) changed it.
    Breaker,
}

impl TriggerKind {
    /// Every kind, in declaration order.
    pub const ALL: [TriggerKind; 9] = every_variant!(TriggerKind {
        Error,
        Metrics,
        HealthCheck,
        Timeout,
        Anomaly,
        Custom,
        Manual,
        Budget,
        Breaker,
    });
}

/// What became of a strategy that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The action ran and did what it should.
    Succeeded,
    /// The action ran, or could not run, and did not heal (retries exhausted, already at
    /// `maxInstances`, the custom handler failed…); `detail` says why.
    Failed,
    /// The strategy acted on this stage less than `cooldown` ago.
    SkippedCooldown,
    /// The healing budget for the window was spent.
    SkippedBudget,
    /// A decisive action of higher priority already decided the fate of the work.
    Superseded,
    /// Healing is disabled or the strategy is a dry run: this is what it would have done.
    WouldHave,
}

impl Outcome {
    /// The kebab-case name used on the wire (`succeeded`, `skipped-cooldown`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::SkippedCooldown => "skipped-cooldown",
            Outcome::SkippedBudget => "skipped-budget",
            Outcome::Superseded => "superseded",
            Outcome::WouldHave => "would-have",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the detail of a retry decision that spent its attempts begins (the decision is recorded
/// `failed`, like one that could not retry at all; this tells them apart).
pub const RETRIES_EXHAUSTED: &str = "retries exhausted";

/// How the detail of a restart decision refused by its strategy's `maxRestarts` begins.
pub const RESTART_LIMIT_REACHED: &str = "restart limit";

/// The trigger that matched and what it observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerMatch {
    /// Which kind of trigger it was.
    pub kind: TriggerKind,
    /// The trigger's position in its strategy's list.
    pub index: usize,
    /// The metric value it saw, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// What the trigger saw, in words.
    pub description: String,
}

/// One healing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealingRecord {
    /// Milliseconds since the Unix epoch on the wire.
    #[serde(with = "crate::serde_ms::system_time")]
    pub at: SystemTime,
    /// The run the decision concerns; `None` when it concerns no run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    /// The stage the decision concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Arc<str>>,
    /// The item's key when the decision concerns one item; `None` for the whole stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Arc<str>>,
    /// The name of the strategy that decided (`manual` for an operator's action).
    pub strategy: Arc<str>,
    /// The trigger that matched.
    pub trigger: TriggerMatch,
    /// The action chosen.
    pub action: ActionKind,
    /// What became of it.
    pub outcome: Outcome,
    /// What was done, or why nothing was, in words.
    pub detail: String,
    /// How long the action took (zero for decisions that did not act).
    #[serde(with = "crate::serde_ms")]
    pub duration: Duration,
    /// How much longer than its backoff a retry budget made this retry wait (milliseconds on
    /// the wire): the budget was spent. `None` for other decisions and retries it let through.
    #[serde(
        default,
        rename = "budgetWait",
        skip_serializing_if = "Option::is_none",
        with = "crate::serde_ms::option"
    )]
    pub budget_wait: Option<Duration>,
}

impl HealingRecord {
    /// A decision of `strategy` that concerns no run, stage or item and took no time yet: the one
    /// place the library makes a record, so that a field added to it is filled in for every kind
    /// of decision at once.
    pub(crate) fn new(
        at: SystemTime,
        strategy: Arc<str>,
        trigger: TriggerMatch,
        action: ActionKind,
        outcome: Outcome,
        detail: String,
    ) -> Self {
        HealingRecord {
            at,
            run: None,
            stage: None,
            item: None,
            strategy,
            trigger,
            action,
            outcome,
            detail,
            duration: Duration::ZERO,
            budget_wait: None,
        }
    }

    /// The decision concerns `stage` of `run`, and `item` when a failed attempt of one is why.
    pub(crate) fn on(
        mut self,
        run: Option<RunId>,
        stage: Arc<str>,
        item: Option<Arc<str>>,
    ) -> Self {
        self.run = run;
        self.stage = Some(stage);
        self.item = item;
        self
    }

    /// The action took `duration`.
    pub(crate) fn took(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }
}
