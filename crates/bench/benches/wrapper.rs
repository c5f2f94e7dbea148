//! One no-op call through each resilience wrapper, on one current-thread tokio runtime.
//!
//! - `self-healing/primitives`: what the pipeline does around every attempt, composed by hand:
//!   a concurrency permit, the circuit breaker, the throttle check, the attempt's timeout, the
//!   outcome reported to the breaker, its duration recorded in the metrics window. On success no
//!   trigger is evaluated (triggers run on failure and on the evaluation tick).
//! - `self-healing/pipeline-item`: one item of a real pipeline with an AutoHealer attached: the
//!   above plus the stage's worker pulling the item and three events (the attempt's start, its
//!   success and the item's) through the bus to the metrics collector.
//! - `tower/retry+timeout+limit`, `backon/retry`, `failsafe/breaker`: the peers.
//!
//! After criterion's figures, the same contenders run again in turns, round after round, and
//! each one's cost is divided by tower's in the same round: a ratio that the machine's speed
//! drifting between criterion's benchmarks does not move. The filter `ratios` runs only them;
//! another filter or option of criterion's (`--list`, `--quick`, a baseline) leaves them out,
//! as does criterion's test mode (`cargo test --benches`).
//!
//! cargo bench -p bench --bench wrapper [-- ratios]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::Spread;
use criterion::Criterion;
use self_healing::healing::{Action, AutoHealer, HealingStrategy, Trigger};
use self_healing::metrics::{MetricsCollector, Scope};
use self_healing::resilience::{CircuitBreaker, ConcurrencyLimit, RetryPolicy, Throttle, deadline};
use self_healing::{ItemSource, SelfHealingPipeline, Stage, StageError};
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The peer every ratio is taken against.
const BASELINE: &str = "tower/retry+timeout+limit";
/// Rounds of the interleaved comparison, and the time each contender gets in a round.
const ROUNDS: usize = 35;
const TURN: Duration = Duration::from_millis(20);

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut contenders = contenders(&rt);
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let mut group = criterion.benchmark_group("no-op call");
    for (name, calls) in &mut contenders {
        group.bench_function(*name, |b| b.iter_custom(&mut *calls));
    }
    group.finish();
    criterion.final_summary();
    // Under `cargo bench` (which passes `--bench`) with no other argument, or with the filter
    // `ratios`, which no criterion benchmark matches; not in criterion's test mode (no
    // `--bench`), nor with another filter or option.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ours: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    if args.len() > ours.len() && matches!(ours[..], [] | ["ratios"]) {
        interleaved(&mut contenders);
    }
}

/// Runs `iters` calls and returns the time they took.
type Calls<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// Every contender, named as criterion reports it.
fn contenders(rt: &Runtime) -> Vec<(&'static str, Calls<'_>)> {
    let breaker = CircuitBreaker::builder().build().unwrap();
    let throttle = Throttle::unlimited();
    let limit = ConcurrencyLimit::new(64).unwrap();
    let metrics = MetricsCollector::new();
    let series = metrics.series(Scope::Stage("load"), "duration");
    let policy = RetryPolicy::builder().max_attempts(3).build().unwrap();
    let retry = policy.clone();
    let primitives = move |iters: u64| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let _slot = limit.acquire().await;
                let permit = breaker.acquire().await;
                throttle.acquire().await;
                let began = tokio::time::Instant::now();
                let result = deadline(began + TIMEOUT, async {
                    Ok::<u8, StageError>(black_box(0))
                })
                .await;
                match result {
                    Some(Ok(_)) => {
                        permit.success();
                        series.record(began.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => {
                        permit.failure();
                        black_box(retry.should_retry(1, &StageError::new("x")));
                    }
                }
            }
            start.elapsed()
        })
    };

    let items = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&items);
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("retry-transient", Action::retry(policy)).trigger(
                Trigger::error()
                    .pattern_str("ECONNRESET|ETIMEDOUT")
                    .unwrap(),
            ),
        )
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer)
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(move |_: &()| 0..count.load(Ordering::Relaxed)),
                |_ctx| async { Ok(()) },
            )
            .concurrency(64)
            .timeout(TIMEOUT),
        )
        .build()
        .unwrap();
    let pipeline_item = move |iters: u64| {
        items.store(iters, Ordering::Relaxed);
        rt.block_on(async {
            let start = Instant::now();
            let report = pipeline.execute(()).await;
            assert!(report.is_success());
            start.elapsed()
        })
    };

    let mut stack = ServiceBuilder::new()
        .retry(Attempts(3))
        .timeout(TIMEOUT)
        .concurrency_limit(64)
        .service_fn(|request: u64| async move { Ok::<u64, tower::BoxError>(black_box(request)) });
    let tower = move |iters: u64| {
        rt.block_on(async {
            let start = Instant::now();
            for i in 0..iters {
                let service = stack.ready().await.unwrap();
                black_box(service.call(i).await.unwrap());
            }
            start.elapsed()
        })
    };

    let backon = move |iters: u64| {
        use backon::Retryable;
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let call = || async { Ok::<u8, StageError>(black_box(0)) };
                call.retry(backon::ExponentialBuilder::default().with_max_times(2))
                    .await
                    .unwrap();
            }
            start.elapsed()
        })
    };

    let failsafe_breaker = failsafe::Config::new().build();
    let failsafe = move |iters: u64| {
        use failsafe::futures::CircuitBreaker as _;
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                failsafe_breaker
                    .call(async { Ok::<u8, ()>(black_box(0)) })
                    .await
                    .unwrap();
            }
            start.elapsed()
        })
    };

    vec![
        ("self-healing/primitives", Box::new(primitives) as Calls<'_>),
        ("self-healing/pipeline-item", Box::new(pipeline_item)),
        (BASELINE, Box::new(tower)),
        ("backon/retry", Box::new(backon)),
        ("failsafe/breaker", Box::new(failsafe)),
    ]
}

/// tower's retry needs a policy: up to three attempts, no wait.
#[derive(Clone)]
struct Attempts(usize);

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Attempts {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Runs the contenders in turns for `ROUNDS` rounds, each for about `TURN` a round, starting
/// each round one contender further along; prints each one's median cost per call and the
/// median, lowest and highest of its cost divided by the baseline's in the same round.
fn interleaved(contenders: &mut [(&'static str, Calls<'_>)]) {
    // Calls per turn, from a first timing of each contender.
    let calls: Vec<u64> = contenders
        .iter_mut()
        .map(|(_, run)| {
            let probe = 10_000;
            let took = run(probe).as_secs_f64();
            ((TURN.as_secs_f64() / took * probe as f64) as u64).max(1)
        })
        .collect();
    let baseline = contenders
        .iter()
        .position(|(name, _)| *name == BASELINE)
        .expect("the baseline is a contender");
    let mut per_call = vec![Vec::with_capacity(ROUNDS); contenders.len()];
    for round in 0..ROUNDS {
        let mut this_round = vec![0.0; contenders.len()];
        for turn in 0..contenders.len() {
            let i = (round + turn) % contenders.len();
            let took = (contenders[i].1)(calls[i]);
            this_round[i] = took.as_secs_f64() * 1e9 / calls[i] as f64;
        }
        for (i, ns) in this_round.iter().enumerate() {
            per_call[i].push((*ns, ns / this_round[baseline]));
        }
    }
    println!();
    println!("interleaved: {ROUNDS} rounds, each contender ~{TURN:?} a round, against {BASELINE}");
    println!(
        "{:<28} {:>12} {:>10} {:>16}",
        "contender", "ns per call", "ratio", "ratio range"
    );
    for ((name, _), rounds) in contenders.iter().zip(&per_call) {
        let ns = Spread::of(rounds.iter().map(|(ns, _)| *ns)).median;
        let ratio = Spread::of(rounds.iter().map(|(_, ratio)| *ratio));
        println!(
            "{name:<28} {ns:>12.1} {:>9.2}× {:>9.2}–{:.2}×",
            ratio.median, ratio.low, ratio.high
        );
    }
}
