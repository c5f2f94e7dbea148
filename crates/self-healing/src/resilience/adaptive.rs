//! Adaptive concurrency: find the highest concurrency a dependency takes while its latency
//! stays near its healthy baseline.
//!
//! The method is AIMD (additive increase, multiplicative decrease), as TCP congestion control
//! and Netflix's `AIMDLimit` use it, with latency as the congestion signal:
//!
//! - the **baseline** is the lowest latency of a successful attempt in the last
//!   `baseline_window` (5 minutes by default): what the dependency answers in when it is not
//!   queueing our work;
//! - while the limit is in use (as many attempts in flight as it allows) and attempts answer
//!   within `tolerance` × the baseline, the limit grows by one per `limit` such answers: one step
//!   per round trip;
//! - an attempt slower than that, or one that timed out, cuts the limit to `backoff` (0.9) of
//!   itself, at most once per round trip (the attempts already in flight under the old limit
//!   say nothing new).
//!
//! Why AIMD rather than a gradient method (Netflix's `Gradient2`, Vegas): a pipeline's items
//! differ in size, so single latencies are noisy; a gradient method moves the limit by the
//! ratio of two latency averages on every sample and needs smoothing and tuning per workload to
//! stay steady, while AIMD moves one step per round trip on a yes/no signal and converges to a
//! sawtooth just under the knee for any noise that stays within the tolerance. It is also the
//! easiest to read in the journal: every change is one step up or one cut.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::InvalidConfig;

/// Settings of an [`AdaptiveLimit`]: `scale` with `mode: adaptive` in files.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveSettings {
    /// The lowest concurrency (`minInstances`); at least 1.
    pub min: usize,
    /// The highest concurrency (`maxInstances`).
    pub max: usize,
    /// How much slower than the baseline an answer may be and still count as healthy
    /// (`latencyTolerance`); default 1.5, more than 1.
    pub tolerance: f64,
    /// What a cut keeps of the limit; default 0.9.
    pub backoff: f64,
    /// How far back the baseline's lowest latency is taken from; default 5 min.
    pub baseline_window: Duration,
}

impl AdaptiveSettings {
    /// Between `min` and `max`, with the default tolerance, backoff and baseline window.
    pub fn new(min: usize, max: usize) -> Self {
        AdaptiveSettings {
            min,
            max,
            tolerance: 1.5,
            backoff: 0.9,
            baseline_window: Duration::from_secs(300),
        }
    }

    /// Checks that the settings can work; fields are named as in files.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.min == 0 {
            return Err(InvalidConfig::new("minInstances", "must be at least 1"));
        }
        if self.max < self.min {
            return Err(InvalidConfig::new(
                "maxInstances",
                format!("{} is below minInstances {}", self.max, self.min),
            ));
        }
        if !(self.tolerance > 1.0 && self.tolerance.is_finite()) {
            return Err(InvalidConfig::new(
                "latencyTolerance",
                format!(
                    "{} must be more than 1 (a multiple of the baseline)",
                    self.tolerance
                ),
            ));
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(InvalidConfig::new(
                "backoff",
                format!("{} must be between 0 and 1", self.backoff),
            ));
        }
        if self.baseline_window.is_zero() {
            return Err(InvalidConfig::new(
                "baselineWindow",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// How an attempt the controller is told of ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// It succeeded: its latency is a measure of the dependency.
    Succeeded,
    /// It was cut by its timeout: congestion.
    TimedOut,
    /// It failed otherwise: no measure of congestion.
    Failed,
}

/// The AIMD controller of one stage's concurrency; see the module's documentation.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use self_healing::resilience::{AdaptiveLimit, AdaptiveSettings, Sample};
///
/// let mut aimd = AdaptiveLimit::new(AdaptiveSettings::new(1, 64)).unwrap();
/// let ms = Duration::from_millis;
/// // Four healthy answers with four in flight under a limit of 4: one step up.
/// let healthy = |aimd: &mut AdaptiveLimit| aimd.on_sample(ms(100), Sample::Succeeded, 4, 4);
/// let steps: Vec<_> = (0..4).map(|_| healthy(&mut aimd)).collect();
/// assert_eq!(steps, [None, None, None, Some(5)]);
/// // A refused connection, fast: no measure of congestion.
/// assert_eq!(aimd.on_sample(ms(5), Sample::Failed, 5, 5), None);
/// // An answer three times slower than the baseline: a cut.
/// assert_eq!(aimd.on_sample(ms(300), Sample::Succeeded, 5, 5), Some(4));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    settings: AdaptiveSettings,
    /// Successful latencies of the baseline window, increasing: a sliding minimum.
    lows: VecDeque<(Instant, Duration)>,
    /// Healthy answers counted toward the next step up.
    healthy: usize,
    /// Samples still to ignore for cuts after the last one (the round trip it takes effect).
    settling: usize,
}

impl AdaptiveLimit {
    /// A controller with `settings`, or the reason they cannot work.
    pub fn new(settings: AdaptiveSettings) -> Result<Self, InvalidConfig> {
        settings.validate()?;
        Ok(AdaptiveLimit {
            settings,
            lows: VecDeque::new(),
            healthy: 0,
            settling: 0,
        })
    }

    /// Its settings.
    pub fn settings(&self) -> AdaptiveSettings {
        self.settings
    }

    /// The healthy baseline now, once an attempt succeeded.
    pub fn baseline(&self) -> Option<Duration> {
        self.lows.front().map(|&(_, latency)| latency)
    }

    /// `limit` clamped into the settings' bounds.
    pub fn clamp(&self, limit: usize) -> usize {
        limit.clamp(self.settings.min, self.settings.max)
    }

    /// Takes one finished attempt: how long it took, how it ended, how many places under
    /// `limit` were taken (its own included). Returns the new limit when it changes. A failure
    /// other than a timeout says nothing about congestion (a refused connection answers fast)
    /// and is ignored.
    pub fn on_sample(
        &mut self,
        latency: Duration,
        outcome: Sample,
        in_flight: usize,
        limit: usize,
    ) -> Option<usize> {
        let congested = match outcome {
            Sample::Failed => return None,
            Sample::TimedOut => true,
            Sample::Succeeded => {
                self.remember(Instant::now(), latency);
                self.baseline().is_some_and(|base| {
                    latency.as_secs_f64() > base.as_secs_f64() * self.settings.tolerance
                })
            }
        };
        self.settling = self.settling.saturating_sub(1);
        let next = if congested {
            if self.settling > 0 {
                return None;
            }
            self.healthy = 0;
            self.settling = limit;
            let cut = (limit as f64 * self.settings.backoff).floor() as usize;
            cut.min(limit.saturating_sub(1))
        } else if in_flight >= limit {
            self.healthy += 1;
            if self.healthy < limit {
                return None;
            }
            self.healthy = 0;
            limit + 1
        } else {
            // The limit is not what holds the stage back: no evidence it could go higher.
            return None;
        };
        let next = self.clamp(next);
        (next != limit).then_some(next)
    }

    /// Keeps `latency` of a successful attempt for the baseline's sliding minimum.
    fn remember(&mut self, now: Instant, latency: Duration) {
        while self.lows.back().is_some_and(|&(_, l)| l >= latency) {
            self.lows.pop_back();
        }
        self.lows.push_back((now, latency));
        let window = self.settings.baseline_window;
        while self
            .lows
            .front()
            .is_some_and(|&(at, _)| now.duration_since(at) > window)
        {
            self.lows.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A dependency that answers in 100 ms up to `knee` calls at once and queues beyond it.
    fn latency(in_flight: usize, knee: usize) -> Duration {
        ms(100) * (in_flight.max(knee) as u32) / knee as u32
    }

    #[tokio::test(start_paused = true)]
    async fn it_settles_just_under_the_knee_of_a_queueing_dependency() {
        let mut aimd = AdaptiveLimit::new(AdaptiveSettings::new(1, 200)).unwrap();
        let mut limit = 4;
        let mut seen = Vec::new();
        for _ in 0..20_000 {
            let sample = latency(limit, 16);
            tokio::time::advance(ms(1)).await;
            if let Some(next) = aimd.on_sample(sample, Sample::Succeeded, limit, limit) {
                limit = next;
            }
            seen.push(limit);
        }
        // Past the first climb it saws just under the tolerance's edge (1.5 × the baseline:
        // 24 in flight), never below the knee.
        let late = &seen[10_000..];
        assert!(
            late.iter().all(|&l| (16..=25).contains(&l)),
            "{:?}",
            &late[..50]
        );
        assert_eq!(aimd.baseline(), Some(ms(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_not_in_use_does_not_grow_and_cuts_wait_a_round_trip() {
        let mut aimd = AdaptiveLimit::new(AdaptiveSettings::new(2, 10)).unwrap();
        let ok = Sample::Succeeded;
        for _ in 0..100 {
            assert_eq!(aimd.on_sample(ms(100), ok, 3, 8), None);
        }
        // Fast failures neither lower the baseline nor count as congestion.
        for _ in 0..100 {
            assert_eq!(aimd.on_sample(ms(5), Sample::Failed, 8, 8), None);
        }
        assert_eq!(aimd.baseline(), Some(ms(100)));
        assert_eq!(aimd.on_sample(ms(100), Sample::TimedOut, 8, 8), Some(7));
        // The rest of the round that was in flight under 8 does not cut again.
        for _ in 0..6 {
            assert_eq!(aimd.on_sample(ms(900), ok, 7, 7), None);
        }
        assert_eq!(aimd.on_sample(ms(900), ok, 7, 7), None, "settled after 7");
        assert_eq!(aimd.on_sample(ms(900), ok, 7, 7), Some(6));
        // Never below the minimum.
        let mut limit = 6;
        for _ in 0..1000 {
            if let Some(next) = aimd.on_sample(ms(900), Sample::TimedOut, limit, limit) {
                limit = next;
            }
        }
        assert_eq!(limit, 2);
    }

    #[test]
    fn impossible_settings_are_rejected() {
        let field = |s: AdaptiveSettings| AdaptiveLimit::new(s).unwrap_err().field().to_owned();
        assert_eq!(field(AdaptiveSettings::new(0, 4)), "minInstances");
        assert_eq!(field(AdaptiveSettings::new(5, 4)), "maxInstances");
        assert_eq!(
            field(AdaptiveSettings {
                tolerance: 1.0,
                ..AdaptiveSettings::new(1, 4)
            }),
            "latencyTolerance"
        );
    }
}
