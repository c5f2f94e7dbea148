//! The sliding window a closed breaker judges its failure and slow-call rates over, by count or
//! by time, with running totals so that judging the rates after each call costs no walk over it.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

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
///     .failure_rate_threshold(50.0)
///     .slow_call_rate_threshold(50.0)
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

/// What a breaker's sliding window holds: see
/// [`CircuitBreaker::window`](super::CircuitBreaker::window).
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

/// How one call went, as a count window remembers it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outcome {
    pub(super) failed: bool,
    pub(super) slow: bool,
}

/// The recent outcomes of a closed breaker, with their running totals so that judging the rates
/// after each call costs no walk over the window.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) totals: WindowStats,
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
    pub(super) fn new(kind: SlidingWindow) -> Self {
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

    pub(super) fn record(&mut self, outcome: Outcome) {
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
    pub(super) fn stats(&mut self) -> WindowStats {
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

    pub(super) fn clear(&mut self) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::BreakerState::*;
    use super::super::tests::{calls, count, rated, recorded, slow_success, stats};
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn count_window_opens_at_the_failure_rate_once_minimum_calls_are_seen() {
        let b = rated(count(10), 5)
            .failure_rate_threshold(60.0)
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
            .failure_rate_threshold(100.0)
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
            .failure_rate_threshold(50.0)
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
            .failure_rate_threshold(50.0)
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
            .slow_call_rate_threshold(50.0)
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
    async fn the_window_is_empty_after_closing_again() {
        let b = rated(count(10), 4)
            .failure_rate_threshold(50.0)
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
            .failure_rate_threshold(50.0)
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
}
