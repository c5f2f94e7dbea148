//! The AutoHealer: matches strategies against failures and stage state, gates them, and acts.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actions::{
    Action, Applied, CircuitBreakAction, Effect, FailoverAction, RestartAction, RetryAction,
    RollbackAction, Subject,
};
use super::gate::{Admission, Budget, Gate};
use super::strategy::{HealingStrategy, Mode, StrategyOverride};
use super::thresholds::{self, AlertThreshold, Seen};
use super::trigger::{Trigger, TriggerContext, TriggerMemory};
use crate::BoxFuture;
use crate::alert::{Alert, Alerting, Notifier};
use crate::clock::{Clock, TokioClock};
use crate::error::{InvalidConfig, Severity};
use crate::event::HealthStatus;
use crate::event::{
    ActionKind, EventKind, HealingRecord, Outcome, RunId, TriggerKind, TriggerMatch,
};
use crate::health::{CheckStatus, HealthMonitor};
use crate::metrics::MetricsCollector;
use crate::pipeline::{Failure, PipelineBuilder, Remedy, RunScope, StageControl, Supervisor};
use crate::resilience::{BreakerSettings, RetryBudget, RetryBudgetSettings, RetryPolicy};

/// How often the healer evaluates state triggers while a stage runs, unless told otherwise.
pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(1);
/// How many records the in-memory history keeps, unless told otherwise.
pub const DEFAULT_HISTORY_CAPACITY: usize = 10_000;
/// The strategy name operators' actions are recorded under.
pub const MANUAL: &str = "manual";
/// The strategy name a stage's `dependsOn` holds and releases its work under, in the history.
pub const DEPENDS_ON: &str = "dependsOn";
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
    memory: Mutex<HashMap<MemoryKey, Arc<Mutex<TriggerMemory>>>>,
    history: Mutex<VecDeque<HealingRecord>>,
    /// The runs being healed now; one healer may serve several pipelines at once.
    attached: Mutex<HashMap<RunId, Attached>>,
    /// The monitors whose checks `health-check` triggers read.
    monitors: RwLock<Vec<HealthMonitor>>,
    /// Taken while stages are held or released (`dependsOn`).
    gating: Mutex<()>,
}

struct Attached {
    scope: RunScope,
    stop: CancellationToken,
}

/// (run, strategy, trigger index, stage).
type MemoryKey = (Option<RunId>, Arc<str>, usize, Arc<str>);

/// A strategy that matched, with the trigger that did.
struct Match {
    strategy: Arc<HealingStrategy>,
    trigger: TriggerMatch,
}

/// What is being healed: a stage, and the failed attempt if that is why.
struct Target<'a> {
    run: Option<RunId>,
    stage: Arc<str>,
    item: Option<Arc<str>>,
    failure: Option<&'a Failure<'a>>,
}

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
    ///
    /// Its checks also gate the stages that depend on them (`dependsOn`): while one is
    /// unhealthy, the stages of the runs this healer heals start no new attempt, and resume at
    /// once when it is healthy (or degraded) again. Each hold and release is recorded in the
    /// history under [`DEPENDS_ON`], whatever the healing mode: a dependency the stage declares
    /// is not a remedy to leave to people.
    pub fn watch(&self, monitor: &HealthMonitor) {
        self.inner
            .monitors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(monitor.clone());
        let healer = Arc::downgrade(&self.inner);
        monitor.on_health_changed(move |change| {
            if let Some(inner) = healer.upgrade() {
                AutoHealer { inner }.gate_all(Some(&change.check));
            }
        });
    }

    /// Holds or releases, in every run it heals, the stages that depend on `check` (or on any
    /// check), from the monitors' status now. One lock serializes it, and the status is read
    /// under it, so a change and a run starting at once cannot leave a stage held by a status
    /// that is gone.
    fn gate_all(&self, check: Option<&str>) {
        let _one_at_a_time = self.inner.gating.lock().unwrap_or_else(|e| e.into_inner());
        let statuses: Vec<CheckStatus> = self
            .health()
            .into_iter()
            .filter(|s| check.is_none_or(|c| *s.check == *c))
            .collect();
        let scopes: Vec<RunScope> = self
            .lock_attached()
            .values()
            .map(|a| a.scope.clone())
            .collect();
        for scope in &scopes {
            for status in &statuses {
                self.gate(scope, &status.check, status.status);
            }
        }
    }

    /// Holds (`status` unhealthy) or releases the stages of `scope` that depend on `check`,
    /// each decision recorded before it acts.
    fn gate(&self, scope: &RunScope, check: &Arc<str>, status: HealthStatus) {
        let down = status == HealthStatus::Unhealthy;
        for control in scope.controls.iter() {
            if !control.depends_on().contains(check) {
                continue;
            }
            let mut held_by = control.held_by();
            if held_by.contains(check) == down {
                continue;
            }
            if down {
                held_by.push(Arc::clone(check));
            } else {
                held_by.retain(|c| c != check);
            }
            let detail = match (down, held_by.as_slice()) {
                (true, _) => format!("new attempts wait: `{check}` is unhealthy"),
                (false, []) => format!("work resumed: `{check}` is {status}"),
                (false, rest) => format!(
                    "`{check}` is {status}; still held by {}",
                    rest.iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let trigger = TriggerMatch {
                kind: TriggerKind::HealthCheck,
                index: 0,
                observed: None,
                description: format!("check `{check}` is {status}"),
            };
            let record = HealingRecord::new(
                scope.bus.clock().wall(),
                DEPENDS_ON.into(),
                trigger,
                ActionKind::Hold,
                Outcome::Succeeded,
                detail.clone(),
            )
            .on(
                Some(scope.run.clone()),
                Arc::clone(control.stage_name()),
                None,
            );
            self.flush(vec![record], Some(scope));
            control.set_dependency_down(check, down);
            if down {
                control.applied(ActionKind::Hold, None, detail);
            }
        }
    }

    /// Gives every stage of `scope` an adaptive `scale` strategy covers its AIMD controller (the
    /// first such strategy's, in priority order), and takes it from the others; in manual mode
    /// or for a dry run, takes it away and records `would-have`. Runs as each run starts
    /// (`starting`: every covered stage recorded) and on each evaluation tick, so that
    /// `healing disable|enable|configure` reach a running controller (recorded when it
    /// changes).
    fn install_adaptive(&self, scope: &RunScope, starting: bool) {
        let mut strategies: Vec<Arc<HealingStrategy>> = self
            .strategies()
            .into_iter()
            .filter(|s| s.enabled && s.action.adaptive_concurrency().is_some())
            .collect();
        strategies.sort_by_key(|s| Reverse(s.priority));
        let mut records = Vec::new();
        for control in &scope.controls {
            let stage = control.stage_name();
            let found = strategies.iter().find_map(|s| {
                let settings = s.action.adaptive_concurrency()?;
                s.covers(stage).then_some((s, settings))
            });
            let Some((strategy, settings)) = found else {
                let _ = control.set_adaptive(None);
                continue;
            };
            let acts = self.is_enabled() && strategy.mode == Mode::Act;
            let wanted = acts.then_some(settings);
            let (outcome, detail) = match control.set_adaptive(wanted) {
                Ok(false) if !starting => continue,
                Ok(_) if acts => (
                    Outcome::Succeeded,
                    format!(
                        "adaptive concurrency (AIMD on latency) within {}..={}, from {}",
                        settings.min,
                        settings.max,
                        control.concurrency()
                    ),
                ),
                Ok(_) => (
                    Outcome::WouldHave,
                    format!(
                        "would run adaptive concurrency within {}..={}; the concurrency stays {}",
                        settings.min,
                        settings.max,
                        control.concurrency()
                    ),
                ),
                Err(e) => (Outcome::Failed, e.to_string()),
            };
            // Recorded, not announced as applied: it heals nothing yet, and its steps are
            // `concurrency-changed` events.
            let trigger = TriggerMatch {
                kind: TriggerKind::Metrics,
                index: 0,
                observed: None,
                description: "the latency of each attempt (mode: adaptive)".to_owned(),
            };
            records.push(
                HealingRecord::new(
                    scope.bus.clock().wall(),
                    Arc::clone(&strategy.name),
                    trigger,
                    ActionKind::Scale,
                    outcome,
                    detail,
                )
                .on(Some(scope.run.clone()), Arc::clone(stage), None),
            );
        }
        self.flush(records, Some(scope));
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
        let scopes: Vec<RunScope> = self
            .lock_attached()
            .values()
            .map(|a| a.scope.clone())
            .collect();
        for scope in scopes {
            self.evaluate_run(&scope).await;
        }
    }

    /// An operator's action on a stage of a run this healer heals (`healing trigger`): restart,
    /// rollback, failover or circuit-break, applied at once whatever the healing mode (manual
    /// mode leaves the decisions to people), and recorded under the strategy
    /// [`MANUAL`](MANUAL). An action that cannot apply (no such run or stage, the stage not
    /// running) is recorded `failed` with the reason.
    pub async fn trigger(
        &self,
        run: &RunId,
        stage: &str,
        action: ActionKind,
        reason: &str,
    ) -> HealingRecord {
        let scope = self.scope(run);
        let control = scope.as_ref().and_then(|s| s.control(stage));
        let chosen: Result<Action, String> = match (action, control) {
            (ActionKind::Restart, _) => Ok(RestartAction::default().into()),
            (ActionKind::Rollback, _) => Ok(RollbackAction.into()),
            (ActionKind::Failover, _) => Ok(FailoverAction.into()),
            (ActionKind::CircuitBreak, Some(control)) => {
                Ok(CircuitBreakAction::like(&control.breaker().settings()).into())
            }
            (ActionKind::CircuitBreak, None) => {
                Ok(CircuitBreakAction::like(&self.inner.breaker.unwrap_or_default()).into())
            }
            (other, _) => Err(format!(
                "not applied: `{other}` cannot be triggered by hand (restart, rollback, failover or circuit-break can)"
            )),
        };
        let strategy: Arc<str> = MANUAL.into();
        let stage: Arc<str> = stage.into();
        let trigger = TriggerMatch {
            kind: TriggerKind::Manual,
            index: 0,
            observed: None,
            description: reason.to_owned(),
        };
        let started = Instant::now();
        let applied = match (&scope, control, chosen) {
            (None, _, _) => Applied::failed(format!("not applied: run `{run}` is not running")),
            (Some(scope), None, _) => Applied::failed(format!(
                "not applied: the pipeline has no stage `{stage}` (it has {})",
                scope
                    .controls
                    .iter()
                    .map(|c| c.stage())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (_, _, Err(detail)) => Applied::failed(detail),
            (Some(scope), Some(_), Ok(action)) => {
                let subject = Subject {
                    scope: Some(scope),
                    project: &scope.pipeline,
                    stage: &stage,
                    item: None,
                    strategy: &strategy,
                    trigger: &trigger,
                    reason,
                    at: scope.bus.clock().wall(),
                    retry_policy: &self.inner.retry,
                    retry_budget: self.inner.retry_budget.as_ref(),
                    alerts: &self.inner.alerts,
                    manual: !self.is_enabled(),
                };
                let applied = match &action {
                    Action::Decisive(action) => action.on_stage(&subject).await,
                    Action::Side(action) => action.apply(&subject).await,
                };
                announce(&subject, action.kind(), &applied);
                applied
            }
        };
        let request = match (&applied.effect, control) {
            (Effect::Requested(request), Some(control)) => {
                Some((Arc::clone(control), request.clone()))
            }
            _ => None,
        };
        let record = HealingRecord::new(
            self.now_wall(scope.as_ref()),
            strategy,
            trigger,
            action,
            applied.outcome(),
            applied.detail,
        )
        .on(Some(run.clone()), stage, None)
        .took(started.elapsed());
        self.flush(vec![record.clone()], scope.as_ref());
        if let Some((control, request)) = request {
            control.request(request);
        }
        record
    }

    async fn evaluate_run(&self, scope: &RunScope) {
        self.install_adaptive(scope, false);
        if !self.inner.thresholds.is_empty() {
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
            thresholds::evaluate(
                &self.inner.thresholds,
                &self.inner.alerts,
                &scope.pipeline,
                &scope.metrics,
                &stages,
                seen.entry(scope.run.clone()).or_default(),
            );
        }
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

    /// The strategies matching `target`, highest priority first (ties in declaration order).
    /// No healer lock is held while triggers run: a custom predicate may call back into the
    /// healer.
    fn matches(
        &self,
        target: &Target<'_>,
        exhausted: bool,
        metrics: &MetricsCollector,
        health: &[CheckStatus],
        control: Option<&Arc<StageControl>>,
    ) -> Vec<Match> {
        let now = Instant::now();
        let ctx = TriggerContext {
            stage: &target.stage,
            error: target.failure.map(|f| f.error),
            exhausted,
            metrics,
            running_for: control.and_then(|c| c.running_for()),
            health,
            now,
            retry_policy: target
                .failure
                .filter(|f| self.inner.retry_configured || f.stage_policy)
                .map(|f| f.retry_policy),
        };
        let on_tick = target.failure.is_none();
        let mut found = Vec::new();
        let candidates = self
            .strategies()
            .into_iter()
            .chain(std::iter::once(Arc::clone(&self.inner.implicit_retry)));
        for strategy in candidates.filter(|s| s.enabled && s.covers(&target.stage)) {
            // Retry needs failed work that is not given up on yet.
            let action = &strategy.action;
            if action.needs_fresh_failure() && (on_tick || exhausted) {
                continue;
            }
            for (index, trigger) in strategy.triggers.iter().enumerate() {
                let observed = if trigger.uses_memory() {
                    let memory = self.memory_of(target, &strategy.name, index);
                    let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                    trigger.evaluate(&ctx, &mut memory)
                } else {
                    trigger.evaluate(&ctx, &mut TriggerMemory::default())
                };
                if let Some(observed) = observed {
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

    fn memory_of(
        &self,
        target: &Target<'_>,
        strategy: &Arc<str>,
        index: usize,
    ) -> Arc<Mutex<TriggerMemory>> {
        let key = (
            target.run.clone(),
            Arc::clone(strategy),
            index,
            Arc::clone(&target.stage),
        );
        Arc::clone(
            self.inner
                .memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default(),
        )
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
            let matches: Vec<Match> = self
                .matches(&target, exhausted, metrics, &health, control)
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
                record(applied.outcome(), applied.detail);
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

    /// Forgets what it kept for a run that ended.
    fn forget(&self, run: &RunId) {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(r, _, _, _), _| r.as_ref() != Some(run));
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

    fn run_started(&self, scope: &RunScope) {
        self.inner.alerts.report_to(&scope.bus, Some(&scope.run));
        self.inner
            .alerts
            .watch_run(&scope.bus, &scope.pipeline, &scope.run);
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
        self.forget(&scope.run);
        self.install_adaptive(scope, true);
        // Stages start held by the checks they depend on that are unhealthy now.
        self.gate_all(None);
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
        if let Some(done) = self.lock_attached().remove(run) {
            done.stop.cancel();
        }
        self.inner
            .thresholds_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run);
        self.forget(run);
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
                memory: Mutex::new(HashMap::new()),
                history: Mutex::new(VecDeque::new()),
                attached: Mutex::new(HashMap::new()),
                monitors: RwLock::new(Vec::new()),
                gating: Mutex::new(()),
            }),
        })
    }
}
