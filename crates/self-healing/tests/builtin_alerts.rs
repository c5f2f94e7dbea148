//! The alerts the engine raises by itself, on paused time: a failed run pages (in manual mode
//! too) and the next success resolves it; a run with no finished attempt for `after` is stuck
//! until one finishes; a check unhealthy for `for` is down until it recovers; a run shorter
//! than a sample interval is judged on its final window, and `for` holds a threshold back.
//! Every alert carries its runbook, or what to do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self_healing::alert::{
    Alert, AlertStatus, Alerting, BuiltinAlert, BuiltinAlerts, CHECK_DOWN, Notifier, NotifyError,
    RUN_STUCK, Rules, Runbooks,
};
use self_healing::healing::{AlertThreshold, AutoHealer};
use self_healing::health::{CheckSpec, CustomCheck, HealthMonitor};
use self_healing::pipeline::{ItemSource, SelfHealingPipeline, Stage};
use self_healing::{BoxFuture, RunStatus, Severity, StageError};
use tokio::time::sleep;

/// Every alert it is sent, one line each: `name severity|resolved`.
#[derive(Default)]
struct Inbox(Mutex<Vec<Alert>>);

impl Notifier for Inbox {
    fn notify<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.0.lock().unwrap().extend(alerts.iter().cloned());
        Box::pin(async { Ok(()) })
    }
}

impl Inbox {
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|a| match a.status {
                AlertStatus::Firing => format!("{} {}", a.name, a.severity),
                AlertStatus::Resolved => format!("{} resolved", a.name),
            })
            .collect()
    }
}

fn alerting(inbox: &Arc<Inbox>, builtins: BuiltinAlerts) -> Alerting {
    Alerting::builder()
        .channel(Arc::clone(inbox) as Arc<dyn Notifier>)
        .rules(Rules {
            group_wait: Duration::from_secs(1),
            repeat_interval: Duration::from_secs(4 * 3600),
        })
        .builtins(builtins)
        .runbooks(Runbooks {
            default: Some("https://wiki.example/payroll".into()),
            ..Runbooks::default()
        })
        .build()
}

fn pipeline(healer: &AutoHealer, stage: impl Into<Stage<()>>) -> SelfHealingPipeline<()> {
    healer
        .install(SelfHealingPipeline::builder().name("payroll"))
        .stage(stage)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_pages_in_manual_mode_too_and_the_next_success_resolves_it() {
    let inbox = Arc::new(Inbox::default());
    let alerting = alerting(&inbox, BuiltinAlerts::default());
    let healer = AutoHealer::builder()
        .alerting(alerting.clone())
        .enabled(false) // manual mode stops remedies, not alerts
        .build()
        .unwrap();
    let failing = pipeline(
        &healer,
        Stage::new("load", |_| async {
            Err(StageError::new("schema mismatch").with_code("ESCHEMA"))
        }),
    );
    assert_eq!(failing.execute(()).await.status, RunStatus::Failed);
    alerting.settle(Duration::from_secs(30)).await;
    assert_eq!(inbox.lines(), ["run-failed critical"]);
    let alert = inbox.0.lock().unwrap()[0].clone();
    assert_eq!(alert.fingerprint(), "payroll/-/run-failed");
    assert!(
        alert.message.contains("schema mismatch"),
        "{}",
        alert.message
    );
    assert_eq!(
        alert.runbook.as_deref(),
        Some("https://wiki.example/payroll")
    );

    let fixed = pipeline(&healer, Stage::new("load", |_| async { Ok(()) }));
    assert_eq!(fixed.execute(()).await.status, RunStatus::Succeeded);
    alerting.settle(Duration::from_secs(30)).await;
    assert_eq!(
        inbox.lines(),
        ["run-failed critical", "run-failed resolved"]
    );
}

#[tokio::test(start_paused = true)]
async fn run_failed_takes_its_settings_and_can_be_turned_off() {
    for (settings, expected) in [
        (
            BuiltinAlert {
                severity: Severity::Warning,
                ..BuiltinAlerts::default().run_failed
            },
            vec!["run-failed warning"],
        ),
        (
            BuiltinAlert {
                enabled: false,
                ..BuiltinAlerts::default().run_failed
            },
            vec![],
        ),
    ] {
        let inbox = Arc::new(Inbox::default());
        let alerting = alerting(
            &inbox,
            BuiltinAlerts {
                run_failed: settings,
                ..BuiltinAlerts::default()
            },
        );
        let healer = AutoHealer::builder()
            .alerting(alerting.clone())
            .build()
            .unwrap();
        let failing = pipeline(
            &healer,
            Stage::new("load", |_| async { Err(StageError::new("boom")) }),
        );
        failing.execute(()).await;
        alerting.settle(Duration::from_secs(30)).await;
        assert_eq!(inbox.lines(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_with_no_attempt_finished_for_its_after_is_stuck_until_one_finishes() {
    let inbox = Arc::new(Inbox::default());
    let alerting = alerting(
        &inbox,
        BuiltinAlerts {
            run_stuck: BuiltinAlert {
                after: Duration::from_secs(10 * 60),
                ..BuiltinAlerts::default().run_stuck
            },
            ..BuiltinAlerts::default()
        },
    );
    let healer = AutoHealer::builder()
        .alerting(alerting.clone())
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (watching, inbox_then) = (Arc::clone(&seen), Arc::clone(&inbox));
    // Three items: 4 minutes, 15 minutes (stuck from 10 minutes in to its end), 4 minutes.
    let items = pipeline(
        &healer,
        Stage::for_each("copy", ItemSource::list(vec![4u64, 15, 4]), move |ctx| {
            let (seen, inbox) = (Arc::clone(&watching), Arc::clone(&inbox_then));
            let minutes = *ctx.item();
            async move {
                sleep(Duration::from_secs(minutes * 60)).await;
                seen.lock().unwrap().push(inbox.lines());
                Ok(())
            }
        }),
    );
    assert_eq!(items.execute(()).await.status, RunStatus::Succeeded);
    alerting.settle(Duration::from_secs(30)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], Vec::<String>::new(), "4 minutes is not stuck");
    assert_eq!(
        seen[1],
        ["run-stuck warning"],
        "fired 10 minutes into the second item"
    );
    assert_eq!(
        seen[2],
        ["run-stuck warning", "run-stuck resolved"],
        "the second item's end resolved it, before the run's"
    );
    assert_eq!(inbox.lines(), ["run-stuck warning", "run-stuck resolved"]);
    let stuck = inbox.0.lock().unwrap()[0].clone();
    assert_eq!(stuck.name.as_ref(), RUN_STUCK);
    assert!(stuck.title.contains("10m"), "{}", stuck.title);
}

#[tokio::test(start_paused = true)]
async fn a_check_unhealthy_for_its_for_is_down_until_it_recovers() {
    let inbox = Arc::new(Inbox::default());
    let alerting = alerting(
        &inbox,
        BuiltinAlerts {
            check_down: BuiltinAlert {
                after: Duration::from_secs(60),
                ..BuiltinAlerts::default().check_down
            },
            ..BuiltinAlerts::default()
        },
    );
    let healer = AutoHealer::builder()
        .alerting(alerting.clone())
        .build()
        .unwrap();
    let run = pipeline(
        &healer,
        Stage::new("load", |_| async {
            sleep(Duration::from_secs(10 * 60)).await;
            Ok(())
        }),
    );
    let up = Arc::new(AtomicBool::new(true));
    let answering = Arc::clone(&up);
    let monitor = HealthMonitor::builder()
        .thresholds(1, 1)
        .events(run.events().clone())
        .check(
            CheckSpec::new(
                "db",
                CustomCheck::new("db answers", move || {
                    let up = answering.load(Ordering::SeqCst);
                    async move { up }
                }),
            )
            .stage("load"),
        )
        .build()
        .unwrap();
    let (probe, lines, inbox_then) = (
        monitor.clone(),
        Arc::new(Mutex::new(Vec::new())),
        Arc::clone(&inbox),
    );
    let seen = Arc::clone(&lines);
    tokio::spawn(async move {
        sleep(Duration::from_secs(60)).await;
        up.store(false, Ordering::SeqCst);
        probe.check_all().await; // down at 1 min
        sleep(Duration::from_secs(30)).await;
        seen.lock().unwrap().push(inbox_then.lines()); // 30 s down: not yet
        sleep(Duration::from_secs(60)).await;
        seen.lock().unwrap().push(inbox_then.lines()); // 90 s down: down
        up.store(true, Ordering::SeqCst);
        probe.check_all().await; // back at 2.5 min
    });
    assert_eq!(run.execute(()).await.status, RunStatus::Succeeded);
    alerting.settle(Duration::from_secs(30)).await;
    let seen = lines.lock().unwrap().clone();
    assert_eq!(seen[0], Vec::<String>::new());
    assert_eq!(seen[1], ["check-down warning"]);
    assert_eq!(inbox.lines(), ["check-down warning", "check-down resolved"]);
    let down = inbox.0.lock().unwrap()[0].clone();
    assert_eq!(down.name.as_ref(), CHECK_DOWN);
    assert_eq!(down.fingerprint(), "payroll/load/check-down/db");
    // The stage's and the run's success do not end it: only the check's recovery does.
}

#[tokio::test(start_paused = true)]
async fn a_run_shorter_than_a_sample_interval_is_judged_at_its_end_and_for_holds_a_level_back() {
    for (holds_for, expected) in [
        // The run's window and the stage's.
        (
            Duration::ZERO,
            vec!["errorRate critical", "errorRate critical"],
        ),
        (Duration::from_secs(60), vec![]),
    ] {
        let inbox = Arc::new(Inbox::default());
        let alerting = alerting(&inbox, BuiltinAlerts::default());
        let healer = AutoHealer::builder()
            .alerting(alerting.clone())
            .threshold(AlertThreshold {
                metric: "errorRate".into(),
                warning: Some(0.1),
                critical: Some(0.5),
                holds_for,
            })
            .build()
            .unwrap();
        // Ten items in well under the 5 s sample interval, each failing once and passing on
        // its retry: an error rate of 0.5.
        let failed_once = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let run = healer
            .install(SelfHealingPipeline::builder().name("payroll"))
            .stage(
                Stage::for_each(
                    "copy",
                    ItemSource::list((0..10).collect::<Vec<u32>>()),
                    move |ctx| {
                        let failed_once = Arc::clone(&failed_once);
                        let n = *ctx.item();
                        async move {
                            sleep(Duration::from_millis(50)).await;
                            if failed_once.lock().unwrap().insert(n) {
                                return Err(
                                    StageError::new("read ECONNRESET").with_code("ECONNRESET")
                                );
                            }
                            Ok(())
                        }
                    },
                )
                .retry_policy(
                    self_healing::resilience::RetryPolicy::builder()
                        .max_attempts(2)
                        .initial_delay(Duration::from_millis(10))
                        .build()
                        .unwrap(),
                ),
            )
            .build()
            .unwrap();
        let report = run.execute(()).await;
        assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
        alerting.settle(Duration::from_secs(30)).await;
        // The run's success resolves what its end fired.
        let fired: Vec<String> = inbox
            .lines()
            .into_iter()
            .filter(|l| !l.ends_with("resolved"))
            .collect();
        assert_eq!(fired, expected, "for {holds_for:?}");
        // The run's success leaves a threshold to its metric: still firing.
        assert_eq!(inbox.lines(), expected, "for {holds_for:?}");
        if !holds_for.is_zero() {
            continue;
        }
        // The next run's end, with its error rate back below, resolves both.
        let clean = healer
            .install(SelfHealingPipeline::builder().name("payroll"))
            .stage(Stage::for_each(
                "copy",
                ItemSource::list((0..10).collect::<Vec<u32>>()),
                |_| async {
                    sleep(Duration::from_millis(50)).await;
                    Ok(())
                },
            ))
            .build()
            .unwrap();
        assert_eq!(clean.execute(()).await.status, RunStatus::Succeeded);
        alerting.settle(Duration::from_secs(30)).await;
        assert_eq!(
            inbox.lines(),
            [
                "errorRate critical",
                "errorRate critical",
                "errorRate resolved",
                "errorRate resolved"
            ]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_alert_without_a_runbook_carries_what_to_do() {
    let inbox = Arc::new(Inbox::default());
    let alerting = Alerting::builder()
        .channel(Arc::clone(&inbox) as Arc<dyn Notifier>)
        .build();
    alerting.fire(Alert::firing(
        Severity::Critical,
        "payroll",
        self_healing::alert::RUN_FAILED,
        "run of `payroll` failed",
    ));
    alerting.fire(Alert::firing(
        Severity::Warning,
        "payroll",
        "errorRate",
        "high",
    ));
    alerting.settle(Duration::from_secs(30)).await;
    let alerts = inbox.0.lock().unwrap().clone();
    let failed = alerts.iter().find(|a| &*a.name == "run-failed").unwrap();
    assert_eq!(failed.runbook, None);
    assert!(
        failed.message.contains("\nWhat to do: read the failure"),
        "{}",
        failed.message
    );
    let threshold = alerts.iter().find(|a| &*a.name == "errorRate").unwrap();
    assert_eq!(
        threshold.message, "high",
        "docs/RUNBOOKS.md has nothing on a metric"
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_down_before_the_run_starts_counts_from_when_it_went_down() {
    let inbox = Arc::new(Inbox::default());
    let alerting = alerting(
        &inbox,
        BuiltinAlerts {
            check_down: BuiltinAlert {
                after: Duration::from_secs(60),
                ..BuiltinAlerts::default().check_down
            },
            ..BuiltinAlerts::default()
        },
    );
    let healer = AutoHealer::builder()
        .alerting(alerting.clone())
        .build()
        .unwrap();
    let monitor = HealthMonitor::builder()
        .thresholds(1, 1)
        .check(CheckSpec::new(
            "queue",
            CustomCheck::new("queue answers", || async { false }),
        ))
        .build()
        .unwrap();
    healer.watch(&monitor);
    monitor.check_all().await;
    // Down 50 s before the run starts: 10 s into the run it has been down for its minute.
    sleep(Duration::from_secs(50)).await;
    let run = pipeline(
        &healer,
        Stage::new("load", |_| async {
            sleep(Duration::from_secs(15)).await;
            Ok(())
        }),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (at, inbox_then) = (Arc::clone(&seen), Arc::clone(&inbox));
    tokio::spawn(async move {
        sleep(Duration::from_secs(5)).await;
        at.lock().unwrap().push(inbox_then.lines());
        sleep(Duration::from_secs(7)).await;
        at.lock().unwrap().push(inbox_then.lines());
    });
    run.execute(()).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], Vec::<String>::new(), "55 s down: not yet");
    assert_eq!(seen[1], ["check-down warning"], "62 s down");
}
