//! What journaling a healing decision before it acts costs per failed attempt, and that the
//! success path pays nothing for it.
//!
//! A stage of 2000 items, 16 at a time, healed by an AutoHealer whose retry strategy retries at
//! once (no backoff to hide the wait); every item fails its first attempt (or, with
//! `--succeed`, none does). The run is journaled into SQLite as `migrationpilot run` does it,
//! once with the journal durable (each decision committed before its retry runs) and once
//! with the same journal not acknowledging anything (decisions recorded after the fact). Three
//! rounds each; the medians and what the difference is per failed attempt.
//!
//! cargo run --release -p bench --bin decisions [-- --succeed]

use std::sync::Arc;
use std::time::{Duration, Instant};

use migrationpilot::secrets::Secrets;
use migrationpilot::store::{SqliteStore, Store};
use self_healing::healing::{AutoHealer, HealingStrategy, RetryAction, Trigger};
use self_healing::resilience::RetryPolicy;
use self_healing::{ItemSource, SelfHealingPipeline, Stage, StageError};
use tokio_util::sync::CancellationToken;

const ITEMS: u32 = 2000;

async fn run(durable: bool, fail: bool) -> Duration {
    let healer = AutoHealer::builder()
        .strategy(
            HealingStrategy::new(
                "retry-now",
                RetryAction::with_policy(
                    RetryPolicy::builder()
                        .max_attempts(2)
                        .initial_delay(Duration::ZERO)
                        .build()
                        .expect("a valid policy"),
                ),
            )
            .trigger(Trigger::error()),
        )
        .build()
        .expect("a valid healer");
    let pipeline = healer
        .install(SelfHealingPipeline::builder().name("decisions"))
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..ITEMS),
                move |ctx| async move {
                    if fail && ctx.attempt() == 1 {
                        Err(StageError::new("ECONNRESET"))
                    } else {
                        Ok(())
                    }
                },
            )
            .concurrency(16),
        )
        .build()
        .expect("a valid pipeline");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("journal.db"))
            .await
            .expect("a SQLite store"),
    );
    let events = if durable {
        migrationpilot::journal::subscribe(pipeline.events(), false)
    } else {
        pipeline.events().subscribe_pacing(
            migrationpilot::store::projection::journaled,
            migrationpilot::journal::MAX_BACKLOG,
        )
    };
    let finish = CancellationToken::new();
    let (task, mut committed) = migrationpilot::journal::spawn(
        store,
        "decisions".into(),
        events,
        Secrets::default(),
        CancellationToken::new(),
        finish.clone(),
    );
    let drain = tokio::spawn(async move { while committed.recv().await.is_some() {} });
    let started = Instant::now();
    let report = pipeline.execute(()).await;
    finish.cancel();
    task.await
        .expect("the journal writer")
        .expect("a journaled run");
    let took = started.elapsed();
    drain.await.expect("the drain");
    assert!(report.is_success());
    assert_eq!(
        report.metrics.retry_count,
        if fail { u64::from(ITEMS) } else { 0 }
    );
    took
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let fail = !std::env::args().any(|a| a == "--succeed");
    let (mut durable, mut after) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        durable.push(run(true, fail).await);
        after.push(run(false, fail).await);
    }
    let (durable, after) = (median(durable), median(after));
    println!(
        "{} items, {}: decisions durable first {durable:.2?}, recorded after the fact {after:.2?}",
        ITEMS,
        if fail {
            "each failing once, retried at once"
        } else {
            "none failing"
        }
    );
    if fail {
        let per = (durable.as_secs_f64() - after.as_secs_f64()) / f64::from(ITEMS);
        println!(
            "cost per failed attempt: {:.1} µs (ratio {:.2}×)",
            per * 1e6,
            durable.as_secs_f64() / after.as_secs_f64()
        );
    } else {
        println!(
            "success path ratio: {:.2}×",
            durable.as_secs_f64() / after.as_secs_f64()
        );
    }
}
