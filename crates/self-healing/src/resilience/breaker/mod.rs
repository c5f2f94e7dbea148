//! Circuit breaker: stop calling a downstream that keeps failing, probe it, resume when it
//! answers again.
//!
//! Two things open a closed breaker, and either is enough: a run of consecutive failures
//! (`failureThreshold`), and, as resilience4j users expect, the share of failed or slow calls
//! among the recent ones (`failureRateThreshold`, `slowCallRateThreshold`, over a
//! [`SlidingWindow`]). A run of failures misses a downstream that fails every other call, since
//! each success resets the run; a rate catches it, and a slow-call rate also catches one that
//! answers, but too late.
//!
//! Here are the breaker and its permit; `settings` holds what a breaker is set to do and its
//! builder, `window` the sliding windows the rates are judged over, and `machine` the state
//! machine, whose every change the breaker makes under one lock.

mod machine;
mod settings;
mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::InvalidConfig;
use machine::{Machine, State};

pub use machine::{BreakerState, Cause, Transition};
pub use settings::{BreakerSettings, CircuitBreakerBuilder, HalfOpenRule};
pub use window::{SlidingWindow, WindowStats};

/// A circuit breaker: closed → open (after `failureThreshold` consecutive failures, when a
/// failure or slow-call rate over the [`SlidingWindow`] reaches its threshold, or when
/// tripped) → half-open after `breakDuration`, letting `halfOpenRequests` probes through →
/// closed after `successThreshold` successes, or open again on any failure (or slow success,
/// while a slow-call rate threshold is set).
///
/// Cheap to clone; clones share one state. [`acquire`](Self::acquire) waits while the breaker
/// is open instead of failing, so work paused by an open breaker spends no attempts.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use self_healing::resilience::{BreakerState, CircuitBreaker};
///
/// let breaker = CircuitBreaker::builder()
///     .failure_threshold(2)
///     .break_duration(Duration::from_secs(60))
///     .half_open_requests(1)
///     .success_threshold(1)
///     .build()
///     .unwrap();
/// breaker.try_acquire().unwrap().failure();
/// breaker.try_acquire().unwrap().failure();
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(breaker.try_acquire().is_err());
///
/// let probe = breaker.acquire().await; // waits the 60 s of virtual time
/// assert_eq!(breaker.state(), BreakerState::HalfOpen);
/// probe.success();
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// # });
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

type Listener = Arc<dyn Fn(Transition) + Send + Sync>;

struct Inner {
    machine: Mutex<Machine>,
    /// The machine's state as one word, for the common case to need no lock: see
    /// [`Machine::fast_word`]. Written only under the machine's lock.
    fast: AtomicU64,
    changed: Notify,
    listeners: Mutex<Vec<Listener>>,
}

/// Returned by [`CircuitBreaker::try_acquire`] while no work may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state:?}")]
pub struct Rejected {
    /// The state that refused the work.
    pub state: BreakerState,
    /// When the breaker will let probes through, if that is known.
    pub retry_after: Option<Duration>,
}

/// Leave to do one piece of work. Report how it went with [`success`](Self::success) or
/// [`failure`](Self::failure); dropping it unreported counts as neither and frees its
/// half-open probe slot.
#[must_use = "report the outcome with success() or failure()"]
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    probe: bool,
    reported: bool,
    /// When it was given; only while the breaker times calls (a slow-call rate threshold is
    /// set), so that the common case reads no clock.
    started: Option<Instant>,
}

impl BreakerPermit<'_> {
    /// Reports that the work succeeded: a probe counts toward closing the breaker, and a closed
    /// breaker forgets the failures it counted.
    #[inline]
    pub fn success(mut self) {
        self.reported = true;
        self.breaker
            .report(self.generation, self.probe, true, self.started);
    }

    /// Reports that the work failed: a closed breaker counts it toward opening; a failed probe
    /// opens it again.
    #[inline]
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker
            .report(self.generation, self.probe, false, self.started);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.release_probe(self.generation);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker with `settings`, or the reason they cannot work.
    pub fn new(settings: BreakerSettings) -> Result<Self, InvalidConfig> {
        settings.validate()?;
        let machine = Machine::new(settings);
        Ok(CircuitBreaker {
            inner: Arc::new(Inner {
                fast: AtomicU64::new(machine.fast_word()),
                machine: Mutex::new(machine),
                changed: Notify::new(),
                listeners: Mutex::new(Vec::new()),
            }),
        })
    }

    /// A breaker that opens only when tripped or forced.
    pub fn manual() -> Self {
        CircuitBreaker::new(BreakerSettings {
            failure_threshold: None,
            ..BreakerSettings::default()
        })
        .expect("default settings are valid")
    }

    /// The current settings.
    pub fn settings(&self) -> BreakerSettings {
        self.lock().settings
    }

    /// Replaces the settings; the current state is kept, and so is the sliding window unless its
    /// kind or size changes or rates are turned on or off (then it starts empty).
    pub fn set_settings(&self, settings: BreakerSettings) -> Result<(), InvalidConfig> {
        settings.validate()?;
        self.update(|machine| machine.set_settings(settings));
        self.inner.changed.notify_waiters();
        Ok(())
    }

    /// Calls `listener` after every state change, outside the breaker's lock.
    pub fn on_transition(&self, listener: impl Fn(Transition) + Send + Sync + 'static) {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(listener));
    }

    /// The current state; an open breaker whose break is over reads (and becomes) half-open.
    pub fn state(&self) -> BreakerState {
        let (state, transition) = self.update(|machine| {
            let transition = machine.expire_open();
            (machine.state.public(), transition)
        });
        self.announce(transition);
        state
    }

    /// What the sliding window holds, to say why the breaker opened. While closed: the calls in
    /// it now (none while no rate threshold is set, as outcomes are then not recorded).
    /// Otherwise: what it held when the breaker last left closed, so that a transition listener
    /// sees the calls that opened it, though the window itself is emptied when the breaker
    /// opens, and starts empty again when it closes.
    pub fn window(&self) -> WindowStats {
        self.lock().window()
    }

    /// Leave for one piece of work now, or why not.
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, Rejected> {
        // The common case, closed with no failure counted and no rate to keep, takes no lock.
        let fast = self.inner.fast.load(Ordering::Acquire);
        if fast != Machine::SLOW {
            return Ok(BreakerPermit {
                breaker: self,
                generation: fast >> 1,
                probe: false,
                reported: false,
                started: None,
            });
        }
        let (result, transition) = self.update(|machine| {
            let transition = machine.expire_open();
            (machine.admit(), transition)
        });
        self.announce(transition);
        result.map(|admitted| BreakerPermit {
            breaker: self,
            generation: admitted.generation,
            probe: admitted.probe,
            reported: false,
            started: admitted.timed.then(Instant::now),
        })
    }

    /// Leave for one piece of work, waiting (on tokio time) while the breaker is open or its
    /// half-open probes are all out.
    pub async fn acquire(&self) -> BreakerPermit<'_> {
        // The common case, a closed breaker, needs no wake-up registration.
        if let Ok(permit) = self.try_acquire() {
            return permit;
        }
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.try_acquire() {
                Ok(permit) => return permit,
                Err(Rejected {
                    retry_after: Some(wait),
                    ..
                }) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = changed => {}
                    }
                }
                Err(_) => changed.await,
            }
        }
    }

    /// Opens the breaker now for `break_duration` (the settings' if `None`), then half-open as
    /// usual. This is what the `circuit-break` action does.
    pub fn trip(&self, break_duration: Option<Duration>) {
        let transition = self.update(|machine| {
            let until = Instant::now() + break_duration.unwrap_or(machine.settings.break_duration);
            machine.set(State::Open { until }, Cause::Asked)
        });
        self.announce(transition);
    }

    /// Holds the breaker open until [`release`](Self::release).
    pub fn force_open(&self) {
        let transition = self.update(|machine| machine.set(State::ForcedOpen, Cause::Asked));
        self.announce(transition);
    }

    /// Holds the breaker closed, whatever fails, until [`release`](Self::release).
    pub fn force_closed(&self) {
        let transition = self.update(|machine| machine.set(State::ForcedClosed, Cause::Asked));
        self.announce(transition);
    }

    /// Back to automatic operation, closed with no failures counted.
    pub fn release(&self) {
        let transition =
            self.update(|machine| machine.set(State::Closed { failures: 0 }, Cause::Asked));
        self.announce(transition);
    }

    #[inline]
    fn report(&self, generation: u64, probe: bool, success: bool, started: Option<Instant>) {
        // Closed with no failure counted (or held closed) stays so on a success, and held closed
        // ignores failures too: nothing to write, so no lock.
        let fast = self.inner.fast.load(Ordering::Acquire);
        if fast != Machine::SLOW && fast >> 1 == generation && (success || fast & 1 == 1) {
            return;
        }
        self.report_slowly(generation, probe, success, started);
    }

    #[cold]
    fn report_slowly(&self, generation: u64, probe: bool, success: bool, started: Option<Instant>) {
        let took = started.map(|at| at.elapsed());
        let transition = self.update(|machine| machine.report(generation, probe, success, took));
        self.announce(transition);
    }

    fn release_probe(&self, generation: u64) {
        let released = self.update(|machine| machine.release_probe(generation));
        if released {
            self.inner.changed.notify_waiters();
        }
    }

    fn announce(&self, transition: Option<Transition>) {
        let Some(transition) = transition else { return };
        self.inner.changed.notify_waiters();
        let listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for listener in listeners {
            listener(transition);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.inner.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the machine under its lock and publishes its fast word before unlocking, so the
    /// lock-free paths never see a word older than the last change they could have observed.
    fn update<R>(&self, change: impl FnOnce(&mut Machine) -> R) -> R {
        let mut machine = self.lock();
        let result = change(&mut machine);
        self.inner
            .fast
            .store(machine.fast_word(), Ordering::Release);
        result
    }
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let machine = self.lock();
        f.debug_struct("CircuitBreaker")
            .field("state", &machine.state)
            .field("settings", &machine.settings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    pub(super) fn breaker() -> CircuitBreaker {
        CircuitBreaker::builder()
            .failure_threshold(3)
            .success_threshold(2)
            .half_open_requests(2)
            .break_duration(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    pub(super) fn recorded(
        breaker: &CircuitBreaker,
    ) -> Arc<Mutex<Vec<(BreakerState, BreakerState)>>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        breaker.on_transition(move |t| sink.lock().unwrap().push((t.from, t.to)));
        log
    }

    pub(super) fn fail(breaker: &CircuitBreaker, times: usize) {
        for _ in 0..times {
            breaker.try_acquire().unwrap().failure();
        }
    }

    pub(super) fn count(calls: u32) -> SlidingWindow {
        SlidingWindow::Count(NonZeroU32::new(calls).unwrap())
    }

    /// A breaker that opens only on rates (no consecutive-failure threshold), with a 10 s break
    /// and one probe.
    pub(super) fn rated(window: SlidingWindow, minimum_calls: u32) -> CircuitBreakerBuilder {
        CircuitBreaker::builder()
            .manual_only()
            .sliding_window(window)
            .minimum_calls(minimum_calls)
            .break_duration(Duration::from_secs(10))
            .half_open_requests(1)
    }

    /// Reports `outcomes` in order: `F` a failure, `S` a success.
    pub(super) fn calls(breaker: &CircuitBreaker, outcomes: &str) {
        for outcome in outcomes.chars() {
            let permit = breaker.try_acquire().unwrap();
            match outcome {
                'F' => permit.failure(),
                'S' => permit.success(),
                other => panic!("unknown outcome {other}"),
            }
        }
    }

    /// Holds a permit for `took` of virtual time, then reports a success.
    pub(super) async fn slow_success(breaker: &CircuitBreaker, took: Duration) {
        let permit = breaker.try_acquire().unwrap();
        tokio::time::advance(took).await;
        permit.success();
    }

    pub(super) fn stats(calls: u64, failures: u64, slow: u64) -> WindowStats {
        WindowStats {
            calls,
            failures,
            slow,
        }
    }
    #[tokio::test(start_paused = true)]
    async fn acquire_waits_out_the_break_and_for_probe_slots() {
        let b = breaker();
        fail(&b, 3);
        let start = Instant::now();
        let first = b.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        let _second = b.acquire().await;
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.success() }
        });
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "no probe slot is free");
        drop(first);
        waiter.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn only_rates_leave_the_fast_path_and_only_slow_call_rates_read_the_clock() {
        let fast = |b: &CircuitBreaker| b.inner.fast.load(Ordering::Acquire) != Machine::SLOW;

        let b = CircuitBreaker::builder().build().unwrap();
        assert!(fast(&b), "the default breaker stays lock-free");
        let permit = b.try_acquire().unwrap();
        assert_eq!(permit.started, None);
        permit.success();
        assert!(fast(&b));
        assert_eq!(b.window(), WindowStats::default(), "nothing recorded");

        let b = rated(count(10), 10)
            .failure_rate_threshold(50.0)
            .build()
            .unwrap();
        assert!(!fast(&b), "closed, but outcomes must be recorded");
        let permit = b.try_acquire().unwrap();
        assert_eq!(permit.started, None, "no slow-call rate: not timed");
        permit.success();
        assert_eq!(b.window(), stats(1, 0, 0));

        let b = rated(count(10), 10)
            .slow_call_rate_threshold(50.0)
            .build()
            .unwrap();
        let permit = b.try_acquire().unwrap();
        assert_eq!(permit.started, Some(Instant::now()));
        permit.success();

        // Turning the rates off live brings the fast path back, with an empty window.
        b.set_settings(BreakerSettings::default()).unwrap();
        assert!(fast(&b));
        assert_eq!(b.window(), WindowStats::default());
    }
}
