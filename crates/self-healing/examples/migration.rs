//! A four-stage code migration (analysis, design, generation, validation) over a set of legacy
//! COBOL programs, with a flaky downstream that injects transient network failures. The
//! pipeline heals them with retries and prints its PipelineMetrics at the end.
//!
//! ```text
//! cargo run -p self-healing --example migration              # 20 % transient failures, seed 42
//! cargo run -p self-healing --example migration -- 0.5 7     # 50 % failures, seed 7
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::event::{Event, EventKind};
use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
use self_healing::resilience::{Backoff, RetryPolicy};
use self_healing::{RunStatus, StageError};

/// The "downstream" every stage calls: an analysis service that drops connections.
struct Downstream {
    failure_rate: f64,
    rng: Mutex<fastrand::Rng>,
}

impl Downstream {
    async fn call(&self, what: &str, work: Duration) -> Result<(), StageError> {
        tokio::time::sleep(work).await;
        let roll = self.rng.lock().unwrap().f64();
        if roll < self.failure_rate {
            let code = if roll < self.failure_rate / 2.0 {
                "ECONNRESET"
            } else {
                "ETIMEDOUT"
            };
            return Err(StageError::new(format!("{what}: {code}")).with_code(code));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let failure_rate: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0.2);
    let seed: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(42);
    if !(0.0..1.0).contains(&failure_rate) {
        return Err(format!("failure rate {failure_rate} must be in [0, 1)").into());
    }
    let downstream = Arc::new(Downstream {
        failure_rate,
        rng: Mutex::new(fastrand::Rng::with_seed(seed)),
    });
    let programs: Vec<String> = (1..=40)
        .map(|n| format!("legacy/PAYROLL{n:02}.cbl"))
        .collect();

    let analyze = Arc::clone(&downstream);
    let design = Arc::clone(&downstream);
    let generate = Arc::clone(&downstream);
    let validate = Arc::clone(&downstream);
    let pipeline = SelfHealingPipeline::builder()
        .name("payroll-migration")
        .seed(seed)
        .retry_policy(
            RetryPolicy::builder()
                .max_attempts(6)
                .backoff(Backoff::Exponential)
                .initial_delay(Duration::from_millis(20))
                .max_delay(Duration::from_millis(500))
                .jitter(true)
                .retryable_pattern("ECONNRESET|ETIMEDOUT|ECONNREFUSED")
                .build()?,
        )
        .stage(
            Stage::for_each("analysis", ItemSource::list(programs.clone()), move |ctx| {
                let downstream = Arc::clone(&analyze);
                async move {
                    downstream
                        .call(
                            &format!("analyze {}", ctx.item()),
                            Duration::from_millis(15),
                        )
                        .await
                }
            })
            .concurrency(8)
            .timeout(Duration::from_secs(5)),
        )
        .stage(
            Stage::new("design", move |_ctx| {
                let downstream = Arc::clone(&design);
                async move {
                    downstream
                        .call("design target architecture", Duration::from_millis(60))
                        .await
                }
            })
            .timeout(Duration::from_secs(5)),
        )
        .stage(
            Stage::for_each(
                "generation",
                ItemSource::list(programs.clone()),
                move |ctx| {
                    let downstream = Arc::clone(&generate);
                    async move {
                        let target = ctx.item().replace("legacy/", "src/").replace(".cbl", ".rs");
                        downstream
                            .call(&format!("generate {target}"), Duration::from_millis(25))
                            .await
                    }
                },
            )
            .concurrency(4)
            .timeout(Duration::from_secs(5)),
        )
        .stage(
            Stage::for_each("validation", ItemSource::list(programs), move |ctx| {
                let downstream = Arc::clone(&validate);
                async move {
                    downstream
                        .call(
                            &format!("validate {}", ctx.item()),
                            Duration::from_millis(10),
                        )
                        .await
                }
            })
            .concurrency(8)
            .timeout(Duration::from_secs(5)),
        )
        .on_stage_start(|stage| println!("▶ {stage}"))
        .on_stage_complete(|report| match &report.error {
            None => println!(
                "✔ {} — {} unit(s) in {:.0?}",
                report.stage, report.items_completed, report.duration
            ),
            Some(error) => println!("✘ {} — {error}", report.stage),
        })
        .build()?;

    // Print each healing action with the error that caused it.
    let failed: Arc<Mutex<HashMap<Option<Arc<str>>, String>>> = Arc::default();
    pipeline
        .events()
        .add_sink(Arc::new(move |event: &Event| match &event.kind {
            EventKind::AttemptFailed { item, error, .. } => {
                failed
                    .lock()
                    .unwrap()
                    .insert(item.clone(), error.to_string());
            }
            EventKind::HealingApplied {
                stage,
                item,
                action,
                detail,
            } => {
                let cause = failed.lock().unwrap().remove(item).unwrap_or_default();
                println!(
                    "  ⟳ {action} {stage}/{}: {detail} after {cause}",
                    item.as_deref().unwrap_or("-")
                );
            }
            _ => {}
        }));

    println!(
        "payroll-migration: 40 programs, {:.0} % transient failures, seed {seed}\n",
        failure_rate * 100.0
    );
    let report = pipeline.execute(()).await;
    println!("\nrun {} {}", report.run_id, report.status.as_str());
    if let Some(error) = &report.error {
        println!("failed with {error}");
    }
    println!("\nPipelineMetrics\n{}", report.metrics);
    if report.status != RunStatus::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}
