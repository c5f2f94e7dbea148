//! Retry budget: retries limited to a share of recent work, so a storm of failures cannot
//! multiply the load on a struggling dependency (Finagle's and Envoy's retry budgets).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use tokio::time::Instant;

use crate::error::InvalidConfig;

/// How many retries a [`RetryBudget`] allows: `percent` of the first attempts started in the
/// last `window`, plus `min_per_second` × the window's seconds, so that work with few first
/// attempts (a stage's tail) still retries.
///
/// As a file writes it (`healing.retryBudget`, or a retry strategy's `config.budget`):
/// `{ percent: 20, window: 10s, minPerSecond: 1 }`, each key optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryBudgetSettings {
    /// Retries allowed per 100 first attempts in the window; default 20.
    pub percent: u32,
    // `serialize_with` here only writes the schema's default (`"10s"`, not serde's
    // `{secs, nanos}`): nothing serializes this struct.
    /// How far back first attempts and retries are counted; whole seconds, default 10 s.
    #[serde(
        deserialize_with = "crate::duration::deserialize",
        serialize_with = "crate::duration::serialize"
    )]
    #[schemars(with = "crate::duration::Written")]
    pub window: Duration,
    /// Retries allowed per second of the window whatever the first attempts; default 1.
    pub min_per_second: u32,
}

impl Default for RetryBudgetSettings {
    fn default() -> Self {
        RetryBudgetSettings {
            percent: 20,
            window: Duration::from_secs(10),
            min_per_second: 1,
        }
    }
}

impl RetryBudgetSettings {
    /// Checks that the budget can work: a window of whole seconds, at least 1, and some
    /// retries allowed (`percent` or `minPerSecond` above zero).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.window < Duration::from_secs(1) || self.window.subsec_nanos() != 0 {
            return Err(InvalidConfig::new(
                "window",
                format!("whole seconds, at least 1, not {:?}", self.window),
            ));
        }
        if self.percent == 0 && self.min_per_second == 0 {
            return Err(InvalidConfig::new(
                "percent",
                "with minPerSecond 0 too, no retry would ever be allowed",
            ));
        }
        Ok(())
    }

    fn floor(&self) -> u64 {
        u64::from(self.min_per_second) * self.window.as_secs()
    }
}

/// A retry budget shared by whoever retries under it (clones share one ledger).
///
/// Each first attempt [`deposit`](Self::deposit)s; each retry [`reserve`](Self::reserve)s a
/// place in time. A retry the budget has no room for now is not refused: it is given the
/// earliest moment at which it fits, counting the retries already placed, so retries spread
/// out instead of piling onto the dependency, and no work is given up because of the budget.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use self_healing::resilience::{RetryBudget, RetryBudgetSettings};
///
/// // 20 % of first attempts, and 1 retry a second, over 10 s.
/// let budget = RetryBudget::new(RetryBudgetSettings::default()).unwrap();
/// for _ in 0..50 {
///     budget.deposit();
/// }
/// // 10 retries from the 50 first attempts and 10 from the floor go at once…
/// for _ in 0..20 {
///     assert_eq!(budget.reserve(Duration::ZERO), Duration::ZERO);
/// }
/// // …the next waits until the window forgets the first of them.
/// assert_eq!(budget.reserve(Duration::ZERO), Duration::from_secs(10));
/// # });
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    settings: RetryBudgetSettings,
    ledger: Arc<Mutex<Ledger>>,
}

struct Ledger {
    origin: Instant,
    /// First attempts per second since `origin`, oldest first: `(second, count)`.
    deposits: VecDeque<(u64, u64)>,
    /// Retries placed, by when they go (some in the future).
    retries: BTreeMap<Instant, u64>,
}

impl RetryBudget {
    /// A budget with `settings`, or the reason they cannot work.
    pub fn new(settings: RetryBudgetSettings) -> Result<Self, InvalidConfig> {
        settings.validate()?;
        Ok(RetryBudget {
            settings,
            ledger: Arc::new(Mutex::new(Ledger {
                origin: Instant::now(),
                deposits: VecDeque::new(),
                retries: BTreeMap::new(),
            })),
        })
    }

    /// Its settings.
    pub fn settings(&self) -> RetryBudgetSettings {
        self.settings
    }

    /// Counts a first attempt started now.
    pub fn deposit(&self) {
        let mut ledger = self.lock();
        let second = ledger.origin.elapsed().as_secs();
        match ledger.deposits.back_mut() {
            Some((s, count)) if *s == second => *count += 1,
            _ => ledger.deposits.push_back((second, 1)),
        }
        let window = self.settings.window.as_secs();
        while ledger
            .deposits
            .front()
            .is_some_and(|&(s, _)| s + window <= second)
        {
            ledger.deposits.pop_front();
        }
    }

    /// Places one retry at the earliest moment, `not_before` from now or later (its backoff),
    /// the budget has room for it, and returns how long from now that is. Conservative: it
    /// counts only first attempts made so far, and every retry placed within a window's length
    /// of that moment, either side. A retry placed and then not made (its work abandoned) keeps
    /// its place until its window ends: the budget errs on the side of fewer retries.
    pub fn reserve(&self, not_before: Duration) -> Duration {
        let now = Instant::now();
        let earliest = now + not_before;
        let window = self.settings.window;
        let mut ledger = self.lock();
        // Retries whose window is over no longer count anywhere.
        if let Some(cut) = now.checked_sub(window) {
            ledger.retries = ledger.retries.split_off(&(cut + Duration::from_nanos(1)));
        }
        let expiries: Vec<Instant> = ledger
            .retries
            .keys()
            .map(|&at| at + window)
            .filter(|&end| end > earliest)
            .collect();
        let at = std::iter::once(earliest)
            .chain(expiries)
            .find(|&at| {
                // Every window holding `at` lies within a window's length either side.
                let since = at.checked_sub(window);
                let used: u64 = ledger
                    .retries
                    .iter()
                    .filter(|&(&t, _)| since.is_none_or(|since| t > since) && t < at + window)
                    .map(|(_, n)| n)
                    .sum();
                used < self.allowed(&ledger, at)
            })
            // After the last placed retry's window ends nothing counts against the floor,
            // which validate() keeps above zero unless percent is.
            .unwrap_or_else(|| {
                ledger
                    .retries
                    .keys()
                    .next_back()
                    .map_or(earliest, |&last| (last + window).max(earliest))
            });
        *ledger.retries.entry(at).or_default() += 1;
        at - now
    }

    /// Retries allowed in the window ending at `at`, from first attempts made so far.
    fn allowed(&self, ledger: &Ledger, at: Instant) -> u64 {
        let window = self.settings.window.as_secs();
        let end = at.saturating_duration_since(ledger.origin).as_secs();
        let first: u64 = ledger
            .deposits
            .iter()
            .filter(|&&(s, _)| s + window > end)
            .map(|(_, n)| n)
            .sum();
        self.settings.floor() + first * u64::from(self.settings.percent) / 100
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(percent: u32, window: u64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetSettings {
            percent,
            window: Duration::from_secs(window),
            min_per_second,
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_first_attempts_plus_a_floor() {
        let b = budget(20, 10, 0);
        for _ in 0..100 {
            b.deposit();
        }
        for _ in 0..20 {
            assert_eq!(b.reserve(Duration::ZERO), Duration::ZERO);
        }
        // The 21st fits only once the first 20 leave the window.
        assert_eq!(b.reserve(Duration::ZERO), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_lets_a_tail_of_retries_through_spread_out() {
        let b = budget(20, 2, 1);
        // No first attempts at all: two retries per 2 s window.
        let waits: Vec<u64> = (0..6)
            .map(|_| b.reserve(Duration::ZERO).as_secs())
            .collect();
        assert_eq!(waits, [0, 0, 2, 2, 4, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn old_first_attempts_stop_counting() {
        let b = budget(50, 2, 0);
        for _ in 0..4 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        for _ in 0..2 {
            b.deposit();
        }
        // Only the 2 recent first attempts count: one retry now.
        assert_eq!(b.reserve(Duration::ZERO), Duration::ZERO);
        // No more room, ever, from what was deposited: the window ends when the retry leaves,
        // and then no first attempt is left either; the budget gives the retry that moment.
        assert_eq!(b.reserve(Duration::ZERO), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_is_placed_after_its_backoff() {
        let b = budget(0, 10, 1);
        // Ten a window: the first ten, each 30 s out, fill the window that ends at 30 s…
        for _ in 0..10 {
            assert_eq!(b.reserve(Duration::from_secs(30)), Duration::from_secs(30));
        }
        // …and do not count against a retry due now.
        assert_eq!(b.reserve(Duration::ZERO), Duration::ZERO);
        assert_eq!(b.reserve(Duration::from_secs(30)), Duration::from_secs(40));
    }

    #[test]
    fn impossible_settings_are_rejected() {
        let err = RetryBudget::new(RetryBudgetSettings {
            window: Duration::from_millis(1500),
            ..RetryBudgetSettings::default()
        })
        .unwrap_err();
        assert_eq!(err.field(), "window");
        let err = RetryBudget::new(RetryBudgetSettings {
            percent: 0,
            min_per_second: 0,
            ..RetryBudgetSettings::default()
        })
        .unwrap_err();
        assert_eq!(err.field(), "percent");
    }
}
