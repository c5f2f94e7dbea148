//! Building an [`AutoHealer`]: every setting is checked once, in
//! [`build`](AutoHealerBuilder::build), so a running healer never meets one that cannot work.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::holds::DEPENDS_ON;
use super::manual::MANUAL;
use super::matching::Memories;
use super::{AutoHealer, Inner, RETRY_POLICY};
use crate::alert::{Alerting, Notifier};
use crate::clock::TokioClock;
use crate::error::InvalidConfig;
use crate::healing::actions::RetryAction;
use crate::healing::gate::{Budget, Gate};
use crate::healing::strategy::HealingStrategy;
use crate::healing::thresholds::AlertThreshold;
use crate::healing::trigger::Trigger;
use crate::resilience::{BreakerSettings, RetryBudget, RetryBudgetSettings, RetryPolicy};

/// How often the healer evaluates state triggers while a stage runs, unless told otherwise.
pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(1);
/// How many records the in-memory history keeps, unless told otherwise.
pub const DEFAULT_HISTORY_CAPACITY: usize = 10_000;

impl AutoHealer {
    /// A builder with no strategies, the default retry policy, no global breaker, no budget, no
    /// alert channels, healing enabled, and the default interval and history capacity.
    pub fn builder() -> AutoHealerBuilder {
        AutoHealerBuilder {
            strategies: Vec::new(),
            retry: None,
            breaker: None,
            shared_breakers: Vec::new(),
            retry_budget: None,
            budget: None,
            notifiers: Vec::new(),
            alerting: None,
            thresholds: Vec::new(),
            enabled: true,
            interval: DEFAULT_EVALUATION_INTERVAL,
            history_capacity: DEFAULT_HISTORY_CAPACITY,
        }
    }
}

/// Builds an [`AutoHealer`]; [`build`](Self::build) checks every strategy.
pub struct AutoHealerBuilder {
    strategies: Vec<HealingStrategy>,
    retry: Option<RetryPolicy>,
    breaker: Option<BreakerSettings>,
    shared_breakers: Vec<(Arc<str>, BreakerSettings)>,
    retry_budget: Option<RetryBudgetSettings>,
    budget: Option<Budget>,
    notifiers: Vec<Arc<dyn Notifier>>,
    alerting: Option<Alerting>,
    thresholds: Vec<AlertThreshold>,
    enabled: bool,
    interval: Duration,
    history_capacity: usize,
}

impl std::fmt::Debug for AutoHealerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoHealerBuilder")
            .field("strategies", &self.strategies.len())
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("budget", &self.budget)
            .field("notifiers", &self.notifiers.len())
            .field("alerting", &self.alerting)
            .field("thresholds", &self.thresholds)
            .field("enabled", &self.enabled)
            .field("interval", &self.interval)
            .field("history_capacity", &self.history_capacity)
            .finish()
    }
}

impl AutoHealerBuilder {
    /// Adds a strategy; names must be unique, and `manual` is reserved.
    pub fn strategy(mut self, strategy: HealingStrategy) -> Self {
        self.strategies.push(strategy);
        self
    }

    /// The global `retryPolicy`: what stages without a policy of their own retry by, and
    /// what `retry` strategies without a policy of their own use. Given, it also retries its
    /// `retryableErrors` by itself, with no strategy needed (recorded under
    /// [`RETRY_POLICY`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The global `circuitBreaker`: every stage's breaker opens on its own after
    /// `failureThreshold` consecutive failures.
    pub fn circuit_breaker(mut self, settings: BreakerSettings) -> Self {
        self.breaker = Some(settings);
        self
    }

    /// A named breaker (`healing.breakers`) every stage naming it shares
    /// ([`EachStage::breaker`](crate::pipeline::EachStage::breaker)): one dependency called by
    /// several stages trips once for all of them.
    pub fn shared_breaker(mut self, name: impl Into<Arc<str>>, settings: BreakerSettings) -> Self {
        let name = name.into();
        self.shared_breakers.retain(|(n, _)| *n != name);
        self.shared_breakers.push((name, settings));
        self
    }

    /// The global retry budget: every retry (of every strategy, and of the retry policies)
    /// waits, if it must, until it fits in `settings`' share of recent first attempts. A retry
    /// strategy may have a budget of its own besides ([`RetryAction::budget`]).
    pub fn retry_budget(mut self, settings: RetryBudgetSettings) -> Self {
        self.retry_budget = Some(settings);
        self
    }

    /// The global healing budget: at most `max_actions` (at least 1) per sliding `window` (longer
    /// than zero), across all strategies. Default: no budget.
    pub fn budget(mut self, max_actions: u32, window: Duration) -> Self {
        self.budget = Some(Budget {
            max_actions,
            window,
        });
        self
    }

    /// Adds an alert channel, to an [`Alerting`] with the default rules and an in-memory
    /// outbox (give [`alerting`](Self::alerting) instead for other rules or a durable outbox).
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// The alerting `notify`, thresholds and healing alerts go through, with its own channels.
    pub fn alerting(mut self, alerting: Alerting) -> Self {
        self.alerting = Some(alerting);
        self
    }

    /// Adds a metric's alert levels (the seed's `alerts.thresholds`).
    pub fn threshold(mut self, threshold: AlertThreshold) -> Self {
        self.thresholds.push(threshold);
        self
    }

    /// Starts in manual mode when `false` (see [`AutoHealer::set_enabled`]).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// How often state triggers are evaluated while a stage runs (default 1 s).
    pub fn evaluation_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How many records the history keeps, at least 1 (default `DEFAULT_HISTORY_CAPACITY`); the
    /// oldest go first.
    pub fn history_capacity(mut self, records: usize) -> Self {
        self.history_capacity = records;
        self
    }

    /// The healer; the error names the first setting or strategy that cannot work.
    pub fn build(self) -> Result<AutoHealer, InvalidConfig> {
        for (i, strategy) in self.strategies.iter().enumerate() {
            strategy
                .validate()
                .map_err(|e| e.within(format!("strategies[{i}]")))?;
        }
        crate::error::unique_names(
            "strategies",
            "strategies",
            self.strategies.iter().map(|s| &*s.name),
        )?;
        for reserved in [MANUAL, RETRY_POLICY, DEPENDS_ON] {
            if self.strategies.iter().any(|s| &*s.name == reserved) {
                return Err(InvalidConfig::new(
                    "strategies",
                    format!("`{reserved}` is a name the healer records under itself"),
                ));
            }
        }
        if let Some(settings) = &self.breaker {
            settings
                .validate()
                .map_err(|e| e.within("circuitBreaker"))?;
        }
        for (name, settings) in &self.shared_breakers {
            settings
                .validate()
                .map_err(|e| e.within(format!("breakers.{name}")))?;
        }
        if let Some(budget) = &self.budget {
            if budget.max_actions == 0 {
                return Err(InvalidConfig::new(
                    "budget.maxActions",
                    "must be at least 1",
                ));
            }
            if budget.window.is_zero() {
                return Err(InvalidConfig::new(
                    "budget.window",
                    "must be longer than zero",
                ));
            }
        }
        if self.interval.is_zero() {
            return Err(InvalidConfig::new(
                "evaluationInterval",
                "must be longer than zero",
            ));
        }
        if self.history_capacity == 0 {
            return Err(InvalidConfig::new("historyCapacity", "must be at least 1"));
        }
        for (i, threshold) in self.thresholds.iter().enumerate() {
            threshold
                .validate()
                .map_err(|e| e.within(format!("alerts.thresholds[{i}]")))?;
        }
        let alerting = match (self.alerting, self.notifiers.is_empty()) {
            (Some(_), false) => {
                return Err(InvalidConfig::new(
                    "notifier",
                    "the Alerting given to `alerting` has its own channels: add them there",
                ));
            }
            (Some(alerting), true) => alerting,
            (None, _) => self
                .notifiers
                .into_iter()
                .fold(Alerting::builder(), |b, n| b.channel(n))
                .build(),
        };
        let strategies: Vec<Arc<HealingStrategy>> =
            self.strategies.into_iter().map(Arc::new).collect();
        let budgeted = strategies
            .iter()
            .filter(|s| s.action.retry_budget().is_some())
            .cloned()
            .collect();
        Ok(AutoHealer {
            inner: Arc::new(Inner {
                strategies: RwLock::new(strategies),
                budgeted,
                retry_configured: self.retry.is_some(),
                retry: self.retry.unwrap_or_default(),
                implicit_retry: Arc::new(
                    HealingStrategy::new(RETRY_POLICY, RetryAction::global())
                        .priority(i64::MIN)
                        .trigger(Trigger::error().retryable(true)),
                ),
                breaker: self.breaker,
                shared_breakers: self.shared_breakers,
                retry_budget: self
                    .retry_budget
                    .map(RetryBudget::new)
                    .transpose()
                    .map_err(|e| e.within("retryBudget"))?,
                alerts: alerting,
                thresholds: self.thresholds,
                thresholds_seen: Mutex::new(HashMap::new()),
                enabled: AtomicBool::new(self.enabled),
                interval: self.interval,
                history_capacity: self.history_capacity,
                clock: Arc::new(TokioClock::new()),
                gate: Mutex::new(Gate::new(self.budget)),
                memory: Memories::default(),
                history: Mutex::new(VecDeque::new()),
                attached: Mutex::new(HashMap::new()),
                monitors: RwLock::new(Vec::new()),
                gating: Mutex::new(()),
                adapted: Default::default(),
            }),
        })
    }
}
