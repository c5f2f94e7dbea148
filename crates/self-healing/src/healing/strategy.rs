//! Strategies: a named set of triggers, an action, and when it may act.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::action::Action;
use super::trigger::Trigger;
use crate::error::InvalidConfig;

/// Whether a strategy acts, or only records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Act,
    DryRun,
}

/// The seed's `HealingStrategy`: when any trigger matches, the action runs, at most once per
/// `cooldown` for each stage. Higher `priority` goes first; among decisive actions the first one
/// applied decides.
///
/// ```
/// use std::time::Duration;
/// use self_healing::healing::{Action, HealingStrategy, Trigger};
/// use self_healing::{RetryPolicy, Severity};
///
/// let rollback_critical = HealingStrategy::new("rollback-critical", Action::Rollback)
///     .priority(100)
///     .trigger(Trigger::error().severity(Severity::Critical))
///     .trigger(
///         Trigger::health_check(self_healing::health::HealthStatus::Unhealthy)
///             .sustained(Duration::from_millis(60_000)),
///     )
///     .cooldown(Duration::from_millis(600_000));
/// assert_eq!(rollback_critical.name(), "rollback-critical");
/// ```
#[derive(Debug, Clone)]
pub struct HealingStrategy {
    pub(crate) name: Arc<str>,
    pub(crate) priority: i64,
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) action: Action,
    pub(crate) cooldown: Duration,
    pub(crate) enabled: bool,
    pub(crate) mode: Mode,
}

impl HealingStrategy {
    pub fn new(name: impl Into<Arc<str>>, action: Action) -> Self {
        HealingStrategy {
            name: name.into(),
            priority: 0,
            triggers: Vec::new(),
            action,
            cooldown: Duration::ZERO,
            enabled: true,
            mode: Mode::Act,
        }
    }

    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    pub fn trigger(mut self, trigger: impl Into<Trigger>) -> Self {
        self.triggers.push(trigger.into());
        self
    }

    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn action(&self) -> &Action {
        &self.action
    }

    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    pub fn get_priority(&self) -> i64 {
        self.priority
    }

    pub fn get_cooldown(&self) -> Duration {
        self.cooldown
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn get_mode(&self) -> Mode {
        self.mode
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.name.trim().is_empty() {
            return Err(InvalidConfig::new("name", "a strategy needs a name"));
        }
        if self.triggers.is_empty() {
            return Err(InvalidConfig::new(
                "triggers",
                "a strategy needs at least one trigger",
            ));
        }
        for (i, trigger) in self.triggers.iter().enumerate() {
            trigger
                .validate()
                .map_err(|e| e.within(format!("triggers[{i}]")))?;
        }
        self.action.validate().map_err(|e| e.within("config"))
    }
}

/// A live change to a strategy's settings (what `healing configure` sets). Fields left `None`
/// keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyOverride {
    pub max_attempts: Option<u32>,
    #[serde(default, with = "opt_ms")]
    pub cooldown: Option<Duration>,
    pub priority: Option<i64>,
    pub enabled: Option<bool>,
    pub mode: Option<Mode>,
}

mod opt_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
