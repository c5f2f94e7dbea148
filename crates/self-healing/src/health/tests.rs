//! Thresholds and hysteresis on paused time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use HealthStatus::*;

/// A check that answers from a script, then keeps answering the last entry.
#[derive(Clone)]
struct Scripted(Arc<Mutex<VecDeque<bool>>>);

impl Scripted {
    fn new(script: &[bool]) -> Self {
        Scripted(Arc::new(Mutex::new(script.iter().copied().collect())))
    }
}

impl Check for Scripted {
    fn check(&self) -> BoxFuture<'_, Result<(), CheckError>> {
        let mut script = self.0.lock().unwrap();
        let ok = if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script[0]
        };
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(CheckError::new("down"))
            }
        })
    }

    fn target(&self) -> String {
        "script".into()
    }
}

/// Every change a monitor reported: (check, old, new).
type Changes = Arc<Mutex<Vec<(String, HealthStatus, HealthStatus)>>>;

fn monitor(checks: Vec<CheckSpec>) -> (HealthMonitor, Changes) {
    let mut builder = HealthMonitor::builder()
        .check_interval(Duration::from_secs(1))
        .thresholds(3, 5);
    for check in checks {
        builder = builder.check(check);
    }
    let monitor = builder.build().unwrap();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&changes);
    monitor.on_health_changed(move |c| {
        sink.lock()
            .unwrap()
            .push((c.check.to_string(), c.old_status, c.new_status));
    });
    (monitor, changes)
}

async fn rounds(monitor: &HealthMonitor, n: usize) {
    for _ in 0..n {
        monitor.check_all().await;
    }
}

#[tokio::test(start_paused = true)]
async fn failures_degrade_then_make_unhealthy_and_successes_heal() {
    let script = [
        true, false, false, false, false, true, true, true, true, true, true,
    ];
    let (monitor, changes) = monitor(vec![CheckSpec::new("api", Scripted::new(&script))]);
    rounds(&monitor, script.len()).await;
    assert_eq!(
        *changes.lock().unwrap(),
        [
            ("api".into(), Healthy, Degraded),
            ("api".into(), Degraded, Unhealthy),
            ("api".into(), Unhealthy, Healthy),
        ]
    );
    let report = &monitor.report()[0];
    assert_eq!(
        (report.status, report.consecutive_successes, report.runs),
        (Healthy, 6, 11)
    );
    assert_eq!(report.last_error, None);
}

#[tokio::test(start_paused = true)]
async fn flapping_input_stays_degraded_instead_of_oscillating() {
    let flapping: Vec<bool> = (0..40).map(|i| i % 2 == 1).collect(); // fail, ok, fail, ok…
    let (monitor, changes) = monitor(vec![CheckSpec::new("flaky", Scripted::new(&flapping))]);
    rounds(&monitor, flapping.len()).await;
    assert_eq!(
        *changes.lock().unwrap(),
        [("flaky".into(), Healthy, Degraded)]
    );

    // Two failures then a success never reach 3 in a row either.
    let pattern: Vec<bool> = (0..30).map(|i| i % 3 == 2).collect();
    let (monitor, changes) = self::monitor(vec![CheckSpec::new("flaky", Scripted::new(&pattern))]);
    rounds(&monitor, pattern.len()).await;
    assert_eq!(
        *changes.lock().unwrap(),
        [("flaky".into(), Healthy, Degraded)]
    );
}

#[tokio::test(start_paused = true)]
async fn recovery_needs_the_successes_in_a_row() {
    // Unhealthy, then 4 successes and a failure: still unhealthy; then 5 successes: healthy.
    let script = [
        false, false, false, true, true, true, true, false, true, true, true, true, true,
    ];
    let (monitor, changes) = monitor(vec![CheckSpec::new("db", Scripted::new(&script))]);
    rounds(&monitor, script.len()).await;
    assert_eq!(
        *changes.lock().unwrap(),
        [
            ("db".into(), Healthy, Degraded),
            ("db".into(), Degraded, Unhealthy),
            ("db".into(), Unhealthy, Healthy),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_check_is_cut_at_its_timeout_and_counts_as_a_failure() {
    let hang = CustomCheck::new("never answers", || async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        true
    });
    let (monitor, changes) = monitor(vec![
        CheckSpec::new("hung", hang).timeout(Duration::from_millis(250)),
    ]);
    let start = Instant::now();
    monitor.check_all().await;
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(
        *changes.lock().unwrap(),
        [("hung".into(), Healthy, Degraded)]
    );
    let report = &monitor.report()[0];
    assert_eq!(
        report.last_error.as_deref(),
        Some("never answers did not answer within 250ms")
    );
    assert_eq!(report.latency, Some(Duration::from_millis(250)));
}

#[tokio::test(start_paused = true)]
async fn each_check_runs_on_its_own_interval_and_stages_take_the_worst_status() {
    let up = Arc::new(AtomicBool::new(true));
    let probe = Arc::clone(&up);
    let fast = CustomCheck::new("fast", move || {
        let up = probe.load(Ordering::SeqCst);
        async move { up }
    });
    let slow = CustomCheck::new("slow", || async { true });
    let (monitor, changes) = monitor(vec![
        CheckSpec::new("fast", fast)
            .interval(Duration::from_secs(1))
            .stage("load"),
        CheckSpec::new("slow", slow)
            .interval(Duration::from_secs(10))
            .stage("load"),
    ]);
    monitor.start();
    tokio::time::sleep(Duration::from_millis(29_900)).await;
    let runs: Vec<u64> = monitor.report().iter().map(|r| r.runs).collect();
    // fast: at 0..=29 s; slow: offset by half its interval (5, 15, 25 s).
    assert_eq!(runs, [30, 3]);
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(monitor.status("fast"), Some(Unhealthy));
    assert_eq!(monitor.status("slow"), Some(Healthy));
    assert_eq!(monitor.stage_status("load"), Unhealthy);
    assert_eq!(monitor.stage_status("other"), Healthy);
    monitor.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(monitor.report()[0].runs, 33, "stopped");
    assert_eq!(changes.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn changes_reach_the_bus_and_the_healer() {
    let bus = EventBus::new();
    let mut events = bus.subscribe();
    let monitor = HealthMonitor::builder()
        .events(bus.clone())
        .check(CheckSpec::new("api", Scripted::new(&[false])).stage("validation"))
        .build()
        .unwrap();
    monitor.check_all().await;
    let event = events.try_recv().expect("a health-changed event");
    match &event.kind {
        EventKind::HealthChanged { change } => {
            assert_eq!(change.stage.as_deref(), Some("validation"));
            assert_eq!((change.old_status, change.new_status), (Healthy, Degraded));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn tcp_and_command_checks_against_real_things() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = TcpCheck::new("127.0.0.1", port).unwrap();
    assert!(open.check().await.is_ok());
    drop(listener);
    let err = open.check().await.unwrap_err();
    assert!(
        err.0.starts_with(&format!("tcp 127.0.0.1:{port}: ")),
        "{err}"
    );

    assert!(CommandCheck::new(["true"]).unwrap().check().await.is_ok());
    let failing = CommandCheck::new([
        "sh",
        "-c",
        "echo starting >&2; echo 'disk full' >&2; exit 3",
    ])
    .unwrap();
    let err = failing.check().await.unwrap_err();
    assert_eq!(err.0, "command sh: disk full (`sh` exited with status 3)");
    let missing = CommandCheck::new(["/no/such/program"])
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(
        missing.0.starts_with("command /no/such/program: "),
        "{missing}"
    );
}

#[test]
fn impossible_monitors_are_rejected() {
    let zero = HealthMonitor::builder()
        .thresholds(0, 5)
        .build()
        .unwrap_err();
    assert_eq!(zero.field(), "thresholds.consecutiveFailures");
    let twice = HealthMonitor::builder()
        .check(CheckSpec::new("a", Scripted::new(&[true])))
        .check(CheckSpec::new("a", Scripted::new(&[true])))
        .build()
        .unwrap_err();
    assert_eq!(twice.field(), "checks[1].name");
    assert_eq!(TcpCheck::new("h", 0).unwrap_err().field(), "port");
    assert_eq!(
        CommandCheck::new(Vec::<String>::new()).unwrap_err().field(),
        "command"
    );
}
