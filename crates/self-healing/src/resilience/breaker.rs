//! Circuit breaker: stop calling a downstream that keeps failing, probe it, resume when it
//! answers again.

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
    /// Work passes; consecutive failures are counted.
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
/// `breakDuration` (alias `timeout`) and `halfOpenRequests`.
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
        }
    }
}

impl BreakerSettings {
    /// Checks that the settings can work: `success_threshold` at most `half_open_requests`, and
    /// `break_duration` longer than zero.
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
        Ok(())
    }
}

/// A circuit breaker: closed → open (after `failureThreshold` consecutive failures, or when
/// tripped) → half-open after `breakDuration`, letting `halfOpenRequests` probes through →
/// closed after `successThreshold` successes, or open again on any failure.
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
}

impl BreakerPermit<'_> {
    /// Reports that the work succeeded: a probe counts toward closing the breaker, and a closed
    /// breaker forgets the failures it counted.
    #[inline]
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.report(self.generation, self.probe, true);
    }

    /// Reports that the work failed: a closed breaker counts it toward opening; a failed probe
    /// opens it again.
    #[inline]
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.report(self.generation, self.probe, false);
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
        CircuitBreakerBuilder {
            settings: BreakerSettings::default(),
            failure_threshold: Some(5),
            success_threshold: None,
            half_open_requests: 3,
        }
    }

    /// A closed breaker with `settings`, or the reason they cannot work.
    pub fn new(settings: BreakerSettings) -> Result<Self, InvalidConfig> {
        settings.validate()?;
        let machine = Machine {
            settings,
            state: State::Closed { failures: 0 },
            generation: 0,
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

    /// Replaces the settings; the current state is kept.
    pub fn set_settings(&self, settings: BreakerSettings) -> Result<(), InvalidConfig> {
        settings.validate()?;
        self.update(|machine| machine.settings = settings);
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

    /// Leave for one piece of work now, or why not.
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, Rejected> {
        // The common case, closed with no failure counted, takes no lock.
        let fast = self.inner.fast.load(Ordering::Acquire);
        if fast != Machine::SLOW {
            return Ok(BreakerPermit {
                breaker: self,
                generation: fast >> 1,
                probe: false,
                reported: false,
            });
        }
        let (result, transition) = self.update(|machine| {
            let transition = machine.expire_open();
            let generation = machine.generation;
            let probes = machine.settings.half_open_requests.get();
            let result = match &mut machine.state {
                State::Closed { .. } | State::ForcedClosed => Ok(false),
                State::HalfOpen { admitted, .. } => {
                    if *admitted < probes {
                        *admitted += 1;
                        Ok(true)
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
            (result.map(|probe| (probe, generation)), transition)
        });
        self.announce(transition);
        result.map(|(probe, generation)| BreakerPermit {
            breaker: self,
            generation,
            probe,
            reported: false,
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
    fn report(&self, generation: u64, probe: bool, success: bool) {
        // Closed with no failure counted (or held closed) stays so on a success, and held closed
        // ignores failures too: nothing to write, so no lock.
        let fast = self.inner.fast.load(Ordering::Acquire);
        if fast != Machine::SLOW && fast >> 1 == generation && (success || fast & 1 == 1) {
            return;
        }
        self.report_slowly(generation, probe, success);
    }

    #[cold]
    fn report_slowly(&self, generation: u64, probe: bool, success: bool) {
        let transition = self.update(|machine| {
            if machine.generation != generation {
                return None;
            }
            let settings = machine.settings;
            match (&mut machine.state, success) {
                (State::Closed { failures }, true) => {
                    *failures = 0;
                    None
                }
                (State::Closed { failures }, false) => {
                    *failures += 1;
                    match settings.failure_threshold {
                        Some(threshold) if *failures >= threshold.get() => {
                            machine.set(State::Open {
                                until: Instant::now() + settings.break_duration,
                            })
                        }
                        _ => None,
                    }
                }
                (State::HalfOpen { successes, .. }, true) if probe => {
                    *successes += 1;
                    if *successes >= settings.success_threshold.get() {
                        machine.set(State::Closed { failures: 0 })
                    } else {
                        None
                    }
                }
                (State::HalfOpen { .. }, false) if probe => machine.set(State::Open {
                    until: Instant::now() + settings.break_duration,
                }),
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
    /// The fast word when work must take the lock: open, half-open, or closed with failures
    /// counted.
    const SLOW: u64 = u64::MAX;

    /// `generation << 1 | held_closed` while work may pass with nothing to count (closed with
    /// no failures, or held closed), else [`SLOW`](Self::SLOW).
    fn fast_word(&self) -> u64 {
        match self.state {
            State::Closed { failures: 0 } => self.generation << 1,
            State::ForcedClosed => self.generation << 1 | 1,
            _ => Self::SLOW,
        }
    }

    fn set(&mut self, state: State) -> Option<Transition> {
        let from = self.state.public();
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
}

impl CircuitBreakerBuilder {
    /// Consecutive failures that open the breaker; default 5, at least 1.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = Some(failures);
        self
    }

    /// Never open on failures; only [`CircuitBreaker::trip`] or forcing opens it.
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
}
