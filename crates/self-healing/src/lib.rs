//! Self-healing pipelines: multi-stage jobs whose stages call flaky systems, watched and healed
//! as they run.
//!
//! # Layout
//!
//! Modules form one-way layers, each using only those listed after it (a test holds this):
//!
//! - [`export`]: the `PrometheusExporter` (feature `prometheus`),
//!   counting a run's events live from its bus or read back from a journal.
//! - [`config`]: the seed's healing settings as typed data (strategies, triggers, action
//!   configs, the global retry policy and circuit breaker, metrics and budget), each building
//!   its runtime object; the whole section ([`HealingConfig`](config::HealingConfig)) builds
//!   the healer, the collector and the health monitor.
//! - [`healing`]: the [`AutoHealer`](healing::AutoHealer): strategies whose triggers match a
//!   failure or a stage's state, gated by cooldowns and a budget, acting through one module per
//!   action. It installs itself on a pipeline as its supervisor and watches health monitors.
//! - [`alert`]: [`Alert`](alert::Alert)s, the [`Notifier`](alert::Notifier) trait, background
//!   delivery with retries, and one module per channel (Slack, PagerDuty, webhook, email).
//! - [`health`]: the [`HealthMonitor`](health::HealthMonitor) running [`Check`](health::Check)s
//!   under the seed's thresholds.
//! - [`pipeline`]: [`SelfHealingPipeline`] runs [`Stage`]s in order, each once or over a
//!   stream of items with a live concurrency; every attempt runs under the stage's timeout,
//!   circuit breaker and throttle, exposed as a [`StageControl`](pipeline::StageControl); a
//!   failed attempt goes to its [`Supervisor`](pipeline::Supervisor) for a
//!   [`Remedy`](pipeline::Remedy).
//! - [`metrics`]: [`MetricsCollector`] subscribes to the bus and keeps bounded windows per run
//!   and per stage, plus the run's [`PipelineMetrics`].
//! - [`event`]: every fact of a run is a typed [`Event`] on one [`EventBus`] (the back-pressure
//!   rule is documented there), and the vocabulary healing records and health changes share.
//! - [`chaos`]: faults as data and a modelled dependency that suffers them, on tokio time:
//!   what `simulate` and the chaos benchmark run healing against.
//! - [`resilience`]: the primitives healing drives, each usable alone: [`RetryPolicy`],
//!   [`CircuitBreaker`], [`Throttle`], [`ConcurrencyLimit`].
//! - [`process`]: running a command: argv without a shell, its process group killed when cut
//!   short, its error from the exit status and standard error.
//! - `http` (feature `http`): the one HTTP client setup, and URLs shown without their secrets.
//! - [`de`]: reading the tagged maps users write, one typed struct per variant, keeping each
//!   key's line and column.
//! - [`duration`]: durations as users write them (`1000`, `"10s"`, `"1h30m"`).
//! - [`clock`]: every timer is tokio time, so everything runs on paused time in tests.
//!
//! Data flows one way: an attempt publishes events → the collector (inline) and subscribers
//! (queued) see them → a failed attempt goes to the supervisor → its remedy is applied and
//! published as a `healing-applied` event.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! use std::time::Duration;
//! use self_healing::{ItemSource, RetryPolicy, RunStatus, SelfHealingPipeline, Stage, StageError};
//!
//! let pipeline = SelfHealingPipeline::builder()
//!     .name("my-migration")
//!     .retry_policy(
//!         RetryPolicy::builder()
//!             .max_attempts(5)
//!             .initial_delay(Duration::from_millis(1000))
//!             .retryable_pattern("ECONNRESET|ETIMEDOUT")
//!             .build()?,
//!     )
//!     .stage(
//!         Stage::for_each("analysis", ItemSource::iter(|_: &()| 0..100u32), |ctx| async move {
//!             // Every seventh item fails on its first attempt with a transient error.
//!             if *ctx.item() % 7 == 0 && ctx.attempt() == 1 {
//!                 return Err(StageError::new("read ECONNRESET"));
//!             }
//!             Ok(())
//!         })
//!         .concurrency(8)
//!         .timeout(Duration::from_secs(30)),
//!     )
//!     .stage(Stage::new("validation", |_ctx| async { Ok(()) }))
//!     .build()?;
//!
//! let report = pipeline.execute(()).await;
//! assert_eq!(report.status, RunStatus::Succeeded);
//! assert_eq!(report.metrics.retry_count, 15);
//! # Ok::<(), self_healing::InvalidConfig>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::pin::Pin;

/// A boxed future that can cross threads: what the crate's object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `[E::A, E::B, …]`, an array of every variant of the fieldless enum `E`, from one list that is
/// also the patterns of an exhaustive `match` on `E`: a variant left out of the list is a compile
/// error ("pattern not covered"), not an `ALL` that quietly misses it. Defined before the modules
/// so that each of them can use it.
macro_rules! every_variant {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {{
        const fn _every_variant_is_listed(value: $enum) {
            match value {
                $($enum::$variant)|+ => {}
            }
        }
        [$($enum::$variant),+]
    }};
}

pub mod alert;
pub mod chaos;
pub mod classify;
pub mod clock;
pub mod config;
pub mod de;
pub mod duration;
mod error;
pub mod event;
pub mod export;
pub mod healing;
pub mod health;
#[cfg(feature = "http")]
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod process;
pub mod resilience;
mod serde_ms;

pub use error::{
    CODE_RESTART_LIMIT, CODE_TIMEOUT, InvalidConfig, Severity, StageError, error_chain,
};
pub use event::{Event, EventBus, EventKind, RunId, RunStatus};
#[cfg(feature = "prometheus")]
pub use export::PrometheusExporter;
pub use metrics::{MetricsCollector, PipelineMetrics, Stats};
pub use pipeline::{
    ItemContext, ItemSource, RunOptions, RunReport, SelfHealingPipeline, Stage, StageContext,
    StageReport,
};
pub use resilience::{CircuitBreaker, ConcurrencyLimit, RetryPolicy, Throttle};
