//! The AutoHealer: matches strategies against failures and stage state, gates them, and acts.
//!
//! Its other parts have files of their own in this folder: `builder` (its settings, checked
//! once), `matching` (which strategies match, with what triggers remember), `holds` (`dependsOn`),
//! `manual` (operators' actions) and `adaptive` (installing adaptive concurrency). They share the
//! healer's state, which no other part of `healing` sees.

mod adaptive;
mod builder;
mod holds;
mod machinery;
mod manual;
mod matching;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actions::{Action, Applied, Effect, Subject};
use super::gate::{Admission, Budget, Gate};
use super::strategy::{HealingStrategy, Mode, StrategyOverride};
use super::thresholds::{self, AlertThreshold, Seen};
use crate::BoxFuture;
use crate::alert::{Alert, Alerting, WatchStart};
use crate::clock::Clock;
use crate::error::{InvalidConfig, Severity};
use crate::event::{ActionKind, EventKind, HealingRecord, Outcome, RunId};
use crate::health::{CheckStatus, HealthMonitor, HealthStatus};
use crate::metrics::MetricsCollector;
use crate::pipeline::{
    Failure, PipelineBuilder, Remedy, RunScope, StageChange, StageControl, Supervisor,
};
use crate::resilience::{BreakerSettings, RetryBudget, RetryPolicy};
pub use builder::{AutoHealerBuilder, DEFAULT_EVALUATION_INTERVAL, DEFAULT_HISTORY_CAPACITY};
pub use holds::DEPENDS_ON;
pub use machinery::ADAPTED_EVERY;
use machinery::Adapted;
pub use manual::MANUAL;
use matching::{Match, Matching, Memories, Target};

/// The strategy name under which a retry policy (a stage's own, or the healer's global
/// `retryPolicy`) retries its `retryableErrors` by itself, at the lowest priority, with no
/// strategy needed.
pub const RETRY_POLICY: &str = "retryPolicy";

/// The seed's `AutoHealer`: strategies plus the global `retryPolicy` and `circuitBreaker`.
///
/// It is a [`Supervisor`]: [`install`](Self::install) it on a pipeline's builder and every
/// failed attempt is matched against the strategies. While a run goes on it also evaluates the
/// state triggers (metrics, health, timeout, anomaly, custom) of the running stages every
/// evaluation interval and applies side actions (scale, throttle, circuit-break, notify) and
/// decisive ones (restart, rollback, failover, custom) through the stages' controls.
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
/// use self_healing::healing::{Action, AutoHealer, HealingStrategy, RollbackAction, Trigger};
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
///         HealingStrategy::new("rollback-on-failure", RollbackAction)
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

/// The healer's state, shared by its clones. Its fields are open to the rest of `healing`, whose
/// files beside this one are each a part of the healer (see the module's documentation).
struct Inner {
    strategies: RwLock<Vec<Arc<HealingStrategy>>>,
    retry: RetryPolicy,
    /// Whether a global `retryPolicy` was given: then it retries by itself.
    retry_configured: bool,
    /// The strategy under which a retry policy retries by itself ([`RETRY_POLICY`]): lowest
    /// priority, for errors the failing stage's policy (its own, else the global one) retries.
    implicit_retry: Arc<HealingStrategy>,
    breaker: Option<BreakerSettings>,
    /// Named breakers stages share.
    shared_breakers: Vec<(Arc<str>, BreakerSettings)>,
    /// The global retry budget: every retry, whoever decides it.
    retry_budget: Option<RetryBudget>,
    /// The strategies with a retry budget of their own, as built: an operator's override
    /// keeps a strategy's budget (one ledger) and its stages, so these count first attempts
    /// for it, without a look at every strategy on every attempt.
    budgeted: Vec<Arc<HealingStrategy>>,
    alerts: Alerting,
    thresholds: Vec<AlertThreshold>,
    /// What the thresholds last saw, per run.
    thresholds_seen: Mutex<HashMap<RunId, Seen>>,
    enabled: AtomicBool,
    interval: Duration,
    history_capacity: usize,
    clock: Arc<dyn Clock>,
    gate: Mutex<Gate>,
    /// What each trigger remembers per run and stage. Each memory has its own lock, so no
    /// healer-wide lock is held while triggers are evaluated.
    memory: Memories,
    history: Mutex<VecDeque<HealingRecord>>,
    /// The runs being healed now; one healer may serve several pipelines at once.
    attached: Mutex<HashMap<RunId, Attached>>,
    /// The monitors whose checks `health-check` triggers read.
    monitors: RwLock<Vec<HealthMonitor>>,
    /// Taken while stages are held or released (`dependsOn`).
    gating: Mutex<()>,
    /// The adaptive controller's moves not recorded yet.
    adapted: Adapted,
}

/// A run being healed, and how to stop evaluating it.
struct Attached {
    scope: RunScope,
    stop: CancellationToken,
}

impl AutoHealer {
    /// Heals the pipeline `builder` makes: the healer becomes its supervisor, and the
    /// healer's global `retryPolicy` and `circuitBreaker` its defaults.
    pub fn install<C: Send + Sync + 'static>(
        &self,
        builder: PipelineBuilder<C>,
    ) -> PipelineBuilder<C> {
        builder.supervisor(self.clone())
    }

    /// The global `retryPolicy`: what `retry` strategies without a policy of their own use.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The global `circuitBreaker` settings, if configured.
    pub fn circuit_breaker(&self) -> Option<BreakerSettings> {
        self.inner.breaker
    }

    /// The global healing budget, if configured.
    pub fn budget(&self) -> Option<Budget> {
        self.lock_gate().budget()
    }

    /// The metric levels it alerts at.
    pub fn thresholds(&self) -> &[AlertThreshold] {
        &self.inner.thresholds
    }

    /// The alerting `notify`, the thresholds, the budget alert and the healing alerts go
    /// through.
    pub fn alerts(&self) -> &Alerting {
        &self.inner.alerts
    }

    /// The strategies as they are now, operators' overrides included, in declaration order.
    pub fn strategies(&self) -> Vec<Arc<HealingStrategy>> {
        self.inner
            .strategies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// False in manual mode, when matches are only recorded.
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
        let Some(index) = strategies.iter().position(|s| &*s.name == strategy) else {
            return Err(InvalidConfig::new(
                "strategy",
                format!(
                    "no strategy is named `{strategy}`{}",
                    crate::error::did_you_mean(strategy, strategies.iter().map(|s| s.name()))
                ),
            ));
        };
        let slot = &mut strategies[index];
        *slot = Arc::new(slot.overridden(changes, &self.inner.retry)?);
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

    /// Evaluates the state triggers of every running stage now and acts on what matches. The
    /// healer does this by itself every evaluation interval during a run.
    pub async fn evaluate(&self) {
        for scope in self.scopes() {
            self.evaluate_run(&scope).await;
        }
    }

    async fn evaluate_run(&self, scope: &RunScope) {
        self.install_adaptive(scope, false);
        self.flush_adapted(scope);
        self.evaluate_thresholds(scope);
        let running: Vec<Arc<str>> = scope
            .controls
            .iter()
            .filter(|c| c.is_running())
            .map(|c| Arc::clone(c.stage_name()))
            .collect();
        for stage in running {
            self.heal(
                Target {
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

    /// Fires and resolves the thresholds' alerts on the samples `scope`'s run took since the
    /// last look.
    fn evaluate_thresholds(&self, scope: &RunScope) {
        // A tick that comes after the run finished (and was judged on its final window)
        // judges nothing: no alert of an ended run fires again.
        if self.inner.thresholds.is_empty() {
            return;
        }
        let stages: Vec<Arc<str>> = scope
            .controls
            .iter()
            .map(|c| Arc::clone(c.stage_name()))
            .collect();
        let mut seen = self
            .inner
            .thresholds_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Under the lock `run_finished` takes to forget the run, after it detached it.
        if !self.lock_attached().contains_key(&scope.run) {
            return;
        }
        thresholds::evaluate(
            &self.inner.thresholds,
            &self.inner.alerts,
            &scope.pipeline,
            &scope.metrics,
            &stages,
            seen.entry(scope.run.clone()).or_default(),
        );
    }

    /// The runs it heals now.
    fn scopes(&self) -> Vec<RunScope> {
        self.lock_attached()
            .values()
            .map(|a| a.scope.clone())
            .collect()
    }

    fn scope(&self, run: &RunId) -> Option<RunScope> {
        self.lock_attached().get(run).map(|a| a.scope.clone())
    }

    fn lock_attached(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Attached>> {
        self.inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.inner.gate.lock().unwrap_or_else(|e| e.into_inner())
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

    /// The checks unhealthy now.
    fn unhealthy_checks(&self) -> Vec<CheckStatus> {
        self.health()
            .into_iter()
            .filter(|c| c.status == HealthStatus::Unhealthy)
            .collect()
    }

    /// Matches, gates and acts for one target; returns the remedy for a failed attempt.
    async fn heal(&self, target: Target<'_>, scope: Option<&RunScope>) -> Remedy {
        let fallback;
        let metrics = match scope {
            Some(scope) => &scope.metrics,
            None => {
                fallback = MetricsCollector::default();
                &fallback
            }
        };
        let control = scope.and_then(|s| s.control(&target.stage));
        let health = self.health();
        let at = self.now_wall(scope);
        let project: Arc<str> =
            scope.map_or_else(|| "pipeline".into(), |s| Arc::clone(&s.pipeline));
        let mut records = Vec::new();
        let mut processed: HashSet<Arc<str>> = HashSet::new();
        let mut exhausted = false;
        let mut decided: Option<Remedy> = None;
        let mut requests = Vec::new();
        let mut taken = false;
        'dispatch: loop {
            let matching = Matching {
                retry_configured: self.inner.retry_configured,
                memories: &self.inner.memory,
                metrics,
                health: &health,
                control,
            };
            let strategies = self
                .strategies()
                .into_iter()
                .chain(std::iter::once(Arc::clone(&self.inner.implicit_retry)));
            let matches: Vec<Match> = matching
                .matches(strategies, &target, exhausted)
                .into_iter()
                .filter(|m| !processed.contains(&m.strategy.name))
                .collect();
            for m in matches {
                processed.insert(Arc::clone(&m.strategy.name));
                let action = &m.strategy.action;
                let kind = action.kind();
                let started = Instant::now();
                let mut record = |outcome: Outcome, detail: String| {
                    records.push(
                        HealingRecord::new(
                            at,
                            Arc::clone(&m.strategy.name),
                            m.trigger.clone(),
                            kind,
                            outcome,
                            detail,
                        )
                        .on(
                            target.run.clone(),
                            Arc::clone(&target.stage),
                            target.item.clone(),
                        )
                        .took(started.elapsed()),
                    );
                };
                if action.is_decisive() && taken {
                    // The retry policy's own retrying is what happens when nothing else
                    // decides: it is not news that something else did.
                    if !Arc::ptr_eq(&m.strategy, &self.inner.implicit_retry) {
                        record(
                            Outcome::Superseded,
                            "a higher-priority action decided".into(),
                        );
                    }
                    continue;
                }
                let admission = self.lock_gate().admit(
                    &m.strategy.name,
                    &target.stage,
                    m.strategy.cooldown,
                    Instant::now(),
                );
                match admission {
                    Admission::CoolingDown { remaining } => {
                        record(
                            Outcome::SkippedCooldown,
                            format!("cooling down for another {remaining:.0?}"),
                        );
                        continue;
                    }
                    Admission::OverBudget { first } => {
                        let budget = self.budget().expect("only a budget refuses");
                        if first {
                            self.budget_alert(&m.strategy, &target.stage, budget, &project, scope);
                        }
                        record(
                            Outcome::SkippedBudget,
                            format!(
                                "{} action(s) already taken in the last {:?}",
                                budget.max_actions, budget.window
                            ),
                        );
                        continue;
                    }
                    Admission::Admitted => {}
                }
                // Manual mode stops remedies, not alerts; a dry-run strategy does nothing.
                let manual = !self.is_enabled();
                if (manual && kind != ActionKind::Notify) || m.strategy.mode == Mode::DryRun {
                    taken |= action.is_decisive();
                    record(Outcome::WouldHave, format!("would have applied {kind}"));
                    continue;
                }
                let reason = format!("strategy `{}`: {}", m.strategy.name, m.trigger.description);
                let subject = Subject {
                    scope,
                    project: &project,
                    stage: &target.stage,
                    item: target.item.as_ref(),
                    strategy: &m.strategy.name,
                    trigger: &m.trigger,
                    reason: &reason,
                    at,
                    retry_policy: &self.inner.retry,
                    retry_budget: self.inner.retry_budget.as_ref(),
                    alerts: &self.inner.alerts,
                    manual,
                };
                let applied = match (action, target.failure) {
                    (Action::Side(side), _) => side.apply(&subject).await,
                    (Action::Decisive(decisive), Some(failure)) => {
                        decisive.on_failure(&subject, failure).await
                    }
                    (Action::Decisive(decisive), None) => decisive.on_stage(&subject).await,
                };
                announce(&subject, kind, &applied);
                if let (Effect::Requested(request), Some(control)) =
                    (&applied.effect, subject.control())
                {
                    requests.push((Arc::clone(control), request.clone()));
                }
                if action.is_decisive() && applied.outcome() == Outcome::Succeeded {
                    taken = true;
                    decided = applied.remedy_for_failure();
                }
                let again = applied.effect == Effect::Exhausted;
                let budget_wait = applied.budget_wait;
                record(applied.outcome(), applied.detail);
                if let Some(last) = records.last_mut() {
                    last.budget_wait = budget_wait;
                }
                if again {
                    exhausted = true;
                    continue 'dispatch;
                }
            }
            break;
        }
        if let (None, Some(control)) = (target.failure, control) {
            self.quiet(&processed, control);
        }
        // Recorded first, so the stage acts on a request only after the decision is on the bus.
        self.flush(records, scope);
        for (control, request) in requests {
            control.request(request);
        }
        decided.unwrap_or(Remedy::Fail)
    }

    /// Tells the side actions of strategies that did not match the stage on this tick.
    fn quiet(&self, matched: &HashSet<Arc<str>>, control: &Arc<StageControl>) {
        for strategy in self.strategies() {
            if let Action::Side(side) = &strategy.action
                && !matched.contains(&strategy.name)
            {
                side.on_quiet(control);
            }
        }
    }

    fn budget_alert(
        &self,
        strategy: &HealingStrategy,
        stage: &Arc<str>,
        budget: Budget,
        project: &Arc<str>,
        scope: Option<&RunScope>,
    ) {
        let mut alert = Alert::firing(
            Severity::Critical,
            Arc::clone(project),
            crate::alert::HEALING_BUDGET,
            "healing budget spent",
        )
        .message(format!(
            "{} healing action(s) in {:?}: further actions are skipped until the window frees up \
             (first skipped: `{}` on stage `{stage}`)",
            budget.max_actions, budget.window, strategy.name
        ));
        alert.starts_at = self.now_wall(scope);
        self.inner.alerts.fire(alert);
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
                let record = Box::new(record);
                scope
                    .bus
                    .publish(Some(&scope.run), EventKind::HealingDecision { record });
            }
        }
    }

    fn now_wall(&self, scope: Option<&RunScope>) -> SystemTime {
        match scope {
            Some(scope) => scope.bus.clock().wall(),
            None => self.inner.clock.wall(),
        }
    }
}

/// Announces an action done now as `healing-applied` on its stage (the executor announces the
/// remedies and requests it carries out).
fn announce(subject: &Subject<'_>, kind: ActionKind, applied: &Applied) {
    if let (Effect::Done, Some(control)) = (&applied.effect, subject.control()) {
        control.applied(kind, subject.item.cloned(), applied.detail.clone());
    }
}

impl Supervisor for AutoHealer {
    fn on_failure<'a>(&'a self, failure: &'a Failure<'a>) -> BoxFuture<'a, Remedy> {
        Box::pin(async move {
            let scope = self.scope(failure.run);
            let target = Target {
                run: Some(failure.run.clone()),
                stage: Arc::from(failure.stage),
                item: failure.item.map(Arc::from),
                failure: Some(failure),
            };
            self.heal(target, scope.as_ref()).await
        })
    }

    fn stage_changed(&self, run: Option<&RunId>, stage: &Arc<str>, change: &StageChange) {
        self.machinery_changed(run, stage, change);
    }

    fn run_started(&self, scope: &RunScope) {
        self.inner.alerts.report_to(&scope.bus, Some(&scope.run));
        self.inner.alerts.watch_run(
            &scope.bus,
            &scope.metrics,
            &scope.pipeline,
            &scope.run,
            || WatchStart {
                unhealthy: self.unhealthy_checks(),
                thresholds: self
                    .inner
                    .thresholds
                    .iter()
                    .map(|t| Arc::clone(&t.metric))
                    .collect(),
            },
        );
        let stop = CancellationToken::new();
        let previous = self.lock_attached().insert(
            scope.run.clone(),
            Attached {
                scope: scope.clone(),
                stop: stop.clone(),
            },
        );
        if let Some(previous) = previous {
            previous.stop.cancel();
        }
        self.inner.memory.forget(&scope.run);
        self.install_adaptive(scope, true);
        // Stages start held by the checks they depend on that are unhealthy now.
        self.update_holds(None);
        let (healer, scope) = (self.clone(), scope.clone());
        let interval = self.inner.interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = ticks.tick() => healer.evaluate_run(&scope).await,
                }
            }
        });
    }

    fn run_finished(&self, run: &RunId) {
        let scope = self.scope(run);
        // The run's final window (sampled at its end), so a run shorter than a sample
        // interval is judged too.
        if let Some(scope) = &scope {
            self.evaluate_thresholds(scope);
        }
        self.finish_adapted(run, scope.as_ref());
        if let Some(done) = self.lock_attached().remove(run) {
            done.stop.cancel();
        }
        self.inner
            .thresholds_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run);
        self.inner.memory.forget(run);
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.inner
            .retry_configured
            .then(|| self.inner.retry.clone())
    }

    fn circuit_breaker(&self) -> Option<BreakerSettings> {
        self.inner.breaker
    }

    fn shared_breakers(&self) -> Vec<(Arc<str>, BreakerSettings)> {
        self.inner.shared_breakers.clone()
    }

    fn attempt_started(&self, stage: &str, attempt: u32) {
        if attempt != 1 {
            return;
        }
        if let Some(budget) = &self.inner.retry_budget {
            budget.deposit();
        }
        for strategy in &self.inner.budgeted {
            if let Some(budget) = strategy.action.retry_budget()
                && strategy.covers(stage)
            {
                budget.deposit();
            }
        }
    }
}

impl std::fmt::Debug for AutoHealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoHealer")
            .field("strategies", &self.strategies().len())
            .field("enabled", &self.is_enabled())
            .field("budget", &self.budget())
            .field("alerts", &self.inner.alerts)
            .finish_non_exhaustive()
    }
}
