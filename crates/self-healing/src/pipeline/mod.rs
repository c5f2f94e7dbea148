//! Pipelines: named stages run in order, each once or over items with a live concurrency,
//! every attempt watched, every failure handed to a supervisor that heals it.
//!
//! # Semantics
//!
//! - Stages run in declaration order; a stage starts when the previous one has succeeded.
//! - An item stage pulls its next item only when its concurrency limit has room, so it holds
//!   in memory the items in flight (plus completed ones if it registered
//!   [`rollback_item`](EachStage::rollback_item)).
//! - Before each attempt, work waits for the stage's circuit breaker and throttle; that wait
//!   spends no attempt. Each attempt runs under the stage's `timeout`; a panicking handler is a
//!   failed attempt with a critical error.
//! - A failed attempt goes to the [`Supervisor`]; its [`Remedy`] is carried out and published
//!   as a `healing-applied` event. One failed unit that is not healed fails the stage: no new
//!   units start, and those in flight finish their current attempt without retries.
//! - **Cancellation** (the token in [`RunOptions`]): no new unit or attempt starts and retry
//!   waits end at once; attempts in flight get the pipeline's
//!   [`cancel_grace`](PipelineBuilder::cancel_grace) (default 30 s) to finish and are then
//!   dropped. Units that did not finish are published as `item-abandoned`: they did not
//!   complete and a resumed run does them again. The run ends `cancelled`.
//! - A **restart** (remedy or [`StageControl::request_restart`]) drops the stage's work in
//!   flight at once, runs its `reset` hook and runs the stage again from its start, at most
//!   `max_restarts` times per run.
//! - A **rollback** compensates, in reverse order, the failed stage's completed items, then each
//!   completed stage's items and its `rollback` hook. The run ends `rolled-back`. Each
//!   compensation is published as it finishes, so a journal can resume a rollback cut short
//!   (see [`Resume`]).
//! - A decisive remedy (retry, failover, restart, rollback) acts only once every durable
//!   subscriber of the bus (a journal, see `EventBus::subscribe_durable`) has committed the
//!   events published so far, the supervisor's decision among them; a retry's wait overlaps
//!   that commit.

mod cancel;
mod context;
mod control;
mod pass;
mod report;
mod resume;
mod run;
mod stage;
mod supervisor;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use context::{ItemContext, StageContext};
pub use control::{StageControl, StageRequest};
pub use report::{CompensationFailure, RunReport, StageReport};
pub use resume::Resume;
pub use stage::{
    DEFAULT_MAX_RESTARTS, EachStage, Item, ItemSource, RestartBackoff, RestartFrom, SingleStage,
    Stage,
};
pub use supervisor::{Failure, Remedy, RetrySupervisor, RunScope, StageChange, Supervisor};

use crate::clock::{Clock, default_clock};
use crate::error::InvalidConfig;
use crate::event::{ActionKind, Event, EventBus, EventKind, RunId};
use crate::metrics::{MetricsCollector, PipelineMetrics};
use crate::resilience::{BreakerSettings, CircuitBreaker, Jitter, RetryPolicy};
use run::{Runner, StageEntry};

/// What an `on_healing_action` hook is told besides the action.
#[derive(Debug, Clone, PartialEq)]
pub struct HealingContext {
    /// The run the action was applied in, if any.
    pub run: Option<RunId>,
    /// The stage it was applied to.
    pub stage: Arc<str>,
    /// The item's key, when the action was for one item.
    pub item: Option<Arc<str>>,
    /// What exactly it did: the retry's delay, the new concurrency.
    pub detail: String,
}

/// Options for one run.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use self_healing::{RunId, RunOptions, RunStatus, SelfHealingPipeline, Stage};
///
/// let pipeline = SelfHealingPipeline::builder()
///     .stage(Stage::new("wait", |ctx| async move {
///         ctx.cancellation().cancelled().await; // runs until cancelled
///         Ok(())
///     }))
///     .build()
///     .unwrap();
/// let options = RunOptions { run_id: Some(RunId::new("nightly-42")), ..RunOptions::default() };
/// options.cancel.cancel(); // e.g. from a Ctrl-C handler
/// let report = pipeline.execute_with((), options).await;
/// assert_eq!(report.status, RunStatus::Cancelled);
/// assert_eq!(report.run_id.as_str(), "nightly-42");
/// # });
/// ```
#[derive(Clone, Default)]
pub struct RunOptions {
    /// The run's id; a fresh one when `None`. A resumed run keeps its id.
    pub run_id: Option<RunId>,
    /// Cancel it to stop the run (see the module's semantics).
    pub cancel: CancellationToken,
    /// What earlier attempts of this run did, for a resumed run (see [`Resume`]).
    pub resume: Option<Arc<Resume>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("run_id", &self.run_id)
            .field("cancel", &self.cancel)
            .field("resume", &self.resume.is_some())
            .finish()
    }
}

/// A pipeline of stages that heals itself. One run at a time: a second `execute` waits for
/// the first.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
/// use self_healing::resilience::RetryPolicy;
/// use self_healing::{RunStatus, StageError};
///
/// let calls = Arc::new(AtomicU32::new(0));
/// let flaky = Arc::clone(&calls);
/// let pipeline = SelfHealingPipeline::builder()
///     .name("my-migration")
///     .retry_policy(RetryPolicy::builder().max_attempts(3).initial_delay(Duration::from_millis(100)).build().unwrap())
///     .stage(Stage::for_each(
///         "analysis",
///         ItemSource::iter(|_: &()| ["a.cbl", "b.cbl", "c.cbl"]),
///         |_ctx| async { Ok(()) },
///     ).concurrency(2))
///     .stage(Stage::new("design", move |_ctx| {
///         let calls = Arc::clone(&flaky);
///         async move {
///             // Fails once with a transient error, then works.
///             if calls.fetch_add(1, Ordering::SeqCst) == 0 {
///                 Err(StageError::new("ECONNRESET"))
///             } else {
///                 Ok(())
///             }
///         }
///     }))
///     .on_stage_start(|stage| println!("Starting {stage}"))
///     .on_healing_action(|action, ctx| println!("Healing: {action} on {}", ctx.stage))
///     .build()
///     .unwrap();
///
/// let report = pipeline.execute(()).await;
/// assert_eq!(report.status, RunStatus::Succeeded);
/// assert_eq!(report.metrics.retry_count, 1);
/// assert_eq!(report.metrics.stages_completed, 2);
/// # });
/// ```
pub struct SelfHealingPipeline<C> {
    name: Arc<str>,
    stages: Vec<Arc<StageEntry<C>>>,
    bus: EventBus,
    metrics: MetricsCollector,
    supervisor: Arc<dyn Supervisor>,
    default_retry: RetryPolicy,
    grace: Duration,
    current_run: Arc<Mutex<Option<RunId>>>,
    run_lock: tokio::sync::Mutex<()>,
    ids: Mutex<fastrand::Rng>,
    jitter: Arc<Jitter>,
}

impl<C> std::fmt::Debug for SelfHealingPipeline<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: Vec<&str> = self.stages.iter().map(|e| &*e.stage.name).collect();
        f.debug_struct("SelfHealingPipeline")
            .field("name", &self.name)
            .field("stages", &stages)
            .field("default_retry", &self.default_retry)
            .field("grace", &self.grace)
            .field(
                "current_run",
                &*self.current_run.lock().unwrap_or_else(|e| e.into_inner()),
            )
            .finish_non_exhaustive()
    }
}

impl<C: Send + Sync + 'static> SelfHealingPipeline<C> {
    /// A builder named `pipeline`, with no stages, the default supervisor and a 30 s cancel grace.
    pub fn builder() -> PipelineBuilder<C> {
        PipelineBuilder {
            name: "pipeline".into(),
            stages: Vec::new(),
            supervisor: None,
            retry: None,
            breaker: None,
            shared_breakers: Vec::new(),
            metrics: None,
            clock: None,
            seed: None,
            grace: Duration::from_secs(30),
            hooks: Vec::new(),
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs every stage in order on `input` and reports how it went.
    pub async fn execute(&self, input: C) -> RunReport {
        self.execute_with(input, RunOptions::default()).await
    }

    /// Like `execute`, with a run id, cancellation token or resumed progress from `options`.
    pub async fn execute_with(&self, input: C, options: RunOptions) -> RunReport {
        let _one_at_a_time = self.run_lock.lock().await;
        let run = options.run_id.unwrap_or_else(|| {
            let id = self.ids.lock().unwrap_or_else(|e| e.into_inner()).u64(..);
            RunId::new(format!("run-{id:016x}"))
        });
        *self.current_run.lock().unwrap_or_else(|e| e.into_inner()) = Some(run.clone());
        let shared = Arc::new(context::Shared {
            input: Arc::new(input),
            run,
            metrics: self.metrics.clone(),
            outputs: context::Outputs::default(),
        });
        let runner = Arc::new(Runner {
            pipeline: Arc::clone(&self.name),
            bus: self.bus.clone(),
            supervisor: Arc::clone(&self.supervisor),
            default_retry: self.default_retry.clone(),
            jitter: Arc::clone(&self.jitter),
            shared,
            cancel: options.cancel,
            resume: options.resume,
            grace: self.grace,
        });
        let report = runner.execute(&self.stages).await;
        *self.current_run.lock().unwrap_or_else(|e| e.into_inner()) = None;
        report
    }

    /// The current (or last) run's totals, at any time.
    pub fn metrics(&self) -> PipelineMetrics {
        self.metrics.pipeline_metrics()
    }

    /// The collector that keeps this pipeline's metric windows.
    pub fn collector(&self) -> &MetricsCollector {
        &self.metrics
    }

    /// The bus every event of this pipeline is published on.
    pub fn events(&self) -> &EventBus {
        &self.bus
    }

    /// A stage's live controls.
    pub fn control(&self, stage: &str) -> Option<&Arc<StageControl>> {
        self.stages
            .iter()
            .find(|e| &*e.stage.name == stage)
            .map(|e| &e.control)
    }

    /// Stage names in order.
    pub fn stage_names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|e| &*e.stage.name)
    }

    /// The run in progress, if any.
    pub fn current_run(&self) -> Option<RunId> {
        self.current_run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

type Hook = Box<dyn Fn(&Event) + Send + Sync>;

/// Builds a [`SelfHealingPipeline`]; [`build`](Self::build) checks the stages.
pub struct PipelineBuilder<C> {
    name: Arc<str>,
    stages: Vec<Stage<C>>,
    supervisor: Option<Arc<dyn Supervisor>>,
    retry: Option<RetryPolicy>,
    breaker: Option<BreakerSettings>,
    shared_breakers: Vec<(Arc<str>, BreakerSettings)>,
    metrics: Option<MetricsCollector>,
    clock: Option<Arc<dyn Clock>>,
    seed: Option<u64>,
    grace: Duration,
    hooks: Vec<Hook>,
}

impl<C> std::fmt::Debug for PipelineBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("name", &self.name)
            .field("stages", &self.stages)
            .field("supervisor", &self.supervisor.is_some())
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("shared_breakers", &self.shared_breakers)
            .field("seed", &self.seed)
            .field("grace", &self.grace)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl<C: Send + Sync + 'static> PipelineBuilder<C> {
    /// The pipeline's (project's) name, carried by `run-started`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a stage after those already added; names must be unique.
    pub fn stage(mut self, stage: impl Into<Stage<C>>) -> Self {
        self.stages.push(stage.into());
        self
    }

    /// Who decides how failures heal. Default: the stage's retry policy, then fail. The
    /// supervisor's own [`retry_policy`](Supervisor::retry_policy) and
    /// [`circuit_breaker`](Supervisor::circuit_breaker) apply unless this builder was given its
    /// own, whatever the order of the calls. An `AutoHealer` installs itself here.
    pub fn supervisor(self, supervisor: impl Supervisor) -> Self {
        self.supervisor_arc(Arc::new(supervisor))
    }

    /// [`supervisor`](Self::supervisor) for one already shared.
    pub fn supervisor_arc(mut self, supervisor: Arc<dyn Supervisor>) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    /// The seed's global `retryPolicy`: used by stages without one of their own.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The seed's global `circuitBreaker`: every stage gets a breaker with these settings.
    /// Without it, stage breakers open only when tripped (by `circuit-break`) or forced.
    pub fn circuit_breaker(mut self, settings: BreakerSettings) -> Self {
        self.breaker = Some(settings);
        self
    }

    /// A circuit breaker named `name`, shared by every stage that names it
    /// ([`Stage::breaker`](crate::pipeline::EachStage::breaker)): one dependency called by
    /// several stages trips once for all of them. Replaces the supervisor's breaker of the
    /// same name ([`Supervisor::shared_breakers`]).
    pub fn shared_breaker(mut self, name: impl Into<Arc<str>>, settings: BreakerSettings) -> Self {
        let name = name.into();
        self.shared_breakers.retain(|(n, _)| *n != name);
        self.shared_breakers.push((name, settings));
        self
    }

    /// Records into `collector` (one the caller also reads, say) instead of a fresh one.
    pub fn metrics(mut self, collector: MetricsCollector) -> Self {
        self.metrics = Some(collector);
        self
    }

    /// The clock that stamps events (default: tokio time anchored to the wall clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Seeds run ids and retry jitter, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How long attempts in flight may finish after cancellation before they are dropped.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Called (inline, keep it quick) when a stage starts, with its name.
    pub fn on_stage_start(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.hooks.push(Box::new(move |event| {
            if let EventKind::StageStarted { stage, .. } = &event.kind {
                hook(stage);
            }
        }));
        self
    }

    /// Called (inline, keep it quick) when a stage ends, successfully or not.
    pub fn on_stage_complete(
        mut self,
        hook: impl Fn(&StageReport) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.push(Box::new(move |event| {
            if let Some(report) = StageReport::from_event(&event.kind) {
                hook(&report);
            }
        }));
        self
    }

    /// Called (inline, keep it quick) for every healing action applied.
    pub fn on_healing_action(
        mut self,
        hook: impl Fn(ActionKind, &HealingContext) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.push(Box::new(move |event| {
            if let EventKind::HealingApplied {
                stage,
                item,
                action,
                detail,
            } = &event.kind
            {
                let context = HealingContext {
                    run: event.run.clone(),
                    stage: Arc::clone(stage),
                    item: item.clone(),
                    detail: detail.clone(),
                };
                hook(*action, &context);
            }
        }));
        self
    }

    /// The pipeline; the error names the first stage or setting that cannot work.
    pub fn build(self) -> Result<SelfHealingPipeline<C>, InvalidConfig> {
        if self.stages.is_empty() {
            return Err(InvalidConfig::new(
                "stages",
                "a pipeline needs at least one stage",
            ));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            stage
                .validate()
                .map_err(|e| e.within(format!("stages[{i}]")))?;
        }
        crate::error::unique_names("stages", "stages", self.stages.iter().map(|s| &*s.name))?;
        let supervisor = self.supervisor.unwrap_or_else(|| Arc::new(RetrySupervisor));
        let retry = self
            .retry
            .or_else(|| supervisor.retry_policy())
            .unwrap_or_default();
        let breaker = self.breaker.or_else(|| supervisor.circuit_breaker());
        if let Some(settings) = &breaker {
            settings
                .validate()
                .map_err(|e| e.within("circuitBreaker"))?;
        }
        let mut shared = self.shared_breakers;
        for (name, settings) in supervisor.shared_breakers() {
            if !shared.iter().any(|(n, _)| *n == name) {
                shared.push((name, settings));
            }
        }
        let shared = shared
            .into_iter()
            .map(|(name, settings)| {
                let breaker = CircuitBreaker::new(settings)
                    .map_err(|e| e.within(format!("breakers.{name}")))?;
                Ok((name, breaker))
            })
            .collect::<Result<Vec<_>, InvalidConfig>>()?;
        for (i, stage) in self.stages.iter().enumerate() {
            if let Some(name) = &stage.breaker
                && !shared.iter().any(|(n, _)| n == name)
            {
                let known: Vec<&str> = shared.iter().map(|(n, _)| &**n).collect();
                return Err(InvalidConfig::new(
                    format!("stages[{i}].breaker"),
                    if known.is_empty() {
                        format!("`{name}` is not a breaker: the pipeline has none")
                    } else {
                        format!(
                            "`{name}` is not a breaker the pipeline has ({}){}",
                            known.join(", "),
                            crate::error::did_you_mean(name, known.iter().copied())
                        )
                    },
                ));
            }
        }
        let bus = EventBus::with_clock(self.clock.unwrap_or_else(default_clock));
        let metrics = self.metrics.unwrap_or_default();
        bus.add_sink(Arc::new(metrics.clone()));
        for hook in self.hooks {
            bus.add_sink(Arc::new(hook));
        }
        let current_run = Arc::new(Mutex::new(None));
        let stages = self
            .stages
            .into_iter()
            .map(|stage| {
                let named = stage.breaker.as_ref().and_then(|name| {
                    shared
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, b)| b.clone())
                });
                let breaker = match (named, breaker) {
                    (Some(shared), _) => shared,
                    (None, Some(settings)) => CircuitBreaker::new(settings)?,
                    (None, None) => CircuitBreaker::manual(),
                };
                let parts = control::Parts {
                    concurrency: stage.concurrency,
                    breaker,
                    breaker_name: stage
                        .breaker
                        .clone()
                        .unwrap_or_else(|| "circuitBreaker".into()),
                    can_fail_over: stage.work.has_failover(),
                    depends_on: Arc::clone(&stage.depends_on),
                };
                let control = StageControl::new(
                    Arc::clone(&stage.name),
                    bus.clone(),
                    Arc::clone(&current_run),
                    parts,
                    Arc::downgrade(&supervisor),
                )?;
                Ok(Arc::new(StageEntry { stage, control }))
            })
            .collect::<Result<_, InvalidConfig>>()?;
        Ok(SelfHealingPipeline {
            name: self.name,
            stages,
            bus,
            metrics,
            supervisor,
            default_retry: retry,
            grace: self.grace,
            current_run,
            run_lock: tokio::sync::Mutex::new(()),
            ids: Mutex::new(
                self.seed
                    .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            ),
            jitter: Arc::new(self.seed.map_or_else(Jitter::new, Jitter::seeded)),
        })
    }
}
