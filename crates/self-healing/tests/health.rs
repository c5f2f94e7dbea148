//! The health monitor at scale, against a real listener on loopback.

use std::time::Duration;

use self_healing::health::{CheckSpec, HealthMonitor, HealthStatus, TcpCheck};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tcp_checks_finish_a_round_within_their_interval() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let interval = Duration::from_secs(10);
    let mut builder = HealthMonitor::builder().check_interval(interval);
    for i in 0..1000 {
        builder = builder.check(CheckSpec::new(
            format!("tcp-{i}"),
            TcpCheck::new("127.0.0.1", port).unwrap(),
        ));
    }
    let monitor = builder.build().unwrap();

    let started = std::time::Instant::now();
    let round_done = monitor.check_all();
    tokio::pin!(round_done);
    // Look at the process while the round is under way.
    let threads_during = tokio::select! {
        _ = &mut round_done => None,
        _ = tokio::task::yield_now() => threads(),
    };
    round_done.await;
    let round = started.elapsed();

    let report = monitor.report();
    assert_eq!(report.len(), 1000);
    assert!(
        report
            .iter()
            .all(|r| r.runs == 1 && r.status == HealthStatus::Healthy),
        "{:?}",
        report.iter().find(|r| r.status != HealthStatus::Healthy)
    );
    assert!(
        round < interval,
        "a round of 1000 checks took {round:?}, longer than the {interval:?} interval"
    );
    let slowest = report.iter().filter_map(|r| r.latency).max().unwrap();
    assert!(slowest < interval, "slowest check {slowest:?}");
    // The checks ran as tasks on the runtime's threads, not on a thread each.
    if let Some(threads) = threads_during.or_else(threads) {
        assert!(threads < 64, "{threads} threads for 1000 checks");
    }
    println!("1000 tcp checks: round {round:?}, slowest {slowest:?}, threads {threads_during:?}");
}

/// The process's thread count, where the platform tells it.
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}
