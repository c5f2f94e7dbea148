//! A 4-stage pipeline over 1,000,000 items each, no-op handlers, no journal: items per second
//! and peak RSS. Items stream in; nothing holds them all.
//!
//! cargo run --release -p bench --bin million

use std::time::Instant;

use self_healing::{ItemSource, SelfHealingPipeline, Stage};

const ITEMS: u64 = 1_000_000;

#[tokio::main]
async fn main() {
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
    let started = Instant::now();
    let report = pipeline.execute(()).await;
    let seconds = started.elapsed().as_secs_f64();
    let items = ITEMS * 4;
    println!("status      {}", report.status.as_str());
    println!("items       {items}");
    println!("seconds     {seconds:.2}");
    println!("items/s     {:.0}", items as f64 / seconds);
    match bench::peak_rss() {
        Some(bytes) => println!("peak RSS    {:.1} MB", bytes as f64 / 1e6),
        None => println!("peak RSS    unknown on this platform"),
    }
}
