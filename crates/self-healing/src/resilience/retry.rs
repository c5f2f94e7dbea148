//! Retry policy: how many attempts, how long to wait between them, which errors deserve one.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{InvalidConfig, StageError};

/// How the wait grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Backoff {
    /// `initialDelay` before every retry.
    Fixed,
    /// `initialDelay × n` before retry `n`.
    Linear,
    /// `initialDelay × 2ⁿ⁻¹` before retry `n`.
    #[default]
    Exponential,
}

/// The seed's `retryPolicy`: `maxAttempts` counts every attempt, the first included; delays grow
/// by [`Backoff`] from `initialDelay` up to `maxDelay`; with `jitter` each delay is drawn
/// uniformly from `[d/2, d]` (so waits never shrink below half the schedule and never exceed
/// it); `retryableErrors` are patterns matched against an error's message and code (none means
/// every error is retryable).
///
/// ```
/// use std::time::Duration;
/// use self_healing::resilience::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(5)
///     .backoff(Backoff::Exponential)
///     .initial_delay(Duration::from_millis(1000))
///     .max_delay(Duration::from_millis(30_000))
///     .retryable_pattern("ECONNRESET|ETIMEDOUT")
///     .build()?;
/// let waits: Vec<_> = policy.delays().collect();
/// assert_eq!(waits, [1, 2, 4, 8].map(Duration::from_secs));
/// # Ok::<(), self_healing::InvalidConfig>(())
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: NonZeroU32,
    backoff: Backoff,
    initial_delay: Duration,
    max_delay: Duration,
    jitter: bool,
    jitter_seed: Option<u64>,
    retryable: Vec<Regex>,
}

impl Default for RetryPolicy {
    /// Three attempts, exponential from 1 s up to 30 s, no jitter, every error retryable.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: NonZeroU32::new(3).unwrap(),
            backoff: Backoff::Exponential,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: false,
            jitter_seed: None,
            retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// A builder starting from the defaults: three attempts, exponential from 1 s up to 30 s, no
    /// jitter, every error retryable.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: RetryPolicy::default(),
            max_attempts: 3,
            patterns: Vec::new(),
        }
    }

    /// One attempt and no retry.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: NonZeroU32::MIN,
            ..RetryPolicy::default()
        }
    }

    /// Attempts allowed in all, the first included; at least 1.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.get()
    }

    /// How the wait grows from one retry to the next.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The wait before the first retry, before jitter.
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// The longest wait between two attempts, before jitter.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Whether each wait is drawn from `[d/2, d]` instead of being exactly `d`.
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The same policy with another attempt budget (what `healing configure --max-attempts`
    /// changes).
    pub fn with_max_attempts(mut self, max_attempts: NonZeroU32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The scheduled wait before retry `retry` (1 for the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let n = retry.max(1);
        let delay = match self.backoff {
            Backoff::Fixed => self.initial_delay,
            Backoff::Linear => self.initial_delay.saturating_mul(n),
            Backoff::Exponential => self
                .initial_delay
                .saturating_mul(2u32.saturating_pow(n - 1)),
        };
        delay.min(self.max_delay)
    }

    /// The wait before retry `retry`, with jitter drawn from `rng` when enabled.
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base_delay(retry);
        if !self.jitter || base.is_zero() {
            return base;
        }
        let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(nanos / 2..=nanos))
    }

    /// True when `error` matches a retryable pattern (or there are none), unless it is known
    /// not to be worth trying again (a classified wrong password, a full disk).
    pub fn is_retryable(&self, error: &StageError) -> bool {
        if error.retryable() == Some(false) {
            return false;
        }
        self.retryable.is_empty()
            || self.retryable.iter().any(|pattern| {
                pattern.is_match(error.message())
                    || error.code().is_some_and(|c| pattern.is_match(c))
            })
    }

    /// Whether an item that has made `attempts` attempts and failed with `error` gets another.
    pub fn should_retry(&self, attempts: u32, error: &StageError) -> bool {
        attempts < self.max_attempts.get() && self.is_retryable(error)
    }

    /// The waits between attempts, in order: `maxAttempts - 1` of them. Jitter uses the seed
    /// from [`RetryPolicyBuilder::jitter_seed`] if one was set.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut rng = self.rng();
        (1..self.max_attempts.get()).map(move |retry| self.delay(retry, &mut rng))
    }

    fn rng(&self) -> fastrand::Rng {
        match self.jitter_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        }
    }

    /// Runs `operation` (given the attempt number, from 1) until it succeeds, the error is not
    /// retryable, or the attempts are spent. Waits on tokio time.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
    /// use self_healing::{StageError, resilience::RetryPolicy};
    ///
    /// let policy = RetryPolicy::builder().max_attempts(3).build().unwrap();
    /// let result = policy
    ///     .run(|attempt| async move {
    ///         if attempt < 3 { Err(StageError::new("ECONNRESET")) } else { Ok(attempt) }
    ///     })
    ///     .await;
    /// assert_eq!(result, Ok(3));
    /// # });
    /// ```
    pub async fn run<T, F, Fut>(&self, mut operation: F) -> Result<T, StageError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, StageError>>,
    {
        let mut rng = self.rng();
        let mut attempt = 1;
        loop {
            match operation(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) if self.should_retry(attempt, &error) => {
                    tokio::time::sleep(self.delay(attempt, &mut rng)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The seed's `retryPolicy` as a file writes it (also the `config` of a `retry` strategy).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicyConfig {
    /// Attempts allowed in all, the first included; at least 1.
    pub max_attempts: Option<u32>,
    /// How the wait grows: `fixed`, `linear` or `exponential`.
    pub backoff: Option<Backoff>,
    /// The wait before the first retry.
    #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub initial_delay: Option<Duration>,
    /// The longest wait between two attempts; not shorter than `initialDelay`.
    #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
    #[schemars(with = "Option<crate::duration::Written>")]
    pub max_delay: Option<Duration>,
    /// Whether each wait is drawn from `[d/2, d]`.
    pub jitter: Option<bool>,
    /// Regular expressions matched against an error's message and code; empty: every error is
    /// retryable.
    #[serde(default)]
    pub retryable_errors: Vec<String>,
    /// A retry strategy's own retry budget (its `config.budget`); a policy elsewhere has none
    /// (the budget of every retry is `healing.retryBudget`).
    pub budget: Option<super::RetryBudgetSettings>,
}

impl RetryPolicyConfig {
    /// Unset keys take their value from `base` (the global policy, or the defaults).
    pub fn build(&self, base: &RetryPolicy) -> Result<RetryPolicy, InvalidConfig> {
        if self.budget.is_some() {
            return Err(InvalidConfig::new(
                "budget",
                "a retry budget belongs to a retry strategy's `config`, or to every retry \
                 (`healing.retryBudget`), not to a retry policy",
            ));
        }
        let mut builder = RetryPolicy::builder()
            .max_attempts(self.max_attempts.unwrap_or(base.max_attempts()))
            .backoff(self.backoff.unwrap_or(base.backoff()))
            .initial_delay(self.initial_delay.unwrap_or(base.initial_delay()))
            .max_delay(self.max_delay.unwrap_or(base.max_delay()))
            .jitter(self.jitter.unwrap_or(base.jitter()));
        for pattern in &self.retryable_errors {
            builder = builder.retryable_pattern(pattern.clone());
        }
        builder.build()
    }
}

/// The one source of retry jitter of a pipeline: a seedable generator shared by whoever
/// decides retries (the default supervisor and the healer), so a seeded pipeline waits on the
/// same schedule every time.
///
/// ```
/// use std::time::Duration;
/// use self_healing::resilience::{Jitter, RetryPolicy};
///
/// let policy = RetryPolicy::builder().jitter(true).initial_delay(Duration::from_secs(2)).build()?;
/// let (a, b) = (Jitter::seeded(7), Jitter::seeded(7));
/// assert_eq!(a.delay(&policy, 1), b.delay(&policy, 1));
/// assert!(a.delay(&policy, 1) >= Duration::from_secs(1));
/// # Ok::<(), self_healing::InvalidConfig>(())
/// ```
#[derive(Debug)]
pub struct Jitter(Mutex<fastrand::Rng>);

impl Jitter {
    /// Seeded from the system's randomness.
    pub fn new() -> Self {
        Jitter(Mutex::new(fastrand::Rng::new()))
    }

    /// Seeded with `seed`, so the same seed gives the same waits.
    pub fn seeded(seed: u64) -> Self {
        Jitter(Mutex::new(fastrand::Rng::with_seed(seed)))
    }

    /// `policy`'s wait before retry `retry`, jittered when the policy says so.
    pub fn delay(&self, policy: &RetryPolicy, retry: u32) -> Duration {
        let mut rng = self.0.lock().unwrap_or_else(|e| e.into_inner());
        policy.delay(retry, &mut rng)
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::new()
    }
}

/// Builds a [`RetryPolicy`]; [`build`](Self::build) rejects impossible settings.
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
    max_attempts: u32,
    patterns: Vec<String>,
}

impl RetryPolicyBuilder {
    /// Attempts allowed in all, the first included; default 3, at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// How the wait grows from one retry to the next; default exponential.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// The wait before the first retry; default 1 s.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.policy.initial_delay = delay;
        self
    }

    /// The longest wait between two attempts; default 30 s, not shorter than `initial_delay`.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.policy.max_delay = delay;
        self
    }

    /// Whether each wait is drawn from `[d/2, d]`; default false.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// Makes jitter reproducible.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.policy.jitter_seed = Some(seed);
        self
    }

    /// Adds a retryable error pattern (a regular expression).
    pub fn retryable_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// The policy, or which setting cannot work (an invalid regular expression among them).
    pub fn build(self) -> Result<RetryPolicy, InvalidConfig> {
        let mut policy = self.policy;
        policy.max_attempts = NonZeroU32::new(self.max_attempts)
            .ok_or_else(|| InvalidConfig::new("maxAttempts", "must be at least 1"))?;
        if policy.initial_delay > policy.max_delay {
            return Err(InvalidConfig::new(
                "maxDelay",
                format!(
                    "{:?} is shorter than initialDelay {:?}",
                    policy.max_delay, policy.initial_delay
                ),
            ));
        }
        policy.retryable = self
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Regex::new(p)
                    .map_err(|e| InvalidConfig::new(format!("retryableErrors[{i}]"), e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, jitter: bool) -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(8)
            .backoff(backoff)
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(1000))
            .jitter(jitter)
            .jitter_seed(7)
            .build()
            .unwrap()
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn fixed_linear_and_exponential_sequences_are_capped() {
        let fixed: Vec<_> = policy(Backoff::Fixed, false).delays().collect();
        assert_eq!(fixed, ms(&[100; 7]));
        let linear: Vec<_> = policy(Backoff::Linear, false).delays().collect();
        assert_eq!(linear, ms(&[100, 200, 300, 400, 500, 600, 700]));
        let exponential: Vec<_> = policy(Backoff::Exponential, false).delays().collect();
        assert_eq!(exponential, ms(&[100, 200, 400, 800, 1000, 1000, 1000]));
    }

    #[test]
    fn jitter_stays_within_half_to_full_schedule_and_is_seeded() {
        for backoff in [Backoff::Fixed, Backoff::Linear, Backoff::Exponential] {
            let p = policy(backoff, true);
            let first: Vec<_> = p.delays().collect();
            let again: Vec<_> = p.delays().collect();
            assert_eq!(first, again, "{backoff:?}: same seed, same jitter");
            let mut differs = false;
            for (retry, delay) in (1..).zip(&first) {
                let base = p.base_delay(retry);
                assert!(
                    *delay >= base / 2 && *delay <= base,
                    "{backoff:?} retry {retry}: {delay:?} outside [{:?}, {base:?}]",
                    base / 2
                );
                differs |= *delay != base;
            }
            assert!(differs, "{backoff:?}: jitter changed nothing: {first:?}");
        }
    }

    #[test]
    fn huge_retry_numbers_saturate_at_max_delay() {
        let p = policy(Backoff::Exponential, false);
        assert_eq!(p.base_delay(u32::MAX), Duration::from_millis(1000));
        assert_eq!(
            policy(Backoff::Linear, false).base_delay(u32::MAX),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let p = RetryPolicy::builder().max_attempts(3).build().unwrap();
        let err = StageError::new("x");
        assert!(p.should_retry(1, &err));
        assert!(p.should_retry(2, &err));
        assert!(!p.should_retry(3, &err));
        assert_eq!(p.delays().count(), 2);
    }

    #[test]
    fn retryable_patterns_match_message_or_code() {
        let p = RetryPolicy::builder()
            .retryable_pattern("ECONNRESET|ETIMEDOUT")
            .build()
            .unwrap();
        assert!(p.is_retryable(&StageError::new("read: ECONNRESET")));
        assert!(p.is_retryable(&StageError::new("socket closed").with_code("ETIMEDOUT")));
        assert!(!p.is_retryable(&StageError::new("syntax error")));
    }

    #[test]
    fn impossible_settings_are_rejected_by_name() {
        let zero = RetryPolicy::builder().max_attempts(0).build().unwrap_err();
        assert_eq!(zero.field(), "maxAttempts");
        let inverted = RetryPolicy::builder()
            .initial_delay(Duration::from_secs(10))
            .max_delay(Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(inverted.field(), "maxDelay");
        let bad = RetryPolicy::builder()
            .retryable_pattern("(")
            .build()
            .unwrap_err();
        assert_eq!(bad.field(), "retryableErrors[0]");
    }

    #[tokio::test(start_paused = true)]
    async fn run_sleeps_the_schedule_on_tokio_time() {
        let p = policy(Backoff::Exponential, false);
        let start = tokio::time::Instant::now();
        let result: Result<(), _> = p.run(|_| async { Err(StageError::new("down")) }).await;
        assert_eq!(result.unwrap_err().message(), "down");
        // 100 + 200 + 400 + 800 + 1000 × 3 ms between 8 attempts.
        assert_eq!(start.elapsed(), Duration::from_millis(4500));
    }
}
