//! The Prometheus exporter on real runs: its counts agree with the run's report, and an
//! exporter fed only what a journal keeps shows what one fed live showed.
#![cfg(feature = "prometheus")]

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use self_healing::event::EventKind;
use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
use self_healing::resilience::RetryPolicy;
use self_healing::{PrometheusExporter, RunStatus, StageError};

fn exposition(exporter: &PrometheusExporter) -> String {
    let mut registry = Registry::default();
    exporter.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

/// The value of the one series whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .collect();
    assert_eq!(found.len(), 1, "one `{series}` in:\n{text}");
    found[0]
}

/// Whether an event is one a journal keeps (the starts and items' successful attempts are
/// summarised by the outcomes).
fn kept_by_a_journal(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::AttemptStarted { .. } | EventKind::AttemptSucceeded { item: Some(_), .. }
    )
}

#[tokio::test(start_paused = true)]
async fn counts_agree_with_the_report_and_with_a_replay_of_what_a_journal_keeps() {
    let pipeline = SelfHealingPipeline::builder()
        .name("export")
        .retry_policy(
            RetryPolicy::builder()
                .max_attempts(3)
                .initial_delay(Duration::from_millis(10))
                .build()
                .unwrap(),
        )
        .stage(
            Stage::for_each(
                "load",
                ItemSource::iter(|_: &()| 0..40u32),
                |ctx| async move {
                    match (*ctx.item() % 5, ctx.attempt()) {
                        (0, 1) => Err(StageError::new("read ECONNRESET")),
                        (4, _) if *ctx.item() == 39 => Err(StageError::new("bad row")),
                        _ => Ok(()),
                    }
                },
            )
            .concurrency(4),
        )
        .stage(Stage::new("publish", |_ctx| async { Ok(()) }))
        .build()
        .unwrap();
    let live = PrometheusExporter::builder()
        .label("environment", "test")
        .build()
        .unwrap();
    live.attach(pipeline.events(), "payroll");
    let mut all = pipeline.events().subscribe();
    let report = pipeline.execute(()).await;
    assert_eq!(report.status, RunStatus::Failed);

    let text = exposition(&live);
    let series = |name: &str, labels: &str| {
        value(
            &text,
            &format!("migrationpilot_{name}{{environment=\"test\",project=\"payroll\"{labels}}}"),
        )
    };
    // 40 items: 8 failed once then succeeded, the last (39) failed all 3 attempts, after the
    // others had finished (its last failure at 50 ms, theirs all by 30 ms).
    assert_eq!(
        series("items_total", ",stage=\"load\",outcome=\"succeeded\""),
        39.0
    );
    assert_eq!(
        series("items_total", ",stage=\"load\",outcome=\"failed\""),
        1.0
    );
    assert_eq!(
        series("attempts_total", ",stage=\"load\",outcome=\"succeeded\""),
        39.0
    );
    assert_eq!(
        series("attempts_total", ",stage=\"load\",outcome=\"failed\""),
        8.0 + 3.0
    );
    assert_eq!(
        series("healing_events_total", ",action=\"retry\""),
        report.metrics.retry_count as f64
    );
    assert_eq!(
        series("pipeline_duration_seconds_count", ",status=\"failed\""),
        1.0
    );
    assert_eq!(
        series("pipeline_stage_duration_seconds_count", ",stage=\"load\""),
        1.0
    );
    assert_eq!(series("stage_concurrency", ",stage=\"load\""), 4.0);
    assert!(!text.contains("item=\""), "item keys never become labels");

    // The same events, less those a journal does not keep, give the same exposition.
    let replayed = PrometheusExporter::builder()
        .label("environment", "test")
        .build()
        .unwrap();
    while let Some(event) = all.try_recv() {
        if kept_by_a_journal(&event.kind) {
            replayed.observe("payroll", &event);
        }
    }
    assert_eq!(exposition(&replayed), text);
}

#[tokio::test(start_paused = true)]
async fn a_new_run_clears_the_previous_runs_gauges_but_keeps_the_counts() {
    let pipeline = SelfHealingPipeline::builder()
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..3u32), |_| async {
                Ok(())
            })
            .concurrency(2),
        )
        .build()
        .unwrap();
    let exporter = PrometheusExporter::builder().build().unwrap();
    exporter.attach(pipeline.events(), "p");
    pipeline.execute(()).await;
    pipeline.events().publish(
        None,
        EventKind::RunStarted {
            pipeline: "again".into(),
            stages: vec!["load".into()],
        },
    );
    let text = exposition(&exporter);
    assert!(
        !text.contains("migrationpilot_stage_concurrency{"),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "migrationpilot_items_total{project=\"p\",stage=\"load\",outcome=\"succeeded\"}"
        ),
        3.0
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_stage_shows_how_many_checks_hold_it() {
    let pipeline = SelfHealingPipeline::builder()
        .stage(
            Stage::for_each("load", ItemSource::iter(|_: &()| 0..3u32), |_| async {
                Ok(())
            })
            .depends_on(["api", "db"]),
        )
        .build()
        .unwrap();
    let exporter = PrometheusExporter::builder().build().unwrap();
    exporter.attach(pipeline.events(), "p");
    let held = "migrationpilot_stage_held{project=\"p\",stage=\"load\"}";
    pipeline.execute(()).await;
    assert_eq!(value(&exposition(&exporter), held), 0.0);
    let load = pipeline.control("load").unwrap();
    assert!(load.set_dependency_down("api", true));
    assert!(load.set_dependency_down("db", true));
    assert!(!load.set_dependency_down("cache", true), "not a dependency");
    assert_eq!(value(&exposition(&exporter), held), 2.0);
    load.set_dependency_down("api", false);
    assert_eq!(value(&exposition(&exporter), held), 1.0);
}

#[test]
fn retries_a_retry_budget_held_are_counted_with_how_long_they_waited() {
    use self_healing::event::{
        ActionKind, EventBus, HealingRecord, Outcome, RunId, TriggerKind, TriggerMatch,
    };
    let exporter = PrometheusExporter::builder().build().unwrap();
    let bus = EventBus::new();
    let run = RunId::new("run-1");
    for budget_wait in [
        Some(Duration::from_millis(1500)),
        None,
        Some(Duration::from_millis(500)),
    ] {
        let record = Box::new(HealingRecord {
            at: std::time::SystemTime::now(),
            run: Some(run.clone()),
            stage: Some("load".into()),
            item: Some("i1".into()),
            strategy: "retry-transient".into(),
            trigger: TriggerMatch {
                kind: TriggerKind::Error,
                index: 0,
                observed: None,
                description: "error: read ECONNRESET".into(),
            },
            action: ActionKind::Retry,
            outcome: Outcome::Succeeded,
            detail: "attempt 2 of 3".into(),
            duration: Duration::ZERO,
            budget_wait,
        });
        let event = bus.publish(Some(&run), EventKind::HealingDecision { record });
        exporter.observe("payroll", &event);
    }
    let text = exposition(&exporter);
    let series = |name: &str| {
        value(
            &text,
            &format!("migrationpilot_{name}{{project=\"payroll\",stage=\"load\"}}"),
        )
    };
    assert_eq!(series("retry_budget_waits_total"), 2.0);
    assert_eq!(series("retry_budget_wait_seconds_total"), 2.0);
}
