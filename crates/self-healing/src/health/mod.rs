//! Health of the components a pipeline depends on.
//!
//! A [`HealthMonitor`] runs [`Check`]s, each on its own interval and under its own timeout, as
//! tokio tasks (a thousand checks need no thread each). A check's status follows the seed's
//! thresholds: one failure makes it `degraded`, `consecutiveFailures` failures in a row make it
//! `unhealthy`, and `consecutiveSuccesses` successes in a row make it `healthy` again. Between
//! those, a mixed run of results leaves the status where it is, so a flapping dependency stays
//! `degraded` instead of oscillating. A stage's status is the worst of its checks.
//!
//! Every change is a [`HealthChange`] given to `on_health_changed` listeners and published on
//! the event bus. The monitor is the one source of each check's status: a healer that watches
//! it (`AutoHealer::watch`) reads [`statuses`](HealthMonitor::statuses) for its `health-check`
//! triggers.
//!
//! Checks here need no driver: [`TcpCheck`], [`CommandCheck`] and [`CustomCheck`]. HTTP, SQL
//! databases and Redis live in the `self-healing-checks` crate, behind its features.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! use std::time::Duration;
//! use self_healing::health::{CheckSpec, CustomCheck, HealthMonitor, HealthStatus};
//!
//! let monitor = HealthMonitor::builder()
//!     .check_interval(Duration::from_millis(10_000))
//!     .thresholds(3, 5)
//!     .check(
//!         CheckSpec::new("queue-depth", CustomCheck::new("queue below 10000", || async { 42 < 10_000 }))
//!             .interval(Duration::from_millis(60_000))
//!             .stage("generation"),
//!     )
//!     .build()
//!     .unwrap();
//! monitor.on_health_changed(|change| {
//!     println!("{:?}: {} → {}", change.stage, change.old_status, change.new_status)
//! });
//! monitor.check_all().await;
//! assert_eq!(monitor.stage_status("generation"), HealthStatus::Healthy);
//! # });
//! ```

mod checks;
mod redact;

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use checks::{CommandCheck, CustomCheck, TcpCheck};
pub use redact::{redact_secrets, redact_url};

pub use crate::event::{HealthChange, HealthStatus};

use crate::BoxFuture;
use crate::clock::{Clock, default_clock};
use crate::error::InvalidConfig;
use crate::event::{EventBus, EventKind};

/// Why a check failed. Its text must not contain secrets: checks redact connection strings
/// and credentials before they build one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckError(pub String);

impl CheckError {
    /// A failure with this reason (already redacted).
    pub fn new(message: impl Into<String>) -> Self {
        CheckError(message.into())
    }
}

/// One health check: healthy when [`check`](Self::check) returns `Ok`. One required method
/// besides the description; the monitor applies interval, timeout and thresholds.
pub trait Check: Send + Sync + 'static {
    /// Runs the check once; `Ok` means healthy. The monitor applies the timeout.
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>>;

    /// What is checked, for status output and errors, with secrets redacted.
    fn target(&self) -> String;
}

/// A check with its name and schedule, as a monitor runs it.
#[derive(Clone)]
pub struct CheckSpec {
    name: Arc<str>,
    check: Arc<dyn Check>,
    interval: Option<Duration>,
    timeout: Duration,
    stage: Option<Arc<str>>,
}

impl std::fmt::Debug for CheckSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckSpec")
            .field("name", &self.name)
            .field("target", &self.check.target())
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("stage", &self.stage)
            .finish()
    }
}

/// A check's timeout unless told otherwise (the seed's examples use 5 s).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl CheckSpec {
    /// `check` under `name` (unique within a monitor), on the monitor's interval, with the default
    /// 5 s timeout and attached to no stage.
    pub fn new(name: impl Into<Arc<str>>, check: impl Check) -> Self {
        CheckSpec::from_arc(name, Arc::new(check))
    }

    /// As `new`, for a check that is already shared.
    pub fn from_arc(name: impl Into<Arc<str>>, check: Arc<dyn Check>) -> Self {
        CheckSpec {
            name: name.into(),
            check,
            interval: None,
            timeout: DEFAULT_CHECK_TIMEOUT,
            stage: None,
        }
    }

    /// This check's own interval (default: the monitor's `checkInterval`).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// A check still running after this long is cut and counts as a failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attaches the check to a stage: the stage's status is the worst of its checks.
    pub fn stage(mut self, stage: impl Into<Arc<str>>) -> Self {
        self.stage = Some(stage.into());
        self
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same check (name, interval, timeout, stage) probing what `f` makes of its probe: a
    /// model in a simulation, the probe with faults injected in a chaos run.
    pub fn map_check(mut self, f: impl FnOnce(Arc<dyn Check>) -> Arc<dyn Check>) -> Self {
        self.check = f(self.check);
        self
    }
}

/// The seed's `thresholds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    /// Failures in a row that make a check `unhealthy`; default 3.
    pub consecutive_failures: u32,
    /// Successes in a row that make it `healthy` again; default 5.
    pub consecutive_successes: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            consecutive_failures: 3,
            consecutive_successes: 5,
        }
    }
}

/// One check's status and since when it has held (the monitor's start if it never changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStatus {
    /// The check's name.
    pub check: Arc<str>,
    /// The stage the check is attached to, if any.
    pub stage: Option<Arc<str>>,
    /// Its status now; `healthy` until its results say otherwise.
    pub status: HealthStatus,
    /// When the status last changed.
    pub since: Instant,
}

/// What the monitor knows of one check now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The check's name.
    pub name: Arc<str>,
    /// The stage the check is attached to, if any.
    pub stage: Option<Arc<str>>,
    /// What is checked, with secrets redacted.
    pub target: String,
    /// Its status now.
    pub status: HealthStatus,
    /// Failures in a row so far; 0 after a success.
    pub consecutive_failures: u32,
    /// Successes in a row so far; 0 after a failure.
    pub consecutive_successes: u32,
    /// The last failure's reason, redacted; cleared by a success.
    pub last_error: Option<String>,
    /// How long the last run took.
    #[serde(with = "opt_ms")]
    pub latency: Option<Duration>,
    /// When it last ran (wall-clock time); `None` before its first run.
    pub last_checked: Option<SystemTime>,
    /// How many times it has run.
    pub runs: u64,
}

mod opt_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
            None => s.serialize_none(),
        }
    }
}

type Listener = Arc<dyn Fn(&HealthChange) + Send + Sync>;

/// Runs health checks and tracks their status. Cheap to clone; clones share everything. The
/// check tasks stop on [`stop`](Self::stop) or once every clone is dropped.
#[derive(Clone)]
pub struct HealthMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    checks: Vec<Entry>,
    thresholds: Thresholds,
    listeners: RwLock<Vec<Listener>>,
    bus: Option<EventBus>,
    clock: Arc<dyn Clock>,
    running: Mutex<Option<CancellationToken>>,
    built: Instant,
}

struct Entry {
    spec: CheckSpec,
    interval: Duration,
    target: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    status: HealthStatus,
    /// When the status last changed; `None` while it never has.
    since: Option<Instant>,
    failures: u32,
    successes: u32,
    last_error: Option<String>,
    latency: Option<Duration>,
    last_checked: Option<SystemTime>,
    runs: u64,
}

impl State {
    /// Applies one result; returns the status change it causes, if any.
    fn apply(&mut self, ok: bool, thresholds: Thresholds) -> Option<(HealthStatus, HealthStatus)> {
        let old = self.status;
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= thresholds.consecutive_successes {
                self.status = HealthStatus::Healthy;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= thresholds.consecutive_failures {
                self.status = HealthStatus::Unhealthy;
            } else if self.status == HealthStatus::Healthy {
                self.status = HealthStatus::Degraded;
            }
        }
        (old != self.status).then_some((old, self.status))
    }
}

impl HealthMonitor {
    /// A builder with a 10 s `checkInterval`, the default thresholds and no checks.
    pub fn builder() -> HealthMonitorBuilder {
        HealthMonitorBuilder {
            check_interval: Duration::from_secs(10),
            thresholds: Thresholds::default(),
            checks: Vec::new(),
            bus: None,
            clock: None,
        }
    }

    /// Calls `listener` (inline, keep it quick) on every status change.
    pub fn on_health_changed(&self, listener: impl Fn(&HealthChange) + Send + Sync + 'static) {
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(listener));
    }

    /// Starts every check on its interval. Checks start spread over their interval so a large
    /// monitor does not open all its connections at once. Calling it again restarts them.
    pub fn start(&self) {
        let token = CancellationToken::new();
        if let Some(previous) = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(token.clone())
        {
            previous.cancel();
        }
        let count = self.inner.checks.len().max(1) as u32;
        for (index, entry) in self.inner.checks.iter().enumerate() {
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            let token = token.clone();
            let interval = entry.interval;
            let offset = interval.mul_f64(f64::from(index as u32 % count) / f64::from(count));
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(Instant::now() + offset, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => break,
                        _ = ticks.tick() => {}
                    }
                    let Some(inner) = weak.upgrade() else { break };
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => break,
                        _ = inner.run(index) => {}
                    }
                }
            });
        }
    }

    /// Stops the check tasks.
    pub fn stop(&self) {
        if let Some(token) = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            token.cancel();
        }
    }

    /// Runs every check once now, all at the same time, and applies the results.
    pub async fn check_all(&self) {
        let runs = (0..self.inner.checks.len()).map(|i| self.inner.run(i));
        futures_util::future::join_all(runs).await;
    }

    /// Runs one check once now.
    pub async fn check_now(&self, name: &str) -> Option<HealthStatus> {
        let index = self
            .inner
            .checks
            .iter()
            .position(|e| &*e.spec.name == name)?;
        self.inner.run(index).await;
        self.status(name)
    }

    /// The status of the check named `check`; `None` if there is no such check.
    pub fn status(&self, check: &str) -> Option<HealthStatus> {
        self.inner
            .checks
            .iter()
            .find(|e| &*e.spec.name == check)
            .map(|e| e.lock().status)
    }

    /// The worst status among the stage's checks; healthy when it has none.
    pub fn stage_status(&self, stage: &str) -> HealthStatus {
        self.inner
            .checks
            .iter()
            .filter(|e| e.spec.stage.as_deref() == Some(stage))
            .map(|e| e.lock().status)
            .max()
            .unwrap_or_default()
    }

    /// The worst status of all checks.
    pub fn overall_status(&self) -> HealthStatus {
        self.inner
            .checks
            .iter()
            .map(|e| e.lock().status)
            .max()
            .unwrap_or_default()
    }

    /// Every check's status now and since when, in declaration order.
    pub fn statuses(&self) -> Vec<CheckStatus> {
        self.inner
            .checks
            .iter()
            .map(|entry| {
                let state = entry.lock();
                CheckStatus {
                    check: Arc::clone(&entry.spec.name),
                    stage: entry.spec.stage.clone(),
                    status: state.status,
                    since: state.since.unwrap_or(self.inner.built),
                }
            })
            .collect()
    }

    /// Every check's state, in declaration order.
    pub fn report(&self) -> Vec<CheckReport> {
        self.inner
            .checks
            .iter()
            .map(|entry| {
                let state = entry.lock();
                CheckReport {
                    name: Arc::clone(&entry.spec.name),
                    stage: entry.spec.stage.clone(),
                    target: entry.target.clone(),
                    status: state.status,
                    consecutive_failures: state.failures,
                    consecutive_successes: state.successes,
                    last_error: state.last_error.clone(),
                    latency: state.latency,
                    last_checked: state.last_checked,
                    runs: state.runs,
                }
            })
            .collect()
    }
}

impl Inner {
    /// Runs check `index` once under its timeout and applies the result.
    async fn run(&self, index: usize) {
        let entry = &self.checks[index];
        let started = Instant::now();
        let result = match tokio::time::timeout(entry.spec.timeout, entry.spec.check.check()).await
        {
            Ok(result) => result,
            Err(_) => Err(CheckError::new(format!(
                "{} did not answer within {:?}",
                entry.target, entry.spec.timeout
            ))),
        };
        let latency = started.elapsed();
        let at = self.clock.wall();
        let change = {
            let mut state = entry.lock();
            state.runs += 1;
            state.latency = Some(latency);
            state.last_checked = Some(at);
            state.last_error = result.as_ref().err().map(|e| e.0.clone());
            let change = state.apply(result.is_ok(), self.thresholds);
            if change.is_some() {
                state.since = Some(Instant::now());
            }
            change
        };
        let Some((old_status, new_status)) = change else {
            return;
        };
        let change = HealthChange {
            stage: entry.spec.stage.clone(),
            check: Arc::clone(&entry.spec.name),
            old_status,
            new_status,
            at,
        };
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for listener in listeners {
            listener(&change);
        }
        if let Some(bus) = &self.bus {
            bus.publish(None, EventKind::HealthChanged { change });
        }
    }
}

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("checks", &self.inner.checks.len())
            .field("thresholds", &self.inner.thresholds)
            .finish_non_exhaustive()
    }
}

/// Builds a [`HealthMonitor`] from the seed's `healthMonitor` settings.
pub struct HealthMonitorBuilder {
    check_interval: Duration,
    thresholds: Thresholds,
    checks: Vec<CheckSpec>,
    bus: Option<EventBus>,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for HealthMonitorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitorBuilder")
            .field("check_interval", &self.check_interval)
            .field("thresholds", &self.thresholds)
            .field("checks", &self.checks)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl HealthMonitorBuilder {
    /// The interval of checks that do not set their own (the seed's `checkInterval`).
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Failures in a row that make a check `unhealthy`, and successes in a row that make it
    /// `healthy` again; both at least 1 (default 3 and 5).
    pub fn thresholds(mut self, consecutive_failures: u32, consecutive_successes: u32) -> Self {
        self.thresholds = Thresholds {
            consecutive_failures,
            consecutive_successes,
        };
        self
    }

    /// Adds a check; names must be unique.
    pub fn check(mut self, check: CheckSpec) -> Self {
        self.checks.push(check);
        self
    }

    /// Replaces each check added so far by what `f` makes of it.
    pub fn map_checks(mut self, f: impl FnMut(CheckSpec) -> CheckSpec) -> Self {
        self.checks = self.checks.into_iter().map(f).collect();
        self
    }

    /// Publishes every change on this bus as `health-changed` (a pipeline's, say).
    pub fn events(mut self, bus: EventBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The clock for the timestamps of runs and changes (default: tokio time anchored to the wall
    /// clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The monitor, not yet started; the error names the first setting that cannot work.
    pub fn build(self) -> Result<HealthMonitor, InvalidConfig> {
        if self.check_interval.is_zero() {
            return Err(InvalidConfig::new(
                "checkInterval",
                "must be longer than zero",
            ));
        }
        if self.thresholds.consecutive_failures == 0 {
            return Err(InvalidConfig::new(
                "thresholds.consecutiveFailures",
                "must be at least 1",
            ));
        }
        if self.thresholds.consecutive_successes == 0 {
            return Err(InvalidConfig::new(
                "thresholds.consecutiveSuccesses",
                "must be at least 1",
            ));
        }
        let mut checks = Vec::with_capacity(self.checks.len());
        for (i, spec) in self.checks.into_iter().enumerate() {
            let at = |field: &str| format!("checks[{i}].{field}");
            if spec.name.trim().is_empty() {
                return Err(InvalidConfig::new(at("name"), "a check needs a name"));
            }
            if spec.timeout.is_zero() {
                return Err(InvalidConfig::new(
                    at("timeout"),
                    "must be longer than zero",
                ));
            }
            if spec.interval.is_some_and(|i| i.is_zero()) {
                return Err(InvalidConfig::new(
                    at("interval"),
                    "must be longer than zero",
                ));
            }
            checks.push(Entry {
                interval: spec.interval.unwrap_or(self.check_interval),
                target: spec.check.target(),
                spec,
                state: Mutex::new(State::default()),
            });
        }
        crate::error::unique_names("checks", "checks", checks.iter().map(|e| &*e.spec.name))?;
        Ok(HealthMonitor {
            inner: Arc::new(Inner {
                checks,
                thresholds: self.thresholds,
                listeners: RwLock::new(Vec::new()),
                bus: self.bus,
                clock: self.clock.unwrap_or_else(default_clock),
                running: Mutex::new(None),
                built: Instant::now(),
            }),
        })
    }
}

#[cfg(test)]
mod tests;
