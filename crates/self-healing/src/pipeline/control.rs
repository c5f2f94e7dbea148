//! A stage's live controls: the knobs healing actions and operators turn while it runs.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{StageChange, Supervisor};
use crate::error::InvalidConfig;
use crate::event::{ActionKind, EventBus, EventKind, RunId};
use crate::resilience::{
    AdaptiveLimit, AdaptiveSettings, Cause, CircuitBreaker, ConcurrencyLimit, Rate, Sample,
    Throttle,
};

/// The live state of one stage, shared between the running pipeline and whoever steers it
/// (the healer's actions, operators): the one place that state lives. Every change is
/// published on the bus, and so is every healing action applied to the stage
/// ([`applied`](Self::applied) is the one writer of `healing-applied`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
///
/// let pipeline = SelfHealingPipeline::builder()
///     .stage(Stage::for_each("load", ItemSource::iter(|_: &()| 0..10u32), |_ctx| async { Ok(()) }).concurrency(2))
///     .build()
///     .unwrap();
/// let load = pipeline.control("load").unwrap();
/// assert_eq!(load.set_concurrency(8).unwrap(), 2); // what `scale` does
/// load.breaker().trip(None);                        // what `circuit-break` does
/// # });
/// ```
pub struct StageControl {
    stage: Arc<str>,
    bus: EventBus,
    run: Arc<Mutex<Option<RunId>>>,
    concurrency: ConcurrencyLimit,
    throttle: Throttle,
    breaker: CircuitBreaker,
    can_fail_over: bool,
    failed_over: AtomicBool,
    /// Since when the stage runs (reset by a restart); `None` while it does not.
    running_since: Mutex<Option<Instant>>,
    restarts: AtomicU32,
    requests: Mutex<Pending>,
    requested: Notify,
    /// The checks the stage depends on (`dependsOn`).
    depends_on: Arc<[Arc<str>]>,
    /// Those of them unhealthy now; new attempts wait while any is.
    held_by: Mutex<BTreeSet<Arc<str>>>,
    /// `held_by`'s size, so an attempt of a stage held by nothing reads no lock.
    holds: AtomicUsize,
    released: Notify,
    /// The AIMD controller of its concurrency, when `scale` runs in adaptive mode.
    adaptive: Mutex<Option<AdaptiveLimit>>,
    adaptive_on: AtomicBool,
    /// Who is told what the stage changes by itself (its supervisor).
    watcher: Weak<dyn Supervisor>,
    /// The breaker's name: a shared breaker's, else `circuitBreaker`.
    breaker_name: Arc<str>,
}

/// What a stage's controls are made of, besides the pipeline's bus and current run.
pub(crate) struct Parts {
    /// Items run at once, at first.
    pub(crate) concurrency: usize,
    /// Its breaker: its own, or a shared one.
    pub(crate) breaker: CircuitBreaker,
    /// The breaker's name: a shared breaker's, else `circuitBreaker`.
    pub(crate) breaker_name: Arc<str>,
    /// Whether it has a failover handler.
    pub(crate) can_fail_over: bool,
    /// The checks it depends on.
    pub(crate) depends_on: Arc<[Arc<str>]>,
}

/// What an operator or the healer asked a running stage to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageRequest {
    /// Stop, run the reset hook, start over.
    Restart {
        /// Why it was asked; carried into the events and errors that follow.
        reason: String,
    },
    /// Stop, compensate completed work in reverse order, end the run rolled back.
    Rollback {
        /// Why it was asked; carried into the events and errors that follow.
        reason: String,
    },
}

/// The latest request and how many were made; a pass acts on requests made after it started.
#[derive(Default)]
struct Pending {
    epoch: u64,
    request: Option<StageRequest>,
}

impl StageControl {
    pub(crate) fn new(
        stage: Arc<str>,
        bus: EventBus,
        run: Arc<Mutex<Option<RunId>>>,
        parts: Parts,
        watcher: Weak<dyn Supervisor>,
    ) -> Result<Arc<Self>, InvalidConfig> {
        let Parts {
            concurrency,
            breaker,
            breaker_name,
            can_fail_over,
            depends_on,
        } = parts;
        let control = Arc::new(StageControl {
            stage,
            bus,
            run,
            concurrency: ConcurrencyLimit::new(concurrency)?,
            throttle: Throttle::unlimited(),
            breaker,
            can_fail_over,
            failed_over: AtomicBool::new(false),
            running_since: Mutex::new(None),
            restarts: AtomicU32::new(0),
            requests: Mutex::new(Pending::default()),
            requested: Notify::new(),
            depends_on,
            held_by: Mutex::new(BTreeSet::new()),
            holds: AtomicUsize::new(0),
            released: Notify::new(),
            adaptive: Mutex::new(None),
            adaptive_on: AtomicBool::new(false),
            watcher,
            breaker_name,
        });
        let weak = Arc::downgrade(&control);
        control.breaker.on_transition(move |t| {
            if let Some(control) = weak.upgrade() {
                control.publish(EventKind::BreakerChanged {
                    stage: Arc::clone(&control.stage),
                    from: t.from,
                    to: t.to,
                });
                if t.cause != Cause::Asked {
                    control.tell(&StageChange::Breaker {
                        name: Arc::clone(&control.breaker_name),
                        transition: t,
                        window: control.breaker.window(),
                        settings: control.breaker.settings(),
                    });
                }
            }
        });
        Ok(control)
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The stage's name, shared.
    pub fn stage_name(&self) -> &Arc<str> {
        &self.stage
    }

    /// Whether the stage is running now.
    pub fn is_running(&self) -> bool {
        self.since().is_some()
    }

    /// How long the stage has been running (since its last restart), if it is.
    pub fn running_for(&self) -> Option<Duration> {
        self.since().map(|since| since.elapsed())
    }

    /// How often the stage was restarted in the current (or last) run.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Acquire)
    }

    fn since(&self) -> Option<Instant> {
        *self.running_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The executor's marks: the stage starts, restarts, or stops.
    pub(crate) fn mark_started(&self) {
        self.restarts.store(0, Ordering::Release);
        self.set_since(Some(Instant::now()));
    }

    pub(crate) fn mark_restarted(&self) -> u32 {
        self.set_since(Some(Instant::now()));
        self.restarts.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Running again after a restart's back-off.
    pub(crate) fn mark_resumed(&self) {
        self.set_since(Some(Instant::now()));
    }

    pub(crate) fn mark_stopped(&self) {
        self.set_since(None);
    }

    fn set_since(&self, since: Option<Instant>) {
        *self.running_since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }

    /// Publishes that a healing action was applied to this stage (or one of its items), with
    /// what exactly it did.
    pub fn applied(&self, action: ActionKind, item: Option<Arc<str>>, detail: impl Into<String>) {
        self.publish(EventKind::HealingApplied {
            stage: Arc::clone(&self.stage),
            item,
            action,
            detail: detail.into(),
        });
    }

    /// How many items may run at once now (1 for a stage that runs once).
    pub fn concurrency(&self) -> usize {
        self.concurrency.limit()
    }

    /// Items of this stage running now.
    pub fn in_flight(&self) -> usize {
        self.concurrency.in_flight()
    }

    /// Changes how many items run at once, effective at once for raises and as work finishes
    /// for cuts. Returns the previous limit.
    pub fn set_concurrency(&self, limit: usize) -> Result<usize, InvalidConfig> {
        let from = self.concurrency.set_limit(limit)?;
        if from != limit {
            self.publish(EventKind::ConcurrencyChanged {
                stage: Arc::clone(&self.stage),
                from,
                to: limit,
            });
        }
        Ok(from)
    }

    /// Lets an AIMD controller ([`AdaptiveLimit`]) set the stage's concurrency from each
    /// attempt's latency, within `settings`' bounds (`None`: fixed again, where it is). The
    /// concurrency moves into the bounds at once. Returns whether anything changed: settings
    /// equal to those in force keep the controller and what it learned.
    pub fn set_adaptive(&self, settings: Option<AdaptiveSettings>) -> Result<bool, InvalidConfig> {
        let clamp = {
            let mut adaptive = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
            if adaptive.as_ref().map(AdaptiveLimit::settings) == settings {
                return Ok(false);
            }
            *adaptive = settings.map(AdaptiveLimit::new).transpose()?;
            self.adaptive_on
                .store(adaptive.is_some(), Ordering::Release);
            adaptive.as_ref().map(|a| a.clamp(self.concurrency()))
        };
        if let Some(limit) = clamp {
            self.set_concurrency(limit)?;
        }
        Ok(true)
    }

    /// The adaptive controller's settings, while it runs.
    pub fn adaptive(&self) -> Option<AdaptiveSettings> {
        self.adaptive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(AdaptiveLimit::settings)
    }

    /// Feeds a finished attempt to the adaptive controller, if there is one. The limit is in
    /// use when every place under it is taken, by attempts or by units waiting (for a retry,
    /// the breaker, a check): either way no more work can start.
    pub(crate) fn attempt_finished(&self, latency: Duration, outcome: Sample) {
        if !self.adaptive_on.load(Ordering::Acquire) {
            return;
        }
        let next = {
            let mut adaptive = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
            let Some(aimd) = adaptive.as_mut() else {
                return;
            };
            aimd.on_sample(latency, outcome, self.in_flight(), self.concurrency())
        };
        if let Some(limit) = next
            // Within the settings' bounds, which are valid limits.
            && let Ok(from) = self.set_concurrency(limit)
            && from != limit
        {
            self.tell(&StageChange::Adapted { from, to: limit });
        }
    }

    /// The cap on how fast attempts start; `None` when uncapped.
    pub fn rate(&self) -> Option<Rate> {
        self.throttle.rate()
    }

    /// Caps (or with `None` uncaps) how fast this stage's attempts start.
    pub fn set_rate(&self, rate: Option<Rate>) {
        self.throttle.set_rate(rate);
        self.publish(EventKind::ThrottleChanged {
            stage: Arc::clone(&self.stage),
            rate: rate.map(|r| r.per_second()),
        });
    }

    /// The stage's breaker: trip it, force it, read it.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The health checks the stage depends on (`dependsOn`).
    pub fn depends_on(&self) -> &[Arc<str>] {
        &self.depends_on
    }

    /// The checks it depends on that hold its work now, in name order.
    pub fn held_by(&self) -> Vec<Arc<str>> {
        self.lock_held().iter().cloned().collect()
    }

    /// Marks `check`, one the stage depends on, as down (`true`: unhealthy; new attempts wait)
    /// or up again (`false`: once no check holds the stage, its work resumes at once).
    /// Publishes `stage-held` when the set of checks holding the stage changes, and returns
    /// whether it did; a check the stage does not depend on changes nothing.
    pub fn set_dependency_down(&self, check: &str, down: bool) -> bool {
        let Some(check) = self.depends_on.iter().find(|c| &***c == check) else {
            return false;
        };
        let held_by = {
            let mut held = self.lock_held();
            let changed = if down {
                held.insert(Arc::clone(check))
            } else {
                held.remove(check)
            };
            if !changed {
                return false;
            }
            self.holds.store(held.len(), Ordering::Release);
            held.iter().cloned().collect::<Vec<_>>()
        };
        if held_by.is_empty() {
            self.released.notify_waiters();
        }
        self.publish(EventKind::StageHeld {
            stage: Arc::clone(&self.stage),
            held_by,
        });
        true
    }

    /// Forgets, without a word, which checks held the stage: a new run starts free.
    pub(crate) fn clear_dependencies(&self) {
        let mut held = self.lock_held();
        held.clear();
        self.holds.store(0, Ordering::Release);
        drop(held);
        self.released.notify_waiters();
    }

    /// Waits until no check the stage depends on is down.
    pub(crate) async fn dependencies_up(&self) {
        loop {
            if self.holds.load(Ordering::Acquire) == 0 {
                return;
            }
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.holds.load(Ordering::Acquire) == 0 {
                return;
            }
            released.await;
        }
    }

    /// Whether a check the stage depends on holds its work now.
    pub(crate) fn is_held(&self) -> bool {
        self.holds.load(Ordering::Acquire) > 0
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, BTreeSet<Arc<str>>> {
        self.held_by.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the stage has a failover handler.
    pub fn can_fail_over(&self) -> bool {
        self.can_fail_over
    }

    /// Whether later attempts run the failover handler instead of the primary.
    pub fn is_failed_over(&self) -> bool {
        self.failed_over.load(Ordering::Acquire)
    }

    /// Switches later attempts to the failover handler (`true`) or back to the primary.
    /// Returns whether anything changed; a stage without a failover handler cannot switch.
    pub fn set_failed_over(&self, failed_over: bool) -> bool {
        if failed_over && !self.can_fail_over {
            return false;
        }
        self.failed_over.swap(failed_over, Ordering::AcqRel) != failed_over
    }

    /// Asks the running stage to stop, run its reset hook and start over. Counts against the
    /// stage's restart limit. Has no effect on a stage that is not running.
    pub fn request_restart(&self, reason: impl Into<String>) {
        self.request(StageRequest::Restart {
            reason: reason.into(),
        });
    }

    /// Asks the running stage to stop and roll the run back. Has no effect on a stage that is
    /// not running.
    pub fn request_rollback(&self, reason: impl Into<String>) {
        self.request(StageRequest::Rollback {
            reason: reason.into(),
        });
    }

    /// Asks the running stage to carry out `request` (see [`request_restart`](Self::request_restart)
    /// and [`request_rollback`](Self::request_rollback)).
    pub fn request(&self, request: StageRequest) {
        {
            let mut pending = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            pending.epoch += 1;
            // A rollback asked for is not undone by a later restart request.
            if !matches!(pending.request, Some(StageRequest::Rollback { .. }))
                || matches!(request, StageRequest::Rollback { .. })
            {
                pending.request = Some(request);
            }
        }
        self.requested.notify_waiters();
    }

    /// How many requests were made so far: a pass starting now acts only on later ones.
    pub(crate) fn request_epoch(&self) -> u64 {
        let mut pending = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        pending.request = None;
        pending.epoch
    }

    /// A request made after `seen`, if there is one: a restart is taken, a rollback is only
    /// looked at (it stays for whoever waits on [`Self::next_request`]).
    pub(crate) fn requested_after(&self, seen: u64) -> Option<(u64, StageRequest)> {
        let mut pending = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if pending.epoch <= seen {
            return None;
        }
        let request = match &pending.request {
            Some(StageRequest::Restart { .. }) => pending.request.take()?,
            other => other.clone()?,
        };
        Some((pending.epoch, request))
    }

    /// Waits for a request made after `seen` (a value of [`Self::request_epoch`], or one this
    /// returned), and returns it with the count of requests it answers to.
    pub(crate) async fn next_request(&self, seen: u64) -> (u64, StageRequest) {
        loop {
            let notified = self.requested.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut pending = self.requests.lock().unwrap_or_else(|e| e.into_inner());
                if pending.epoch > seen
                    && let Some(request) = pending.request.take()
                {
                    return (pending.epoch, request);
                }
            }
            notified.await;
        }
    }

    pub(crate) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub(crate) fn limit(&self) -> &ConcurrencyLimit {
        &self.concurrency
    }

    fn publish(&self, kind: EventKind) {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.bus.publish(run.as_ref(), kind);
    }

    /// Tells the stage's supervisor what the stage changed by itself.
    fn tell(&self, change: &StageChange) {
        if let Some(watcher) = self.watcher.upgrade() {
            let run = self.run.lock().unwrap_or_else(|e| e.into_inner()).clone();
            watcher.stage_changed(run.as_ref(), &self.stage, change);
        }
    }
}

impl std::fmt::Debug for StageControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageControl")
            .field("stage", &self.stage)
            .field("concurrency", &self.concurrency)
            .field("throttle", &self.throttle)
            .field("breaker", &self.breaker.state())
            .field("failed_over", &self.is_failed_over())
            .field("running", &self.is_running())
            .field("restarts", &self.restarts())
            .field("held_by", &self.held_by())
            .finish()
    }
}
