//! Journal throughput: item completions per second into SQLite.
//!
//! - `group-commit`: the store's `append` with batches of 512 events, which is what the journal
//!   writer does when events arrive faster than a commit takes;
//! - `raw-batched-insert`: the same rows by one bare multi-row INSERT per transaction of 512
//!   (the store's SQLite dialect takes up to 2,000 a statement): the practical limit;
//! - `transaction-per-item`: the store's `append` with one event at a time.
//!
//! cargo bench -p bench --bench journal

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use migrationpilot::store::{Journal, SqliteStore};
use self_healing::event::{Event, EventKind, RunId};
use sqlx::Connection;

const ITEMS: u64 = 2048;
const BATCH: usize = 512;

/// Completions of fresh items (a counter keeps keys unique across iterations).
fn completions(next: &AtomicU64, n: u64) -> Vec<Arc<Event>> {
    let run = RunId::new("bench-run");
    (0..n)
        .map(|_| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            Arc::new(Event {
                seq: i,
                at: SystemTime::now(),
                run: Some(run.clone()),
                kind: EventKind::ItemSucceeded {
                    stage: "load".into(),
                    item: format!("legacy/PROGRAM{i:08}.cbl").into(),
                    attempts: 1,
                    duration: Duration::from_millis(12),
                },
            })
        })
        .collect()
}

fn journal(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime
        .block_on(SqliteStore::open(&dir.path().join("journal.db")))
        .unwrap();
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(10);

    group.bench_function("group-commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let events = completions(&next, ITEMS);
                let start = Instant::now();
                runtime.block_on(async {
                    for batch in events.chunks(BATCH) {
                        store.append("bench", batch).await.unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });

    let raw_url = format!("sqlite://{}?mode=rwc", dir.path().join("raw.db").display());
    let mut raw = runtime.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&raw_url).await.unwrap();
        sqlx::raw_sql(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE items (run TEXT, stage TEXT, item TEXT, status TEXT, attempts INTEGER, finished_ms INTEGER,
             PRIMARY KEY (run, stage, item));",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c
    });
    group.bench_function("raw-batched-insert", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let events = completions(&next, ITEMS);
                let start = Instant::now();
                runtime.block_on(async {
                    for batch in events.chunks(BATCH) {
                        let mut tx = raw.begin().await.unwrap();
                        for rows in batch.chunks(2000) {
                            let mut insert =
                                sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO items ");
                            insert.push_values(rows, |mut row, event| {
                                let EventKind::ItemSucceeded {
                                    stage,
                                    item,
                                    attempts,
                                    ..
                                } = &event.kind
                                else {
                                    unreachable!()
                                };
                                row.push_bind("bench-run")
                                    .push_bind(stage.to_string())
                                    .push_bind(item.to_string())
                                    .push_bind("succeeded")
                                    .push_bind(i64::from(*attempts))
                                    .push_bind(0i64);
                            });
                            insert.build().execute(&mut *tx).await.unwrap();
                        }
                        tx.commit().await.unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });

    group.throughput(Throughput::Elements(ITEMS / 16));
    group.bench_function("transaction-per-item", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let events = completions(&next, ITEMS / 16);
                let start = Instant::now();
                runtime.block_on(async {
                    for event in &events {
                        store
                            .append("bench", std::slice::from_ref(event))
                            .await
                            .unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = journal
}
criterion_main!(benches);
