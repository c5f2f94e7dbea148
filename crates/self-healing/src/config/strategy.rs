//! Strategies as a file writes them: the seed's keys, and `config` read as the struct of the
//! action `action` names (`ActionConfig`, the registration of every action a file can name).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::de::{Registration, Tagged, deserialize_variant, variant_defaults, variant_schemas};
use crate::error::{InvalidConfig, did_you_mean};
use crate::event::ActionKind;
use crate::healing::{
    Action, CircuitBreakConfig, CustomConfig, FailoverConfig, HealingStrategy, Mode, NotifyAction,
    RestartAction, RetryAction, RollbackConfig, ScaleConfig, ThrottleConfig,
};
use crate::resilience::RetryPolicyConfig;

use super::TriggerConfig;

/// An action's `config`, one typed struct per action: the registration of every action a file
/// can name. Keys of another action's `config` are refused with what this one takes.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionConfig {
    /// Settings of `retry`.
    Retry(RetryPolicyConfig),
    /// Settings of `rollback`.
    Rollback(RollbackConfig),
    /// Settings of `restart`.
    Restart(RestartAction),
    /// Settings of `scale`.
    Scale(ScaleConfig),
    /// Settings of `failover`.
    Failover(FailoverConfig),
    /// Settings of `circuit-break`.
    CircuitBreak(CircuitBreakConfig),
    /// Settings of `throttle`.
    Throttle(ThrottleConfig),
    /// Settings of `notify`.
    Notify(NotifyAction),
    /// Settings of `custom`.
    Custom(CustomConfig),
}

impl Tagged for ActionConfig {
    const TAG: &'static str = "action";
    const VARIANTS: &'static [&'static str] = &ActionKind::NAMES;

    /// `hold` is no strategy's action: it has no variant.
    fn registered<R: Registration<Self>>(tag: &str, with: R) -> Option<R::Output> {
        let kind: ActionKind = tag.parse().ok()?;
        Some(match kind {
            ActionKind::Retry => with.variant(ActionConfig::Retry),
            ActionKind::Rollback => with.variant(ActionConfig::Rollback),
            ActionKind::Restart => with.variant(ActionConfig::Restart),
            ActionKind::Scale => with.variant(ActionConfig::Scale),
            ActionKind::Failover => with.variant(ActionConfig::Failover),
            ActionKind::CircuitBreak => with.variant(ActionConfig::CircuitBreak),
            ActionKind::Throttle => with.variant(ActionConfig::Throttle),
            ActionKind::Notify => with.variant(ActionConfig::Notify),
            ActionKind::Custom => with.variant(ActionConfig::Custom),
            ActionKind::Hold => return None,
        })
    }

    /// The key's path already names it: `config.breakDuration`: does not apply to retry.
    fn misplaced(_key: &str, tag: &str, takes: &[&str]) -> String {
        if takes.is_empty() {
            format!("does not apply to {tag} (it takes no config)")
        } else {
            format!("does not apply to {tag} (it takes {})", takes.join(", "))
        }
    }
}

impl ActionConfig {
    /// The settings of `action` when a file gives no `config`.
    pub fn defaults(action: ActionKind) -> Result<Self, InvalidConfig> {
        if action == ActionKind::Hold {
            return Err(InvalidConfig::new("config", NOT_A_STRATEGY_ACTION));
        }
        variant_defaults(action.as_str()).map_err(|e| InvalidConfig::new("config", e.to_string()))
    }

    /// Builds the action these settings describe.
    pub fn build(&self) -> Result<Action, InvalidConfig> {
        Ok(match self {
            ActionConfig::Retry(c) => RetryAction::from_config(c)?.into(),
            ActionConfig::Rollback(c) => c.build()?.into(),
            ActionConfig::Restart(c) => (*c).into(),
            ActionConfig::Scale(c) => c.build()?,
            ActionConfig::Failover(_) => crate::healing::FailoverAction.into(),
            ActionConfig::CircuitBreak(c) => c.build()?.into(),
            ActionConfig::Throttle(c) => c.build()?.into(),
            ActionConfig::Notify(c) => c.clone().into(),
            ActionConfig::Custom(c) => c.build()?.into(),
        })
    }
}

/// Why `action: hold` is refused.
const NOT_A_STRATEGY_ACTION: &str =
    "`hold` is not an action a strategy takes: a stage's `dependsOn` holds its work";

/// One strategy, with the seed's keys. `config` holds the action's settings, typed by `action`.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyConfig {
    /// The strategy's name, unique among the strategies.
    pub name: String,
    /// Higher goes first; default 0.
    pub priority: i64,
    /// The strategy acts when any of these matches.
    pub triggers: Vec<TriggerConfig>,
    /// The action as written; [`build`](Self::build) says if it names none.
    pub action: String,
    /// The action's settings; `None` when `action` names no action.
    pub config: Option<ActionConfig>,
    /// The least time between two actions of this strategy on one stage; `None`: no cooldown.
    pub cooldown: Option<Duration>,
    /// Whether the strategy takes part at all; default true.
    pub enabled: bool,
    /// Whether it acts or only records what it would have done; default `act`.
    pub mode: Mode,
    /// The stages it applies to; `None` for every stage.
    pub stages: Option<Vec<String>>,
    /// Where a person finds what to do about the alerts it raises (its `notify`, its retries
    /// exhausted…); `None`: the project's.
    pub runbook: Option<String>,
}

impl StrategyConfig {
    /// Builds the strategy. `metrics` are the names its triggers may use (empty: any).
    pub fn build(&self, metrics: &[String]) -> Result<HealingStrategy, InvalidConfig> {
        if self.action == ActionKind::Hold.as_str() {
            return Err(InvalidConfig::new("action", NOT_A_STRATEGY_ACTION));
        }
        let kind: ActionKind = self.action.parse().map_err(|e: InvalidConfig| {
            InvalidConfig::new(
                "action",
                format!(
                    "{}{}",
                    e.reason(),
                    did_you_mean(&self.action, ActionKind::NAMES.into_iter())
                ),
            )
        })?;
        let action = match &self.config {
            Some(config) => config.build(),
            None => ActionConfig::defaults(kind)?.build(),
        }
        .map_err(|e| e.within("config"))?;
        let mut strategy = HealingStrategy::new(self.name.as_str(), action)
            .priority(self.priority)
            .enabled(self.enabled)
            .mode(self.mode)
            .cooldown(self.cooldown.unwrap_or_default());
        if let Some(stages) = &self.stages {
            strategy = strategy.stages(stages.iter().map(String::as_str));
        }
        for (i, trigger) in self.triggers.iter().enumerate() {
            strategy = strategy.trigger(
                trigger
                    .build(metrics)
                    .map_err(|e| e.within(format!("triggers[{i}]")))?,
            );
        }
        strategy.validate()?;
        Ok(strategy)
    }
}

pub(super) const STRATEGY_KEYS: &[&str] = &[
    "name", "priority", "triggers", "action", "config", "cooldown", "enabled", "mode", "stages",
    "runbook",
];

impl<'de> Deserialize<'de> for StrategyConfig {
    /// By hand, so `config` is read straight from the file as the struct `action` names (its
    /// errors keep their line and column) instead of through a buffer.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StrategyVisitor)
    }
}

/// The schema of what [`StrategyConfig`]'s `Deserialize` reads: the keys of
/// `STRATEGY_KEYS`, `action` one of the strategies' actions and `config` the settings of the one
/// it names, each action's from [`ActionConfig`]'s registration.
impl JsonSchema for StrategyConfig {
    fn schema_name() -> Cow<'static, str> {
        "StrategyConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let described = |mut schema: Schema, description: &str| {
            schema.insert("description".into(), description.into());
            schema
        };
        let by_action: Vec<serde_json::Value> = variant_schemas::<ActionConfig>(generator)
            .into_iter()
            .map(|(action, config)| {
                serde_json::json!({
                    "if": { "properties": { "action": { "const": action } }, "required": ["action"] },
                    "then": { "properties": { "config": config } }
                })
            })
            .collect();
        json_schema!({
            "description": "A strategy: when any of its triggers matches, it takes its action.",
            "type": "object",
            "properties": {
                "name": described(generator.subschema_for::<String>(), "The strategy's name, unique among the strategies."),
                "priority": described(json_schema!({ "type": "integer", "default": 0 }), "Higher goes first; default 0."),
                "triggers": described(generator.subschema_for::<Vec<TriggerConfig>>(), "The strategy acts when any of these matches; only an adaptive `scale` goes without."),
                "action": described(json_schema!({ "enum": ActionConfig::VARIANTS }), "The action it takes; its settings go in `config`."),
                "config": described(json_schema!({ "type": "object" }), "The settings of the action `action` names (its defaults when left out)."),
                "cooldown": described(generator.subschema_for::<crate::duration::Written>(), "The least time between two actions of this strategy on one stage; default none."),
                "enabled": described(json_schema!({ "type": "boolean", "default": true }), "Whether the strategy takes part at all; default true."),
                "mode": described(generator.subschema_for::<Mode>(), "`act` (the default) or `dry-run`: only record what it would have done."),
                "stages": described(generator.subschema_for::<Vec<String>>(), "The stages it applies to; default every stage."),
                "runbook": described(generator.subschema_for::<String>(), "Where a person finds what to do about the alerts it raises; default the project's."),
            },
            "required": ["name", "action"],
            "additionalProperties": false,
            "allOf": by_action,
        })
    }
}

struct StrategyVisitor;

/// A duration as users write it, as one map value.
#[derive(Deserialize)]
#[serde(transparent)]
struct DurationValue(#[serde(deserialize_with = "crate::duration::deserialize")] Duration);

impl<'de> Visitor<'de> for StrategyVisitor {
    type Value = StrategyConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a strategy: name, triggers, action and its config")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrategyConfig, A::Error> {
        let mut name = None;
        let mut priority = None;
        let mut triggers = None;
        let mut action: Option<String> = None;
        let mut config = None;
        let mut config_before_action: Option<serde_json::Value> = None;
        let mut cooldown = None;
        let mut enabled = None;
        let mut mode = None;
        let mut stages = None;
        let mut runbook = None;
        fn once<T, E: de::Error>(slot: &Option<T>, key: &'static str) -> Result<(), E> {
            match slot {
                Some(_) => Err(E::duplicate_field(key)),
                None => Ok(()),
            }
        }
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => {
                    once(&name, "name")?;
                    name = Some(map.next_value::<String>()?);
                }
                "priority" => {
                    once(&priority, "priority")?;
                    priority = Some(map.next_value::<i64>()?);
                }
                "triggers" => {
                    once(&triggers, "triggers")?;
                    triggers = Some(map.next_value::<Vec<TriggerConfig>>()?);
                }
                "action" => {
                    once(&action, "action")?;
                    action = Some(map.next_value::<String>()?);
                }
                "config" => {
                    if config.is_some() || config_before_action.is_some() {
                        return Err(de::Error::duplicate_field("config"));
                    }
                    match action.as_deref().map(str::parse::<ActionKind>) {
                        Some(Ok(kind)) if kind != ActionKind::Hold => {
                            config = Some(map.next_value_seed(ConfigSeed(kind))?);
                        }
                        _ => config_before_action = Some(map.next_value()?),
                    }
                }
                "cooldown" => {
                    once(&cooldown, "cooldown")?;
                    cooldown = Some(map.next_value::<DurationValue>()?.0);
                }
                "enabled" => {
                    once(&enabled, "enabled")?;
                    enabled = Some(map.next_value::<bool>()?);
                }
                "mode" => {
                    once(&mode, "mode")?;
                    mode = Some(map.next_value::<Mode>()?);
                }
                "stages" => {
                    once(&stages, "stages")?;
                    stages = Some(map.next_value::<Vec<String>>()?);
                }
                "runbook" => {
                    once(&runbook, "runbook")?;
                    runbook = Some(map.next_value::<String>()?);
                }
                other => return Err(de::Error::unknown_field(other, STRATEGY_KEYS)),
            }
        }
        let action = action.ok_or_else(|| de::Error::missing_field("action"))?;
        // `hold` has no config: `build` refuses it, with the strategy's other errors.
        let kind = action
            .parse::<ActionKind>()
            .ok()
            .filter(|kind| *kind != ActionKind::Hold);
        let config = match (config, config_before_action, kind) {
            (Some(config), _, _) => Some(config),
            // Written before `action`: read from a buffer, so its errors have only their path.
            (None, Some(value), Some(kind)) => Some(
                de::DeserializeSeed::deserialize(ConfigSeed(kind), value)
                    .map_err(|e| de::Error::custom(format!("config: {e}")))?,
            ),
            (None, None, Some(kind)) => {
                Some(ActionConfig::defaults(kind).map_err(de::Error::custom)?)
            }
            (None, _, None) => None,
        };
        Ok(StrategyConfig {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            priority: priority.unwrap_or_default(),
            // Checked when built: only an adaptive scale goes without.
            triggers: triggers.unwrap_or_default(),
            action,
            config,
            cooldown,
            enabled: enabled.unwrap_or(true),
            mode: mode.unwrap_or_default(),
            stages,
            runbook,
        })
    }
}

/// Reads a `config` map as the struct of one action.
struct ConfigSeed(ActionKind);

impl<'de> de::DeserializeSeed<'de> for ConfigSeed {
    type Value = ActionConfig;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ActionConfig, D::Error> {
        struct ConfigVisitor(ActionKind);

        impl<'de> Visitor<'de> for ConfigVisitor {
            type Value = ActionConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the settings of {}", self.0)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ActionConfig, A::Error> {
                deserialize_variant(self.0.as_str(), map)
            }
        }

        deserializer.deserialize_map(ConfigVisitor(self.0))
    }
}
