//! The chaos harness: scenarios of seeded faults against a simulated downstream, run on virtual
//! time, each by four contenders: our healer with the recommended configuration
//! (docs/HEALING.md); our healer with the seed's strategy list; retry-only with the seed's
//! attempt budget (backon's style: backoff and nothing else); and no healing. Each runs with
//! several seeds; the table gives medians and ranges, `--json` every run.
//!
//! cargo run --release -p bench --bin chaos [-- --json] [--seed N] [--runs N]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::event::{Event, EventKind, HealthStatus};
use self_healing::healing::{
    Action, AdaptiveScale, AutoHealer, CircuitBreakAction, HealingStrategy, Operator,
    RestartAction, RollbackAction, ScaleAction, Trigger,
};
use self_healing::health::{CheckSpec, CustomCheck, HealthMonitor};
use self_healing::metrics::MetricsCollector;
use self_healing::pipeline::{PipelineBuilder, RestartBackoff, RestartFrom};
use self_healing::resilience::{
    AdaptiveSettings, Backoff, BreakerSettings, RetryBudgetSettings, RetryPolicy, SlidingWindow,
};
use self_healing::{ItemSource, RunStatus, SelfHealingPipeline, Severity, Stage, StageError};
use std::num::NonZeroU32;
use tokio::time::Instant;

const ITEMS: u32 = 400;
const CONCURRENCY: usize = 8;
const BASE_LATENCY: Duration = Duration::from_millis(100);
const FAULT_AT: Duration = Duration::from_secs(2);
/// Calls the downstream answers at once in its base latency; beyond, they queue: latency grows
/// in proportion to the calls in flight, so more concurrency past this adds no throughput.
const KNEE: usize = 16;
/// How long the local stage before the downstream's first caller runs, in the scenario whose
/// outage a health check sees first.
const PREPARE: Duration = Duration::from_secs(5);
/// The health check's interval (the recommended contender's only).
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What goes wrong.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Each call fails with ECONNRESET with this probability.
    Transient(f64),
    /// Every call fails (ECONNREFUSED, fast) for this long.
    Outage(Duration),
    /// Calls take ten times as long for this long.
    LatencySpike(Duration),
    /// One item's data is corrupt: a critical error that retries cannot fix.
    Critical,
    /// The downstream goes down and comes back again and again, each spell lasting between
    /// the two durations (seeded). Not strictly periodic: a fixed period that divides the
    /// breaker's break puts every probe in the same phase, a resonance real flapping lacks.
    Flapping(Duration, Duration),
    /// Each call leaks: latency grows by this much per call made since the stage's `reset`,
    /// until calls time out.
    Leak(Duration),
    /// The caller's connection pool is exhausted after this many calls since the stage's
    /// `reset`: every call then fails at once (code `EPOOL`), retried or not, until a restart
    /// runs the reset.
    CrashLoop(u64),
}

impl Fault {
    /// When the fault begins: the faults of a whole downstream start with the run.
    fn starts(self) -> Duration {
        match self {
            Fault::Outage(_) | Fault::LatencySpike(_) | Fault::Flapping(..) => FAULT_AT,
            Fault::Transient(_) | Fault::Critical | Fault::Leak(_) | Fault::CrashLoop(_) => {
                Duration::ZERO
            }
        }
    }

    /// The latency of a healthy call: the spike scenario starts slower, so ten times it crosses
    /// the seed's `latencyP95 > 5000` trigger.
    fn base_latency(self) -> Duration {
        match self {
            Fault::LatencySpike(_) => Duration::from_millis(600),
            _ => BASE_LATENCY,
        }
    }

    /// When the fault is over (for time to recover), if it ends.
    fn ends(self) -> Option<Duration> {
        match self {
            Fault::Outage(d) | Fault::LatencySpike(d) => Some(FAULT_AT + d),
            _ => None,
        }
    }
}

/// Which stages call the downstream.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// One stage of 400 items.
    One,
    /// A local stage of `PREPARE` first, then one of 400 items: a fault that begins during the
    /// first is seen by a health check before any call.
    PrepareFirst,
    /// Two stages of 200 items that call the one downstream.
    Two,
    /// Three stages of 200 items that call the one downstream.
    Three,
}

impl Shape {
    /// The stages calling the downstream, with their items.
    fn callers(self) -> &'static [(&'static str, u32)] {
        match self {
            Shape::One | Shape::PrepareFirst => &[("load", ITEMS)],
            Shape::Two => &[("charge", 200), ("refund", 200)],
            Shape::Three => &[("extract", 200), ("transform", 200), ("load", 200)],
        }
    }
}

struct Scenario {
    name: &'static str,
    fault: Fault,
    shape: Shape,
    /// Whether all items can complete in principle.
    recoverable: bool,
}

/// The simulated downstream, with what it saw.
struct Downstream {
    fault: Fault,
    start: Instant,
    rng: Mutex<fastrand::Rng>,
    /// The spells the downstream is down, `[from, to)`, in order.
    down_spells: Vec<(Duration, Duration)>,
    calls: AtomicU64,
    /// Calls since the stage's last reset, for the leak and the pool.
    since_reset: AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    calls_while_down: AtomicU64,
    /// Calls made while down after the spell was known, by a failed call of it that had come
    /// back or by a health check that had found it: the ones a healer could have held back.
    avoidable: AtomicU64,
    /// The latest spell known, and since when.
    known: Mutex<Option<(usize, Duration)>>,
    first_success_after_end: Mutex<Option<Duration>>,
}

impl Downstream {
    fn new(fault: Fault, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let down_spells = match fault {
            Fault::Outage(length) => vec![(FAULT_AT, FAULT_AT + length)],
            Fault::Flapping(shortest, longest) => {
                let mut spell = || shortest + (longest - shortest).mul_f64(rng.f64());
                let mut spells = Vec::new();
                let mut t = FAULT_AT;
                // Far beyond any run's end.
                while t < Duration::from_secs(100_000) {
                    let down = spell();
                    spells.push((t, t + down));
                    t += down + spell();
                }
                spells
            }
            _ => Vec::new(),
        };
        Downstream {
            fault,
            start: Instant::now(),
            rng: Mutex::new(rng),
            down_spells,
            calls: AtomicU64::new(0),
            since_reset: AtomicU64::new(0),
            in_flight: Default::default(),
            calls_while_down: AtomicU64::new(0),
            avoidable: AtomicU64::new(0),
            known: Mutex::new(None),
            first_success_after_end: Mutex::new(None),
        }
    }

    /// Which down spell `t` falls in, if any.
    fn down_spell(&self, t: Duration) -> Option<usize> {
        let i = self.down_spells.partition_point(|&(from, _)| from <= t);
        let i = i.checked_sub(1)?;
        (t < self.down_spells[i].1).then_some(i)
    }

    /// Whether a health check's probe at `t` finds the downstream up.
    fn answers(&self, t: Duration) -> bool {
        self.down_spell(t).is_none()
    }

    /// The spell going on at `t`, if any, is known from now on.
    fn known_at(&self, t: Duration) {
        if let Some(spell) = self.down_spell(t) {
            let mut known = self.known.lock().unwrap();
            if known.is_none_or(|(s, _)| s != spell) {
                *known = Some((spell, t));
            }
        }
    }

    /// What the stage's `reset` clears: the leak and the exhausted pool.
    fn reset(&self) {
        self.since_reset.store(0, Ordering::Relaxed);
    }

    async fn call(&self, item: u32) -> Result<(), StageError> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let result = self.answer(item, in_flight).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn answer(&self, item: u32, in_flight: usize) -> Result<(), StageError> {
        let t = self.start.elapsed();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let since_reset = self.since_reset.fetch_add(1, Ordering::Relaxed);
        if let Some(spell) = self.down_spell(t) {
            self.calls_while_down.fetch_add(1, Ordering::Relaxed);
            if matches!(*self.known.lock().unwrap(), Some((s, at)) if s == spell && at <= t) {
                self.avoidable.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.known_at(self.start.elapsed());
            return Err(StageError::new("connect ECONNREFUSED").with_code("ECONNREFUSED"));
        }
        if let Fault::CrashLoop(calls) = self.fault
            && since_reset >= calls
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Err(StageError::new("connection pool exhausted").with_code("EPOOL"));
        }
        let base = self.fault.base_latency();
        let latency = match self.fault {
            Fault::LatencySpike(length) if t >= FAULT_AT && t < FAULT_AT + length => base * 10,
            Fault::Leak(per_call) => base + per_call * since_reset as u32,
            _ => base,
        };
        // Past the knee, calls queue.
        let latency = latency * in_flight.max(KNEE) as u32 / KNEE as u32;
        tokio::time::sleep(latency).await;
        let result = match self.fault {
            Fault::Transient(p) if self.rng.lock().unwrap().f64() < p => {
                Err(StageError::new("read ECONNRESET").with_code("ECONNRESET"))
            }
            Fault::Critical if item == ITEMS / 2 => {
                Err(StageError::critical("corrupt record in the source"))
            }
            _ => Ok(()),
        };
        if result.is_ok()
            && let Some(end) = self.fault.ends()
        {
            let now = self.start.elapsed();
            let mut first = self.first_success_after_end.lock().unwrap();
            if now >= end && first.is_none() {
                *first = Some(now - end);
            }
        }
        result
    }
}

/// Who heals.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Contender {
    Recommended,
    Healer,
    RetryOnly,
    None,
}

impl Contender {
    const ALL: [Contender; 4] = [
        Contender::Recommended,
        Contender::Healer,
        Contender::RetryOnly,
        Contender::None,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Recommended => "healer (recommended)",
            Contender::Healer => "healer (seed strategies)",
            Contender::RetryOnly => "retry only",
            Contender::None => "no healing",
        }
    }
}

/// The seed's retry: five attempts, exponential from 1 s to 30 s, jittered.
fn seed_retry(seed: u64) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(5)
        .backoff(Backoff::Exponential)
        .initial_delay(Duration::from_millis(1000))
        .max_delay(Duration::from_millis(30000))
        .jitter(true)
        .jitter_seed(seed)
        .build()
        .unwrap()
}

/// The seed's "Strategy Configuration" list, with the global `circuitBreaker` of the seed's
/// `SelfHealingConfig` (5 consecutive failures open it for 60 s; 3 probes, all must pass).
fn seed_healer(seed: u64) -> AutoHealer {
    AutoHealer::builder()
        .circuit_breaker(BreakerSettings {
            failure_threshold: NonZeroU32::new(5),
            success_threshold: NonZeroU32::new(3).unwrap(),
            break_duration: Duration::from_secs(60),
            half_open_requests: NonZeroU32::new(3).unwrap(),
            ..BreakerSettings::default()
        })
        .strategy(
            HealingStrategy::new("retry-transient", Action::retry(seed_retry(seed)))
                .priority(10)
                .trigger(
                    Trigger::error()
                        .pattern_str("ECONNRESET|ETIMEDOUT|ECONNREFUSED")
                        .unwrap(),
                ),
        )
        .strategy(
            HealingStrategy::new(
                "circuit-breaker",
                CircuitBreakAction::new(Duration::from_secs(60), 3).unwrap(),
            )
            .priority(20)
            .trigger(Trigger::metrics("errorRate", Operator::Gt, 0.5))
            .cooldown(Duration::from_secs(120)),
        )
        .strategy(
            HealingStrategy::new("scale-on-latency", ScaleAction::up(2).max_instances(10))
                .priority(30)
                .trigger(Trigger::metrics("latencyP95", Operator::Gt, 5000.0))
                .cooldown(Duration::from_secs(300)),
        )
        .strategy(
            HealingStrategy::new("rollback-critical", RollbackAction)
                .priority(100)
                .trigger(Trigger::error().severity(Severity::Critical))
                .cooldown(Duration::from_secs(600)),
        )
        .build()
        .unwrap()
}

/// The recommended configuration of docs/HEALING.md, as the library's API writes it (the
/// bundled example pipeline writes the same in YAML):
///
/// - a global `retryPolicy` retrying transient errors up to 20 attempts, exponential from
///   100 ms to 2 s with jitter, under a `retryBudget` of 50 % of first attempts plus 20 a
///   second over 10 s;
/// - one `downstream` breaker shared by every stage calling it: 8 consecutive failures, or
///   90 % of the calls of the last 10 s (once 20 are seen), open it for 1 s, then 1 probe;
///   `break-on-refused` opens it at the first refused connection (the dependency is down,
///   not flaky);
/// - `restart-stuck` (timeouts: restart, at most once a 30 s) and `restart-crashed` (`EPOOL`:
///   restart), each running the stage's `reset`, under the stages' `restartBackoff`;
/// - the seed's `rollback-critical`;
/// - adaptive concurrency within 2..=32.
///
/// And on each stage: `dependsOn` the downstream's health check (every 500 ms; unhealthy
/// after one failure, healthy after one success), `breaker: downstream`, `restartBackoff`
/// from 1 s to 30 s, reset after a minute, `restartFrom: unfinished`.
fn recommended_healer(seed: u64) -> AutoHealer {
    let retry = RetryPolicy::builder()
        .max_attempts(20)
        .backoff(Backoff::Exponential)
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(2))
        .jitter(true)
        .jitter_seed(seed)
        .retryable_pattern("ECONNRESET|ETIMEDOUT|ECONNREFUSED")
        .build()
        .unwrap();
    AutoHealer::builder()
        .retry_policy(retry)
        .retry_budget(RetryBudgetSettings {
            percent: 50,
            window: Duration::from_secs(10),
            min_per_second: 20,
        })
        .shared_breaker(
            "downstream",
            BreakerSettings {
                failure_threshold: NonZeroU32::new(8),
                success_threshold: NonZeroU32::new(1).unwrap(),
                break_duration: Duration::from_secs(1),
                half_open_requests: NonZeroU32::new(1).unwrap(),
                failure_rate_threshold: Some(90.0),
                sliding_window: SlidingWindow::Time(Duration::from_secs(10)),
                minimum_calls: NonZeroU32::new(20).unwrap(),
                ..BreakerSettings::default()
            },
        )
        .strategy(
            HealingStrategy::new(
                "break-on-refused",
                CircuitBreakAction::new(Duration::from_secs(1), 1).unwrap(),
            )
            .priority(30)
            .trigger(Trigger::error().code("ECONNREFUSED")),
        )
        .strategy(
            HealingStrategy::new("restart-stuck", RestartAction { max_restarts: None })
                .priority(20)
                .trigger(Trigger::error().code("ETIMEDOUT"))
                .cooldown(Duration::from_secs(30)),
        )
        .strategy(
            HealingStrategy::new("restart-crashed", RestartAction { max_restarts: None })
                .priority(20)
                .trigger(Trigger::error().code("EPOOL")),
        )
        .strategy(
            HealingStrategy::new("rollback-critical", RollbackAction)
                .priority(100)
                .trigger(Trigger::error().severity(Severity::Critical))
                .cooldown(Duration::from_secs(600)),
        )
        .strategy(HealingStrategy::new(
            "adaptive-concurrency",
            AdaptiveScale(AdaptiveSettings::new(2, 32)),
        ))
        .build()
        .unwrap()
}

/// The downstream's health check, as the recommended contender runs it.
fn health_check(downstream: &Arc<Downstream>) -> HealthMonitor {
    let probe = Arc::clone(downstream);
    let monitor = HealthMonitor::builder()
        .check_interval(CHECK_EVERY)
        .thresholds(1, 1)
        .check(CheckSpec::new(
            "downstream",
            CustomCheck::new("the downstream answers", move || {
                let up = probe.answers(probe.start.elapsed());
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    up
                }
            }),
        ))
        .build()
        .unwrap();
    let seen = Arc::clone(downstream);
    monitor.on_health_changed(move |change| {
        if change.new_status == HealthStatus::Unhealthy {
            seen.known_at(seen.start.elapsed());
        }
    });
    monitor
}

/// What one contender achieved in one scenario with one seed.
#[derive(Debug)]
struct Outcome {
    scenario: &'static str,
    contender: Contender,
    seed: u64,
    status: RunStatus,
    completed_pct: f64,
    attempts: u64,
    calls_while_down: u64,
    avoidable: u64,
    time_to_detect: Option<Duration>,
    time_to_recover: Option<Duration>,
    healing_actions: u64,
    duration: Duration,
}

async fn run(scenario: &Scenario, contender: Contender, seed: u64) -> Outcome {
    let downstream = Arc::new(Downstream::new(scenario.fault, seed));
    let recommended = contender == Contender::Recommended;
    let metrics = MetricsCollector::builder()
        .sample_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut builder: PipelineBuilder<()> =
        SelfHealingPipeline::builder().seed(seed).metrics(metrics);
    if scenario.shape == Shape::PrepareFirst {
        builder = builder.stage(Stage::new("prepare", |_| async {
            tokio::time::sleep(PREPARE).await;
            Ok(())
        }));
    }
    for &(name, items) in scenario.shape.callers() {
        let (d, reset) = (Arc::clone(&downstream), Arc::clone(&downstream));
        let mut stage =
            Stage::for_each(name, ItemSource::iter(move |_: &()| 0..items), move |ctx| {
                let d = Arc::clone(&d);
                async move { d.call(*ctx.item()).await }
            })
            .concurrency(CONCURRENCY)
            .timeout(Duration::from_secs(10))
            .max_restarts(10)
            .reset(move |_| {
                reset.reset();
                async { Ok(()) }
            });
        if recommended {
            stage = stage
                .depends_on(["downstream"])
                .breaker("downstream")
                .restart_from(RestartFrom::Unfinished)
                .restart_backoff(RestartBackoff {
                    initial_delay: Duration::from_secs(1),
                    max_delay: Duration::from_secs(30),
                    reset_after: Duration::from_secs(60),
                });
        }
        builder = builder.stage(stage);
    }
    let mut monitor = None;
    let builder = match contender {
        Contender::Recommended => {
            let healer = recommended_healer(seed);
            let check = health_check(&downstream);
            healer.watch(&check);
            monitor = Some(check);
            builder.supervisor(healer)
        }
        Contender::Healer => builder.supervisor(seed_healer(seed)),
        Contender::RetryOnly => builder.retry_policy(seed_retry(seed)),
        Contender::None => builder.retry_policy(RetryPolicy::never()),
    };
    let pipeline = builder.build().unwrap();
    let detected: Arc<Mutex<Option<Duration>>> = Arc::default();
    let actions = Arc::new(AtomicU64::new(0));
    let (det, act, start, fault_start) = (
        Arc::clone(&detected),
        Arc::clone(&actions),
        downstream.start,
        scenario.fault.starts(),
    );
    pipeline.events().add_sink(Arc::new(move |event: &Event| {
        if let EventKind::HealingApplied { .. } = event.kind {
            act.fetch_add(1, Ordering::Relaxed);
            let t = start.elapsed();
            let mut first = det.lock().unwrap();
            if t >= fault_start && first.is_none() {
                *first = Some(t - fault_start);
            }
        }
    }));
    if let Some(monitor) = &monitor {
        monitor.start();
    }
    let report = pipeline.execute(()).await;
    if let Some(monitor) = &monitor {
        monitor.stop();
    }
    let callers = scenario.shape.callers();
    let items: u32 = callers.iter().map(|(_, n)| n).sum();
    let completed: u64 = report
        .stages
        .iter()
        .filter(|s| callers.iter().any(|(name, _)| *s.stage == **name))
        .map(|s| s.items_completed)
        .sum();
    Outcome {
        scenario: scenario.name,
        contender,
        seed,
        status: report.status,
        completed_pct: 100.0 * completed as f64 / f64::from(items),
        attempts: downstream.calls.load(Ordering::Relaxed),
        calls_while_down: downstream.calls_while_down.load(Ordering::Relaxed),
        avoidable: downstream.avoidable.load(Ordering::Relaxed),
        time_to_detect: *detected.lock().unwrap(),
        time_to_recover: *downstream.first_success_after_end.lock().unwrap(),
        healing_actions: actions.load(Ordering::Relaxed),
        duration: report.duration,
    }
}

/// A column over the runs of one scenario and contender: the median, and the range when the
/// runs differ.
fn spread<T: Copy + PartialOrd>(values: &[T], show: impl Fn(T) -> String) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let Some(&median) = sorted.get(sorted.len() / 2) else {
        return "-".to_owned();
    };
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    if lo == hi {
        show(median)
    } else {
        format!("{} ({}–{})", show(median), show(lo), show(hi))
    }
}

/// The statuses of the runs, counted: `succeeded` or `failed 3, succeeded 2`.
fn statuses(runs: &[&Outcome]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for run in runs {
        let status = run.status.as_str();
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status, 1)),
        }
    }
    if counts.len() == 1 {
        return counts[0].0.to_owned();
    }
    counts
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let number = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("{flag} takes a number, not `{s}`"))
            })
            .unwrap_or(default)
    };
    let first_seed = number("--seed", 42);
    let runs = number("--runs", 5).max(1);
    let seeds: Vec<u64> = (first_seed..first_seed + runs).collect();
    let scenario = |name, fault, shape, recoverable| Scenario {
        name,
        fault,
        shape,
        recoverable,
    };
    let secs = Duration::from_secs;
    let scenarios = [
        scenario("transient 5%", Fault::Transient(0.05), Shape::One, true),
        scenario("transient 20%", Fault::Transient(0.20), Shape::One, true),
        // Recoverable by retrying long enough; not within the seed's budget of 5 attempts:
        // 0.5^5 = 3.1 % of the items fail every one of them.
        scenario("transient 50%", Fault::Transient(0.50), Shape::One, true),
        scenario("outage 30s", Fault::Outage(secs(30)), Shape::One, true),
        scenario(
            "outage a check sees first",
            Fault::Outage(secs(30)),
            Shape::PrepareFirst,
            true,
        ),
        scenario(
            "shared dependency down",
            Fault::Outage(secs(30)),
            Shape::Two,
            true,
        ),
        scenario(
            "latency x10 60s",
            Fault::LatencySpike(secs(60)),
            Shape::One,
            true,
        ),
        // Meant to end in a rollback.
        scenario("critical error", Fault::Critical, Shape::One, false),
        scenario(
            "flapping 1-3s",
            Fault::Flapping(secs(1), secs(3)),
            Shape::One,
            true,
        ),
        // A restart running the stage's reset cures it.
        scenario(
            "slow leak",
            Fault::Leak(Duration::from_millis(40)),
            Shape::One,
            true,
        ),
        scenario("crash loop", Fault::CrashLoop(100), Shape::One, true),
        scenario(
            "50% errors on three stages",
            Fault::Transient(0.50),
            Shape::Three,
            true,
        ),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let mut outcomes = Vec::new();
    for scenario in &scenarios {
        for contender in Contender::ALL {
            for &seed in &seeds {
                outcomes.push((
                    scenario.recoverable,
                    runtime.block_on(run(scenario, contender, seed)),
                ));
            }
        }
    }
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    if json {
        let rows: Vec<String> = outcomes
            .iter()
            .map(|(recoverable, o)| {
                format!(
                    "{{\"scenario\":\"{}\",\"contender\":\"{}\",\"seed\":{},\"recoverable\":{recoverable},\"status\":\"{}\",\"completedPct\":{:.1},\"attempts\":{},\"callsWhileDown\":{},\"avoidableCallsWhileDown\":{},\"timeToDetectMs\":{},\"timeToRecoverMs\":{},\"healingActions\":{},\"durationMs\":{}}}",
                    o.scenario,
                    o.contender.name(),
                    o.seed,
                    o.status.as_str(),
                    o.completed_pct,
                    o.attempts,
                    o.calls_while_down,
                    o.avoidable,
                    ms(o.time_to_detect).map_or("null".into(), |v| v.to_string()),
                    ms(o.time_to_recover).map_or("null".into(), |v| v.to_string()),
                    o.healing_actions,
                    o.duration.as_millis()
                )
            })
            .collect();
        println!("[{}]", rows.join(",\n "));
        return;
    }
    println!(
        "{ITEMS} items, concurrency {CONCURRENCY} (the recommended healer adapts it), base latency \
         {BASE_LATENCY:?} up to {KNEE} calls at once (600ms in the latency scenario), outages, \
         spikes and flapping from {FAULT_AT:?}, virtual time; seeds {first_seed}..={}: medians \
         (ranges)\n",
        first_seed + runs - 1
    );
    let header = [
        "scenario",
        "contender",
        "status",
        "done %",
        "attempts",
        "down-hits",
        "avoidable",
        "detect s",
        "recover s",
        "actions",
        "duration s",
    ];
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    for group in outcomes.chunks(seeds.len()) {
        let runs: Vec<&Outcome> = group.iter().map(|(_, o)| o).collect();
        let column = |f: &dyn Fn(&Outcome) -> u64| {
            spread(&runs.iter().map(|o| f(o)).collect::<Vec<_>>(), |v| {
                v.to_string()
            })
        };
        let times = |f: &dyn Fn(&Outcome) -> Option<Duration>| {
            spread(&runs.iter().filter_map(|o| f(o)).collect::<Vec<_>>(), secs)
        };
        let first = runs[0];
        let cells = [
            first.scenario.to_owned(),
            first.contender.name().to_owned(),
            statuses(&runs),
            spread(
                &runs.iter().map(|o| o.completed_pct).collect::<Vec<_>>(),
                |v| format!("{v:.1}"),
            ),
            column(&|o| o.attempts),
            column(&|o| o.calls_while_down),
            column(&|o| o.avoidable),
            times(&|o| o.time_to_detect),
            times(&|o| o.time_to_recover),
            column(&|o| o.healing_actions),
            spread(&runs.iter().map(|o| o.duration).collect::<Vec<_>>(), secs),
        ];
        println!("| {} |", cells.join(" | "));
    }
}
