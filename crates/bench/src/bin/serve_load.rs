//! `migrationpilot serve` under load, as a separate process over a SQLite store made here.
//!
//! - `scrape`: 50 projects × 20 stages journaled (each stage with items, failed attempts,
//!   healing decisions and the collector's samples), then 200 sequential `GET /metrics`: the
//!   time each answer took, client side, and the exposition's size.
//! - `sse [--seconds N]` (default 600): 100 clients on `/api/v1/events/stream` while runs are
//!   journaled at about 200 events a second; `serve`'s resident memory every 30 s, how many
//!   messages each client received, and that each received every entry the journal holds.
//! - `slow [--seconds N] [-- FLAGS]` (default 60): `serve` (with its default limits, or the
//!   `FLAGS` given after `--`) held at by 500 clients that connect and send nothing and 50 that
//!   send a request head a byte a second, each connecting again a second after the server lets
//!   it go (as an adversary would); meanwhile `GET /healthz` on a fresh connection every 50 ms:
//!   its latency (p99 must stay under 50 ms, none may fail), `serve`'s resident memory every
//!   5 s (it must stay flat), and how often the server let an attacker go.
//!
//! It runs the `migrationpilot` binary next to its own (build both with `--release`):
//!
//! cargo build --release -p migrationpilot && cargo run --release -p bench --bin serve_load -- scrape
//! cargo build --release -p migrationpilot && cargo run --release -p bench --bin serve_load -- sse
//! cargo build --release -p migrationpilot && cargo run --release -p bench --bin serve_load -- slow

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use migrationpilot::store::{Journal, Queries, SqliteStore};
use self_healing::event::{
    ActionKind, EventBus, EventKind, MetricSample, Outcome, RunId, TriggerKind, TriggerMatch,
};
use self_healing::healing::HealingRecord;
use self_healing::{Event, RunStatus, StageError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const PROJECTS: usize = 50;
const STAGES: usize = 20;

/// One run of `project`: every stage with `items` items, one failed attempt and one healing
/// decision per stage, a sample tick per stage.
fn a_run(bus: &EventBus, project: usize, run: usize, items: usize) -> Vec<Arc<Event>> {
    let id = RunId::new(format!("run-{project}-{run}"));
    let stages: Vec<Arc<str>> = (0..STAGES)
        .map(|s| Arc::from(format!("stage-{s:02}")))
        .collect();
    let mut events = vec![bus.publish(
        Some(&id),
        EventKind::RunStarted {
            pipeline: format!("pipeline-{project}").into(),
            stages: stages.clone(),
        },
    )];
    for stage in &stages {
        let publish = |kind| bus.publish(Some(&id), kind);
        events.push(publish(EventKind::StageStarted {
            stage: Arc::clone(stage),
            concurrency: 4,
        }));
        events.push(publish(EventKind::AttemptFailed {
            stage: Arc::clone(stage),
            item: Some("item-0".into()),
            attempt: 1,
            duration: Duration::from_millis(12),
            error: StageError::new("read ECONNRESET"),
        }));
        events.push(publish(EventKind::HealingDecision {
            record: Box::new(HealingRecord {
                at: SystemTime::now(),
                run: Some(id.clone()),
                stage: Some(Arc::clone(stage)),
                item: Some("item-0".into()),
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
                budget_wait: None,
            }),
        }));
        events.push(publish(EventKind::HealingApplied {
            stage: Arc::clone(stage),
            item: Some("item-0".into()),
            action: ActionKind::Retry,
            detail: "attempt 2 of 3".into(),
        }));
        for item in 0..items {
            events.push(publish(EventKind::ItemSucceeded {
                stage: Arc::clone(stage),
                item: format!("item-{item}").into(),
                attempts: 1 + u32::from(item == 0),
                duration: Duration::from_millis(10),
            }));
        }
        events.push(publish(EventKind::MetricsSampled {
            samples: ["errorRate", "latencyP95", "throughput"]
                .iter()
                .map(|metric| MetricSample {
                    stage: Some(Arc::clone(stage)),
                    metric: (*metric).into(),
                    value: 0.05,
                })
                .collect(),
        }));
        events.push(publish(EventKind::StageSucceeded {
            stage: Arc::clone(stage),
            duration: Duration::from_millis(200),
            items: items as u64,
        }));
    }
    events.push(bus.publish(
        Some(&id),
        EventKind::RunFinished {
            status: RunStatus::Succeeded,
            duration: Duration::from_secs(4),
            error: None,
        },
    ));
    events
}

/// Starts `migrationpilot serve` over `store_url`; its pid and address.
async fn serve(store_url: &str) -> (tokio::process::Child, String) {
    serve_with(store_url, &[]).await
}

/// [`serve`] with more flags.
async fn serve_with(store_url: &str, flags: &[String]) -> (tokio::process::Child, String) {
    let binary = bench::migrationpilot_binary("cargo build --release -p migrationpilot");
    let mut child = tokio::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(flags)
        .env("MIGRATIONPILOT_STORE", store_url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut lines = BufReader::new(child.stdout.take().expect("its stdout")).lines();
    let line = lines
        .next_line()
        .await
        .expect("serve prints")
        .expect("a line");
    let at = line.find("http://").expect("an address") + "http://".len();
    let address: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    (child, address.trim_end_matches(':').to_owned())
}

/// One `GET`, the whole answer read; its status line and body length.
async fn get(address: &str, path: &str) -> (String, usize) {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("reads");
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("").to_owned();
    (status, answer.len())
}

async fn wait_ready(address: &str) {
    loop {
        if get(address, "/readyz").await.0.contains("200") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The facts an entry carries: one, or a tick's samples (which a reader may see in one entry or,
/// read while the tick was being written, in two).
fn facts(entry: &serde_json::Value) -> u64 {
    match entry["kind"].as_str() {
        Some("metrics-sampled") => entry["event"]["samples"]
            .as_array()
            .map_or(0, |s| s.len() as u64),
        _ => 1,
    }
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn scrape() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("journal.db");
    let store = SqliteStore::open(&path).await.expect("a store");
    let bus = EventBus::new();
    for project in 0..PROJECTS {
        let events = a_run(&bus, project, 0, 10);
        store
            .append(&format!("project-{project:02}"), &events)
            .await
            .expect("journaled");
    }
    let (child, address) = serve(&format!("sqlite://{}", path.display())).await;
    wait_ready(&address).await;
    let (_, size) = get(&address, "/metrics").await;
    let mut times = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let (status, _) = get(&address, "/metrics").await;
        times.push(started.elapsed());
        assert!(status.contains("200"), "{status}");
    }
    times.sort();
    println!("projects × stages  {PROJECTS} × {STAGES}");
    println!("exposition         {:.0} KiB", size as f64 / 1024.0);
    println!(
        "GET /metrics       median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (200 requests)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.9).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "serve RSS          {:.1} MB",
        rss_of(child.id().unwrap_or(0)) as f64 / 1e6
    );
}

async fn sse(seconds: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("journal.db");
    let store = SqliteStore::open(&path).await.expect("a store");
    let (child, address) = serve(&format!("sqlite://{}", path.display())).await;
    let pid = child.id().unwrap_or(0);
    wait_ready(&address).await;
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..100).map(|_| AtomicU64::new(0)).collect());
    let connected = Arc::new(AtomicU64::new(0));
    for client in 0..100 {
        let address = address.clone();
        let received = Arc::clone(&received);
        let connected = Arc::clone(&connected);
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.expect("connects");
            let request = format!(
                "GET /api/v1/events/stream HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.expect("sends");
            let mut lines = BufReader::new(stream).lines();
            // The answer's head comes once the server has placed the client in the journal.
            lines.next_line().await.expect("an answer");
            connected.fetch_add(1, Ordering::Relaxed);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(data) = line.strip_prefix("data:") {
                    let entry: serde_json::Value =
                        serde_json::from_str(data.trim()).expect("an entry");
                    received[client].fetch_add(facts(&entry), Ordering::Relaxed);
                }
            }
        });
    }
    while connected.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bus = EventBus::new();
    let started = Instant::now();
    let mut produced = 0usize;
    let mut next_sample = Duration::ZERO;
    let mut run = 0;
    println!(
        "{:>6}  {:>10}  {:>12}  {:>16}",
        "t (s)", "serve RSS", "journaled", "facts/client"
    );
    while started.elapsed() < Duration::from_secs(seconds) {
        if started.elapsed() >= next_sample {
            let counts: Vec<u64> = received.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            println!(
                "{:>6}  {:>7.1} MB  {:>12}  {:>7}–{:<7}",
                started.elapsed().as_secs(),
                rss_of(pid) as f64 / 1e6,
                produced,
                counts.iter().min().unwrap_or(&0),
                counts.iter().max().unwrap_or(&0)
            );
            next_sample += Duration::from_secs(30);
        }
        // One small run (20 stages × 2 items ≈ 200 events) a second, in batches of a stage.
        let events = a_run(&bus, run % PROJECTS, run, 2);
        run += 1;
        for batch in events.chunks(10) {
            store
                .append(&format!("project-{:02}", (run - 1) % PROJECTS), batch)
                .await
                .expect("journaled");
            produced += batch.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts: Vec<u64> = received.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!(
        "end     {:>7.1} MB  {:>12}  {:>7}–{:<7}",
        rss_of(pid) as f64 / 1e6,
        produced,
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0)
    );
    // What the journal holds as entries (a tick's samples of one moment are one entry).
    let mut cursor = migrationpilot::store::JournalCursor::default();
    let mut entries = 0;
    loop {
        let (page, next) = store.journal_since(cursor, 5000).await.expect("readable");
        if page.is_empty() && next == cursor {
            break;
        }
        for entry in &page {
            entries += facts(&serde_json::to_value(entry).expect("serializable"));
        }
        cursor = next;
    }
    println!("facts in the journal: {entries}; every client received all of them, none twice");
    assert!(
        counts.iter().all(|c| *c == entries),
        "a client missed or repeated entries"
    );
}

/// Clients that connect and send nothing.
const IDLE_CLIENTS: usize = 500;
/// Clients that send a request head a byte a second.
const SLOW_CLIENTS: usize = 50;
/// How long an attacker waits before connecting again once the server let it go.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What the attackers count: connections they hold now, those that connected at least once,
/// and how often the server let one go.
#[derive(Default)]
struct Attack {
    held: AtomicU64,
    started: AtomicU64,
    let_go: AtomicU64,
}

/// An attacker: connects, holds the connection (sending its head a byte a second when
/// `dribble`) until the server closes it, counts that, and connects again.
async fn attacker(address: String, dribble: bool, attack: Arc<Attack>) {
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nX-Slow: ");
    let mut first = true;
    loop {
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            tokio::time::sleep(RECONNECT_AFTER).await;
            continue;
        };
        attack.held.fetch_add(1, Ordering::Relaxed);
        if std::mem::take(&mut first) {
            attack.started.fetch_add(1, Ordering::Relaxed);
        }
        let mut buf = [0u8; 512];
        if dribble {
            let mut bytes = head.bytes().chain(std::iter::repeat(b'x'));
            loop {
                let byte = bytes.next().expect("endless");
                tokio::select! {
                    read = stream.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if stream.write_all(&[byte]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        } else {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        attack.held.fetch_sub(1, Ordering::Relaxed);
        attack.let_go.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

async fn slow(seconds: u64, flags: &[String]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("journal.db");
    let store = SqliteStore::open(&path).await.expect("a store");
    let bus = EventBus::new();
    for project in 0..5 {
        let events = a_run(&bus, project, 0, 10);
        store
            .append(&format!("project-{project:02}"), &events)
            .await
            .expect("journaled");
    }
    let (child, address) = serve_with(&format!("sqlite://{}", path.display()), flags).await;
    let pid = child.id().unwrap_or(0);
    wait_ready(&address).await;
    let before = rss_of(pid);
    let attack = Arc::new(Attack::default());
    for i in 0..IDLE_CLIENTS + SLOW_CLIENTS {
        tokio::spawn(attacker(
            address.clone(),
            i >= IDLE_CLIENTS,
            Arc::clone(&attack),
        ));
    }
    // Every attacker has connected once (the server may have let some go already).
    let attackers = (IDLE_CLIENTS + SLOW_CLIENTS) as u64;
    while attack.started.load(Ordering::Relaxed) < attackers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "serve {}; {IDLE_CLIENTS} idle and {SLOW_CLIENTS} byte-a-second clients connected; serve RSS {:.1} MB before them",
        if flags.is_empty() {
            "with its default limits".to_owned()
        } else {
            flags.join(" ")
        },
        before as f64 / 1e6
    );
    println!(
        "{:>6}  {:>10}  {:>14}  {:>8}  {:>14}",
        "t (s)", "serve RSS", "attackers held", "let go", "healthz p99"
    );
    let started = Instant::now();
    let mut times = Vec::new();
    let mut window = Vec::new();
    let mut failures = Vec::new();
    let mut rss = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut probe = tokio::time::interval(Duration::from_millis(50));
    while started.elapsed() < Duration::from_secs(seconds) {
        probe.tick().await;
        let asked = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), get(&address, "/healthz")).await;
        let took = asked.elapsed();
        match answer {
            Ok((status, _)) if status.contains(" 200 ") => {}
            Ok((status, _)) => failures.push(status),
            Err(_) => failures.push("no answer within 5 s".to_owned()),
        }
        times.push(took);
        window.push(took);
        if started.elapsed() >= next_sample {
            window.sort();
            let now = rss_of(pid);
            rss.push(now);
            println!(
                "{:>6}  {:>7.1} MB  {:>14}  {:>8}  {:>11.2} ms",
                started.elapsed().as_secs(),
                now as f64 / 1e6,
                attack.held.load(Ordering::Relaxed),
                attack.let_go.load(Ordering::Relaxed),
                percentile(&window, 0.99).as_secs_f64() * 1e3
            );
            window.clear();
            next_sample += Duration::from_secs(5);
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = percentile(&times, 0.99);
    println!(
        "GET /healthz       median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests, {} failed)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(p99),
        ms(times[times.len() - 1]),
        times.len(),
        failures.len()
    );
    let (low, high) = (
        rss.iter().copied().min().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
    );
    println!(
        "serve RSS          {:.1} MB to {:.1} MB under attack (first {:.1} MB, last {:.1} MB)",
        low as f64 / 1e6,
        high as f64 / 1e6,
        rss.first().copied().unwrap_or(0) as f64 / 1e6,
        rss.last().copied().unwrap_or(0) as f64 / 1e6
    );
    println!(
        "attackers let go   {} times in {} s",
        attack.let_go.load(Ordering::Relaxed),
        seconds
    );
    assert!(failures.is_empty(), "/healthz failed: {failures:?}");
    assert!(p99 < Duration::from_millis(50), "/healthz p99 {p99:?}");
    // Flat: the last sample within 20% (or 5 MB) of the first under attack.
    let (first, last) = (
        rss.first().copied().unwrap_or(0),
        rss.last().copied().unwrap_or(0),
    );
    assert!(
        last <= first + (first / 5).max(5_000_000),
        "serve's memory grew from {first} to {last} bytes"
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("scrape") => scrape().await,
        Some("sse") => {
            let seconds = args
                .iter()
                .position(|a| a == "--seconds")
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(600);
            sse(seconds).await;
        }
        Some("slow") => {
            let seconds = args
                .iter()
                .position(|a| a == "--seconds")
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(60);
            // Anything after `--` goes to `serve` (`-- --max-connections 1024`).
            let flags: Vec<String> = args
                .iter()
                .position(|a| a == "--")
                .map_or(Vec::new(), |i| args[i + 1..].to_vec());
            slow(seconds, &flags).await;
        }
        _ => eprintln!(
            "usage: serve_load scrape | sse [--seconds N] | slow [--seconds N] [-- SERVE FLAGS]"
        ),
    }
}
