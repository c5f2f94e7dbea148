//! The modelled dependency: it answers each call as its scenario's fault says, after a latency
//! that queues past its knee, on tokio time; and it counts what it saw.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::scenario::{Fault, Scenario};
use crate::error::StageError;

/// How long a refused or pool-exhausted call takes: failing fast is what makes them cheap.
const FAST_FAILURE: Duration = Duration::from_millis(5);

/// How long flapping lasts.
const FLAPPING_FOR: Duration = Duration::from_secs(24 * 3600);

/// A dependency suffering one scenario's fault. Time zero is when it was made: make it when
/// the run starts.
#[derive(Debug)]
pub struct Downstream {
    fault: Fault,
    latency: Duration,
    knee: usize,
    start: Instant,
    rng: Mutex<fastrand::Rng>,
    /// The spells the dependency is down, `[from, to)`, in order.
    down_spells: Vec<(Duration, Duration)>,
    calls: AtomicU64,
    /// Calls since the stage's last reset, for the leak and the pool.
    since_reset: AtomicU64,
    in_flight: AtomicUsize,
    calls_while_down: AtomicU64,
    /// Calls made while down after the spell was known, by a failed call of it that had come
    /// back or by a health check that had found it: the ones a healer could have held back.
    avoidable: AtomicU64,
    /// The latest spell known, and since when.
    known: Mutex<Option<(usize, Duration)>>,
    first_success_after_end: Mutex<Option<Duration>>,
}

/// What a dependency saw during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Every call.
    pub calls: u64,
    /// Calls made while it was down.
    pub calls_while_down: u64,
    /// Of those, the calls made after the spell was known (by a failed call that had come back
    /// or by a health check): the ones a healer could have held back.
    pub avoidable: u64,
    /// From the end of the fault to the first call that succeeded, for faults that end.
    pub time_to_recover: Option<Duration>,
}

impl Downstream {
    /// The dependency of `scenario`, its randomness (the transient failures, the flapping
    /// spells) drawn from `seed`.
    pub fn new(scenario: &Scenario, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let down_spells = match scenario.fault {
            Fault::Outage { at, length } => vec![(at, at + length)],
            Fault::Flapping {
                at,
                shortest,
                longest,
            } => {
                let mut spell = || shortest + (longest - shortest).mul_f64(rng.f64());
                let mut spells = Vec::new();
                let mut t = at;
                // A day of flapping; after it, the dependency stays up.
                while t < at + FLAPPING_FOR {
                    let down = spell();
                    spells.push((t, t + down));
                    t += down + spell();
                }
                spells
            }
            _ => Vec::new(),
        };
        Downstream {
            fault: scenario.fault.clone(),
            latency: scenario.latency,
            knee: scenario.knee,
            start: Instant::now(),
            rng: Mutex::new(rng),
            down_spells,
            calls: AtomicU64::new(0),
            since_reset: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            calls_while_down: AtomicU64::new(0),
            avoidable: AtomicU64::new(0),
            known: Mutex::new(None),
            first_success_after_end: Mutex::new(None),
        }
    }

    /// Time since the dependency was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Which down spell `t` falls in, if any.
    fn down_spell(&self, t: Duration) -> Option<usize> {
        let i = self.down_spells.partition_point(|&(from, _)| from <= t);
        let i = i.checked_sub(1)?;
        (t < self.down_spells[i].1).then_some(i)
    }

    /// Whether a health check's probe now finds the dependency up.
    pub fn answers(&self) -> bool {
        self.down_spell(self.elapsed()).is_none()
    }

    /// A health check found the dependency down: the spell going on, if any, is known from
    /// now on.
    pub fn seen_down(&self) {
        self.known_at(self.elapsed());
    }

    fn known_at(&self, t: Duration) {
        if let Some(spell) = self.down_spell(t) {
            let mut known = self.known.lock().expect("not poisoned");
            if known.is_none_or(|(s, _)| s != spell) {
                *known = Some((spell, t));
            }
        }
    }

    /// What a stage's `reset` clears: the leak and the exhausted pool.
    pub fn reset(&self) {
        self.since_reset.store(0, Ordering::Relaxed);
    }

    /// One call, made with the `item`th item its stage called with (from 0; 0 for a stage
    /// without items): waits the call's latency, then answers as the fault says.
    pub async fn call(&self, item: u64) -> Result<(), StageError> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        // Counted down even when the call is cut short (a timeout drops this future).
        struct Leaving<'a>(&'a AtomicUsize);
        impl Drop for Leaving<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _leaving = Leaving(&self.in_flight);
        self.answer(item, in_flight).await
    }

    async fn answer(&self, item: u64, in_flight: usize) -> Result<(), StageError> {
        let t = self.elapsed();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let since_reset = self.since_reset.fetch_add(1, Ordering::Relaxed);
        if let Some(spell) = self.down_spell(t) {
            self.calls_while_down.fetch_add(1, Ordering::Relaxed);
            let known = *self.known.lock().expect("not poisoned");
            if matches!(known, Some((s, at)) if s == spell && at <= t) {
                self.avoidable.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(FAST_FAILURE).await;
            self.known_at(self.elapsed());
            return Err(StageError::new("connect ECONNREFUSED").with_code("ECONNREFUSED"));
        }
        if let Fault::CrashLoop { calls } = self.fault
            && since_reset >= calls
        {
            tokio::time::sleep(FAST_FAILURE).await;
            return Err(StageError::new("connection pool exhausted").with_code("EPOOL"));
        }
        let latency = match self.fault {
            Fault::LatencySpike { at, length, factor } if t >= at && t < at + length => {
                self.latency.saturating_mul(factor)
            }
            Fault::Leak { per_call } => self.latency.saturating_add(
                per_call.saturating_mul(u32::try_from(since_reset).unwrap_or(u32::MAX)),
            ),
            _ => self.latency,
        };
        // Past the knee, calls queue.
        let queued = u32::try_from(in_flight.max(self.knee)).unwrap_or(u32::MAX);
        let latency = latency.saturating_mul(queued) / u32::try_from(self.knee).unwrap_or(u32::MAX);
        tokio::time::sleep(latency).await;
        let result = match &self.fault {
            Fault::Transient { rate, code }
                if self.rng.lock().expect("not poisoned").f64() < *rate =>
            {
                Err(StageError::new(format!("read {code}")).with_code(code.clone()))
            }
            Fault::Critical { item: Some(bad) } if item == *bad => {
                Err(StageError::critical("corrupt record in the source"))
            }
            _ => Ok(()),
        };
        if result.is_ok()
            && let Some(end) = self.fault.ends()
        {
            let now = self.elapsed();
            let mut first = self.first_success_after_end.lock().expect("not poisoned");
            if now >= end && first.is_none() {
                *first = Some(now - end);
            }
        }
        result
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        Tally {
            calls: self.calls.load(Ordering::Relaxed),
            calls_while_down: self.calls_while_down.load(Ordering::Relaxed),
            avoidable: self.avoidable.load(Ordering::Relaxed),
            time_to_recover: *self.first_success_after_end.lock().expect("not poisoned"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(spec: &str) -> Scenario {
        spec.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn calls_take_their_latency_and_queue_past_the_knee() {
        let d = Downstream::new(&scenario("outage:at=1h,knee=2"), 1);
        let start = Instant::now();
        d.call(0).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        let start = Instant::now();
        let four = futures_util::future::join_all((0..4).map(|i| d.call(i))).await;
        assert!(four.iter().all(Result::is_ok));
        // Four calls at once through a knee of two take twice as long.
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        assert_eq!(d.tally().calls, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_refuses_fast_and_counts_what_was_avoidable() {
        let d = Downstream::new(&scenario("outage:at=1s,for=10s"), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!d.answers());
        let error = d.call(0).await.unwrap_err();
        assert_eq!(error.code(), Some("ECONNREFUSED"));
        // Known once refused: a second call could have been held back.
        assert!(d.call(1).await.is_err());
        assert_eq!(d.tally().calls_while_down, 2);
        assert_eq!(d.tally().avoidable, 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(d.answers());
        d.call(2).await.unwrap();
        assert!(d.tally().time_to_recover.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_is_exhausted_until_a_reset() {
        let d = Downstream::new(&scenario("crash-loop:calls=2"), 1);
        d.call(0).await.unwrap();
        d.call(1).await.unwrap();
        assert_eq!(d.call(2).await.unwrap_err().code(), Some("EPOOL"));
        d.reset();
        d.call(3).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_critical_item_fails_every_time() {
        let d = Downstream::new(&scenario("critical:item=3"), 1);
        assert!(d.call(2).await.is_ok());
        for _ in 0..2 {
            let error = d.call(3).await.unwrap_err();
            assert_eq!(error.severity(), crate::Severity::Critical);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_seed_draws_the_same_failures() {
        let outcomes = |seed| async move {
            let d = Downstream::new(&scenario("transient:rate=50%"), seed);
            let mut failed = Vec::new();
            for i in 0..32 {
                failed.push(d.call(i).await.is_err());
            }
            failed
        };
        assert_eq!(outcomes(9).await, outcomes(9).await);
        assert_ne!(outcomes(9).await, outcomes(10).await);
    }
}
