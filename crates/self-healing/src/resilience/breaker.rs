//! Circuit breaker: stop calling a downstream that keeps failing, probe it, resume when it
//! answers again.
//!
//! Two things open a closed breaker, and either is enough: a run of consecutive failures
//! (`failureThreshold`), and, as resilience4j users expect, the share of failed or slow calls
//! among the recent ones (`failureRateThreshold`, `slowCallRateThreshold`, over a
//! [`SlidingWindow`]). A run of failures misses a downstream that fails every other call, since
//! each success resets the run; a rate catches it, and a slow-call rate also catches one that
//! answers, but too late.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::InvalidConfig;

/// Where a breaker is. `ForcedOpen` and `ForcedClosed` are set by hand and stay until
/// [`CircuitBreaker::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Work passes; consecutive failures are counted, and outcomes are recorded in the sliding
    /// window while a rate threshold is set.
    Closed,
    /// Work waits until the break is over.
    Open,
    /// A limited number of probes pass; their outcome closes or reopens the breaker.
    HalfOpen,
    /// Held open by hand: no work passes until released.
    ForcedOpen,
    /// Held closed by hand: work passes, whatever fails, until released.
    ForcedClosed,
}

impl BreakerState {
    /// True when work may not pass (open, by itself or by hand).
    pub fn is_open(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }
}

/// One state change, as given to [`CircuitBreaker::on_transition`] listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before the change.
    pub from: BreakerState,
    /// The state after the change.
    pub to: BreakerState,
}

/// The breaker's settings: the seed's `failureThreshold`, `successThreshold`,
/// `breakDuration` (alias `timeout`) and `halfOpenRequests`, and resilience4j's
/// `failureRateThreshold`, `slowCallRateThreshold`, `slowCallDurationThreshold`, sliding window
/// and `minimumNumberOfCalls`. The defaults leave both rates off, so by default only
/// consecutive failures open the breaker.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use self_healing::resilience::{BreakerSettings, CircuitBreaker};
///
/// let settings = BreakerSettings {
///     failure_threshold: NonZeroU32::new(5),
///     success_threshold: NonZeroU32::new(2).unwrap(),
///     break_duration: Duration::from_secs(60),
///     half_open_requests: NonZeroU32::new(3).unwrap(),
///     ..BreakerSettings::default()
/// };
/// let breaker = CircuitBreaker::new(settings).unwrap();
/// assert_eq!(breaker.settings(), settings);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a closed breaker; `None` means failures never open it
    /// (it opens only when tripped, which is how the `circuit-break` action uses it).
    pub failure_threshold: Option<NonZeroU32>,
    /// Successful probes in half-open that close it.
    pub success_threshold: NonZeroU32,
    /// How long it stays open before letting probes through.
    pub break_duration: Duration,
    /// How many probes half-open lets through; the rest wait.
    pub half_open_requests: NonZeroU32,
    /// Opens a closed breaker when at least this percentage (1 to 100) of the calls in the
    /// sliding window failed; `None`, the default, never looks at the rate.
    pub failure_rate_threshold: Option<u8>,
    /// Opens a closed breaker when at least this percentage (1 to 100) of the calls in the
    /// sliding window were slow, failed or not; `None`, the default, never times calls. While
    /// set, a half-open probe that succeeds slowly counts as failed: the downstream answers but
    /// is not well yet.
    pub slow_call_rate_threshold: Option<u8>,
    /// A call that took at least this long is slow; default 60 s. Used only while
    /// `slow_call_rate_threshold` is set.
    pub slow_call_duration_threshold: Duration,
    /// Which recent calls the rates are computed over; default the last 100.
    pub sliding_window: SlidingWindow,
    /// No rate is judged before the sliding window holds this many calls (or, for a count
    /// window, as many as it can hold if that is fewer), so that a few early failures do not
    /// open the breaker; default 100.
    pub minimum_calls: NonZeroU32,
}

impl Default for BreakerSettings {
    /// Opens after 5 consecutive failures, for 60 s, then lets 3 probes through and closes
    /// when all 3 succeed.
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: NonZeroU32::new(5),
            success_threshold: NonZeroU32::new(3).unwrap(),
            break_duration: Duration::from_secs(60),
            half_open_requests: NonZeroU32::new(3).unwrap(),
            failure_rate_threshold: None,
            slow_call_rate_threshold: None,
            slow_call_duration_threshold: Duration::from_secs(60),
            sliding_window: SlidingWindow::default(),
            minimum_calls: NonZeroU32::new(100).unwrap(),
        }
    }
}

impl BreakerSettings {
    /// Checks that the settings can work: `success_threshold` at most `half_open_requests`,
    /// `break_duration` and `slow_call_duration_threshold` longer than zero, rate thresholds
    /// from 1 to 100 %, and a time window of whole seconds, at least 1. Fields are named as in
    /// the configuration (resilience4j's names for the rates and their window).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.success_threshold > self.half_open_requests {
            return Err(InvalidConfig::new(
                "successThreshold",
                format!(
                    "{} successes can never be reached with halfOpenRequests {}",
                    self.success_threshold, self.half_open_requests
                ),
            ));
        }
        if self.break_duration.is_zero() {
            return Err(InvalidConfig::new(
                "breakDuration",
                "must be longer than zero",
            ));
        }
        for (field, threshold) in [
            ("failureRateThreshold", self.failure_rate_threshold),
            ("slowCallRateThreshold", self.slow_call_rate_threshold),
        ] {
            if let Some(percent) = threshold
                && !(1..=100).contains(&percent)
            {
                return Err(InvalidConfig::new(
                    field,
                    format!("{percent} is not a percentage from 1 to 100"),
                ));
            }
        }
        if self.slow_call_duration_threshold.is_zero() {
            return Err(InvalidConfig::new(
                "slowCallDurationThreshold",
                "must be longer than zero, or every call would be slow",
            ));
        }
        if let SlidingWindow::Time(span) = self.sliding_window
            && (span < Duration::from_secs(1) || span.subsec_nanos() != 0)
        {
            return Err(InvalidConfig::new(
                "slidingWindowSize",
                format!("a time window is whole seconds, at least 1, not {span:?}"),
            ));
        }
        Ok(())
    }

    /// Whether a rate can open the breaker, so that a closed breaker records every outcome.
    fn rated(&self) -> bool {
        self.failure_rate_threshold.is_some() || self.slow_call_rate_threshold.is_some()
    }

    /// Whether calls are timed, to tell the slow ones.
    fn timed(&self) -> bool {
        self.slow_call_rate_threshold.is_some()
    }
}

/// Which recent calls a closed breaker weighs to compute its failure and slow-call rates
/// (resilience4j's `slidingWindowType` and `slidingWindowSize`). Default: the last 100 calls.
///
/// A count window judges the same number of calls however busy the downstream is; a time
/// window judges what happened lately, and forgets old trouble even when calls are rare.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use self_healing::resilience::{BreakerState, CircuitBreaker, SlidingWindow};
///
/// // Open when half of the last 10 calls failed, or half of them took 2 s or more, judged from
/// // the 4th call on (5 failures in a row, the default, still open it too).
/// let breaker = CircuitBreaker::builder()
///     .sliding_window(SlidingWindow::Count(NonZeroU32::new(10).unwrap()))
///     .minimum_calls(4)
///     .failure_rate_threshold(50)
///     .slow_call_rate_threshold(50)
///     .slow_call_duration_threshold(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// breaker.try_acquire().unwrap().failure();
/// breaker.try_acquire().unwrap().success();
/// breaker.try_acquire().unwrap().failure();
/// assert_eq!(breaker.state(), BreakerState::Closed, "3 calls are too few to judge");
///
/// let permit = breaker.try_acquire().unwrap();
/// tokio::time::sleep(Duration::from_secs(3)).await; // virtual time
/// permit.success(); // slow, and the 4th call: 2 failures of 4 is 50 %
/// assert_eq!(breaker.state(), BreakerState::Open);
///
/// let why = breaker.window(); // what the window held when the breaker opened
/// assert_eq!((why.calls, why.failures, why.slow), (4, 2, 1));
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last N calls, however long ago they ended (resilience4j's `COUNT_BASED`).
    Count(NonZeroU32),
    /// The calls that ended in the last N whole seconds (resilience4j's `TIME_BASED`), kept as
    /// one total per second: memory grows with the seconds, not the calls, and a second's calls
    /// are forgotten together once it falls out of the window. Whole seconds, at least 1.
    Time(Duration),
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow::Count(NonZeroU32::new(100).unwrap())
    }
}

/// What a breaker's sliding window holds: see [`CircuitBreaker::window`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Calls whose outcome is in the window.
    pub calls: u64,
    /// Of those, the ones that failed.
    pub failures: u64,
    /// Of those, the ones that took at least `slow_call_duration_threshold`, failed or not.
    /// Always 0 while no slow-call rate threshold is set, as calls are then not timed.
    pub slow: u64,
}

impl WindowStats {
    fn of(outcome: Outcome) -> Self {
        WindowStats {
            calls: 1,
            failures: outcome.failed.into(),
            slow: outcome.slow.into(),
        }
    }

    fn add(&mut self, other: WindowStats) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    fn remove(&mut self, other: WindowStats) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }
}

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

struct Machine {
    settings: BreakerSettings,
    state: State,
    /// Bumped on every transition, so an outcome reported by a permit from an earlier state
    /// does not count in the new one.
    generation: u64,
    /// The outcomes of the current closed period, recorded only while a rate threshold is set.
    window: Window,
    /// What the window held when the breaker last left closed, to say why it opened.
    left_with: WindowStats,
}

/// How one call went, as a count window remembers it.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    failed: bool,
    slow: bool,
}

/// The recent outcomes of a closed breaker, with their running totals so that judging the rates
/// after each call costs no walk over the window.
#[derive(Debug)]
struct Window {
    totals: WindowStats,
    calls: Calls,
}

#[derive(Debug)]
enum Calls {
    /// The last `size` outcomes; the vector grows up to `size` as calls come, then `next` is
    /// the oldest, overwritten by the next call.
    Count {
        size: usize,
        outcomes: Vec<Outcome>,
        next: usize,
    },
    /// One total per second since `origin` that saw calls, oldest first: at most `seconds` of
    /// them, as older ones are dropped.
    Time {
        seconds: u64,
        origin: Instant,
        buckets: VecDeque<(u64, WindowStats)>,
    },
}

impl Window {
    fn new(kind: SlidingWindow) -> Self {
        let calls = match kind {
            SlidingWindow::Count(size) => Calls::Count {
                size: size.get() as usize,
                outcomes: Vec::new(),
                next: 0,
            },
            SlidingWindow::Time(span) => Calls::Time {
                seconds: span.as_secs(),
                origin: Instant::now(),
                buckets: VecDeque::new(),
            },
        };
        Window {
            totals: WindowStats::default(),
            calls,
        }
    }

    fn record(&mut self, outcome: Outcome) {
        let stats = WindowStats::of(outcome);
        match &mut self.calls {
            Calls::Count {
                size,
                outcomes,
                next,
            } => {
                if outcomes.len() < *size {
                    outcomes.push(outcome);
                } else {
                    let oldest = std::mem::replace(&mut outcomes[*next], outcome);
                    self.totals.remove(WindowStats::of(oldest));
                    *next = (*next + 1) % *size;
                }
            }
            Calls::Time {
                seconds,
                origin,
                buckets,
            } => {
                let now = Instant::now().saturating_duration_since(*origin).as_secs();
                Self::forget(&mut self.totals, buckets, *seconds, now);
                match buckets.back_mut() {
                    Some((second, bucket)) if *second == now => bucket.add(stats),
                    _ => buckets.push_back((now, stats)),
                }
            }
        }
        self.totals.add(stats);
    }

    /// The totals of the calls still in the window.
    fn stats(&mut self) -> WindowStats {
        if let Calls::Time {
            seconds,
            origin,
            buckets,
        } = &mut self.calls
            && !buckets.is_empty()
        {
            let now = Instant::now().saturating_duration_since(*origin).as_secs();
            Self::forget(&mut self.totals, buckets, *seconds, now);
        }
        self.totals
    }

    /// Drops the seconds that are out of a window of `seconds` ending with second `now`.
    fn forget(
        totals: &mut WindowStats,
        buckets: &mut VecDeque<(u64, WindowStats)>,
        seconds: u64,
        now: u64,
    ) {
        while let Some(&(second, bucket)) = buckets.front()
            && second.saturating_add(seconds) <= now
        {
            buckets.pop_front();
            totals.remove(bucket);
        }
    }

    fn clear(&mut self) {
        self.totals = WindowStats::default();
        match &mut self.calls {
            Calls::Count { outcomes, next, .. } => {
                outcomes.clear();
                *next = 0;
            }
            Calls::Time { buckets, .. } => buckets.clear(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { admitted: u32, successes: u32 },
    ForcedOpen,
    ForcedClosed,
}

impl State {
    fn public(self) -> BreakerState {
        match self {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
            State::ForcedOpen => BreakerState::ForcedOpen,
            State::ForcedClosed => BreakerState::ForcedClosed,
        }
    }
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
    /// A builder starting from the default settings (see `BreakerSettings::default`).
    pub fn builder() -> CircuitBreakerBuilder {
        let settings = BreakerSettings::default();
        CircuitBreakerBuilder {
            settings,
            failure_threshold: Some(5),
            success_threshold: None,
            half_open_requests: 3,
            minimum_calls: settings.minimum_calls.get(),
        }
    }

    /// A closed breaker with `settings`, or the reason they cannot work.
    pub fn new(settings: BreakerSettings) -> Result<Self, InvalidConfig> {
        settings.validate()?;
        let machine = Machine {
            settings,
            state: State::Closed { failures: 0 },
            generation: 0,
            window: Window::new(settings.sliding_window),
            left_with: WindowStats::default(),
        };
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
        self.update(|machine| {
            if machine.settings.sliding_window != settings.sliding_window
                || machine.settings.rated() != settings.rated()
            {
                machine.window = Window::new(settings.sliding_window);
            }
            machine.settings = settings;
        });
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
        let mut machine = self.lock();
        match machine.state {
            State::Closed { .. } => machine.window.stats(),
            _ => machine.left_with,
        }
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
            let generation = machine.generation;
            let probes = machine.settings.half_open_requests.get();
            let timed = machine.settings.timed();
            let result = match &mut machine.state {
                State::Closed { .. } => Ok((false, timed)),
                State::ForcedClosed => Ok((false, false)),
                State::HalfOpen { admitted, .. } => {
                    if *admitted < probes {
                        *admitted += 1;
                        Ok((true, timed))
                    } else {
                        Err(Rejected {
                            state: BreakerState::HalfOpen,
                            retry_after: None,
                        })
                    }
                }
                State::Open { until } => Err(Rejected {
                    state: BreakerState::Open,
                    retry_after: Some(until.saturating_duration_since(Instant::now())),
                }),
                State::ForcedOpen => Err(Rejected {
                    state: BreakerState::ForcedOpen,
                    retry_after: None,
                }),
            };
            (
                result.map(|(probe, timed)| (probe, timed, generation)),
                transition,
            )
        });
        self.announce(transition);
        result.map(|(probe, timed, generation)| BreakerPermit {
            breaker: self,
            generation,
            probe,
            reported: false,
            started: timed.then(Instant::now),
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
            machine.set(State::Open { until })
        });
        self.announce(transition);
    }

    /// Holds the breaker open until [`release`](Self::release).
    pub fn force_open(&self) {
        let transition = self.update(|machine| machine.set(State::ForcedOpen));
        self.announce(transition);
    }

    /// Holds the breaker closed, whatever fails, until [`release`](Self::release).
    pub fn force_closed(&self) {
        let transition = self.update(|machine| machine.set(State::ForcedClosed));
        self.announce(transition);
    }

    /// Back to automatic operation, closed with no failures counted.
    pub fn release(&self) {
        let transition = self.update(|machine| machine.set(State::Closed { failures: 0 }));
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
        let transition = self.update(|machine| {
            if machine.generation != generation {
                return None;
            }
            let settings = machine.settings;
            // Only timed while a slow-call rate threshold is set (see `try_acquire`).
            let slow = settings.timed()
                && took.is_some_and(|took| took >= settings.slow_call_duration_threshold);
            match &mut machine.state {
                State::Closed { failures } => {
                    *failures = if success { 0 } else { *failures + 1 };
                    let consecutive = settings
                        .failure_threshold
                        .is_some_and(|threshold| *failures >= threshold.get());
                    let rate = settings.rated() && {
                        machine.window.record(Outcome {
                            failed: !success,
                            slow,
                        });
                        machine.rate_reached()
                    };
                    if consecutive || rate {
                        machine.open()
                    } else {
                        None
                    }
                }
                // A slow success is no sign of health yet: the downstream answers, too late.
                State::HalfOpen { successes, .. } if probe && success && !slow => {
                    *successes += 1;
                    if *successes >= settings.success_threshold.get() {
                        machine.set(State::Closed { failures: 0 })
                    } else {
                        None
                    }
                }
                State::HalfOpen { .. } if probe => machine.open(),
                _ => None,
            }
        });
        self.announce(transition);
    }

    fn release_probe(&self, generation: u64) {
        let released = self.update(|machine| {
            if machine.generation == generation
                && let State::HalfOpen { admitted, .. } = &mut machine.state
            {
                *admitted = admitted.saturating_sub(1);
                true
            } else {
                false
            }
        });
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

impl Machine {
    /// The fast word when work must take the lock: open, half-open, closed with failures
    /// counted, or closed with a rate threshold set.
    const SLOW: u64 = u64::MAX;

    /// `generation << 1 | held_closed` while work may pass with nothing to count (closed with
    /// no failures and no rate threshold, or held closed), else [`SLOW`](Self::SLOW).
    ///
    /// A rate threshold costs the lock-free path: every outcome must then be recorded in the
    /// window, so a closed breaker takes the lock twice per call (to hand out the permit, which
    /// may need a start time, and to record its outcome), and reads the clock when it times
    /// calls (twice per call) or keeps a time window (once per outcome). The default settings,
    /// rates off, keep the lock-free path.
    fn fast_word(&self) -> u64 {
        match self.state {
            State::Closed { failures: 0 } if !self.settings.rated() => self.generation << 1,
            State::ForcedClosed => self.generation << 1 | 1,
            _ => Self::SLOW,
        }
    }

    /// Whether a rate over the window reached its threshold, once the window holds enough
    /// calls to judge.
    fn rate_reached(&self) -> bool {
        let settings = self.settings;
        let minimum = match settings.sliding_window {
            SlidingWindow::Count(size) => size.min(settings.minimum_calls),
            SlidingWindow::Time(_) => settings.minimum_calls,
        };
        let stats = self.window.totals;
        if stats.calls < u64::from(minimum.get()) {
            return false;
        }
        let reached = |count: u64, threshold: Option<u8>| {
            threshold.is_some_and(|percent| count * 100 >= u64::from(percent) * stats.calls)
        };
        reached(stats.failures, settings.failure_rate_threshold)
            || reached(stats.slow, settings.slow_call_rate_threshold)
    }

    fn open(&mut self) -> Option<Transition> {
        let until = Instant::now() + self.settings.break_duration;
        self.set(State::Open { until })
    }

    fn set(&mut self, state: State) -> Option<Transition> {
        let from = self.state.public();
        // The window only ever holds the current closed period: emptied when the breaker leaves
        // closed (its totals kept to say why) and whenever it closes again.
        if from == BreakerState::Closed {
            self.left_with = self.window.stats();
        }
        self.window.clear();
        self.state = state;
        self.generation += 1;
        let to = state.public();
        (from != to).then_some(Transition { from, to })
    }

    /// Open becomes half-open once its break is over; checked whenever the breaker is read.
    fn expire_open(&mut self) -> Option<Transition> {
        match self.state {
            State::Open { until } if Instant::now() >= until => self.set(State::HalfOpen {
                admitted: 0,
                successes: 0,
            }),
            _ => None,
        }
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

/// Builds a [`CircuitBreaker`]; [`build`](Self::build) rejects impossible settings.
#[derive(Debug, Clone)]
pub struct CircuitBreakerBuilder {
    settings: BreakerSettings,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    half_open_requests: u32,
    minimum_calls: u32,
}

impl CircuitBreakerBuilder {
    /// Consecutive failures that open the breaker; default 5, at least 1.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = Some(failures);
        self
    }

    /// Never open on consecutive failures; only [`CircuitBreaker::trip`], forcing, or a rate
    /// threshold if one is set opens it.
    pub fn manual_only(mut self) -> Self {
        self.failure_threshold = None;
        self
    }

    /// Defaults to `halfOpenRequests`: every probe must succeed.
    pub fn success_threshold(mut self, successes: u32) -> Self {
        self.success_threshold = Some(successes);
        self
    }

    /// How long the breaker stays open before letting probes through; default 60 s, longer than
    /// zero.
    pub fn break_duration(mut self, duration: Duration) -> Self {
        self.settings.break_duration = duration;
        self
    }

    /// How many probes half-open lets through; default 3, at least 1.
    pub fn half_open_requests(mut self, probes: u32) -> Self {
        self.half_open_requests = probes;
        self
    }

    /// Opens the breaker when at least `percent` (1 to 100) of the calls in the sliding window
    /// failed, once it holds [`minimum_calls`](Self::minimum_calls); off by default.
    pub fn failure_rate_threshold(mut self, percent: u8) -> Self {
        self.settings.failure_rate_threshold = Some(percent);
        self
    }

    /// Opens the breaker when at least `percent` (1 to 100) of the calls in the sliding window
    /// were slow, once it holds [`minimum_calls`](Self::minimum_calls); off by default. Setting
    /// it times every call, and makes a slow successful half-open probe count as failed.
    pub fn slow_call_rate_threshold(mut self, percent: u8) -> Self {
        self.settings.slow_call_rate_threshold = Some(percent);
        self
    }

    /// A call that took at least `duration` is slow; default 60 s, longer than zero.
    pub fn slow_call_duration_threshold(mut self, duration: Duration) -> Self {
        self.settings.slow_call_duration_threshold = duration;
        self
    }

    /// Which recent calls the rates are computed over; default the last 100.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.settings.sliding_window = window;
        self
    }

    /// How many calls the window must hold before a rate is judged; default 100, at least 1.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// The breaker, or which setting cannot work.
    pub fn build(self) -> Result<CircuitBreaker, InvalidConfig> {
        let positive = |field: &'static str, value: u32| {
            NonZeroU32::new(value).ok_or_else(|| InvalidConfig::new(field, "must be at least 1"))
        };
        let mut settings = self.settings;
        settings.failure_threshold = self
            .failure_threshold
            .map(|f| positive("failureThreshold", f))
            .transpose()?;
        settings.half_open_requests = positive("halfOpenRequests", self.half_open_requests)?;
        settings.success_threshold = match self.success_threshold {
            Some(s) => positive("successThreshold", s)?,
            None => settings.half_open_requests,
        };
        settings.minimum_calls = positive("minimumNumberOfCalls", self.minimum_calls)?;
        CircuitBreaker::new(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::builder()
            .failure_threshold(3)
            .success_threshold(2)
            .half_open_requests(2)
            .break_duration(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn recorded(breaker: &CircuitBreaker) -> Arc<Mutex<Vec<(BreakerState, BreakerState)>>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        breaker.on_transition(move |t| sink.lock().unwrap().push((t.from, t.to)));
        log
    }

    fn fail(breaker: &CircuitBreaker, times: usize) {
        for _ in 0..times {
            breaker.try_acquire().unwrap().failure();
        }
    }

    use BreakerState::*;

    #[tokio::test(start_paused = true)]
    async fn closed_opens_after_consecutive_failures_only() {
        let b = breaker();
        let log = recorded(&b);
        fail(&b, 2);
        b.try_acquire().unwrap().success(); // resets the count
        fail(&b, 2);
        assert_eq!(b.state(), Closed);
        fail(&b, 1);
        assert_eq!(b.state(), Open);
        let rejected = b.try_acquire().err().unwrap();
        assert_eq!(rejected.retry_after, Some(Duration::from_secs(10)));
        assert_eq!(*log.lock().unwrap(), [(Closed, Open)]);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_only_its_probes_then_closes() {
        let b = breaker();
        let log = recorded(&b);
        fail(&b, 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert_eq!(b.state(), HalfOpen);
        assert_eq!(
            b.try_acquire().err().unwrap().state,
            HalfOpen,
            "third probe must wait"
        );
        p1.success();
        assert_eq!(b.state(), HalfOpen, "one success of two");
        assert!(
            b.try_acquire().is_err(),
            "a reported probe does not free a slot"
        );
        p2.success();
        assert_eq!(b.state(), Closed);
        assert_eq!(
            *log.lock().unwrap(),
            [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_an_abandoned_probe_frees_its_slot() {
        let b = breaker();
        let log = recorded(&b);
        fail(&b, 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        drop(p1);
        let p3 = b
            .try_acquire()
            .expect("the dropped probe's slot is free again");
        p2.failure();
        assert_eq!(b.state(), Open);
        p3.success(); // from the earlier half-open period: ignored
        assert_eq!(b.state(), Open);
        assert_eq!(
            *log.lock().unwrap(),
            [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forced_states_hold_until_released() {
        let b = breaker();
        let log = recorded(&b);
        b.force_open();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(b.state(), ForcedOpen);
        assert_eq!(b.try_acquire().err().unwrap().retry_after, None);
        b.force_closed();
        fail(&b, 10);
        assert_eq!(b.state(), ForcedClosed);
        b.release();
        assert_eq!(b.state(), Closed);
        assert_eq!(
            *log.lock().unwrap(),
            [
                (Closed, ForcedOpen),
                (ForcedOpen, ForcedClosed),
                (ForcedClosed, Closed)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_from_before_a_change_do_not_count_after_it() {
        let b = breaker();
        let stale_failure = b.try_acquire().unwrap();
        let stale_success = b.try_acquire().unwrap();
        fail(&b, 2);
        b.release(); // closed again, a new generation
        stale_success.success();
        fail(&b, 2);
        stale_failure.failure();
        assert_eq!(b.state(), Closed, "only the two new failures count");
        fail(&b, 1);
        assert_eq!(b.state(), Open);
    }

    #[test]
    fn concurrent_outcomes_keep_the_count_consistent() {
        // Successes take the lock-free path while failures take the lock; whatever the
        // interleaving, a run of failures with no success in between must open the breaker.
        let b = CircuitBreaker::builder()
            .failure_threshold(1000)
            .build()
            .unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for i in 0..10_000 {
                        let permit = b.try_acquire().unwrap();
                        if i % 3 == 0 {
                            permit.failure();
                        } else {
                            permit.success();
                        }
                    }
                });
            }
        });
        assert_eq!(b.state(), Closed, "never 1000 failures in a row");
        b.try_acquire().unwrap().success();
        fail(&b, 999);
        assert_eq!(b.state(), Closed, "the success reset the count");
        fail(&b, 1);
        assert_eq!(b.state(), Open);
    }

    #[tokio::test(start_paused = true)]
    async fn tripping_opens_for_the_given_duration() {
        let b = CircuitBreaker::manual();
        fail(&b, 100);
        assert_eq!(b.state(), Closed, "a manual breaker ignores failures");
        b.trip(Some(Duration::from_secs(5)));
        assert_eq!(b.state(), Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), HalfOpen);
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

    #[test]
    fn impossible_settings_are_rejected() {
        let err = CircuitBreaker::builder()
            .half_open_requests(1)
            .success_threshold(2)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "successThreshold");
        let err = CircuitBreaker::builder()
            .failure_threshold(0)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "failureThreshold");
        let err = CircuitBreaker::builder()
            .break_duration(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "breakDuration");
    }

    fn count(calls: u32) -> SlidingWindow {
        SlidingWindow::Count(NonZeroU32::new(calls).unwrap())
    }

    /// A breaker that opens only on rates (no consecutive-failure threshold), with a 10 s break
    /// and one probe.
    fn rated(window: SlidingWindow, minimum_calls: u32) -> CircuitBreakerBuilder {
        CircuitBreaker::builder()
            .manual_only()
            .sliding_window(window)
            .minimum_calls(minimum_calls)
            .break_duration(Duration::from_secs(10))
            .half_open_requests(1)
    }

    /// Reports `outcomes` in order: `F` a failure, `S` a success.
    fn calls(breaker: &CircuitBreaker, outcomes: &str) {
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
    async fn slow_success(breaker: &CircuitBreaker, took: Duration) {
        let permit = breaker.try_acquire().unwrap();
        tokio::time::advance(took).await;
        permit.success();
    }

    fn stats(calls: u64, failures: u64, slow: u64) -> WindowStats {
        WindowStats {
            calls,
            failures,
            slow,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn count_window_opens_at_the_failure_rate_once_minimum_calls_are_seen() {
        let b = rated(count(10), 5)
            .failure_rate_threshold(60)
            .build()
            .unwrap();
        let log = recorded(&b);
        calls(&b, "FFFF");
        assert_eq!(b.state(), Closed, "100 % failed, but only 4 calls of 5");
        assert_eq!(b.window(), stats(4, 4, 0));
        calls(&b, "S");
        assert_eq!(b.state(), Open, "4 failures of 5 calls: 80 %");
        assert_eq!(b.window(), stats(5, 4, 0), "the calls that opened it");
        assert_eq!(*log.lock().unwrap(), [(Closed, Open)]);

        // A count window smaller than minimum_calls is judged once full.
        let b = rated(count(4), 100)
            .failure_rate_threshold(100)
            .build()
            .unwrap();
        calls(&b, "FFF");
        assert_eq!(b.state(), Closed);
        calls(&b, "F");
        assert_eq!(b.state(), Open);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_dilute_the_rate_and_old_calls_slide_out() {
        let b = rated(count(4), 4)
            .failure_rate_threshold(50)
            .build()
            .unwrap();
        calls(&b, "FSSS");
        assert_eq!(b.state(), Closed, "1 failure of 4: 25 %");
        calls(&b, "S");
        assert_eq!(b.window(), stats(4, 0, 0), "the failure slid out");
        calls(&b, "F");
        assert_eq!(b.state(), Closed, "1 failure of 4");
        calls(&b, "F");
        assert_eq!(b.window(), stats(4, 2, 0));
        assert_eq!(b.state(), Open, "2 failures of 4: 50 %");
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_calls_older_than_the_window() {
        let b = rated(SlidingWindow::Time(Duration::from_secs(10)), 4)
            .failure_rate_threshold(50)
            .build()
            .unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        calls(&b, "FFF"); // in second 0
        tokio::time::advance(Duration::from_millis(9_499)).await;
        assert_eq!(b.window(), stats(3, 3, 0), "second 9: second 0 is still in");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.window(), stats(0, 0, 0), "second 10: second 0 is out");
        calls(&b, "SSS");
        tokio::time::advance(Duration::from_secs(3)).await;
        calls(&b, "F");
        assert_eq!(b.window(), stats(4, 1, 0), "two seconds of calls");
        assert_eq!(
            b.state(),
            Closed,
            "1 failure of 4; with the forgotten ones it would be 4 of 7"
        );
        calls(&b, "F");
        assert_eq!(b.state(), Closed, "2 failures of 5");
        calls(&b, "F");
        assert_eq!(b.state(), Open, "3 failures of 6");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_call_rate_opens_on_slow_successes() {
        let b = rated(count(4), 4)
            .slow_call_rate_threshold(50)
            .slow_call_duration_threshold(Duration::from_secs(2))
            .build()
            .unwrap();
        calls(&b, "S");
        slow_success(&b, Duration::from_secs(2)).await; // exactly the threshold: slow
        slow_success(&b, Duration::from_millis(1_999)).await; // not slow
        assert_eq!(b.window(), stats(3, 0, 1));
        assert_eq!(b.state(), Closed);
        slow_success(&b, Duration::from_secs(30)).await;
        assert_eq!(b.state(), Open, "2 slow calls of 4, none failed");
        assert_eq!(b.window(), stats(4, 0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_in_half_open_reopens() {
        let b = rated(count(10), 10)
            .slow_call_rate_threshold(50)
            .slow_call_duration_threshold(Duration::from_secs(2))
            .build()
            .unwrap();
        let log = recorded(&b);
        b.trip(None);
        tokio::time::advance(Duration::from_secs(10)).await;
        slow_success(&b, Duration::from_secs(2)).await;
        assert_eq!(b.state(), Open, "a slow probe is a failed probe");
        tokio::time::advance(Duration::from_secs(10)).await;
        slow_success(&b, Duration::from_secs(1)).await;
        assert_eq!(b.state(), Closed);
        assert_eq!(
            *log.lock().unwrap(),
            [
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed)
            ]
        );

        // Without a slow-call rate, calls are not timed and a slow probe closes the breaker.
        let b = breaker();
        b.trip(None);
        tokio::time::advance(Duration::from_secs(10)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        p1.success();
        p2.success();
        assert_eq!(b.state(), Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_is_empty_after_closing_again() {
        let b = rated(count(10), 4)
            .failure_rate_threshold(50)
            .build()
            .unwrap();
        calls(&b, "SFFF");
        assert_eq!(b.state(), Open);
        assert_eq!(b.window(), stats(4, 3, 0), "why it opened");
        tokio::time::advance(Duration::from_secs(10)).await;
        calls(&b, "S"); // the probe
        assert_eq!(b.state(), Closed);
        assert_eq!(b.window(), WindowStats::default());
        calls(&b, "FFF");
        assert_eq!(b.state(), Closed, "3 calls: too few, the old ones are gone");
        assert_eq!(b.window(), stats(3, 3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_permits_do_not_count_in_the_window() {
        let b = rated(count(10), 2)
            .failure_rate_threshold(50)
            .build()
            .unwrap();
        let stale_failure = b.try_acquire().unwrap();
        let stale_success = b.try_acquire().unwrap();
        b.release(); // closed again, a new generation
        stale_failure.failure();
        stale_success.success();
        assert_eq!(b.window(), WindowStats::default());
        calls(&b, "S");
        let stale = b.try_acquire().unwrap();
        b.trip(None);
        tokio::time::advance(Duration::from_secs(10)).await;
        calls(&b, "S"); // the probe closes it
        assert_eq!(b.state(), Closed);
        stale.failure();
        calls(&b, "S");
        assert_eq!(b.window(), stats(1, 0, 0), "only the new success counts");
        assert_eq!(b.state(), Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_still_open_alongside_rates() {
        let b = CircuitBreaker::builder()
            .failure_threshold(3)
            .failure_rate_threshold(50)
            .sliding_window(count(10))
            .minimum_calls(10)
            .build()
            .unwrap();
        calls(&b, "FFF");
        assert_eq!(
            b.state(),
            Open,
            "3 in a row, though too few calls for a rate"
        );
        b.release();
        calls(&b, "SFSFSFSFS");
        assert_eq!(b.state(), Closed, "never 3 in a row, 9 calls");
        calls(&b, "F");
        assert_eq!(b.state(), Open, "5 failures of 10");
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
            .failure_rate_threshold(50)
            .build()
            .unwrap();
        assert!(!fast(&b), "closed, but outcomes must be recorded");
        let permit = b.try_acquire().unwrap();
        assert_eq!(permit.started, None, "no slow-call rate: not timed");
        permit.success();
        assert_eq!(b.window(), stats(1, 0, 0));

        let b = rated(count(10), 10)
            .slow_call_rate_threshold(50)
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

    #[test]
    fn impossible_rate_settings_name_their_field() {
        let field =
            |builder: CircuitBreakerBuilder| builder.build().unwrap_err().field().to_owned();
        let builder = CircuitBreaker::builder;
        assert_eq!(
            field(builder().failure_rate_threshold(0)),
            "failureRateThreshold"
        );
        assert_eq!(
            field(builder().failure_rate_threshold(101)),
            "failureRateThreshold"
        );
        assert_eq!(
            field(builder().slow_call_rate_threshold(0)),
            "slowCallRateThreshold"
        );
        assert_eq!(
            field(builder().slow_call_rate_threshold(200)),
            "slowCallRateThreshold"
        );
        assert_eq!(
            field(builder().slow_call_duration_threshold(Duration::ZERO)),
            "slowCallDurationThreshold"
        );
        for span in [
            Duration::ZERO,
            Duration::from_millis(999),
            Duration::from_millis(1_500),
        ] {
            assert_eq!(
                field(builder().sliding_window(SlidingWindow::Time(span))),
                "slidingWindowSize"
            );
        }
        assert_eq!(field(builder().minimum_calls(0)), "minimumNumberOfCalls");
        let settings = BreakerSettings {
            failure_rate_threshold: Some(100),
            slow_call_rate_threshold: Some(1),
            sliding_window: SlidingWindow::Time(Duration::from_secs(1)),
            ..BreakerSettings::default()
        };
        assert_eq!(settings.validate(), Ok(()));
    }
}
