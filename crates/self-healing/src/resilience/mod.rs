//! Resilience primitives the healer drives. Each works alone, on tokio time.
//!
//! - [`RetryPolicy`]: attempts, backoff (fixed, linear, exponential), jitter, retryable errors.
//! - [`CircuitBreaker`]: closed, open, half-open, with forced states and transition listeners.
//! - [`AdaptiveLimit`]: AIMD on latency, finding the concurrency a dependency takes.
//! - [`RetryBudget`]: retries limited to a share of recent first attempts, plus a floor.
//! - [`Throttle`]: a rate limit with bursts whose rate can change live.
//! - [`ConcurrencyLimit`]: a concurrency bound that can change live (what `scale` acts on).
//! - [`deadline`]: an attempt's timeout, armed only when the attempt has to wait.

mod adaptive;
mod breaker;
mod budget;
mod concurrency;
mod deadline;
mod retry;
mod throttle;

pub use adaptive::{AdaptiveLimit, AdaptiveSettings, Sample};
pub use breaker::{
    BreakerPermit, BreakerSettings, BreakerState, Cause, CircuitBreaker, CircuitBreakerBuilder,
    HalfOpenRule, Rejected, SlidingWindow, Transition, WindowStats,
};
pub use budget::{RetryBudget, RetryBudgetSettings};
pub use concurrency::{ConcurrencyLimit, ConcurrencyPermit};
pub use deadline::deadline;
pub use retry::{Backoff, Jitter, RetryPolicy, RetryPolicyBuilder, RetryPolicyConfig};
pub use throttle::{Rate, Throttle};
