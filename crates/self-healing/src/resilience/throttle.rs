//! Throttle: a rate limit with bursts whose rate can change while work flows through it.
//!
//! Written here rather than taken from `governor` for two reasons: the `throttle` action changes
//! the rate of a running stage and later restores it (governor's quota is fixed per limiter), and
//! every wait must run on tokio's clock so tests on paused time control it (governor's waiting
//! uses its own clock). The algorithm is the same GCRA governor uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::InvalidConfig;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: u32,
}

impl Rate {
    /// `per_second` permits on average; up to `burst` at once after a quiet spell.
    pub fn new(per_second: f64, burst: u32) -> Result<Self, InvalidConfig> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(InvalidConfig::new(
                "rate",
                format!("{per_second} is not a positive number of permits per second"),
            ));
        }
        if burst == 0 {
            return Err(InvalidConfig::new("burst", "must be at least 1"));
        }
        Ok(Rate { per_second, burst })
    }

    /// Permits per second on average; finite and above zero.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Permits that may be taken at once after a quiet spell; at least 1.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

/// A rate limiter on tokio time. Unlimited until given a rate; cheap to clone (clones share
/// one limit).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use self_healing::resilience::{Rate, Throttle};
///
/// let throttle = Throttle::limited(Rate::new(10.0, 1).unwrap());
/// let start = tokio::time::Instant::now();
/// for _ in 0..11 {
///     throttle.acquire().await;
/// }
/// assert_eq!(start.elapsed(), Duration::from_secs(1));
/// throttle.set_rate(None); // lift the limit
/// assert!(throttle.try_acquire().is_ok());
/// # });
/// ```
#[derive(Clone, Default)]
pub struct Throttle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    limited: AtomicBool,
    gcra: Mutex<Gcra>,
}

#[derive(Default)]
struct Gcra {
    rate: Option<Rate>,
    /// Theoretical arrival time of the next permit.
    tat: Option<Instant>,
}

impl Gcra {
    /// Takes the next slot and returns how long to wait for it.
    fn reserve(&mut self, rate: Rate, now: Instant) -> Duration {
        let interval = rate.interval();
        let tolerance = interval.saturating_mul(rate.burst - 1);
        let tat = self.tat.map_or(now, |t| t.max(now));
        let wait = tat.saturating_duration_since(now).saturating_sub(tolerance);
        self.tat = Some(tat + interval);
        wait
    }
}

impl Throttle {
    /// A throttle that lets everything through until given a rate.
    pub fn unlimited() -> Self {
        Throttle::default()
    }

    /// A throttle at `rate` from the start, with a full burst available.
    pub fn limited(rate: Rate) -> Self {
        let throttle = Throttle::default();
        throttle.set_rate(Some(rate));
        throttle
    }

    /// Sets or lifts (`None`) the limit. Work already waiting keeps its place; the new rate
    /// applies from now on, starting with a full burst.
    pub fn set_rate(&self, rate: Option<Rate>) {
        let mut gcra = self.lock();
        gcra.rate = rate;
        gcra.tat = None;
        self.inner.limited.store(rate.is_some(), Ordering::Release);
    }

    /// The current rate; `None` when unlimited.
    pub fn rate(&self) -> Option<Rate> {
        if !self.inner.limited.load(Ordering::Acquire) {
            return None;
        }
        self.lock().rate
    }

    /// Waits (on tokio time) for the next permit.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// A permit now, or how long until one is free.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        if !self.inner.limited.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut gcra = self.lock();
        let Some(rate) = gcra.rate else { return Ok(()) };
        let now = Instant::now();
        let before = gcra.tat;
        match gcra.reserve(rate, now) {
            wait if wait.is_zero() => Ok(()),
            wait => {
                gcra.tat = before;
                Err(wait)
            }
        }
    }

    fn reserve(&self) -> Duration {
        if !self.inner.limited.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let mut gcra = self.lock();
        match gcra.rate {
            Some(rate) => gcra.reserve(rate, Instant::now()),
            None => Duration::ZERO,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gcra> {
        self.inner.gcra.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("rate", &self.rate())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Runs `workers` tasks taking permits as fast as they can for `window` of virtual time and
    /// returns how many they got.
    async fn permits_in(throttle: &Throttle, workers: usize, window: Duration) -> u64 {
        let taken = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + window;
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let throttle = throttle.clone();
            let taken = Arc::clone(&taken);
            tasks.push(tokio::spawn(async move {
                loop {
                    throttle.acquire().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                    taken.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        taken.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn rate_holds_within_one_percent_on_virtual_time() {
        let throttle = Throttle::limited(Rate::new(50.0, 5).unwrap());
        let got = permits_in(&throttle, 8, Duration::from_secs(60)).await;
        // 50/s for 60 s plus the initial burst of 5.
        let expected = 50.0 * 60.0 + 5.0;
        let error = (got as f64 - expected).abs() / expected;
        assert!(
            error <= 0.01,
            "got {got} permits, expected about {expected}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_is_available_at_once_and_then_refills() {
        let throttle = Throttle::limited(Rate::new(2.0, 3).unwrap());
        for _ in 0..3 {
            assert!(throttle.try_acquire().is_ok());
        }
        let wait = throttle.try_acquire().unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::advance(wait).await;
        assert!(throttle.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_changes_apply_to_later_permits() {
        let throttle = Throttle::limited(Rate::new(10.0, 1).unwrap());
        let slow = permits_in(&throttle, 2, Duration::from_secs(10)).await;
        throttle.set_rate(Some(Rate::new(100.0, 1).unwrap()));
        let fast = permits_in(&throttle, 2, Duration::from_secs(10)).await;
        throttle.set_rate(None);
        assert!(throttle.rate().is_none());
        for _ in 0..10_000 {
            assert!(throttle.try_acquire().is_ok());
        }
        assert!((99..=102).contains(&slow), "10/s for 10 s gave {slow}");
        assert!((995..=1002).contains(&fast), "100/s for 10 s gave {fast}");
    }

    #[test]
    fn rates_must_be_positive() {
        assert_eq!(Rate::new(0.0, 1).unwrap_err().field(), "rate");
        assert_eq!(Rate::new(f64::NAN, 1).unwrap_err().field(), "rate");
        assert_eq!(Rate::new(1.0, 0).unwrap_err().field(), "burst");
    }
}
