//! What a breaker is set to do, and the builder that checks it: the seed's thresholds and
//! resilience4j's rates, each named in errors as the configuration names it.

use std::num::NonZeroU32;
use std::time::Duration;

use super::CircuitBreaker;
use super::window::SlidingWindow;
use crate::error::InvalidConfig;

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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a closed breaker; `None` means failures never open it
    /// (it opens only when tripped, which is how the `circuit-break` action uses it).
    pub failure_threshold: Option<NonZeroU32>,
    /// Successful probes in half-open that close it (under [`HalfOpenRule::FirstFailure`]).
    pub success_threshold: NonZeroU32,
    /// How long it stays open before letting probes through.
    pub break_duration: Duration,
    /// How many probes half-open lets through; the rest wait.
    pub half_open_requests: NonZeroU32,
    /// Opens a closed breaker when at least this percentage (1 to 100) of the calls in the
    /// sliding window failed; `None`, the default, never looks at the rate.
    pub failure_rate_threshold: Option<f32>,
    /// Opens a closed breaker when at least this percentage (1 to 100) of the calls in the
    /// sliding window were slow, failed or not; `None`, the default, never times calls. While
    /// set, a half-open probe that succeeds slowly counts as failed: the downstream answers but
    /// is not well yet.
    pub slow_call_rate_threshold: Option<f32>,
    /// A call that took at least this long is slow; default 60 s. Used only while
    /// `slow_call_rate_threshold` is set.
    pub slow_call_duration_threshold: Duration,
    /// Which recent calls the rates are computed over; default the last 100.
    pub sliding_window: SlidingWindow,
    /// No rate is judged before the sliding window holds this many calls (or, for a count
    /// window, as many as it can hold if that is fewer), so that a few early failures do not
    /// open the breaker; default 100.
    pub minimum_calls: NonZeroU32,
    /// How half-open decides: at the first failed probe (the default), or over all its
    /// probes' rates, as resilience4j does.
    pub half_open_rule: HalfOpenRule,
}

/// How a half-open breaker decides between closing and opening again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HalfOpenRule {
    /// The first failed (or, with a slow-call rate set, slow) probe opens it again;
    /// `success_threshold` successes close it. Quick to reopen on a dependency still down.
    #[default]
    FirstFailure,
    /// resilience4j's rule: every one of `half_open_requests` probes runs, then their failure
    /// (and slow-call) rate is judged against the thresholds (50 % when no failure rate is
    /// set): at or over reopens, under closes. `success_threshold` is not used.
    Rate,
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
            half_open_rule: HalfOpenRule::FirstFailure,
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
                && !(percent > 0.0 && percent <= 100.0)
            {
                return Err(InvalidConfig::new(
                    field,
                    format!("{percent} is not a percentage above 0, at most 100"),
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
    pub(super) fn rated(&self) -> bool {
        self.failure_rate_threshold.is_some() || self.slow_call_rate_threshold.is_some()
    }

    /// Whether calls are timed, to tell the slow ones.
    pub(super) fn timed(&self) -> bool {
        self.slow_call_rate_threshold.is_some()
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

    /// Opens the breaker when at least `percent` (above 0, at most 100; resilience4j's
    /// decimals) of the calls in the sliding window failed, once it holds
    /// [`minimum_calls`](Self::minimum_calls); off by default.
    pub fn failure_rate_threshold(mut self, percent: f32) -> Self {
        self.settings.failure_rate_threshold = Some(percent);
        self
    }

    /// Opens the breaker when at least `percent` (above 0, at most 100) of the calls in the
    /// sliding window were slow, once it holds [`minimum_calls`](Self::minimum_calls); off by default. Setting
    /// it times every call, and makes a slow successful half-open probe count as failed.
    pub fn slow_call_rate_threshold(mut self, percent: f32) -> Self {
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

    /// How half-open decides: at the first failed probe (the default), or over all of them.
    pub fn half_open_rule(mut self, rule: HalfOpenRule) -> Self {
        self.settings.half_open_rule = rule;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    #[test]
    fn impossible_rate_settings_name_their_field() {
        let field =
            |builder: CircuitBreakerBuilder| builder.build().unwrap_err().field().to_owned();
        let builder = CircuitBreaker::builder;
        assert_eq!(
            field(builder().failure_rate_threshold(0.0)),
            "failureRateThreshold"
        );
        assert_eq!(
            field(builder().failure_rate_threshold(100.5)),
            "failureRateThreshold"
        );
        assert_eq!(
            field(builder().slow_call_rate_threshold(0.0)),
            "slowCallRateThreshold"
        );
        assert_eq!(
            field(builder().slow_call_rate_threshold(200.0)),
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
            failure_rate_threshold: Some(100.0),
            slow_call_rate_threshold: Some(1.0),
            sliding_window: SlidingWindow::Time(Duration::from_secs(1)),
            ..BreakerSettings::default()
        };
        assert_eq!(settings.validate(), Ok(()));
    }
}
