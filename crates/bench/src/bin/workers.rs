//! Runs shared by worker processes over one PostgreSQL store, on a database made for each
//! measurement on the server `MIGRATIONPILOT_TEST_POSTGRES_URL` names (`source
//! .ci/services.sh start` sets it), dropped after.
//!
//! - `scaling [--per-worker N] [--item-ms MS] [--items N]`: 1,000 items that each wait 50 ms
//!   (`sleep 0.05`; `--item-ms` and `--items` change both), a
//!   coordinating `run --no-work` and 1, then 4, `worker` processes of concurrency N (8; the
//!   stage's concurrency is 8 N, twice the four workers' room, so a worker finds its next item
//!   queued): items a second with each, and the ratio.
//! - `journal`: 20,000 item completions journaled through the store (batches of 500, as the
//!   journal writer commits them) against a raw insert of the same rows into a bare table with
//!   the same key (one `INSERT … SELECT FROM UNNEST` and one commit per batch), in the same
//!   run: rows a second each, and the ratio.
//! - `claim`: 4,000 jobs queued, then claimed by one worker in batches of 8 (a worker's room):
//!   the time each claim took, per item, median and 95th percentile.
//! - `overhead`: 4,000 items that do nothing (`true`), a coordinating `run --no-work` and four
//!   `worker` processes of concurrency 16: the CPU time the coordinating process, PostgreSQL
//!   and the workers spent per remote item (their own `rusage`; PostgreSQL's from its
//!   processes in `/proc`, its ended backends counted by its postmaster), and, last,
//!   `remote items per coordinator core: N`.
//!
//! It runs the `migrationpilot` binary next to its own (build both with `--release`):
//!
//! cargo build --release -p migrationpilot && cargo run --release -p bench --features postgres --bin workers -- scaling
//! cargo run --release -p bench --features postgres --bin workers -- journal
//! cargo run --release -p bench --features postgres --bin workers -- claim
//! cargo build --release -p migrationpilot && cargo run --release -p bench --features postgres --bin workers -- overhead

use std::sync::Arc;
use std::time::{Duration, Instant};

use migrationpilot::store::work::{Filter, NewJob, Role, RunFile, WorkQueue};
use migrationpilot::store::{Journal, PostgresStore, TestDatabase};
use self_healing::event::{EventBus, EventKind, RunId};

#[tokio::main]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    match what.as_str() {
        "scaling" => scaling().await,
        "journal" => journal().await,
        "claim" => claim().await,
        "overhead" => overhead().await,
        _ => {
            eprintln!("usage: workers scaling|journal|claim|overhead");
            std::process::exit(2);
        }
    }
}

async fn database() -> TestDatabase {
    TestDatabase::create()
        .await
        .expect("MIGRATIONPILOT_TEST_POSTGRES_URL names the server to measure on")
}

const ITEMS: usize = 1_000;

/// The number after `flag` on the command line, or `default`.
fn option(flag: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |n| {
            n.parse()
                .unwrap_or_else(|_| panic!("{flag} takes a number"))
        })
}

async fn scaling() {
    let room = option("--per-worker", 8);
    let item_ms = option("--item-ms", 50);
    let count = option("--items", ITEMS);
    let binary = bench::migrationpilot_binary("cargo build --release -p migrationpilot");
    let dir = tempfile::tempdir().unwrap();
    let items: Vec<String> = (0..count).map(|i| format!("item-{i:04}")).collect();
    std::fs::write(dir.path().join("items.txt"), items.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "project: scaling\nstages:\n  - name: wait\n    command: [\"sleep\", \"{}\"]\n    items: {{ file: items.txt }}\n    concurrency: {}\n",
            item_ms as f64 / 1000.0,
            8 * room
        ),
    )
    .unwrap();
    println!(
        "{count} items of {item_ms} ms each, workers of concurrency {room}, stage concurrency {}, coordinator --no-work",
        8 * room
    );
    let mut rates = Vec::new();
    for workers in [1, 4] {
        let database = database().await;
        let spawn = |args: &[&str]| spawn(&binary, dir.path(), &database.url, args);
        // The store's schema is made before anything is timed.
        PostgresStore::open(&database.url).await.unwrap();
        let concurrency = room.to_string();
        let mut running: Vec<_> = (0..workers)
            .map(|_| spawn(&["worker", "--concurrency", &concurrency]))
            .collect();
        let started = Instant::now();
        let status = spawn(&["run", "pipeline.yaml", "--no-work"])
            .wait()
            .unwrap();
        let took = started.elapsed();
        assert!(status.success(), "the run failed");
        for worker in &mut running {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        let rate = count as f64 / took.as_secs_f64();
        println!(
            "{workers} worker(s): {:.2} s, {rate:.0} items/s",
            took.as_secs_f64()
        );
        rates.push(rate);
    }
    println!("4 workers / 1 worker: {:.2}×", rates[1] / rates[0]);
}

/// `migrationpilot ARGS` in `dir` on the store `url`, its output discarded.
fn spawn(
    binary: &std::path::Path,
    dir: &std::path::Path,
    url: &str,
    args: &[&str],
) -> std::process::Child {
    std::process::Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env("MIGRATIONPILOT_STORE", url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

const ROWS: usize = 20_000;
const BATCH: usize = 500;

async fn journal() {
    let database = database().await;
    let store = PostgresStore::open(&database.url).await.unwrap();
    let bus = EventBus::new();
    let run = RunId::new("run-journal");
    let started = bus.publish(
        Some(&run),
        EventKind::RunStarted {
            pipeline: "p".into(),
            stages: vec!["load".into()],
        },
    );
    store.append("p", &[started]).await.unwrap();
    let batches: Vec<Vec<_>> = (0..ROWS / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    bus.publish(
                        Some(&run),
                        EventKind::ItemSucceeded {
                            stage: "load".into(),
                            item: format!("item-{:06}", b * BATCH + i).into(),
                            attempts: 1,
                            duration: Duration::from_millis(7),
                        },
                    )
                })
                .collect()
        })
        .collect();
    let t = Instant::now();
    for batch in &batches {
        store.append("p", batch).await.unwrap();
    }
    let journaled = ROWS as f64 / t.elapsed().as_secs_f64();

    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    sqlx::query(
        "CREATE TABLE raw_items (run TEXT, stage TEXT, item TEXT, status TEXT, attempts BIGINT,
         finished_ms BIGINT, duration_ms DOUBLE PRECISION, PRIMARY KEY (run, stage, item))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let t = Instant::now();
    for b in 0..ROWS / BATCH {
        // The fastest plain insert: one array per column, one statement per batch.
        let items: Vec<String> = (0..BATCH)
            .map(|i| format!("item-{:06}", b * BATCH + i))
            .collect();
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO raw_items (run, stage, item, status, attempts, finished_ms, duration_ms)
             SELECT 'run-journal', 'load', item, 'succeeded', 1, 1700000000000, 7.0
             FROM UNNEST($1::text[]) AS item",
        )
        .bind(&items)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let raw = ROWS as f64 / t.elapsed().as_secs_f64();
    pool.close().await;
    println!("{ROWS} item completions in batches of {BATCH}:");
    println!("journal   {journaled:>9.0} rows/s");
    println!("raw       {raw:>9.0} rows/s");
    println!("journal / raw: {:.2}", journaled / raw);
}

const JOBS: usize = 4_000;
const ROOM: usize = 8;

async fn claim() {
    let database = database().await;
    let store = Arc::new(PostgresStore::open(&database.url).await.unwrap());
    let queue: &dyn WorkQueue = store.as_ref();
    let jobs: Vec<NewJob> = (0..JOBS)
        .map(|i| NewJob {
            run: "run-claim".into(),
            project: "p".into(),
            stage: "load".into(),
            item: Some(format!("item-{i:05}")),
            key: None,
            attempt: 1,
            role: Role::Command,
            prefer: None,
        })
        .collect();
    // A job of a run whose file is not kept is not claimable.
    let file = RunFile {
        project: "p".into(),
        name: "pipeline.yaml".into(),
        text: String::new(),
    };
    queue.keep_file("run-claim", &file).await.unwrap();
    for chunk in jobs.chunks(500) {
        queue.queue_jobs(chunk).await.unwrap();
    }
    let filter = Filter::default();
    let mut per_item = Vec::new();
    loop {
        let t = Instant::now();
        let claimed = queue
            .claim_jobs("bench", &filter, ROOM, Duration::from_secs(60))
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        per_item.push(t.elapsed().as_secs_f64() * 1000.0 / claimed.len() as f64);
    }
    per_item.sort_by(f64::total_cmp);
    let at = |q: f64| per_item[((per_item.len() - 1) as f64 * q) as usize];
    println!(
        "{JOBS} jobs claimed {ROOM} at a time: {:.3} ms per item at the median, {:.3} ms at p95",
        at(0.5),
        at(0.95)
    );
}

/// Items of the overhead measurement.
const REMOTE_ITEMS: usize = 4_000;

// Every child is reaped by `wait4`, which also gives its CPU time; clippy cannot see that.
#[allow(clippy::zombie_processes)]
async fn overhead() {
    let binary = bench::migrationpilot_binary("cargo build --release -p migrationpilot");
    let dir = tempfile::tempdir().unwrap();
    let items: Vec<String> = (0..REMOTE_ITEMS).map(|i| format!("item-{i:05}")).collect();
    std::fs::write(dir.path().join("items.txt"), items.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "project: overhead\nstages:\n  - name: nothing\n    command: [\"true\"]\n    items: { file: items.txt }\n    concurrency: 128\n",
    )
    .unwrap();
    let database = database().await;
    PostgresStore::open(&database.url).await.unwrap();
    let spawn = |args: &[&str]| spawn(&binary, dir.path(), &database.url, args);
    let postgres_before = postgres_cpu();
    let workers: Vec<_> = (0..4)
        .map(|_| spawn(&["worker", "--concurrency", "16"]))
        .collect();
    let started = Instant::now();
    let coordinator = spawn(&["run", "pipeline.yaml", "--no-work"]);
    let (status, coordinating) = wait_with_cpu(coordinator.id());
    let took = started.elapsed();
    assert!(status == 0, "the run failed: status {status}");
    let mut working = Duration::ZERO;
    for worker in workers {
        // SAFETY: `kill` on a child's pid this process has not waited for yet.
        unsafe { libc::kill(worker.id() as libc::pid_t, libc::SIGKILL) };
        working += wait_with_cpu(worker.id()).1;
    }
    // Their backends end once they are gone; the postmaster counts them when it reaps them.
    std::thread::sleep(Duration::from_millis(500));
    let postgres = postgres_cpu().saturating_sub(postgres_before);
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / REMOTE_ITEMS as f64;
    println!(
        "{REMOTE_ITEMS} items that do nothing, 4 workers of concurrency 16, coordinator --no-work: {:.2} s, {:.0} items/s",
        took.as_secs_f64(),
        REMOTE_ITEMS as f64 / took.as_secs_f64()
    );
    println!(
        "CPU per remote item: coordinator {:.0} µs, PostgreSQL {:.0} µs, workers {:.0} µs (their commands included)",
        per(coordinating),
        per(postgres),
        per(working)
    );
    println!(
        "remote items per coordinator core: {:.0}",
        REMOTE_ITEMS as f64 / coordinating.as_secs_f64()
    );
}

/// Waits for the child `pid`; its exit status and the CPU time (user and system) it used.
fn wait_with_cpu(pid: u32) -> (i32, Duration) {
    let mut status = 0;
    // SAFETY: zeroed `rusage` is a valid value for `wait4` to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with pointers to live locals.
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid as libc::pid_t, "wait4 on {pid}");
    let cpu = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, cpu(usage.ru_utime) + cpu(usage.ru_stime))
}

/// The CPU time PostgreSQL's processes have used: each live one's own, and its ended backends'
/// as the postmaster (the one whose parent is not `postgres`) counts its reaped children.
fn postgres_cpu() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let stats: Vec<(u32, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            Some((
                pid,
                std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
            ))
        })
        .collect();
    let comm = |stat: &str| {
        stat.split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(c, _)| c.to_owned())
    };
    let postgres: Vec<u32> = stats
        .iter()
        .filter(|(_, stat)| comm(stat).is_some_and(|c| c.starts_with("postgres")))
        .map(|(pid, _)| *pid)
        .collect();
    for (pid, stat) in &stats {
        if !postgres.contains(pid) {
            continue;
        }
        // The fields after the command: state is 3rd; utime 14th, stime 15th, cutime 16th,
        // cstime 17th (1-based, counting from pid).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let parent = field(4) as u32;
        total += field(14) + field(15);
        if !postgres.contains(&parent) {
            total += field(16) + field(17);
        }
    }
    Duration::from_secs_f64(total as f64 / ticks)
}
