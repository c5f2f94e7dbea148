//! The AutoHealer: matches strategies against failures and stage state, and acts.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::action::{Action, ActionContext, Restore};
use super::strategy::{HealingStrategy, Mode, StrategyOverride};
use super::trigger::{TriggerContext, TriggerMemory};
use crate::BoxFuture;
use crate::alert::{Alert, Notifier};
use crate::clock::{Clock, TokioClock};
use crate::error::{InvalidConfig, Severity};
use crate::event::{
    ActionKind, EventKind, HandlerKind, HealingRecord, Outcome, RunId, TriggerMatch,
};
use crate::health::{CheckStatus, HealthMonitor};
use crate::metrics::MetricsCollector;
use crate::pipeline::{Failure, PipelineBuilder, Remedy, RunScope, Supervisor};
use crate::resilience::{BreakerSettings, Rate, RetryPolicy};

/// The global healing budget: at most `max_actions` actions per sliding `window`, across all
/// strategies. It stops healing storms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_actions: u32,
    pub window: Duration,
}

/// How often the healer evaluates state triggers while a stage runs, unless told otherwise.
pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(1);
/// How many records the in-memory history keeps, unless told otherwise.
pub const DEFAULT_HISTORY_CAPACITY: usize = 10_000;

/// The seed's `AutoHealer`: strategies plus the global `retryPolicy` and `circuitBreaker`.
///
/// It is a [`Supervisor`]: give it to a pipeline and every failed attempt is matched against
/// the strategies. While a run goes on it also evaluates the state triggers (metrics, health,
/// timeout, anomaly, custom) of the running stages every evaluation interval and applies side
/// actions (scale, throttle, circuit-break, notify) and decisive ones (restart, rollback,
/// failover, custom) through the stages' controls.
///
/// Matching: strategies whose triggers match, that are enabled and out of `cooldown` for the
/// stage, act in descending `priority` (ties in declaration order). The first decisive action
/// applied decides the failed work's fate; lower decisive matches are recorded `superseded`.
/// Side actions of every match run. A retry strategy whose attempts are spent is recorded
/// `failed` and the error is dispatched again as *exhausted*, so other strategies (and error
/// triggers with `exhausted(true)`) take over. With healing disabled, or for a dry-run strategy,
/// matches are recorded `would-have` and nothing acts; cooldowns and the budget are applied as if
/// they had acted, so a dry run shows exactly what the configuration would do.
///
/// ```
/// use std::time::Duration;
/// use self_healing::healing::{Action, AutoHealer, HealingStrategy, Trigger};
/// use self_healing::resilience::{Backoff, RetryPolicy};
///
/// // The seed's AutoHealer example.
/// let healer = AutoHealer::builder()
///     .strategy(
///         HealingStrategy::new(
///             "retry-transient-errors",
///             Action::retry(
///                 RetryPolicy::builder()
///                     .max_attempts(3)
///                     .backoff(Backoff::Exponential)
///                     .initial_delay(Duration::from_millis(1000))
///                     .build()?,
///             ),
///         )
///         .trigger(Trigger::error().pattern_str("ECONNRESET|ETIMEDOUT")?),
///     )
///     .strategy(
///         HealingStrategy::new("rollback-on-failure", Action::Rollback)
///             .trigger(Trigger::threshold("errorRate", 0.1))
///             .cooldown(Duration::from_millis(300_000)),
///     )
///     .build()?;
/// assert_eq!(healer.strategies().len(), 2);
/// # Ok::<(), self_healing::InvalidConfig>(())
/// ```
#[derive(Clone)]
pub struct AutoHealer {
    inner: Arc<Inner>,
}

struct Inner {
    strategies: RwLock<Vec<Arc<HealingStrategy>>>,
    retry: RetryPolicy,
    breaker: Option<BreakerSettings>,
    budget: Option<Budget>,
    notifiers: Vec<Arc<dyn Notifier>>,
    enabled: AtomicBool,
    interval: Duration,
    history_capacity: usize,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    history: Mutex<VecDeque<HealingRecord>>,
    rng: Mutex<fastrand::Rng>,
    /// The runs being healed now; one healer may serve several pipelines at once.
    attached: Mutex<HashMap<RunId, Attached>>,
    /// The monitors whose checks `health-check` triggers read.
    monitors: RwLock<Vec<HealthMonitor>>,
}

struct Attached {
    scope: RunScope,
    stop: CancellationToken,
}

/// (run, strategy, trigger index, stage).
type MemoryKey = (Option<RunId>, Arc<str>, usize, Arc<str>);

#[derive(Default)]
struct State {
    /// (strategy, stage) → end of its cooldown.
    cooldowns: HashMap<(Arc<str>, Arc<str>), Instant>,
    /// When each action inside the budget window was taken.
    spent: VecDeque<Instant>,
    /// Whether the budget-spent alert went out for the current exhaustion.
    budget_alerted: bool,
    /// What each trigger remembers per run and stage.
    memory: HashMap<MemoryKey, TriggerMemory>,
    /// Running stages of each run and since when (reset on restart).
    running: Vec<(RunId, Arc<str>, Instant)>,
    restarts: HashMap<(RunId, Arc<str>), u32>,
    /// Throttles to lift once their strategy no longer matches the stage.
    throttled: Vec<(Arc<str>, Arc<str>, Option<Rate>)>,
}

/// A strategy that matched, with the trigger that did.
struct Match {
    strategy: Arc<HealingStrategy>,
    trigger: TriggerMatch,
}

/// Whether a matched strategy may act now.
enum Gate {
    Act,
    DryRun,
    Skip(Outcome, String),
}

/// What a decisive action did.
struct Applied {
    outcome: Outcome,
    detail: String,
    remedy: Option<Remedy>,
    /// A retry strategy whose attempts are spent: the error goes round again as exhausted.
    exhausted: bool,
}

impl Applied {
    fn failed(detail: impl Into<String>) -> Self {
        Applied {
            outcome: Outcome::Failed,
            detail: detail.into(),
            remedy: None,
            exhausted: false,
        }
    }

    fn succeeded(detail: impl Into<String>, remedy: Option<Remedy>) -> Self {
        Applied {
            outcome: Outcome::Succeeded,
            detail: detail.into(),
            remedy,
            exhausted: false,
        }
    }
}

/// What is being healed: a stage, and the failed attempt if that is why.
struct Subject<'a> {
    run: Option<RunId>,
    stage: Arc<str>,
    item: Option<Arc<str>>,
    failure: Option<&'a Failure<'a>>,
}

impl AutoHealer {
    pub fn builder() -> AutoHealerBuilder {
        AutoHealerBuilder {
            strategies: Vec::new(),
            retry: RetryPolicy::default(),
            breaker: None,
            budget: None,
            notifiers: Vec::new(),
            enabled: true,
            interval: DEFAULT_EVALUATION_INTERVAL,
            history_capacity: DEFAULT_HISTORY_CAPACITY,
            seed: None,
        }
    }

    /// The global `retryPolicy`: what `retry` strategies without a policy of their own use.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The global `circuitBreaker` settings, if configured.
    pub fn circuit_breaker(&self) -> Option<BreakerSettings> {
        self.inner.breaker
    }

    pub fn strategies(&self) -> Vec<Arc<HealingStrategy>> {
        self.inner
            .strategies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Acquire)
    }

    /// Disabled means manual mode: matches are recorded `would-have` and nothing acts.
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Release);
    }

    /// Changes a strategy's settings while pipelines run.
    pub fn configure(
        &self,
        strategy: &str,
        changes: &StrategyOverride,
    ) -> Result<(), InvalidConfig> {
        let mut strategies = self
            .inner
            .strategies
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let slot = strategies
            .iter_mut()
            .find(|s| &*s.name == strategy)
            .ok_or_else(|| {
                InvalidConfig::new("strategy", format!("no strategy is named `{strategy}`"))
            })?;
        let mut updated = HealingStrategy::clone(slot);
        if let Some(max_attempts) = changes.max_attempts {
            let attempts = std::num::NonZeroU32::new(max_attempts)
                .ok_or_else(|| InvalidConfig::new("maxAttempts", "must be at least 1"))?;
            match &mut updated.action {
                Action::Retry(policy) => {
                    let base = policy.take().unwrap_or_else(|| self.inner.retry.clone());
                    *policy = Some(base.with_max_attempts(attempts));
                }
                other => {
                    return Err(InvalidConfig::new(
                        "maxAttempts",
                        format!("`{strategy}` acts with {}, not retry", other.kind()),
                    ));
                }
            }
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
        *slot = Arc::new(updated);
        Ok(())
    }

    /// Every decision so far, oldest first (the newest `historyCapacity` of them).
    pub fn history(&self) -> Vec<HealingRecord> {
        self.inner
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Heals the pipeline `builder` makes: the healer becomes its supervisor, and the
    /// healer's global `retryPolicy` and `circuitBreaker` its defaults.
    pub fn install<C: Send + Sync + 'static>(
        &self,
        builder: PipelineBuilder<C>,
    ) -> PipelineBuilder<C> {
        builder.supervisor(self.clone())
    }

    /// Reads `monitor`'s checks for `health-check` triggers and [`TriggerContext::health`]. The
    /// monitor stays the one source of their status.
    pub fn watch(&self, monitor: &HealthMonitor) {
        self.inner
            .monitors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(monitor.clone());
    }

    fn health(&self) -> Vec<CheckStatus> {
        self.inner
            .monitors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(HealthMonitor::statuses)
            .collect()
    }

    /// Evaluates the state triggers of every running stage now and acts on what matches. The
    /// healer does this by itself every evaluation interval during a run.
    pub async fn evaluate(&self) {
        let scopes: Vec<RunScope> = self
            .inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|a| a.scope.clone())
            .collect();
        for scope in scopes {
            self.evaluate_run(&scope).await;
        }
    }

    async fn evaluate_run(&self, scope: &RunScope) {
        let running: Vec<Arc<str>> = self
            .lock()
            .running
            .iter()
            .filter(|(run, _, _)| *run == scope.run)
            .map(|(_, s, _)| Arc::clone(s))
            .collect();
        for stage in running {
            self.heal(
                Subject {
                    run: Some(scope.run.clone()),
                    stage,
                    item: None,
                    failure: None,
                },
                Some(scope),
            )
            .await;
        }
    }

    fn scope(&self, run: &RunId) -> Option<RunScope> {
        self.inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run)
            .map(|a| a.scope.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The strategies matching `subject`, highest priority first (ties in declaration order).
    fn matches(
        &self,
        subject: &Subject<'_>,
        exhausted: bool,
        metrics: &MetricsCollector,
    ) -> Vec<Match> {
        let strategies = self.strategies();
        let health = self.health();
        let now = Instant::now();
        let mut state = self.lock();
        let State {
            memory, running, ..
        } = &mut *state;
        let ctx = TriggerContext {
            stage: &subject.stage,
            error: subject.failure.map(|f| f.error),
            exhausted,
            metrics,
            running_for: running
                .iter()
                .find(|(run, s, _)| Some(run) == subject.run.as_ref() && *s == subject.stage)
                .map(|(_, _, since)| now.saturating_duration_since(*since)),
            health: &health,
            now,
        };
        let on_tick = subject.failure.is_none();
        let mut found = Vec::new();
        for strategy in strategies.into_iter().filter(|s| s.enabled) {
            // Retry needs failed work; on the tick there is none.
            if on_tick && matches!(strategy.action, Action::Retry(_)) {
                continue;
            }
            for (index, trigger) in strategy.triggers.iter().enumerate() {
                let key = (
                    subject.run.clone(),
                    Arc::clone(&strategy.name),
                    index,
                    Arc::clone(&subject.stage),
                );
                let memory = memory.entry(key).or_default();
                if let Some(observed) = trigger.evaluate(&ctx, memory) {
                    found.push(Match {
                        trigger: TriggerMatch {
                            kind: trigger.kind(),
                            index,
                            observed: observed.value,
                            description: observed.description,
                        },
                        strategy: Arc::clone(&strategy),
                    });
                    break;
                }
            }
        }
        found.sort_by_key(|m| Reverse(m.strategy.priority));
        found
    }

    /// Cooldown, budget and mode, in that order; starts the cooldown and spends the budget
    /// when the strategy may act (or would have).
    fn gate(&self, strategy: &HealingStrategy, stage: &Arc<str>, scope: Option<&RunScope>) -> Gate {
        let now = Instant::now();
        let mut state = self.lock();
        let key = (Arc::clone(&strategy.name), Arc::clone(stage));
        if let Some(until) = state.cooldowns.get(&key)
            && now < *until
        {
            return Gate::Skip(
                Outcome::SkippedCooldown,
                format!("cooling down for another {:.0?}", *until - now),
            );
        }
        if let Some(budget) = self.inner.budget {
            while state
                .spent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= budget.window)
            {
                state.spent.pop_front();
            }
            if state.spent.len() >= budget.max_actions as usize {
                let first_skip = !std::mem::replace(&mut state.budget_alerted, true);
                drop(state);
                if first_skip {
                    self.budget_alert(strategy, stage, budget, scope);
                }
                return Gate::Skip(
                    Outcome::SkippedBudget,
                    format!(
                        "{} action(s) already taken in the last {:?}",
                        budget.max_actions, budget.window
                    ),
                );
            }
            state.spent.push_back(now);
            state.budget_alerted = false;
        }
        if !strategy.cooldown.is_zero() {
            state.cooldowns.insert(key, now + strategy.cooldown);
        }
        if !self.is_enabled() || strategy.mode == Mode::DryRun {
            Gate::DryRun
        } else {
            Gate::Act
        }
    }

    /// Matches, gates and acts for one subject; returns the remedy for a failed attempt.
    async fn heal(&self, subject: Subject<'_>, scope: Option<&RunScope>) -> Remedy {
        let fallback;
        let metrics = match scope {
            Some(scope) => &scope.metrics,
            None => {
                fallback = MetricsCollector::default();
                &fallback
            }
        };
        let mut records = Vec::new();
        let mut processed: HashSet<Arc<str>> = HashSet::new();
        let mut exhausted = false;
        let mut decided: Option<Remedy> = None;
        let mut taken = false;
        let mut matched_now: HashSet<Arc<str>> = HashSet::new();
        'dispatch: loop {
            let matches: Vec<Match> = self
                .matches(&subject, exhausted, metrics)
                .into_iter()
                .filter(|m| !processed.contains(&m.strategy.name))
                .filter(|m| !(exhausted && matches!(m.strategy.action, Action::Retry(_))))
                .collect();
            for m in matches {
                processed.insert(Arc::clone(&m.strategy.name));
                matched_now.insert(Arc::clone(&m.strategy.name));
                let kind = m.strategy.action.kind();
                let started = Instant::now();
                let mut record = |outcome: Outcome, detail: String| {
                    records.push(self.record(
                        &subject,
                        scope,
                        &m,
                        outcome,
                        detail,
                        started.elapsed(),
                    ));
                };
                if kind.is_decisive() && taken {
                    record(
                        Outcome::Superseded,
                        "a higher-priority action decided".into(),
                    );
                    continue;
                }
                match self.gate(&m.strategy, &subject.stage, scope) {
                    Gate::Skip(outcome, detail) => {
                        record(outcome, detail);
                        continue;
                    }
                    Gate::DryRun => {
                        taken |= kind.is_decisive();
                        record(Outcome::WouldHave, format!("would have applied {kind}"));
                        continue;
                    }
                    Gate::Act => {}
                }
                if !kind.is_decisive() {
                    let (outcome, detail) = self.side_action(&m, &subject, scope).await;
                    record(outcome, detail);
                    continue;
                }
                let applied = self.decisive_action(&m, &subject, scope).await;
                if applied.outcome == Outcome::Succeeded {
                    taken = true;
                    decided = applied.remedy;
                }
                record(applied.outcome, applied.detail);
                if applied.exhausted {
                    exhausted = true;
                    continue 'dispatch;
                }
            }
            break;
        }
        if subject.failure.is_none() {
            self.restore_throttles(&subject, &matched_now, scope);
        }
        self.flush(records, scope);
        decided.unwrap_or(Remedy::Fail)
    }

    fn policy_of<'a>(&'a self, strategy: &'a HealingStrategy) -> &'a RetryPolicy {
        match &strategy.action {
            Action::Retry(Some(policy)) => policy,
            _ => &self.inner.retry,
        }
    }

    /// Applies retry, rollback, restart, failover or custom. For a failed attempt the remedy
    /// goes back to the pipeline; on the tick, restart and rollback are requested through the
    /// stage's controls.
    async fn decisive_action(
        &self,
        m: &Match,
        subject: &Subject<'_>,
        scope: Option<&RunScope>,
    ) -> Applied {
        let control = scope.and_then(|s| s.control(&subject.stage)).cloned();
        let reason = format!("strategy `{}`: {}", m.strategy.name, m.trigger.description);
        match (&m.strategy.action, subject.failure) {
            (Action::Retry(_), Some(failure)) => {
                let policy = self.policy_of(&m.strategy);
                if failure.attempt >= policy.max_attempts() {
                    Applied {
                        exhausted: true,
                        ..Applied::failed(format!(
                            "retries exhausted after {} attempt(s)",
                            failure.attempt
                        ))
                    }
                } else if !policy.is_retryable(failure.error) {
                    Applied::failed("the error is not retryable by the policy")
                } else {
                    let after = {
                        let mut rng = self.inner.rng.lock().unwrap_or_else(|e| e.into_inner());
                        policy.delay(failure.attempt, &mut rng)
                    };
                    Applied::succeeded(
                        format!(
                            "attempt {} of {} in {after:.0?}",
                            failure.attempt + 1,
                            policy.max_attempts()
                        ),
                        Some(Remedy::Retry { after }),
                    )
                }
            }
            (Action::Retry(_), None) => Applied::failed("no failed work to retry"),
            (Action::Rollback, Some(_)) => {
                Applied::succeeded("rolling the run back", Some(Remedy::Rollback))
            }
            (Action::Rollback, None) => match control {
                Some(control) => {
                    control.request_rollback(reason);
                    Applied::succeeded("rollback requested", None)
                }
                None => Applied::failed("the stage is not running"),
            },
            (Action::Restart(restart), failure) => {
                let restarts = match failure {
                    Some(f) => f.restarts,
                    None => subject.run.as_ref().map_or(0, |run| {
                        let key = (run.clone(), Arc::clone(&subject.stage));
                        self.lock().restarts.get(&key).copied().unwrap_or(0)
                    }),
                };
                if let Some(max) = restart.max_restarts
                    && restarts >= max
                {
                    return Applied::failed(format!("restart limit of {max} reached"));
                }
                match (failure, control) {
                    (Some(_), _) => {
                        Applied::succeeded("restarting the stage", Some(Remedy::Restart))
                    }
                    (None, Some(control)) => {
                        control.request_restart(reason);
                        Applied::succeeded("restart requested", None)
                    }
                    (None, None) => Applied::failed("the stage is not running"),
                }
            }
            (Action::Failover, Some(failure)) => {
                if !failure.can_fail_over {
                    Applied::failed("the stage has no failover handler")
                } else if failure.handler == HandlerKind::Failover {
                    Applied::failed("the failover handler failed too")
                } else {
                    Applied::succeeded("switching to the failover handler", Some(Remedy::Failover))
                }
            }
            (Action::Failover, None) => match control {
                Some(control) if control.set_failed_over(true) => {
                    self.applied(
                        scope,
                        subject,
                        ActionKind::Failover,
                        "switched to the failover handler",
                    );
                    Applied::succeeded("switched to the failover handler", None)
                }
                Some(control) if control.can_fail_over() => {
                    Applied::failed("already on the failover handler")
                }
                _ => Applied::failed("the stage has no failover handler"),
            },
            (Action::Custom(custom), failure) => {
                let ctx = ActionContext {
                    run: subject.run.clone(),
                    stage: Arc::clone(&subject.stage),
                    item: subject.item.clone(),
                    strategy: Arc::clone(&m.strategy.name),
                    error: failure.map(|f| f.error.clone()),
                    metrics: scope.map(|s| s.metrics.clone()).unwrap_or_default(),
                    control,
                };
                match (custom.handler)(ctx).await {
                    Ok(remedy) => {
                        if failure.is_none() {
                            self.applied(scope, subject, ActionKind::Custom, "custom remedy ran");
                        }
                        Applied::succeeded(
                            format!("custom remedy answered {remedy:?}"),
                            Some(remedy),
                        )
                    }
                    Err(error) => Applied::failed(format!("custom remedy failed: {error}")),
                }
            }
            (side, _) => unreachable!("{:?} is not decisive", side.kind()),
        }
    }

    /// Applies scale, circuit-break, throttle or notify.
    async fn side_action(
        &self,
        m: &Match,
        subject: &Subject<'_>,
        scope: Option<&RunScope>,
    ) -> (Outcome, String) {
        let Some(control) = scope.and_then(|s| s.control(&subject.stage)).cloned() else {
            if let Action::Notify(notify) = &m.strategy.action {
                return self.notify(m, subject, scope, notify);
            }
            return (Outcome::Failed, "the stage is not running".into());
        };
        let kind = m.strategy.action.kind();
        let (outcome, detail) = match &m.strategy.action {
            Action::Scale(scale) => {
                let from = control.concurrency();
                let to = scale.target(from);
                if to == from {
                    return (
                        Outcome::Failed,
                        format!("concurrency already at its bound of {from}"),
                    );
                }
                if let Some(scaler) = &scale.scaler
                    && let Err(error) = scaler.scale(&subject.stage, from, to).await
                {
                    return (Outcome::Failed, format!("external scaler failed: {error}"));
                }
                match control.set_concurrency(to) {
                    Ok(_) => (Outcome::Succeeded, format!("concurrency {from} → {to}")),
                    Err(error) => (Outcome::Failed, error.to_string()),
                }
            }
            Action::CircuitBreak(settings) => {
                let breaker = control.breaker();
                let mut current = breaker.settings();
                current.break_duration = settings.break_duration;
                current.half_open_requests = settings.half_open_requests;
                current.success_threshold = settings
                    .success_threshold
                    .unwrap_or(settings.half_open_requests);
                if let Err(error) = breaker.set_settings(current) {
                    return (Outcome::Failed, error.to_string());
                }
                breaker.trip(Some(settings.break_duration));
                (
                    Outcome::Succeeded,
                    format!(
                        "breaker open for {:?}, then {} probe(s)",
                        settings.break_duration, settings.half_open_requests
                    ),
                )
            }
            Action::Throttle(throttle) => {
                let previous = control.rate();
                if previous == Some(throttle.rate) {
                    return (
                        Outcome::Failed,
                        format!("already throttled at {}/s", throttle.rate.per_second()),
                    );
                }
                control.set_rate(Some(throttle.rate));
                match throttle.restore {
                    Restore::Never => {}
                    Restore::After(after) => {
                        let (control, rate) = (Arc::clone(&control), throttle.rate);
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            if control.rate() == Some(rate) {
                                control.set_rate(previous);
                            }
                        });
                    }
                    Restore::WhenHealthy => {
                        let mut state = self.lock();
                        let pending = state
                            .throttled
                            .iter()
                            .any(|(s, st, _)| *s == m.strategy.name && *st == subject.stage);
                        if !pending {
                            state.throttled.push((
                                Arc::clone(&m.strategy.name),
                                Arc::clone(&subject.stage),
                                previous,
                            ));
                        }
                    }
                }
                (
                    Outcome::Succeeded,
                    format!(
                        "rate capped at {}/s (burst {})",
                        throttle.rate.per_second(),
                        throttle.rate.burst()
                    ),
                )
            }
            Action::Notify(notify) => return self.notify(m, subject, scope, notify),
            other => unreachable!("{:?} is decisive", other.kind()),
        };
        if outcome == Outcome::Succeeded {
            self.applied(scope, subject, kind, &detail);
        }
        (outcome, detail)
    }

    fn notify(
        &self,
        m: &Match,
        subject: &Subject<'_>,
        scope: Option<&RunScope>,
        notify: &super::action::NotifyAction,
    ) -> (Outcome, String) {
        let project: Arc<str> =
            scope.map_or_else(|| Arc::from("pipeline"), |s| Arc::clone(&s.pipeline));
        let message = notify.message.clone().unwrap_or_else(|| {
            format!(
                "{} on stage `{}`: {}",
                m.strategy.name, subject.stage, m.trigger.description
            )
        });
        let alert = Alert {
            severity: notify.severity,
            title: format!("{project}: {}", m.strategy.name),
            message,
            dedup_key: format!("{project}/{}/{}", subject.stage, m.strategy.name),
            project,
            stage: Some(Arc::clone(&subject.stage)),
            strategy: Some(Arc::clone(&m.strategy.name)),
            at: self.now_wall(scope),
            resolved: false,
        };
        let sent = self.send(alert, scope);
        if sent == 0 {
            return (
                Outcome::Failed,
                format!("no alert channel takes severity {}", notify.severity),
            );
        }
        let detail = format!("alert sent to {sent} channel(s)");
        self.applied(scope, subject, ActionKind::Notify, &detail);
        (Outcome::Succeeded, detail)
    }

    /// Hands an alert to every channel that takes its severity, in the background, with three
    /// tries per channel; a channel that still fails is published as `alert-failed`.
    fn send(&self, alert: Alert, scope: Option<&RunScope>) -> usize {
        let alert = Arc::new(alert);
        let mut sent = 0;
        for notifier in &self.inner.notifiers {
            if alert.severity < notifier.min_severity() {
                continue;
            }
            sent += 1;
            let (notifier, alert) = (Arc::clone(notifier), Arc::clone(&alert));
            let bus = scope.map(|s| (s.bus.clone(), s.run.clone()));
            tokio::spawn(async move {
                let mut wait = Duration::from_secs(1);
                let mut last_error = None;
                for _ in 0..3 {
                    match notifier.notify(&alert).await {
                        Ok(()) => return,
                        Err(error) => last_error = Some(error),
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                if let (Some((bus, run)), Some(error)) = (bus, last_error) {
                    bus.publish(
                        Some(&run),
                        EventKind::AlertFailed {
                            channel: notifier.name().into(),
                            dedup_key: alert.dedup_key.clone(),
                            error: error.to_string(),
                        },
                    );
                }
            });
        }
        sent
    }

    fn budget_alert(
        &self,
        strategy: &HealingStrategy,
        stage: &Arc<str>,
        budget: Budget,
        scope: Option<&RunScope>,
    ) {
        let project: Arc<str> =
            scope.map_or_else(|| Arc::from("pipeline"), |s| Arc::clone(&s.pipeline));
        let alert = Alert {
            severity: Severity::Critical,
            title: format!("{project}: healing budget spent"),
            message: format!(
                "{} healing action(s) in {:?}: further actions are skipped until the window frees up \
                 (first skipped: `{}` on stage `{stage}`)",
                budget.max_actions, budget.window, strategy.name
            ),
            dedup_key: format!("{project}/healing-budget"),
            project,
            stage: Some(Arc::clone(stage)),
            strategy: None,
            at: self.now_wall(scope),
            resolved: false,
        };
        self.send(alert, scope);
    }

    fn restore_throttles(
        &self,
        subject: &Subject<'_>,
        matched: &HashSet<Arc<str>>,
        scope: Option<&RunScope>,
    ) {
        let Some(control) = scope.and_then(|s| s.control(&subject.stage)) else {
            return;
        };
        let mut state = self.lock();
        state.throttled.retain(|(strategy, stage, previous)| {
            if *stage != subject.stage || matched.contains(strategy) {
                return true;
            }
            control.set_rate(*previous);
            false
        });
    }

    /// Publishes `healing-applied` for an action the healer applied itself (the pipeline
    /// publishes it for the remedies it carries out).
    fn applied(
        &self,
        scope: Option<&RunScope>,
        subject: &Subject<'_>,
        action: ActionKind,
        detail: &str,
    ) {
        if let Some(scope) = scope {
            scope.bus.publish(
                Some(&scope.run),
                EventKind::HealingApplied {
                    stage: Arc::clone(&subject.stage),
                    item: subject.item.clone(),
                    action,
                    detail: detail.to_owned(),
                },
            );
        }
    }

    fn record(
        &self,
        subject: &Subject<'_>,
        scope: Option<&RunScope>,
        m: &Match,
        outcome: Outcome,
        detail: String,
        duration: Duration,
    ) -> HealingRecord {
        HealingRecord {
            at: self.now_wall(scope),
            run: subject.run.clone(),
            stage: Some(Arc::clone(&subject.stage)),
            item: subject.item.clone(),
            strategy: Arc::clone(&m.strategy.name),
            trigger: m.trigger.clone(),
            action: m.strategy.action.kind(),
            outcome,
            detail,
            duration,
        }
    }

    /// Keeps the records and publishes each as `healing-decision`.
    fn flush(&self, records: Vec<HealingRecord>, scope: Option<&RunScope>) {
        if records.is_empty() {
            return;
        }
        {
            let mut history = self.inner.history.lock().unwrap_or_else(|e| e.into_inner());
            for record in &records {
                if history.len() == self.inner.history_capacity {
                    history.pop_front();
                }
                history.push_back(record.clone());
            }
        }
        if let Some(scope) = scope {
            for record in records {
                scope
                    .bus
                    .publish(Some(&scope.run), EventKind::HealingDecision { record });
            }
        }
    }

    fn now_wall(&self, scope: Option<&RunScope>) -> std::time::SystemTime {
        match scope {
            Some(scope) => scope.bus.clock().wall(),
            None => self.inner.clock.wall(),
        }
    }

    /// The events [`observe`](Self::observe) acts on: stages starting, ending and restarting.
    fn watches(kind: &EventKind) -> bool {
        matches!(
            kind,
            EventKind::StageStarted { .. }
                | EventKind::StageSucceeded { .. }
                | EventKind::StageFailed { .. }
                | EventKind::HealingApplied {
                    action: ActionKind::Restart,
                    ..
                }
        )
    }

    /// Follows a run's events: which stages run, since when, and their restarts.
    fn observe(&self, run: &RunId, kind: &EventKind) {
        let mut state = self.lock();
        match kind {
            EventKind::StageStarted { stage } => {
                state
                    .running
                    .push((run.clone(), Arc::clone(stage), Instant::now()))
            }
            EventKind::StageSucceeded { stage, .. } | EventKind::StageFailed { stage, .. } => {
                state.running.retain(|(r, s, _)| !(r == run && s == stage))
            }
            EventKind::HealingApplied {
                stage,
                action: ActionKind::Restart,
                ..
            } => {
                *state
                    .restarts
                    .entry((run.clone(), Arc::clone(stage)))
                    .or_default() += 1;
                if let Some((_, _, since)) = state
                    .running
                    .iter_mut()
                    .find(|(r, s, _)| r == run && s == stage)
                {
                    *since = Instant::now();
                }
            }
            _ => {}
        }
    }

    /// Forgets what it kept for a run that ended.
    fn forget(&self, run: &RunId) {
        let mut state = self.lock();
        state.running.retain(|(r, _, _)| r != run);
        state.restarts.retain(|(r, _), _| r != run);
        state
            .memory
            .retain(|(r, _, _, _), _| r.as_ref() != Some(run));
    }
}

impl Supervisor for AutoHealer {
    fn on_failure<'a>(&'a self, failure: &'a Failure<'a>) -> BoxFuture<'a, Remedy> {
        Box::pin(async move {
            let scope = self.scope(failure.run);
            let subject = Subject {
                run: Some(failure.run.clone()),
                stage: Arc::from(failure.stage),
                item: failure.item.map(Arc::from),
                failure: Some(failure),
            };
            self.heal(subject, scope.as_ref()).await
        })
    }

    fn run_started(&self, scope: &RunScope) {
        let stop = CancellationToken::new();
        let previous = self
            .inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                scope.run.clone(),
                Attached {
                    scope: scope.clone(),
                    stop: stop.clone(),
                },
            );
        if let Some(previous) = previous {
            previous.stop.cancel();
        }
        self.forget(&scope.run);
        let mut events = scope.bus.subscribe_to(Self::watches);
        let (healer, scope) = (self.clone(), scope.clone());
        let interval = self.inner.interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let ours = |event: &crate::event::Event| event.run.as_ref() == Some(&scope.run);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    Some(event) = events.recv() => if ours(&event) {
                        healer.observe(&scope.run, &event.kind);
                    },
                    _ = ticks.tick() => {
                        // Catch up on events first, so the tick sees the stages as they are.
                        while let Some(event) = events.try_recv() {
                            if ours(&event) {
                                healer.observe(&scope.run, &event.kind);
                            }
                        }
                        healer.evaluate_run(&scope).await;
                    }
                }
            }
        });
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        Some(self.inner.retry.clone())
    }

    fn circuit_breaker(&self) -> Option<BreakerSettings> {
        self.inner.breaker
    }

    fn run_finished(&self, run: &RunId) {
        let done = self
            .inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run);
        if let Some(done) = done {
            done.stop.cancel();
        }
        self.forget(run);
    }
}

impl std::fmt::Debug for AutoHealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoHealer")
            .field("strategies", &self.strategies().len())
            .field("enabled", &self.is_enabled())
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

/// Builds an [`AutoHealer`]; [`build`](Self::build) checks every strategy.
pub struct AutoHealerBuilder {
    strategies: Vec<HealingStrategy>,
    retry: RetryPolicy,
    breaker: Option<BreakerSettings>,
    budget: Option<Budget>,
    notifiers: Vec<Arc<dyn Notifier>>,
    enabled: bool,
    interval: Duration,
    history_capacity: usize,
    seed: Option<u64>,
}

impl AutoHealerBuilder {
    pub fn strategy(mut self, strategy: HealingStrategy) -> Self {
        self.strategies.push(strategy);
        self
    }

    /// The global `retryPolicy`.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The global `circuitBreaker`: every stage's breaker opens on its own after
    /// `failureThreshold` consecutive failures.
    pub fn circuit_breaker(mut self, settings: BreakerSettings) -> Self {
        self.breaker = Some(settings);
        self
    }

    pub fn budget(mut self, max_actions: u32, window: Duration) -> Self {
        self.budget = Some(Budget {
            max_actions,
            window,
        });
        self
    }

    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
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

    pub fn history_capacity(mut self, records: usize) -> Self {
        self.history_capacity = records;
        self
    }

    /// Seeds retry jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

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
        if let Some(settings) = &self.breaker {
            settings
                .validate()
                .map_err(|e| e.within("circuitBreaker"))?;
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
        Ok(AutoHealer {
            inner: Arc::new(Inner {
                strategies: RwLock::new(self.strategies.into_iter().map(Arc::new).collect()),
                retry: self.retry,
                breaker: self.breaker,
                budget: self.budget,
                notifiers: self.notifiers,
                enabled: AtomicBool::new(self.enabled),
                interval: self.interval,
                history_capacity: self.history_capacity,
                clock: Arc::new(TokioClock::new()),
                state: Mutex::new(State::default()),
                history: Mutex::new(VecDeque::new()),
                rng: Mutex::new(
                    self.seed
                        .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
                ),
                attached: Mutex::new(HashMap::new()),
                monitors: RwLock::new(Vec::new()),
            }),
        })
    }
}
