//! The seed's `SelfHealingConfig` as data, and what it builds: the healer (strategies, the
//! global retry policy and breakers, budgets, alert thresholds and channels), the metrics
//! collector and the health monitor, ready to install on a pipeline.
//!
//! ```
//! use self_healing::config::{BuildCheck, HealingConfig};
//! use self_healing::health::{CheckSpec, CommandCheck};
//! use self_healing::{InvalidConfig, SelfHealingPipeline, Stage};
//!
//! // The checks a file may declare: here a command that must exit 0.
//! #[derive(serde::Deserialize)]
//! struct Check { name: String, command: Vec<String> }
//!
//! impl BuildCheck for Check {
//!     fn name(&self) -> &str { &self.name }
//!     fn build(&self) -> Result<CheckSpec, InvalidConfig> {
//!         Ok(CheckSpec::new(self.name.as_str(), CommandCheck::new(self.command.clone())?))
//!     }
//! }
//!
//! let config: HealingConfig<Check> = serde_json::from_str(r#"{
//!     "healthMonitor": {"checks": [{"name": "api", "command": ["true"]}]},
//!     "strategies": [{"name": "retry-transient", "triggers": [{"type": "error", "pattern": "ECONNRESET"}],
//!                     "action": "retry", "config": {"maxAttempts": 5}}]
//! }"#)?;
//! let mut healing = config.build(&["load"]).map_err(|errors| errors[0].clone())?;
//! let pipeline = healing
//!     .install(SelfHealingPipeline::<()>::builder().stage(Stage::new("load", |_| async { Ok(()) })))
//!     .build()?;
//! let monitor = healing.monitor(&pipeline)?.expect("a healthMonitor");
//! assert_eq!(&*monitor.report()[0].name, "api");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{BudgetConfig, CircuitBreakerConfig, MetricsCollectorConfig, StrategyConfig};
use crate::alert::{
    Alerting, BuiltinAlerts, CHECK_DOWN, ChannelConfig, Notifier, RUN_FAILED, RUN_LOST, RUN_STUCK,
    Rules, Runbooks,
};
use crate::duration::option::deserialize as opt_duration;
use crate::error::{InvalidConfig, Severity, no_such};
use crate::healing::{AlertThreshold, AutoHealer};
use crate::health::{CheckSpec, HealthMonitor, HealthMonitorBuilder};
use crate::metrics::MetricsCollector;
use crate::pipeline::{PipelineBuilder, SelfHealingPipeline};
use crate::resilience::{RetryBudgetSettings, RetryPolicy, RetryPolicyConfig};

/// A health check as a file declares it: a name, and the runnable check it builds. The checks
/// that need drivers (HTTP, databases, Redis) live in the `self-healing-checks` crate, whose
/// `CheckConfig` implements this.
pub trait BuildCheck {
    /// The check's name, which stages' `dependsOn` and `health-check` triggers refer to.
    fn name(&self) -> &str;

    /// The runnable check; the error names the setting that cannot work.
    fn build(&self) -> Result<CheckSpec, InvalidConfig>;
}

/// The seed's `SelfHealingConfig`, with the checks of its `healthMonitor` of type `C`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(
    description = "The `healing` section (the seed's `SelfHealingConfig`): the strategies and what they act on, health checks, alerts, and the retry policy and circuit breakers every stage shares."
)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    bound(deserialize = "C: Deserialize<'de>"),
    expecting = "the `healing` section (a map)"
)]
pub struct HealingConfig<C> {
    /// Whether the healer acts on its own (default `true`); `false` starts it in manual mode.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The health checks to run during a run; `None` runs none.
    pub health_monitor: Option<HealthMonitorConfig<C>>,
    /// The metrics collector's settings; `None` uses the defaults.
    pub metrics_collector: Option<MetricsCollectorConfig>,
    /// The healing strategies, each a trigger and the action it takes.
    #[serde(default)]
    pub strategies: Vec<StrategyConfig>,
    /// Metric thresholds to alert on and the channels alerts go to; `None` sends no alerts.
    pub alerts: Option<AlertsConfig>,
    /// How failed attempts are retried; `None` uses the default retry policy.
    pub retry_policy: Option<RetryPolicyConfig>,
    /// The circuit breaker every stage gets; `None` gives them none.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Named circuit breakers stages share (a stage's `breaker:`), with the keys of
    /// `circuitBreaker`.
    #[serde(default)]
    pub breakers: BTreeMap<String, CircuitBreakerConfig>,
    /// A cap on healing actions over a time window; `None` sets no cap.
    pub budget: Option<BudgetConfig>,
    /// A cap on every retry: a share of recent first attempts plus a floor; `None` sets none.
    pub retry_budget: Option<RetryBudgetSettings>,
    /// How often state triggers are evaluated while a stage runs (default 1 s).
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub evaluation_interval: Option<Duration>,
}

impl<C> Default for HealingConfig<C> {
    fn default() -> Self {
        HealingConfig {
            enabled: true,
            health_monitor: None,
            metrics_collector: None,
            strategies: Vec::new(),
            alerts: None,
            retry_policy: None,
            circuit_breaker: None,
            breakers: BTreeMap::new(),
            budget: None,
            retry_budget: None,
            evaluation_interval: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// The seed's `healthMonitor`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    bound(deserialize = "C: Deserialize<'de>"),
    expecting = "the `healthMonitor` settings (a map)"
)]
pub struct HealthMonitorConfig<C> {
    /// The interval of checks that do not set their own; `None` keeps the monitor's default.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub check_interval: Option<Duration>,
    /// The seed also writes these two at the top level of `healthMonitor`.
    pub consecutive_failures: Option<u32>,
    /// Consecutive successes that mark a check healthy again, when `thresholds` does not say
    /// (default 5).
    pub consecutive_successes: Option<u32>,
    /// The thresholds; their values win over the top-level ones.
    pub thresholds: Option<ThresholdsConfig>,
    /// The health checks to run.
    #[serde(default)]
    pub checks: Vec<C>,
}

/// The seed's `healthMonitor.thresholds`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "the `thresholds` (a map)"
)]
pub struct ThresholdsConfig {
    /// Consecutive failures that mark a check unhealthy (default 3).
    pub consecutive_failures: Option<u32>,
    /// Consecutive successes that mark a check healthy again (default 5).
    pub consecutive_successes: Option<u32>,
}

/// The seed's `alerts`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "the `alerts` settings (a map)"
)]
pub struct AlertsConfig {
    /// The metric levels to alert at; they need at least one channel.
    #[serde(default)]
    pub thresholds: Vec<AlertThresholdConfig>,
    /// Where alerts are sent.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Alerts that fire within this time of each other go out together (default 10 s).
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub group_wait: Option<Duration>,
    /// A firing alert is sent again no more often than this (default 4 h).
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub repeat_interval: Option<Duration>,
    /// The project's runbook: what every alert carries unless what raised it has its own.
    pub runbook: Option<String>,
    /// The built-in alerts' settings.
    #[serde(default)]
    pub builtin: BuiltinAlertsConfig,
}

/// `alerts.builtin`: each built-in alert's settings; unset keys keep the defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "the built-in alerts' settings (a map)"
)]
pub struct BuiltinAlertsConfig {
    /// `run-failed` (critical).
    #[serde(default)]
    pub run_failed: BuiltinAlertConfig,
    /// `run-lost` (critical).
    #[serde(default)]
    pub run_lost: BuiltinAlertConfig,
    /// `run-stuck` (warning, `after` 30 min).
    #[serde(default)]
    pub run_stuck: BuiltinAlertConfig,
    /// `check-down` (warning, `for` 5 min).
    #[serde(default)]
    pub check_down: BuiltinAlertConfig,
}

/// One built-in alert's settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a built-in alert's settings (a map)"
)]
pub struct BuiltinAlertConfig {
    /// Whether it is raised (default true).
    pub enabled: Option<bool>,
    /// Its severity.
    pub severity: Option<Severity>,
    /// Its runbook.
    pub runbook: Option<String>,
    /// How long its condition must last first: `run-stuck`'s time without a finished attempt.
    #[serde(default, deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub after: Option<Duration>,
    /// How long its condition must last first: `check-down`'s time unhealthy.
    #[serde(default, rename = "for", deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub for_: Option<Duration>,
}

/// Alert when `metric` reaches `warning` or `critical`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "an alert threshold (a map)"
)]
pub struct AlertThresholdConfig {
    /// The metric watched; one the metrics collector knows.
    pub metric: String,
    /// The level that raises a warning alert; `None` for no warning.
    pub warning: Option<f64>,
    /// The level that raises a critical alert; `None` for no critical alert.
    pub critical: Option<f64>,
    /// How long the metric must stay at a level before its alert fires (default 0).
    #[serde(default, rename = "for", deserialize_with = "opt_duration")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub for_: Option<Duration>,
    /// Where a person finds what to do; `None`: the project's.
    pub runbook: Option<String>,
}

/// What a [`HealingConfig`] builds: install it on a pipeline builder, then give the built
/// pipeline its health monitor.
#[derive(Debug)]
pub struct Healing {
    /// The healer.
    pub healer: AutoHealer,
    /// The metrics collector, which [`install`](Self::install) gives the pipeline.
    pub collector: MetricsCollector,
    /// The global retry policy (the default one when the file sets none): what a stage's own
    /// `retryPolicy` takes its unset keys from.
    pub retry_policy: RetryPolicy,
    /// The metric names triggers and thresholds may use: the built-ins and the declared ones.
    pub metrics: Vec<String>,
    /// The health monitor, until [`monitor`](Self::monitor) builds it on a pipeline's bus.
    monitor: Option<HealthMonitorBuilder>,
}

impl Healing {
    /// `builder` with the collector and the healer installed.
    pub fn install<C: Send + Sync + 'static>(
        &self,
        builder: PipelineBuilder<C>,
    ) -> PipelineBuilder<C> {
        self.healer.install(builder.metrics(self.collector.clone()))
    }

    /// Replaces each health check by what `f` makes of it, before the monitor is built: the
    /// same checks probing a model in a simulation, or with faults injected in a chaos run.
    pub fn map_checks(&mut self, f: impl FnMut(CheckSpec) -> CheckSpec) {
        self.monitor = self.monitor.take().map(|builder| builder.map_checks(f));
    }

    /// The health monitor, publishing its changes on `pipeline`'s bus and watched by the
    /// healer (its `health-check` triggers and the stages' `dependsOn`); not started. `None`
    /// without a `healthMonitor`, or once taken.
    pub fn monitor<C: Send + Sync + 'static>(
        &mut self,
        pipeline: &SelfHealingPipeline<C>,
    ) -> Result<Option<HealthMonitor>, InvalidConfig> {
        let Some(builder) = self.monitor.take() else {
            return Ok(None);
        };
        let monitor = builder
            .events(pipeline.events().clone())
            .build()
            .map_err(|e| e.within("healthMonitor"))?;
        self.healer.watch(&monitor);
        Ok(Some(monitor))
    }
}

impl<C: BuildCheck> HealingConfig<C> {
    /// The names of the declared health checks, in order.
    pub fn check_names(&self) -> Vec<&str> {
        self.health_monitor
            .iter()
            .flat_map(|m| m.checks.iter().map(BuildCheck::name))
            .collect()
    }

    /// Builds everything, for a pipeline of `stages` (which strategies' `stages` must name).
    /// Every problem found is returned, each naming its key (`strategies[2].config.maxAttempts`).
    pub fn build(&self, stages: &[&str]) -> Result<Healing, Vec<InvalidConfig>> {
        match self.build_with(stages, |channel| channel) {
            (Some(healing), errors) if errors.is_empty() => Ok(healing),
            (_, errors) => Err(errors),
        }
    }

    /// [`build`](Self::build), each alert channel passed through `channel` first (to mask
    /// secrets in what it sends, say), giving what it could build beside the problems: the
    /// healing is there whenever its healer could be built (a setting it could not use left
    /// at its default), so a caller that reports every problem of a file goes on to check what
    /// depends on it (stages against the global retry policy, the health monitor).
    pub fn build_with(
        &self,
        stages: &[&str],
        channel: impl Fn(Arc<dyn Notifier>) -> Arc<dyn Notifier>,
    ) -> (Option<Healing>, Vec<InvalidConfig>) {
        let mut errors = Vec::new();
        let mut fail = |at: &str, error: InvalidConfig| errors.push(error.within(at));

        let metrics_config = self.metrics_collector.clone().unwrap_or_default();
        let collector = metrics_config
            .build()
            .map_err(|e| fail("metricsCollector", e))
            .unwrap_or_default();
        let metrics = metrics_config.known_metrics();

        let retry_policy = match &self.retry_policy {
            Some(policy) => policy
                .build(&RetryPolicy::default())
                .map_err(|e| fail("retryPolicy", e))
                .unwrap_or_default(),
            None => RetryPolicy::default(),
        };
        let mut healer = AutoHealer::builder().enabled(self.enabled);
        if self.retry_policy.is_some() {
            // Given, the global policy retries its retryableErrors by itself.
            healer = healer.retry_policy(retry_policy.clone());
        }
        if let Some(breaker) = &self.circuit_breaker {
            match breaker.build() {
                Ok(Some(settings)) => healer = healer.circuit_breaker(settings),
                Ok(None) => {}
                Err(e) => fail("circuitBreaker", e),
            }
        }
        for (name, breaker) in &self.breakers {
            let at = format!("breakers.{name}");
            match breaker.build() {
                Ok(Some(settings)) => healer = healer.shared_breaker(name.as_str(), settings),
                Ok(None) => fail(
                    &at,
                    InvalidConfig::new(
                        "enabled",
                        "a shared breaker cannot be disabled: take `breaker:` off its stages instead",
                    ),
                ),
                Err(e) => fail(&at, e),
            }
        }
        if let Some(budget) = self.budget {
            healer = healer.budget(budget.max_actions, budget.window);
        }
        if let Some(settings) = self.retry_budget {
            match settings.validate() {
                Ok(()) => healer = healer.retry_budget(settings),
                Err(e) => fail("retryBudget", e),
            }
        }
        if let Some(interval) = self.evaluation_interval {
            healer = healer.evaluation_interval(interval);
        }
        for (i, strategy) in self.strategies.iter().enumerate() {
            let at = format!("strategies[{i}]");
            for stage in strategy.stages.iter().flatten() {
                if !stages.contains(&stage.as_str()) {
                    fail(
                        &at,
                        InvalidConfig::new("stages", no_such("stage", stage, stages, "stages")),
                    );
                }
            }
            match strategy.build(&metrics) {
                Ok(strategy) => healer = healer.strategy(strategy),
                Err(e) => fail(&at, e),
            }
        }
        // Without an `alerts` section too: the built-in alerts are on, and strategies'
        // runbooks apply, though there is no channel to send them to.
        let alerts = self.alerts.clone().unwrap_or_default();
        let (thresholds, alerting) = alerts.build(&metrics, &self.strategies, &channel, &mut fail);
        for threshold in thresholds {
            healer = healer.threshold(threshold);
        }
        healer = healer.alerting(alerting);
        let healer = healer.build().map_err(|e| errors.push(e)).ok();
        let monitor = self.health_monitor.as_ref().map(|config| {
            config.builder(&mut |e: InvalidConfig| errors.push(e.within("healthMonitor")))
        });
        let healing = healer.map(|healer| Healing {
            healer,
            collector,
            retry_policy,
            metrics,
            monitor,
        });
        (healing, errors)
    }
}

impl AlertsConfig {
    /// The routing rules: `groupWait` and `repeatInterval` over the defaults.
    pub fn rules(&self) -> Rules {
        Rules {
            group_wait: self.group_wait.unwrap_or(Rules::default().group_wait),
            repeat_interval: self
                .repeat_interval
                .unwrap_or(Rules::default().repeat_interval),
        }
    }

    /// The runbooks alerts carry (the project's, the thresholds', `strategies`' and the
    /// built-in alerts') and the built-in alerts' settings; problems go to `fail`.
    pub fn settings(
        &self,
        strategies: &[StrategyConfig],
        fail: &mut impl FnMut(&str, InvalidConfig),
    ) -> (Runbooks, BuiltinAlerts) {
        let mut runbooks = Runbooks {
            default: self.runbook.as_deref().map(Arc::from),
            ..Runbooks::default()
        };
        for strategy in strategies {
            if let Some(runbook) = &strategy.runbook {
                runbooks
                    .by_strategy
                    .insert(strategy.name.as_str().into(), runbook.as_str().into());
                // A `notify` strategy's alert is named after it.
                runbooks
                    .by_name
                    .insert(strategy.name.as_str().into(), runbook.as_str().into());
            }
        }
        for threshold in &self.thresholds {
            if let Some(runbook) = &threshold.runbook {
                runbooks
                    .by_name
                    .insert(threshold.metric.as_str().into(), runbook.as_str().into());
            }
        }
        let builtins = self.builtin.build(&mut runbooks, fail);
        (runbooks, builtins)
    }

    /// The thresholds and the alerting (channels and rules); problems go to `fail` with the
    /// key they are at, under `alerts`.
    fn build(
        &self,
        metrics: &[String],
        strategies: &[StrategyConfig],
        channel: &impl Fn(Arc<dyn Notifier>) -> Arc<dyn Notifier>,
        fail: &mut impl FnMut(&str, InvalidConfig),
    ) -> (Vec<AlertThreshold>, Alerting) {
        let (runbooks, builtins) = self.settings(strategies, fail);
        if !self.thresholds.is_empty() && self.channels.is_empty() {
            fail(
                "alerts",
                InvalidConfig::new(
                    "thresholds",
                    "alert thresholds need a channel in `alerts.channels` to alert through",
                ),
            );
        }
        let mut thresholds = Vec::new();
        for (i, threshold) in self.thresholds.iter().enumerate() {
            let at = format!("alerts.thresholds[{i}]");
            if !metrics.contains(&threshold.metric) {
                fail(
                    &at,
                    InvalidConfig::new(
                        "metric",
                        format!("`{}` is not a known metric", threshold.metric),
                    ),
                );
                continue;
            }
            let threshold = AlertThreshold {
                metric: threshold.metric.as_str().into(),
                warning: threshold.warning,
                critical: threshold.critical,
                holds_for: threshold.for_.unwrap_or_default(),
            };
            match threshold.validate() {
                Ok(()) => thresholds.push(threshold),
                Err(e) => fail(&at, e),
            }
        }
        let mut alerting = Alerting::builder()
            .runbooks(runbooks)
            .builtins(builtins)
            .rules(self.rules());
        let mut names: Vec<String> = Vec::new();
        for (i, config) in self.channels.iter().enumerate() {
            let at = format!("alerts.channels[{i}]");
            match config.build() {
                Ok(notifier) if names.iter().any(|n| n == notifier.name()) => fail(
                    &at,
                    InvalidConfig::new(
                        "name",
                        format!(
                            "another channel is named `{}`: give each a `name` of its own",
                            notifier.name()
                        ),
                    ),
                ),
                Ok(notifier) => {
                    names.push(notifier.name().to_owned());
                    alerting = alerting.channel(channel(notifier));
                }
                Err(e) => fail(&at, e),
            }
        }
        (thresholds, alerting.build())
    }
}

impl BuiltinAlertsConfig {
    /// The settings over the defaults, each runbook into `runbooks`; a key an alert does not
    /// take goes to `fail`.
    fn build(
        &self,
        runbooks: &mut Runbooks,
        fail: &mut impl FnMut(&str, InvalidConfig),
    ) -> BuiltinAlerts {
        let mut builtins = BuiltinAlerts::default();
        for (key, name, config, alert, waits) in [
            (
                "runFailed",
                RUN_FAILED,
                &self.run_failed,
                &mut builtins.run_failed,
                None,
            ),
            (
                "runLost",
                RUN_LOST,
                &self.run_lost,
                &mut builtins.run_lost,
                None,
            ),
            (
                "runStuck",
                RUN_STUCK,
                &self.run_stuck,
                &mut builtins.run_stuck,
                Some("after"),
            ),
            (
                "checkDown",
                CHECK_DOWN,
                &self.check_down,
                &mut builtins.check_down,
                Some("for"),
            ),
        ] {
            let at = format!("alerts.builtin.{key}");
            for (given, wait) in [(config.after, "after"), (config.for_, "for")] {
                match (given, waits) {
                    (None, _) => {}
                    (Some(after), Some(takes)) if takes == wait => {
                        if after.is_zero() {
                            fail(&at, InvalidConfig::new(wait, "must be more than 0"));
                        } else {
                            alert.after = after;
                        }
                    }
                    (Some(_), _) => fail(
                        &at,
                        InvalidConfig::new(
                            wait,
                            match waits {
                                Some(takes) => {
                                    format!("`{name}` waits with `{takes}`, not `{wait}`")
                                }
                                None => format!("`{name}` fires at once: it takes no `{wait}`"),
                            },
                        ),
                    ),
                }
            }
            alert.enabled = config.enabled.unwrap_or(true);
            if let Some(severity) = config.severity {
                alert.severity = severity;
            }
            if let Some(runbook) = &config.runbook {
                runbooks
                    .by_name
                    .insert(name.into(), runbook.as_str().into());
            }
        }
        builtins
    }
}

impl<C: BuildCheck> HealthMonitorConfig<C> {
    /// The monitor's builder with its settings and checks; problems go to `fail`.
    fn builder(&self, fail: &mut impl FnMut(InvalidConfig)) -> HealthMonitorBuilder {
        let mut monitor = HealthMonitor::builder();
        if let Some(interval) = self.check_interval {
            monitor = monitor.check_interval(interval);
        }
        let thresholds = self.thresholds.unwrap_or_default();
        monitor = monitor.thresholds(
            thresholds
                .consecutive_failures
                .or(self.consecutive_failures)
                .unwrap_or(3),
            thresholds
                .consecutive_successes
                .or(self.consecutive_successes)
                .unwrap_or(5),
        );
        for (i, check) in self.checks.iter().enumerate() {
            match check.build() {
                Ok(spec) => monitor = monitor.check(spec),
                Err(e) => fail(e.within(format!("checks[{i}]"))),
            }
        }
        monitor
    }
}
