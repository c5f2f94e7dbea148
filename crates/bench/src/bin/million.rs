//! A 4-stage pipeline over 1,000,000 items each, no-op handlers: items per second and peak RSS.
//! Items stream in; nothing holds them all.
//!
//! With `--journal`, the run is made twice in this process: without a journal, then with every
//! event going through the journal writer into a SQLite store in a temporary directory, as
//! `migrationpilot run` does, followed by the journaled run's share of the plain one's
//! throughput. `--pairs N` makes N such pairs, each into a fresh SQLite file, every other one
//! journaled first, and ends with the median share. `--store URL` journals into that store
//! instead (a `postgres://` one needs `--features postgres`): give it a scratch database, since
//! each run leaves its 4 million rows there, and a fresh one to compare runs. With
//! `--exporter`, a `PrometheusExporter` counts every event inline, as `run --listen` does.
//!
//! cargo run --release -p bench --bin million [-- --journal [--pairs N] [--store URL]] [--exporter]

use std::sync::Arc;
use std::time::Instant;

use migrationpilot::store::Store;
use self_healing::{ItemSource, SelfHealingPipeline, Stage};
use tokio_util::sync::CancellationToken;

const ITEMS: u64 = 1_000_000;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let journaled = args.iter().any(|a| a == "--journal");
    let exported = args.iter().any(|a| a == "--exporter");
    let store = args
        .iter()
        .position(|a| a == "--store")
        .map(|i| args.get(i + 1).expect("--store URL").clone());
    let pairs: usize = args
        .iter()
        .position(|a| a == "--pairs")
        .map(|i| {
            args.get(i + 1)
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .expect("--pairs N, a count of at least 1")
        })
        .unwrap_or(1);
    assert!(
        journaled || pairs == 1,
        "--pairs compares journaled runs: give --journal"
    );
    if !journaled {
        run(None, exported).await;
    }
    let mut shares = Vec::with_capacity(pairs);
    for pair in (0..pairs).filter(|_| journaled) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("journal.db").display()));
        // Each pair starts with the other run than the last, so that neither always has the
        // machine's better minutes.
        let (plain, rate) = if pair % 2 == 0 {
            let plain = run(None, exported).await;
            (plain, run(Some(&url), exported).await)
        } else {
            let rate = run(Some(&url), exported).await;
            (run(None, exported).await, rate)
        };
        let share = rate / plain * 100.0;
        println!("journaled/plain {share:.0} %");
        shares.push(share);
    }
    if shares.len() > 1 {
        let share = bench::Spread::of(shares);
        println!(
            "journaled/plain median of {pairs} pairs {:.0} % ({:.0}–{:.0} %)",
            share.median, share.low, share.high
        );
    }
    match bench::peak_rss() {
        Some(bytes) => println!("peak RSS    {:.1} MB", bytes as f64 / 1e6),
        None => println!("peak RSS    unknown on this platform"),
    }
}

/// One run of the pipeline, journaled into the store `journal` names if any; prints its figures
/// and returns its items per second.
async fn run(journal: Option<&str>, exported: bool) -> f64 {
    let kind = journal.map(|url| url.split(':').next().unwrap_or("sqlite"));
    let mut builder = SelfHealingPipeline::builder().name("million");
    for name in ["analysis", "design", "generation", "validation"] {
        builder = builder.stage(
            Stage::for_each(name, ItemSource::iter(|_: &()| 0..ITEMS), |_ctx| async {
                Ok(())
            })
            .concurrency(64),
        );
    }
    let pipeline = builder.build().expect("a valid pipeline");
    let exporter = exported.then(|| {
        let exporter = self_healing::PrometheusExporter::builder()
            .build()
            .expect("an exporter");
        exporter.attach(pipeline.events(), "million");
        exporter
    });
    let finish = CancellationToken::new();
    let journal = if let Some(url) = journal {
        let store: Arc<dyn Store> = migrationpilot::store::open(url).await.expect("a store");
        let (task, mut committed) = migrationpilot::journal::spawn(
            store,
            "million".into(),
            migrationpilot::journal::subscribe(pipeline.events(), false),
            migrationpilot::secrets::Secrets::default(),
            CancellationToken::new(),
            finish.clone(),
        );
        let drain = tokio::spawn(async move { while committed.recv().await.is_some() {} });
        Some((task, drain))
    } else {
        None
    };
    let started = Instant::now();
    let report = pipeline.execute(()).await;
    let ran = started.elapsed().as_secs_f64();
    finish.cancel();
    if let Some((task, drain)) = journal {
        task.await
            .expect("the journal task")
            .expect("the journal wrote every event");
        drain.await.expect("the drain task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let items = ITEMS * 4;
    println!("status      {}", report.status.as_str());
    println!("journal     {}", kind.unwrap_or("none"));
    println!("exporter    {}", if exported { "attached" } else { "none" });
    println!("items       {items}");
    println!("seconds     {seconds:.2} (the pipeline itself {ran:.2})");
    let rate = items as f64 / seconds;
    println!("items/s     {rate:.0}");
    if let Some(exporter) = exporter {
        let mut registry = self_healing::export::prometheus_client::registry::Registry::default();
        exporter.register(&mut registry);
        let mut text = String::new();
        self_healing::export::prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("an exposition");
        let items = text
            .lines()
            .filter(|l| l.starts_with("migrationpilot_items_total{") && l.contains("succeeded"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
        assert_eq!(items, ITEMS * 4, "the exporter counted every item");
    }
    rate
}
