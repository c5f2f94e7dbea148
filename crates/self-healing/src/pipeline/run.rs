//! The executor: runs stages in order, units of a stage under its live controls, asks the
//! supervisor about every failure and carries out its remedy.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cancel::{spawn_until_dropped, unless_cancelled};
use super::context::StageContext;
use super::control::{StageControl, StageRequest};
use super::pass::{Finished, PassEnd};
use super::report::{CompensationFailure, RunReport, StageReport};
use super::stage::{Stage, Unit};
use super::supervisor::{Failure, Remedy, RunScope, Supervisor};
use crate::error::StageError;
use crate::event::{ActionKind, EventBus, EventKind, HandlerKind, RunStatus};
use crate::resilience::{Jitter, RetryPolicy, Sample, deadline};

/// A stage as the pipeline keeps it: its definition and its live controls.
pub(crate) struct StageEntry<C> {
    pub(crate) stage: Stage<C>,
    pub(crate) control: Arc<StageControl>,
}

/// Everything one run shares across its stages and units.
pub(crate) struct Runner<C> {
    pub(crate) pipeline: Arc<str>,
    pub(crate) bus: EventBus,
    pub(crate) supervisor: Arc<dyn Supervisor>,
    pub(crate) default_retry: RetryPolicy,
    pub(crate) jitter: Arc<Jitter>,
    /// The run's input, id, metrics and attached outputs: what every attempt's context shares.
    pub(crate) shared: Arc<super::context::Shared<C>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) resume: Option<Arc<super::Resume>>,
    pub(crate) grace: Duration,
}

/// How one unit ended.
pub(super) enum UnitEnd {
    Succeeded,
    /// Completed by an earlier attempt of the run.
    Skipped,
    Failed(StageError),
    Restart(StageError),
    Rollback(StageError),
    Abandoned,
}

/// How a stage ended, with the units it completed (kept only when it compensates per unit).
enum StageEnd {
    Succeeded,
    Failed(StageError),
    Rollback(StageError),
    Cancelled,
}

impl<C: Send + Sync + 'static> Runner<C> {
    pub(super) fn publish(&self, kind: EventKind) -> Arc<crate::event::Event> {
        self.bus.publish(Some(&self.shared.run), kind)
    }

    /// This run's events that happened together at `at` (see [`EventBus::publish_at`]).
    fn publish_at<const N: usize>(&self, at: Instant, kinds: [EventKind; N]) {
        self.bus.publish_at(Some(&self.shared.run), at, kinds);
    }

    pub(crate) async fn execute(self: Arc<Self>, stages: &[Arc<StageEntry<C>>]) -> RunReport {
        let started = Instant::now();
        self.publish(EventKind::RunStarted {
            pipeline: Arc::clone(&self.pipeline),
            stages: stages.iter().map(|e| Arc::clone(&e.stage.name)).collect(),
        });
        // What held a stage in an earlier run is for this run's supervisor to say again.
        for entry in stages {
            entry.control.clear_dependencies();
        }
        self.supervisor.run_started(&RunScope {
            run: self.shared.run.clone(),
            pipeline: Arc::clone(&self.pipeline),
            bus: self.bus.clone(),
            metrics: self.shared.metrics.clone(),
            controls: stages.iter().map(|e| Arc::clone(&e.control)).collect(),
        });
        let sampler = {
            let (metrics, bus, run) = (
                self.shared.metrics.clone(),
                self.bus.clone(),
                self.shared.run.clone(),
            );
            spawn_until_dropped(async move {
                let publish = |samples| {
                    bus.publish(Some(&run), EventKind::MetricsSampled { samples });
                };
                metrics.run_sampler(publish).await;
            })
        };

        let mut reports = Vec::new();
        let mut completed: Vec<(usize, Vec<Unit>)> = Vec::new();
        let mut status = RunStatus::Succeeded;
        let mut error = None;
        let mut compensation_failures = Vec::new();
        let resumed_rollback = self
            .resume
            .as_ref()
            .and_then(|r| r.rollback())
            .map(|(stage, error)| (stage.to_owned(), error.clone()));
        if let Some((stage, cause)) = resumed_rollback {
            // Resuming a rollback: no stage runs forward; what is left is compensated.
            status = RunStatus::RolledBack;
            match stages.iter().position(|e| *e.stage.name == *stage) {
                Some(index) => {
                    for (i, entry) in stages[..index].iter().enumerate() {
                        completed.push((
                            i,
                            self.completed_units(entry, &mut compensation_failures)
                                .await,
                        ));
                    }
                    let failed = self
                        .completed_units(&stages[index], &mut compensation_failures)
                        .await;
                    compensation_failures.extend(
                        self.roll_back(stages, (index, failed), &completed, &cause)
                            .await,
                    );
                }
                None => {
                    status = RunStatus::Failed;
                    error = Some(StageError::critical(format!(
                        "the run was rolling back from stage `{stage}`, which this pipeline does not have"
                    )));
                }
            }
            error = error.or(Some(cause));
        }
        for (index, entry) in stages.iter().enumerate() {
            if status != RunStatus::Succeeded {
                break;
            }
            if self.cancel.is_cancelled() {
                status = RunStatus::Cancelled;
                break;
            }
            if self
                .resume
                .as_ref()
                .is_some_and(|r| r.is_stage_completed(&entry.stage.name))
            {
                self.publish(EventKind::StageSkipped {
                    stage: Arc::clone(&entry.stage.name),
                });
                let units = self
                    .completed_units(entry, &mut compensation_failures)
                    .await;
                completed.push((index, units));
                continue;
            }
            let (report, end, units) = Arc::clone(&self).run_stage(entry).await;
            reports.push(report);
            match end {
                StageEnd::Succeeded => completed.push((index, units)),
                StageEnd::Failed(e) => {
                    status = RunStatus::Failed;
                    error = Some(e);
                    break;
                }
                StageEnd::Cancelled => {
                    status = RunStatus::Cancelled;
                    break;
                }
                StageEnd::Rollback(e) => {
                    entry.control.applied(
                        ActionKind::Rollback,
                        None,
                        format!(
                            "compensating {} completed stage(s) and this stage's completed items",
                            completed.len()
                        ),
                    );
                    compensation_failures
                        .extend(self.roll_back(stages, (index, units), &completed, &e).await);
                    status = RunStatus::RolledBack;
                    error = Some(e);
                    break;
                }
            }
        }
        drop(sampler);
        self.shared.metrics.sample();
        let samples = self.shared.metrics.snapshot();
        if !samples.is_empty() {
            self.publish(EventKind::MetricsSampled { samples });
        }
        self.supervisor.run_finished(&self.shared.run);
        let duration = started.elapsed();
        self.publish(EventKind::RunFinished {
            status,
            duration,
            error: error.clone(),
        });
        RunReport {
            run_id: self.shared.run.clone(),
            status,
            duration,
            stages: reports,
            error,
            compensation_failures,
            metrics: self.shared.metrics.pipeline_metrics(),
        }
    }

    async fn run_stage(
        self: Arc<Self>,
        entry: &Arc<StageEntry<C>>,
    ) -> (StageReport, StageEnd, Vec<Unit>) {
        let stage = &entry.stage;
        let control = &entry.control;
        let name = Arc::clone(&stage.name);
        control.mark_started();
        self.publish(EventKind::StageStarted {
            stage: Arc::clone(&name),
            concurrency: control.concurrency(),
        });
        let started = Instant::now();
        let mut restarts = 0;
        let mut streak = 0;
        // Items finished by this stage's earlier passes, when a restart keeps them.
        let finished = Finished::default();
        // The stage's items are those of its last pass: a restart from the start does them
        // again, one from the unfinished counts what earlier passes finished.
        let mut completed_total;
        // Requests made before the stage started are not for it; those made between passes
        // (during a restart's back-off or reset) are, and the next pass acts on them.
        let mut seen = control.request_epoch();
        let (end, units) = 'passes: loop {
            let (pass, units, completed, answered) = Arc::clone(&self)
                .run_pass(entry, restarts, seen, &finished)
                .await;
            completed_total = completed;
            seen = answered;
            match pass {
                PassEnd::Done => break (StageEnd::Succeeded, units),
                PassEnd::Failed(e) => break (StageEnd::Failed(e), units),
                PassEnd::Rollback(e) => break (StageEnd::Rollback(e), units),
                PassEnd::Cancelled => break (StageEnd::Cancelled, units),
                PassEnd::Restart(reason) => {
                    if restarts >= stage.max_restarts {
                        let e = StageError::new(format!(
                            "{reason}; restart limit of {} reached",
                            stage.max_restarts
                        ))
                        .with_code(crate::error::CODE_RESTART_LIMIT);
                        break (StageEnd::Failed(e), units);
                    }
                    // A crash loop backs off; a stage that ran well for a while starts over.
                    let wait = stage.restart_backoff.map(|backoff| {
                        if control
                            .running_for()
                            .is_some_and(|ran| ran >= backoff.reset_after)
                        {
                            streak = 0;
                        }
                        streak += 1;
                        backoff.delay(streak - 1)
                    });
                    restarts = control.mark_restarted();
                    let after = match wait {
                        Some(wait) => format!(" in {wait:.0?}"),
                        None => String::new(),
                    };
                    control.applied(
                        ActionKind::Restart,
                        None,
                        format!(
                            "restart {restarts} of {}{after}: {reason}",
                            stage.max_restarts
                        ),
                    );
                    if let Some(wait) = wait {
                        let until = Instant::now() + wait;
                        loop {
                            tokio::select! {
                                biased;
                                _ = self.cancel.cancelled() => {
                                    break 'passes (StageEnd::Cancelled, units);
                                }
                                (answered, request) = control.next_request(seen) => {
                                    seen = answered;
                                    // A rollback asked for now is carried out now; a restart
                                    // asked for is this one, and the back-off holds.
                                    if let StageRequest::Rollback { reason } = request {
                                        self.bus.durable(self.bus.published()).await;
                                        let error = rollback_requested(&reason);
                                        break 'passes (StageEnd::Rollback(error), units);
                                    }
                                }
                                _ = tokio::time::sleep_until(until) => break,
                            }
                        }
                        // The wait is not running time: the streak's clock starts now.
                        control.mark_resumed();
                    }
                    if let Some(reset) = &stage.reset {
                        let ctx = self.context(
                            &name,
                            None,
                            restarts,
                            HandlerKind::Primary,
                            Arc::new(self.cancel.clone()),
                        );
                        if let Err(e) = guarded(reset(ctx), stage.timeout, Instant::now()).await {
                            let e = StageError::new(format!(
                                "reset before restart failed: {}",
                                e.message()
                            ))
                            .with_severity(e.severity());
                            break (StageEnd::Failed(e), units);
                        }
                    }
                    // Asked for during the reset: a restart is this one; a rollback is carried
                    // out by the next pass at once.
                    if let Some((answered, StageRequest::Restart { .. })) =
                        control.requested_after(seen)
                    {
                        seen = answered;
                    }
                }
            }
        };
        let duration = started.elapsed();
        control.mark_stopped();
        let kind = match &end {
            StageEnd::Succeeded => EventKind::StageSucceeded {
                stage: Arc::clone(&name),
                duration,
                items: completed_total,
            },
            StageEnd::Failed(error) | StageEnd::Rollback(error) => EventKind::StageFailed {
                stage: Arc::clone(&name),
                duration,
                items: completed_total,
                error: error.clone(),
            },
            StageEnd::Cancelled => EventKind::StageFailed {
                stage: Arc::clone(&name),
                duration,
                items: completed_total,
                error: StageError::warning("the run was cancelled").with_code("CANCELLED"),
            },
        };
        let event = self.publish(kind);
        let mut report = StageReport::from_event(&event.kind).expect("a stage's own end event");
        report.restarts = restarts;
        (report, end, units)
    }

    /// A unit given up on because its stage stopped.
    fn abandoned(&self, stage: &Arc<str>, item: Option<&Arc<str>>) -> UnitEnd {
        if let Some(key) = item {
            self.publish(EventKind::ItemAbandoned {
                stage: Arc::clone(stage),
                item: Arc::clone(key),
            });
        }
        UnitEnd::Abandoned
    }

    /// Runs one unit to its end: waits for a place under the concurrency limit, the throttle and
    /// the breaker, runs attempts under the stage's timeout, and carries out the supervisor's
    /// remedy after each failure.
    pub(super) async fn run_unit(
        &self,
        entry: &StageEntry<C>,
        unit: Unit,
        restarts: u32,
        stop: &Arc<CancellationToken>,
        hard: &CancellationToken,
    ) -> (UnitEnd, Unit) {
        let stage = &entry.stage;
        let control = &entry.control;
        let name = &stage.name;
        let item = unit.key.clone();
        let policy = stage.retry.as_ref().unwrap_or(&self.default_retry);
        // The unit's place under the limit, held to its end, retries included. A worker of the
        // pass finds one at once unless the limit was cut while it took the unit.
        let place = match control.limit().try_acquire() {
            Some(place) => Some(place),
            None => unless_cancelled(stop, pin!(control.limit().acquire())).await,
        };
        let Some(_place) = place else {
            return (self.abandoned(name, item.as_ref()), unit);
        };
        let mut first_started = None;
        let abandon = || self.abandoned(name, item.as_ref());
        let fail = |attempts: u32, error: StageError| {
            if let Some(key) = &item {
                self.publish(EventKind::ItemFailed {
                    stage: Arc::clone(name),
                    item: Arc::clone(key),
                    attempts,
                    error: error.clone(),
                });
            }
            UnitEnd::Failed(error)
        };

        let mut attempt = 0;
        let end = loop {
            attempt += 1;
            // Waiting here holds the concurrency slot but spends no attempt: for the throttle,
            // for the checks the stage depends on, then for its breaker (and again for the
            // checks, should one have gone down meanwhile: a probe must not go to a dependency
            // known down). The breaker's permit comes last, just before the call: time spent
            // throttled is not the call's, and cannot make a slow-call breaker trip.
            let breaker = loop {
                let permit = unless_cancelled(
                    stop,
                    pin!(async {
                        control.throttle().acquire().await;
                        control.dependencies_up().await;
                        control.breaker().acquire().await
                    }),
                )
                .await;
                match permit {
                    None => break None,
                    Some(permit) if !control.is_held() => break Some(permit),
                    Some(_) => {}
                }
            };
            let Some(breaker) = breaker else {
                break abandon();
            };
            let handler = if control.is_failed_over() {
                HandlerKind::Failover
            } else {
                HandlerKind::Primary
            };
            // One reading of the clock for the attempt's start, its event and the item's.
            let started = Instant::now();
            let first_started = *first_started.get_or_insert(started);
            self.publish_at(
                started,
                [EventKind::AttemptStarted {
                    stage: Arc::clone(name),
                    item: item.clone(),
                    attempt,
                    handler,
                }],
            );
            self.supervisor.attempt_started(name, attempt);
            let ctx = self.context(name, item.as_ref(), attempt, handler, Arc::clone(stop));
            let call = pin!(guarded(
                stage.work.attempt(ctx, &unit),
                stage.timeout,
                started
            ));
            let Some(result) = unless_cancelled(hard, call).await else {
                drop(breaker);
                break abandon();
            };
            let ended = Instant::now();
            let duration = ended - started;
            control.attempt_finished(
                duration,
                match &result {
                    Ok(()) => Sample::Succeeded,
                    Err(e) if e.is_timeout() => Sample::TimedOut,
                    Err(_) => Sample::Failed,
                },
            );
            self.publish_output(name, item.as_ref(), attempt);
            let error = match result {
                Ok(()) => {
                    breaker.success();
                    let succeeded = EventKind::AttemptSucceeded {
                        stage: Arc::clone(name),
                        item: item.clone(),
                        attempt,
                        duration,
                    };
                    // The attempt's success and the item's, handed over together.
                    match &item {
                        Some(key) => {
                            let item = EventKind::ItemSucceeded {
                                stage: Arc::clone(name),
                                item: Arc::clone(key),
                                attempts: attempt,
                                duration: ended - first_started,
                            };
                            self.publish_at(ended, [succeeded, item]);
                        }
                        None => {
                            self.publish_at(ended, [succeeded]);
                        }
                    }
                    break UnitEnd::Succeeded;
                }
                Err(error) => error,
            };
            breaker.failure();
            self.publish(EventKind::AttemptFailed {
                stage: Arc::clone(name),
                item: item.clone(),
                attempt,
                duration,
                error: error.clone(),
            });
            if stop.is_cancelled() {
                // A stopping stage starts nothing new, retries included.
                break abandon();
            }
            let failure = Failure {
                run: &self.shared.run,
                stage: name,
                item: item.as_deref(),
                attempt,
                error: &error,
                handler,
                can_fail_over: control.can_fail_over(),
                restarts,
                retry_policy: policy,
                stage_policy: stage.retry.is_some(),
                jitter: &self.jitter,
            };
            let remedy = self.supervisor.on_failure(&failure).await;
            // The decision is on the bus now: a decisive remedy waits for the journal to
            // commit it (a retry's wait overlaps that commit).
            let decided = self.bus.published();
            if !matches!(remedy, Remedy::Fail | Remedy::Retry { .. }) {
                self.bus.durable(decided).await;
            }
            match remedy {
                Remedy::Retry { after } => {
                    control.applied(
                        ActionKind::Retry,
                        item.clone(),
                        format!("attempt {} in {after:.0?}", attempt + 1),
                    );
                    let wait = pin!(async {
                        tokio::join!(tokio::time::sleep(after), self.bus.durable(decided))
                    });
                    if unless_cancelled(stop, wait).await.is_none() {
                        break abandon();
                    }
                }
                Remedy::Failover if control.can_fail_over() && handler == HandlerKind::Primary => {
                    if control.set_failed_over(true) {
                        control.applied(
                            ActionKind::Failover,
                            item.clone(),
                            "switched to the failover handler",
                        );
                    }
                }
                Remedy::Failover | Remedy::Fail => break fail(attempt, error),
                Remedy::Restart => break UnitEnd::Restart(error),
                Remedy::Rollback => break UnitEnd::Rollback(error),
            }
        };
        (end, unit)
    }

    /// Compensates completed work in reverse: first the failed stage's completed items, newest
    /// first; then, for each completed stage from the last, its items newest first and its own
    /// rollback hook. Publishes `rollback-started` first and each compensation as it finishes,
    /// and skips those an earlier attempt of the run finished. Runs to the end even if a
    /// compensation fails, and ignores cancellation: a half-done rollback helps nobody.
    async fn roll_back(
        &self,
        stages: &[Arc<StageEntry<C>>],
        failed: (usize, Vec<Unit>),
        completed: &[(usize, Vec<Unit>)],
        cause: &StageError,
    ) -> Vec<CompensationFailure> {
        let started = self.publish(EventKind::RollbackStarted {
            stage: Arc::clone(&stages[failed.0].stage.name),
            error: cause.clone(),
        });
        // Durable before the first compensation: a run cut short from here on resumes as a
        // rollback, never forward.
        self.bus.durable(started.seq).await;
        let done = |stage: &str, item: Option<&str>| {
            self.resume
                .as_ref()
                .is_some_and(|r| r.is_compensated(stage, item))
        };
        let mut failures = Vec::new();
        let failed_stage = std::iter::once((failed.0, &failed.1, false));
        let completed_stages = completed.iter().rev().map(|(i, units)| (*i, units, true));
        for (index, units, stage_hook) in failed_stage.chain(completed_stages) {
            let stage = &stages[index].stage;
            let name = &stage.name;
            for unit in units.iter().rev() {
                if done(name, unit.key.as_deref()) {
                    continue;
                }
                let ctx = self.context(
                    name,
                    unit.key.as_ref(),
                    1,
                    HandlerKind::Primary,
                    Arc::new(CancellationToken::new()),
                );
                if let Some(compensation) = stage.work.compensate(ctx, unit) {
                    let result = guarded(compensation, stage.timeout, Instant::now()).await;
                    self.compensated(name, unit.key.clone(), result, &mut failures)
                        .await;
                }
            }
            if let (Some(rollback), true) = (&stage.rollback, stage_hook)
                && !done(name, None)
            {
                let ctx = self.context(
                    name,
                    None,
                    1,
                    HandlerKind::Primary,
                    Arc::new(CancellationToken::new()),
                );
                let result = guarded(rollback(ctx), stage.timeout, Instant::now()).await;
                self.compensated(name, None, result, &mut failures).await;
            }
        }
        failures
    }

    /// The units of `entry` an earlier attempt of a resumed run completed, oldest first, for
    /// compensation: its item source is read again and the completed keys picked out. Empty
    /// when the stage does not compensate per item. A source that fails is a compensation
    /// failure of the stage.
    async fn completed_units(
        &self,
        entry: &StageEntry<C>,
        failures: &mut Vec<CompensationFailure>,
    ) -> Vec<Unit> {
        let stage = &entry.stage;
        let Some(resume) = &self.resume else {
            return Vec::new();
        };
        if !stage.work.compensates_units() || resume.items_completed(&stage.name) == 0 {
            return Vec::new();
        }
        let mut found = Vec::new();
        let mut source = stage.work.units(&self.shared.input);
        while let Some(unit) = source.next().await {
            match unit {
                Ok(unit) => {
                    if let Some(order) = unit
                        .key
                        .as_deref()
                        .and_then(|key| resume.completion(&stage.name, key))
                    {
                        found.push((order, unit));
                    }
                }
                Err(error) => {
                    failures.push(CompensationFailure {
                        stage: Arc::clone(&stage.name),
                        item: None,
                        error: StageError::new(format!(
                            "the completed items could not be listed again to compensate them: {}",
                            error.message()
                        )),
                    });
                    break;
                }
            }
        }
        found.sort_by_key(|(order, _)| *order);
        found.into_iter().map(|(_, unit)| unit).collect()
    }

    /// Publishes a compensation as done and waits for it to be durable before the next one
    /// starts, so a crash runs again only the compensation that was in flight.
    async fn compensated(
        &self,
        stage: &Arc<str>,
        item: Option<Arc<str>>,
        result: Result<(), StageError>,
        failures: &mut Vec<CompensationFailure>,
    ) {
        let error = result.err();
        if let Some(error) = &error {
            failures.push(CompensationFailure {
                stage: Arc::clone(stage),
                item: item.clone(),
                error: error.clone(),
            });
        }
        let finished = self.publish(EventKind::CompensationFinished {
            stage: Arc::clone(stage),
            item,
            error,
        });
        self.bus.durable(finished.seq).await;
    }

    fn context(
        &self,
        stage: &Arc<str>,
        item: Option<&Arc<str>>,
        attempt: u32,
        handler: HandlerKind,
        cancel: Arc<CancellationToken>,
    ) -> StageContext<C> {
        StageContext {
            shared: Arc::clone(&self.shared),
            stage: Arc::clone(stage),
            item: item.cloned(),
            attempt,
            handler,
            cancel,
        }
    }

    /// Publishes what the handler attached of this attempt's output, if anything.
    fn publish_output(&self, stage: &Arc<str>, item: Option<&Arc<str>>, attempt: u32) {
        if let Some(output) = self.shared.outputs.take(stage, item.map(|i| &**i), attempt) {
            self.publish(EventKind::AttemptOutput {
                stage: Arc::clone(stage),
                item: item.cloned(),
                attempt,
                output: Box::new(output),
            });
        }
    }
}

/// The error a requested rollback ends the stage with.
pub(super) fn rollback_requested(reason: &str) -> StageError {
    StageError::new(format!("rollback requested: {reason}")).with_code("ROLLBACK_REQUESTED")
}

/// Runs a handler's future under the stage's timeout counted from `started`, turning a panic into
/// a critical error.
async fn guarded(
    attempt: crate::BoxFuture<'static, Result<(), StageError>>,
    timeout: Option<Duration>,
    started: Instant,
) -> Result<(), StageError> {
    let caught = AssertUnwindSafe(attempt).catch_unwind().map(|result| {
        result.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(StageError::critical(format!("handler panicked: {message}")).with_code("PANIC"))
        })
    });
    match timeout {
        Some(limit) => deadline(started + limit, caught)
            .await
            .unwrap_or_else(|| Err(StageError::timed_out(limit))),
        None => caught.await,
    }
}
