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
    Retry,
    Rollback,
    Restart,
    Scale,
    Failover,
    CircuitBreak,
    Throttle,
    Notify,
    Custom,
}

impl ActionKind {
    pub const ALL: [ActionKind; 9] = [
        ActionKind::Retry,
        ActionKind::Rollback,
        ActionKind::Restart,
        ActionKind::Scale,
        ActionKind::Failover,
        ActionKind::CircuitBreak,
        ActionKind::Throttle,
        ActionKind::Notify,
        ActionKind::Custom,
    ];

    /// Every action's name, in the order of [`ALL`](Self::ALL).
    pub const NAMES: [&'static str; 9] = {
        let mut names = [""; 9];
        let mut i = 0;
        while i < 9 {
            names[i] = ActionKind::ALL[i].as_str();
            i += 1;
        }
        names
    };

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
        }
    }

    /// Decisive actions decide the fate of failed work; the others act alongside them.
    pub fn is_decisive(self) -> bool {
        matches!(
            self,
            ActionKind::Retry
                | ActionKind::Rollback
                | ActionKind::Restart
                | ActionKind::Failover
                | ActionKind::Custom
        )
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
                    format!(
                        "`{s}` is not one of {}",
                        ActionKind::ALL.map(|a| a.as_str()).join(", ")
                    ),
                )
            })
    }
}

/// Which kind of trigger matched, as recorded in the healing history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    Error,
    Metrics,
    HealthCheck,
    Timeout,
    Anomaly,
    Custom,
    /// An operator asked for the action.
    Manual,
    /// The healing budget ran out.
    Budget,
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

/// The trigger that matched and what it observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerMatch {
    pub kind: TriggerKind,
    /// The trigger's position in its strategy's list.
    pub index: usize,
    /// The metric value it saw, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    pub description: String,
}

/// One healing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealingRecord {
    /// Milliseconds since the Unix epoch on the wire.
    #[serde(with = "crate::serde_ms::system_time")]
    pub at: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<Arc<str>>,
    pub strategy: Arc<str>,
    pub trigger: TriggerMatch,
    pub action: ActionKind,
    pub outcome: Outcome,
    pub detail: String,
    /// How long the action took (zero for decisions that did not act).
    #[serde(with = "crate::serde_ms")]
    pub duration: Duration,
}
