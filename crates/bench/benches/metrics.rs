//! `MetricsCollector::record` and `get_stats` on the hot path.
//!
//! cargo bench -p bench --bench metrics

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use self_healing::metrics::{MetricsCollector, Scope};

fn collector(retention: usize) -> MetricsCollector {
    MetricsCollector::builder()
        .retention_size(retention)
        .build()
        .unwrap()
}

/// Runs `call(0..iters)` on each of two threads at once; the time is per call.
fn on_two_threads(iters: u64, call: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| (0..iters).for_each(&call));
        }
    });
    start.elapsed() / 2
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for retention in [1000, 100_000] {
        let metrics = collector(retention);
        let mut value = 0.0;
        group.bench_function(format!("by-name/retention-{retention}"), |b| {
            b.iter(|| {
                value += 1.0;
                metrics.record(black_box("duration"), black_box(value));
            })
        });
        let series = metrics.series(Scope::Stage("load"), "duration");
        group.bench_function(format!("handle/retention-{retention}"), |b| {
            b.iter(|| {
                value += 1.0;
                series.record(black_box(value));
            })
        });
        // Two threads recording into the same window at once; the time is per record.
        group.bench_function(format!("contended-2-threads/retention-{retention}"), |b| {
            b.iter_custom(|iters| on_two_threads(iters, |i| metrics.record("duration", i as f64)))
        });
    }
    group.finish();
}

fn get_stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_stats");
    for retention in [1000, 100_000] {
        let metrics = collector(retention);
        let mut rng = 0x5eed_u64;
        for _ in 0..retention {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            metrics.record("duration", (rng % 10_000) as f64);
        }
        group.bench_function(format!("retention-{retention}"), |b| {
            b.iter(|| black_box(metrics.get_stats(black_box("duration"))))
        });
        // Two threads reading the same window at once; the time is per call.
        group.bench_function(format!("contended-2-threads/retention-{retention}"), |b| {
            b.iter_custom(|iters| {
                on_two_threads(iters, |_| {
                    black_box(metrics.get_stats("duration"));
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = record, get_stats
}
criterion_main!(benches);
