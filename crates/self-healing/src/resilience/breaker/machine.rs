//! The breaker's state machine: closed, open, half-open and the forced states, and the
//! generation that makes a stale permit's outcome a no-op. Each change is a method on
//! [`Machine`], called under the breaker's lock; it returns the transition the breaker announces
//! once the lock is released, so no listener runs under it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Rejected;
use super::settings::{BreakerSettings, HalfOpenRule};
use super::window::{Outcome, SlidingWindow, Window, WindowStats};

/// Where a breaker is. `ForcedOpen` and `ForcedClosed` are set by hand and stay until
/// [`CircuitBreaker::release`](super::CircuitBreaker::release).
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

/// One state change, as given to
/// [`CircuitBreaker::on_transition`](super::CircuitBreaker::on_transition) listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before the change.
    pub from: BreakerState,
    /// The state after the change.
    pub to: BreakerState,
    /// What changed it.
    pub cause: Cause,
}

/// What changed a breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its own rules, from the calls it let through: failures (in a row, or at a rate), slow
    /// calls, or the half-open probes' outcomes.
    Calls,
    /// Its break ran out: open became half-open.
    Timer,
    /// Someone asked: [`trip`](super::CircuitBreaker::trip), a forced state or its release.
    Asked,
}

/// Everything the breaker's lock guards.
pub(super) struct Machine {
    pub(super) settings: BreakerSettings,
    pub(super) state: State,
    /// Bumped on every transition, so an outcome reported by a permit from an earlier state
    /// does not count in the new one.
    generation: u64,
    /// The outcomes of the current closed period, recorded only while a rate threshold is set.
    window: Window,
    /// What the window held when the breaker last left closed, to say why it opened.
    left_with: WindowStats,
}

/// Where the breaker is, with what each state counts.
#[derive(Debug, Clone, Copy)]
pub(super) enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        admitted: u32,
        successes: u32,
        /// Probes that failed, or were slow, under [`HalfOpenRule::Rate`].
        failures: u32,
        slow: u32,
    },
    ForcedOpen,
    ForcedClosed,
}

impl State {
    pub(super) fn public(self) -> BreakerState {
        match self {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
            State::ForcedOpen => BreakerState::ForcedOpen,
            State::ForcedClosed => BreakerState::ForcedClosed,
        }
    }
}

/// What [`Machine::admit`] gives one piece of work, for its permit to carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admitted {
    /// The generation the outcome must still be in to count.
    pub(super) generation: u64,
    /// Whether it holds one of half-open's probe slots.
    pub(super) probe: bool,
    /// Whether the call is timed (a slow-call rate threshold is set).
    pub(super) timed: bool,
}

impl Machine {
    /// Closed, with no failure counted and an empty window.
    pub(super) fn new(settings: BreakerSettings) -> Self {
        Machine {
            settings,
            state: State::Closed { failures: 0 },
            generation: 0,
            window: Window::new(settings.sliding_window),
            left_with: WindowStats::default(),
        }
    }

    /// Takes `settings`, keeping the state; the window starts empty only when its kind or size
    /// changes or rates are turned on or off, as what it holds would mean something else.
    pub(super) fn set_settings(&mut self, settings: BreakerSettings) {
        if self.settings.sliding_window != settings.sliding_window
            || self.settings.rated() != settings.rated()
        {
            self.window = Window::new(settings.sliding_window);
        }
        self.settings = settings;
    }

    /// What the window says about why the breaker is where it is: its calls now while closed,
    /// else what it held when the breaker last left closed.
    pub(super) fn window(&mut self) -> WindowStats {
        match self.state {
            State::Closed { .. } => self.window.stats(),
            _ => self.left_with,
        }
    }

    /// Leave for one piece of work now (a probe slot, while half-open), or why not. An open
    /// breaker whose break is over must have been made half-open first
    /// ([`expire_open`](Self::expire_open)).
    pub(super) fn admit(&mut self) -> Result<Admitted, Rejected> {
        let generation = self.generation;
        let probes = self.settings.half_open_requests.get();
        let timed = self.settings.timed();
        let result = match &mut self.state {
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
        result.map(|(probe, timed)| Admitted {
            generation,
            probe,
            timed,
        })
    }

    /// Counts how the work of a permit from `generation` went (`took`, when it was timed). An
    /// outcome from an earlier generation counts for nothing: the state it was given in is gone.
    pub(super) fn report(
        &mut self,
        generation: u64,
        probe: bool,
        success: bool,
        took: Option<Duration>,
    ) -> Option<Transition> {
        if self.generation != generation {
            return None;
        }
        let settings = self.settings;
        // Only timed while a slow-call rate threshold is set (see `admit`).
        let slow = settings.timed()
            && took.is_some_and(|took| took >= settings.slow_call_duration_threshold);
        match &mut self.state {
            State::Closed { failures } => {
                *failures = if success { 0 } else { *failures + 1 };
                let consecutive = settings
                    .failure_threshold
                    .is_some_and(|threshold| *failures >= threshold.get());
                let rate = settings.rated() && {
                    self.window.record(Outcome {
                        failed: !success,
                        slow,
                    });
                    self.rate_reached()
                };
                if consecutive || rate {
                    self.open(Cause::Calls)
                } else {
                    None
                }
            }
            State::HalfOpen {
                successes,
                failures,
                slow: slow_probes,
                ..
            } if probe && settings.half_open_rule == HalfOpenRule::Rate => {
                if success {
                    *successes += 1;
                } else {
                    *failures += 1;
                }
                if slow {
                    *slow_probes += 1;
                }
                let judged = *successes + *failures;
                if judged < settings.half_open_requests.get() {
                    return None;
                }
                let percent = |count: u32| f64::from(count) * 100.0 / f64::from(judged);
                let failing = percent(*failures)
                    >= f64::from(settings.failure_rate_threshold.unwrap_or(50.0));
                let slowing = settings
                    .slow_call_rate_threshold
                    .is_some_and(|t| percent(*slow_probes) >= f64::from(t));
                if failing || slowing {
                    self.open(Cause::Calls)
                } else {
                    self.set(State::Closed { failures: 0 }, Cause::Calls)
                }
            }
            // A slow success is no sign of health yet: the downstream answers, too late.
            State::HalfOpen { successes, .. } if probe && success && !slow => {
                *successes += 1;
                if *successes >= settings.success_threshold.get() {
                    self.set(State::Closed { failures: 0 }, Cause::Calls)
                } else {
                    None
                }
            }
            State::HalfOpen { .. } if probe => self.open(Cause::Calls),
            _ => None,
        }
    }

    /// Frees the slot of a half-open probe from `generation` that was dropped unreported; true
    /// when it did, so that work waiting for a slot is woken.
    pub(super) fn release_probe(&mut self, generation: u64) -> bool {
        if self.generation == generation
            && let State::HalfOpen { admitted, .. } = &mut self.state
        {
            *admitted = admitted.saturating_sub(1);
            true
        } else {
            false
        }
    }

    /// The fast word when work must take the lock: open, half-open, closed with failures
    /// counted, or closed with a rate threshold set.
    pub(super) const SLOW: u64 = u64::MAX;

    /// `generation << 1 | held_closed` while work may pass with nothing to count (closed with
    /// no failures and no rate threshold, or held closed), else [`SLOW`](Self::SLOW).
    ///
    /// A rate threshold costs the lock-free path: every outcome must then be recorded in the
    /// window, so a closed breaker takes the lock twice per call (to hand out the permit, which
    /// may need a start time, and to record its outcome), and reads the clock when it times
    /// calls (twice per call) or keeps a time window (once per outcome). The default settings,
    /// rates off, keep the lock-free path.
    pub(super) fn fast_word(&self) -> u64 {
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
        let reached = |count: u64, threshold: Option<f32>| {
            threshold.is_some_and(|percent| {
                count as f64 * 100.0 >= f64::from(percent) * stats.calls as f64
            })
        };
        reached(stats.failures, settings.failure_rate_threshold)
            || reached(stats.slow, settings.slow_call_rate_threshold)
    }

    fn open(&mut self, cause: Cause) -> Option<Transition> {
        let until = Instant::now() + self.settings.break_duration;
        self.set(State::Open { until }, cause)
    }

    pub(super) fn set(&mut self, state: State, cause: Cause) -> Option<Transition> {
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
        (from != to).then_some(Transition { from, to, cause })
    }

    /// Open becomes half-open once its break is over; checked whenever the breaker is read.
    pub(super) fn expire_open(&mut self) -> Option<Transition> {
        match self.state {
            State::Open { until } if Instant::now() >= until => self.set(
                State::HalfOpen {
                    admitted: 0,
                    successes: 0,
                    failures: 0,
                    slow: 0,
                },
                Cause::Timer,
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::CircuitBreaker;
    use super::super::tests::{breaker, calls, count, fail, rated, recorded, slow_success};
    use super::*;
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
    async fn by_the_rate_rule_half_open_judges_all_its_probes_as_resilience4j_does() {
        let b = CircuitBreaker::builder()
            .failure_threshold(1)
            .half_open_requests(4)
            .failure_rate_threshold(50.0)
            .minimum_calls(100)
            .break_duration(Duration::from_secs(10))
            .half_open_rule(HalfOpenRule::Rate)
            .build()
            .unwrap();
        let log = recorded(&b);
        fail(&b, 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        // One failure in four (25 %): the first failure-rule would have reopened at once.
        let probes: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
        for (probe, ok) in probes.into_iter().zip([true, false, true, true]) {
            assert_eq!(b.state(), HalfOpen);
            if ok { probe.success() } else { probe.failure() }
        }
        assert_eq!(b.state(), Closed);
        // Two in four (50 %, the threshold): open again.
        fail(&b, 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probes: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
        for (probe, ok) in probes.into_iter().zip([false, true, false, true]) {
            if ok { probe.success() } else { probe.failure() }
        }
        assert_eq!(b.state(), Open);
        assert_eq!(
            *log.lock().unwrap(),
            [
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed),
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open)
            ]
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
    async fn a_slow_probe_in_half_open_reopens() {
        let b = rated(count(10), 10)
            .slow_call_rate_threshold(50.0)
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
    async fn consecutive_failures_still_open_alongside_rates() {
        let b = CircuitBreaker::builder()
            .failure_threshold(3)
            .failure_rate_threshold(50.0)
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
}
