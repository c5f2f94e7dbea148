//! Strategies: a named set of triggers, an action, and when it may act.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::actions::Action;
use super::trigger::Trigger;
use crate::error::InvalidConfig;
use crate::resilience::RetryPolicy;

/// Whether a strategy acts, or only records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Acts when it matches (the default).
    #[default]
    Act,
    /// Only records what it would have done (`dry-run` in files).
    DryRun,
}

/// The seed's `HealingStrategy`: when any trigger matches, the action runs, at most once per
/// `cooldown` for each stage. Higher `priority` goes first; among decisive actions the first one
/// applied decides.
///
/// ```
/// use std::time::Duration;
/// use self_healing::healing::{HealingStrategy, RollbackAction, Trigger};
/// use self_healing::Severity;
///
/// let rollback_critical = HealingStrategy::new("rollback-critical", RollbackAction)
///     .priority(100)
///     .trigger(Trigger::error().severity(Severity::Critical))
///     .trigger(
///         Trigger::health_check(self_healing::health::HealthStatus::Unhealthy)
///             .sustained(Duration::from_millis(60_000)),
///     )
///     .cooldown(Duration::from_millis(600_000));
/// assert_eq!(rollback_critical.name(), "rollback-critical");
/// assert_eq!(rollback_critical.settings().priority, 100);
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
    /// The stages it applies to; `None` for every stage.
    pub(crate) stages: Option<Vec<Arc<str>>>,
}

impl HealingStrategy {
    /// A strategy named `name` that runs `action`: enabled, acting, priority 0, no cooldown and no
    /// triggers yet (it needs at least one).
    pub fn new(name: impl Into<Arc<str>>, action: impl Into<Action>) -> Self {
        HealingStrategy {
            name: name.into(),
            priority: 0,
            triggers: Vec::new(),
            action: action.into(),
            cooldown: Duration::ZERO,
            enabled: true,
            mode: Mode::Act,
            stages: None,
        }
    }

    /// Sets the priority; higher goes first, default 0.
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a trigger; the strategy matches when any of them does.
    pub fn trigger(mut self, trigger: impl Into<Trigger>) -> Self {
        self.triggers.push(trigger.into());
        self
    }

    /// The least time between two actions of this strategy on one stage; default none.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Whether the strategy takes part at all; default true.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Applies the strategy to these stages only (by default, to every stage).
    pub fn stages<S: Into<Arc<str>>>(mut self, stages: impl IntoIterator<Item = S>) -> Self {
        self.stages = Some(stages.into_iter().map(Into::into).collect());
        self
    }

    /// The stages it applies to; `None` for every stage.
    pub fn applies_to(&self) -> Option<&[Arc<str>]> {
        self.stages.as_deref()
    }

    /// Whether it applies to `stage`.
    pub(crate) fn covers(&self, stage: &str) -> bool {
        self.stages
            .as_ref()
            .is_none_or(|stages| stages.iter().any(|s| &**s == stage))
    }

    /// Whether it acts or only records; default `Mode::Act`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Its name, unique within a healer.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it does when it matches.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// Its triggers, in the order they were added.
    pub fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    /// Its priority, cooldown, whether it is enabled and its mode, as they are now.
    pub fn settings(&self) -> StrategySettings {
        StrategySettings {
            priority: self.priority,
            cooldown: self.cooldown,
            enabled: self.enabled,
            mode: self.mode,
        }
    }

    /// This strategy with an operator's override applied (`healing configure`).
    pub(crate) fn overridden(
        &self,
        changes: &StrategyOverride,
        global: &RetryPolicy,
    ) -> Result<HealingStrategy, InvalidConfig> {
        let mut updated = self.clone();
        if let Some(attempts) = changes.max_attempts {
            updated.action = self.action.with_max_attempts(attempts, global)?;
        }
        if let Some(cooldown) = changes.cooldown {
            updated.cooldown = cooldown;
        }
        if let Some(priority) = changes.priority {
            updated.priority = priority;
        }
        if let Some(enabled) = changes.enabled {
            updated.enabled = enabled;
        }
        if let Some(mode) = changes.mode {
            updated.mode = mode;
        }
        Ok(updated)
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.name.trim().is_empty() {
            return Err(InvalidConfig::new("name", "a strategy needs a name"));
        }
        let adaptive = self.action.adaptive_concurrency().is_some();
        if self.triggers.is_empty() && !adaptive {
            return Err(InvalidConfig::new(
                "triggers",
                "a strategy needs at least one trigger",
            ));
        }
        if !self.triggers.is_empty() && adaptive {
            return Err(InvalidConfig::new(
                "triggers",
                "an adaptive scale runs all the time its stages run: it takes no triggers",
            ));
        }
        for (i, trigger) in self.triggers.iter().enumerate() {
            trigger
                .validate()
                .map_err(|e| e.within(format!("triggers[{i}]")))?;
        }
        if self.stages.as_ref().is_some_and(Vec::is_empty) {
            return Err(InvalidConfig::new(
                "stages",
                "names no stage: leave it out to apply the strategy to every stage",
            ));
        }
        self.action.validate().map_err(|e| e.within("config"))
    }
}

/// A strategy's settings that are not its triggers and action; see [`HealingStrategy::settings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrategySettings {
    /// Higher goes first.
    pub priority: i64,
    /// The least time between two of its actions on one stage.
    pub cooldown: Duration,
    /// Whether it takes part at all.
    pub enabled: bool,
    /// Whether it acts or only records.
    pub mode: Mode,
}

/// A live change to a strategy's settings (what `healing configure` sets). Fields left `None`
/// keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyOverride {
    /// A new `maxAttempts` for a retry strategy's policy; refused for other actions.
    pub max_attempts: Option<u32>,
    /// A new cooldown; milliseconds on the wire.
    #[serde(default, with = "opt_ms")]
    pub cooldown: Option<Duration>,
    /// A new priority.
    pub priority: Option<i64>,
    /// Enables or disables the strategy.
    pub enabled: Option<bool>,
    /// A new mode.
    pub mode: Option<Mode>,
}

impl StrategyOverride {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == StrategyOverride::default()
    }

    /// Merges `later` into this override: what `later` sets wins, the rest stays. Every store
    /// keeps a project's overrides of a strategy merged this way.
    pub fn merge(&mut self, later: &StrategyOverride) {
        self.max_attempts = later.max_attempts.or(self.max_attempts);
        self.cooldown = later.cooldown.or(self.cooldown);
        self.priority = later.priority.or(self.priority);
        self.enabled = later.enabled.or(self.enabled);
        self.mode = later.mode.or(self.mode);
    }
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
