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
//! cargo bench -p bench --bench wrapper

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use self_healing::healing::{Action, AutoHealer, HealingStrategy, Trigger};
use self_healing::metrics::{MetricsCollector, Scope};
use self_healing::resilience::{CircuitBreaker, ConcurrencyLimit, RetryPolicy, Throttle, deadline};
use self_healing::{ItemSource, SelfHealingPipeline, Stage, StageError};
use tower::{Service, ServiceBuilder, ServiceExt};

const TIMEOUT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
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

fn wrappers(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("no-op call");

    let breaker = CircuitBreaker::builder().build().unwrap();
    let throttle = Throttle::unlimited();
    let limit = ConcurrencyLimit::new(64).unwrap();
    let metrics = MetricsCollector::new();
    let series = metrics.series(Scope::Stage("load"), "duration");
    let policy = RetryPolicy::builder().max_attempts(3).build().unwrap();
    group.bench_function("self-healing/primitives", |b| {
        b.iter_custom(|iters| {
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
                            black_box(policy.should_retry(1, &StageError::new("x")));
                        }
                    }
                }
                start.elapsed()
            })
        })
    });

    let items = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&items);
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new("retry-transient", Action::retry(policy.clone())).trigger(
                Trigger::error()
                    .pattern_str("ECONNRESET|ETIMEDOUT")
                    .unwrap(),
            ),
        )
        .build()
        .unwrap();
    let pipeline = SelfHealingPipeline::builder()
        .supervisor(healer.clone())
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
    group.bench_function("self-healing/pipeline-item", |b| {
        b.iter_custom(|iters| {
            items.store(iters, Ordering::Relaxed);
            rt.block_on(async {
                let start = Instant::now();
                let report = pipeline.execute(()).await;
                assert!(report.is_success());
                start.elapsed()
            })
        })
    });

    let mut tower_stack = ServiceBuilder::new()
        .retry(Attempts(3))
        .timeout(TIMEOUT)
        .concurrency_limit(64)
        .service_fn(|request: u64| async move { Ok::<u64, tower::BoxError>(black_box(request)) });
    group.bench_function("tower/retry+timeout+limit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let service = tower_stack.ready().await.unwrap();
                    black_box(service.call(i).await.unwrap());
                }
                start.elapsed()
            })
        })
    });

    group.bench_function("backon/retry", |b| {
        use backon::Retryable;
        b.iter_custom(|iters| {
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
        })
    });

    let failsafe_breaker = failsafe::Config::new().build();
    group.bench_function("failsafe/breaker", |b| {
        use failsafe::futures::CircuitBreaker as _;
        b.iter_custom(|iters| {
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
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = wrappers
}
criterion_main!(benches);
