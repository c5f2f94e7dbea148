//! The chaos harness: scenarios of seeded faults against a simulated downstream, run on virtual
//! time, each by three contenders: our healer with the seed's strategy list; retry-only with the
//! same attempt budget (backon's style: backoff and nothing else); and no healing.
//!
//! cargo run --release -p bench --bin chaos [-- --json] [--seed N]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::event::{Event, EventKind};
use self_healing::healing::{
    Action, AutoHealer, CircuitBreakAction, HealingStrategy, Operator, ScaleAction, Trigger,
};
use self_healing::metrics::MetricsCollector;
use self_healing::resilience::{Backoff, BreakerSettings, RetryPolicy};
use self_healing::{ItemSource, RunStatus, SelfHealingPipeline, Severity, Stage, StageError};
use std::num::NonZeroU32;
use tokio::time::Instant;

const ITEMS: u32 = 400;
const CONCURRENCY: usize = 8;
const BASE_LATENCY: Duration = Duration::from_millis(100);
const FAULT_AT: Duration = Duration::from_secs(2);

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
    /// The downstream is down for the first half of every period.
    Flapping(Duration),
    /// Each call leaks: latency grows by this much per call made, until calls time out.
    Leak(Duration),
}

impl Fault {
    /// When the fault begins: the faults of a whole downstream start with the run.
    fn starts(self) -> Duration {
        match self {
            Fault::Outage(_) | Fault::LatencySpike(_) | Fault::Flapping(_) => FAULT_AT,
            Fault::Transient(_) | Fault::Critical | Fault::Leak(_) => Duration::ZERO,
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

struct Scenario {
    name: &'static str,
    fault: Fault,
    /// Whether all items can complete in principle.
    recoverable: bool,
}

/// The simulated downstream, with what it saw.
struct Downstream {
    fault: Fault,
    start: Instant,
    rng: Mutex<fastrand::Rng>,
    calls: AtomicU64,
    calls_while_down: AtomicU64,
    first_success_after_end: Mutex<Option<Duration>>,
}

impl Downstream {
    fn down(&self, t: Duration) -> bool {
        match self.fault {
            Fault::Outage(length) => t >= FAULT_AT && t < FAULT_AT + length,
            Fault::Flapping(period) => {
                t >= FAULT_AT
                    && (t - FAULT_AT).as_millis() % period.as_millis() < period.as_millis() / 2
            }
            _ => false,
        }
    }

    async fn call(&self, item: u32) -> Result<(), StageError> {
        let t = self.start.elapsed();
        let calls = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down(t) {
            self.calls_while_down.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Err(StageError::new("connect ECONNREFUSED").with_code("ECONNREFUSED"));
        }
        let base = self.fault.base_latency();
        let latency = match self.fault {
            Fault::LatencySpike(length) if t >= FAULT_AT && t < FAULT_AT + length => base * 10,
            Fault::Leak(per_call) => base + per_call * calls as u32,
            _ => base,
        };
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
    Healer,
    RetryOnly,
    None,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
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
        .seed(seed)
        .circuit_breaker(BreakerSettings {
            failure_threshold: NonZeroU32::new(5),
            success_threshold: NonZeroU32::new(3).unwrap(),
            break_duration: Duration::from_secs(60),
            half_open_requests: NonZeroU32::new(3).unwrap(),
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
                Action::CircuitBreak(CircuitBreakAction::new(Duration::from_secs(60), 3).unwrap()),
            )
            .priority(20)
            .trigger(Trigger::metrics("errorRate", Operator::Gt, 0.5))
            .cooldown(Duration::from_secs(120)),
        )
        .strategy(
            HealingStrategy::new(
                "scale-on-latency",
                Action::Scale(ScaleAction::up(2).max_instances(10)),
            )
            .priority(30)
            .trigger(Trigger::metrics("latencyP95", Operator::Gt, 5000.0))
            .cooldown(Duration::from_secs(300)),
        )
        .strategy(
            HealingStrategy::new("rollback-critical", Action::Rollback)
                .priority(100)
                .trigger(Trigger::error().severity(Severity::Critical))
                .cooldown(Duration::from_secs(600)),
        )
        .build()
        .unwrap()
}

/// What one contender achieved in one scenario.
#[derive(Debug)]
struct Outcome {
    scenario: &'static str,
    contender: Contender,
    status: RunStatus,
    completed_pct: f64,
    attempts: u64,
    calls_while_down: u64,
    time_to_detect: Option<Duration>,
    time_to_recover: Option<Duration>,
    healing_actions: u64,
    duration: Duration,
}

async fn run(scenario: &Scenario, contender: Contender, seed: u64) -> Outcome {
    let downstream = Arc::new(Downstream {
        fault: scenario.fault,
        start: Instant::now(),
        rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        calls: AtomicU64::new(0),
        calls_while_down: AtomicU64::new(0),
        first_success_after_end: Mutex::new(None),
    });
    let d = Arc::clone(&downstream);
    let stage = Stage::for_each("load", ItemSource::iter(|_: &()| 0..ITEMS), move |ctx| {
        let d = Arc::clone(&d);
        async move { d.call(*ctx.item()).await }
    })
    .concurrency(CONCURRENCY)
    .timeout(Duration::from_secs(10));
    let metrics = MetricsCollector::builder()
        .sample_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let builder = SelfHealingPipeline::builder()
        .seed(seed)
        .metrics(metrics)
        .stage(stage);
    let builder = match contender {
        Contender::Healer => builder.healer(&seed_healer(seed)),
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
    let report = pipeline.execute(()).await;
    let completed = report.stages.first().map_or(0, |s| s.items_completed);
    Outcome {
        scenario: scenario.name,
        contender,
        status: report.status,
        completed_pct: 100.0 * completed as f64 / f64::from(ITEMS),
        attempts: downstream.calls.load(Ordering::Relaxed),
        calls_while_down: downstream.calls_while_down.load(Ordering::Relaxed),
        time_to_detect: *detected.lock().unwrap(),
        time_to_recover: *downstream.first_success_after_end.lock().unwrap(),
        healing_actions: actions.load(Ordering::Relaxed),
        duration: report.duration,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let seed = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse().expect("--seed takes a number"))
        .unwrap_or(42);
    let scenarios = [
        Scenario {
            name: "transient 5%",
            fault: Fault::Transient(0.05),
            recoverable: true,
        },
        Scenario {
            name: "transient 20%",
            fault: Fault::Transient(0.20),
            recoverable: true,
        },
        Scenario {
            name: "transient 50%",
            fault: Fault::Transient(0.50),
            recoverable: true,
        },
        Scenario {
            name: "outage 30s",
            fault: Fault::Outage(Duration::from_secs(30)),
            recoverable: true,
        },
        Scenario {
            name: "latency x10 60s",
            fault: Fault::LatencySpike(Duration::from_secs(60)),
            recoverable: true,
        },
        Scenario {
            name: "critical error",
            fault: Fault::Critical,
            recoverable: false,
        },
        Scenario {
            name: "flapping 4s",
            fault: Fault::Flapping(Duration::from_secs(4)),
            recoverable: true,
        },
        Scenario {
            name: "slow leak",
            fault: Fault::Leak(Duration::from_millis(40)),
            recoverable: false,
        },
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let mut outcomes = Vec::new();
    for scenario in &scenarios {
        for contender in [Contender::Healer, Contender::RetryOnly, Contender::None] {
            outcomes.push((
                scenario.recoverable,
                runtime.block_on(run(scenario, contender, seed)),
            ));
        }
    }
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    if json {
        let rows: Vec<String> = outcomes
            .iter()
            .map(|(recoverable, o)| {
                format!(
                    "{{\"scenario\":\"{}\",\"contender\":\"{}\",\"recoverable\":{recoverable},\"status\":\"{}\",\"completedPct\":{:.1},\"attempts\":{},\"callsWhileDown\":{},\"timeToDetectMs\":{},\"timeToRecoverMs\":{},\"healingActions\":{},\"durationMs\":{}}}",
                    o.scenario,
                    o.contender.name(),
                    o.status.as_str(),
                    o.completed_pct,
                    o.attempts,
                    o.calls_while_down,
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
        "{ITEMS} items, concurrency {CONCURRENCY}, base latency {BASE_LATENCY:?} (600ms in the latency scenario), \
         outages, spikes and flapping from {FAULT_AT:?}, seed {seed}, virtual time\n"
    );
    println!(
        "{:<16} {:<25} {:<12} {:>6} {:>8} {:>9} {:>9} {:>10} {:>7} {:>9}",
        "scenario",
        "contender",
        "status",
        "done%",
        "attempts",
        "down-hits",
        "detect",
        "recover",
        "actions",
        "duration"
    );
    let fmt =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
    for (_, o) in &outcomes {
        println!(
            "{:<16} {:<25} {:<12} {:>6.1} {:>8} {:>9} {:>9} {:>10} {:>7} {:>8.1}s",
            o.scenario,
            o.contender.name(),
            o.status.as_str(),
            o.completed_pct,
            o.attempts,
            o.calls_while_down,
            fmt(o.time_to_detect),
            fmt(o.time_to_recover),
            o.healing_actions,
            o.duration.as_secs_f64()
        );
    }
}
