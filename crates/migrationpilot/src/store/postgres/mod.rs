//! The shared store: one PostgreSQL database, with versioned migrations, that processes on
//! several machines journal into and steer through.
//!
//! Durability is the server's: each journal batch is one transaction, committed before the run
//! goes on. The queries are the store's SQL in `sql/`, the SQLite store's text for text,
//! compiled here for PostgreSQL; this folder holds the schema, the [`Dialect`] and the work
//! queue (`queue.rs`). Where PostgreSQL lets writers run side by side, locks keep what SQLite's
//! single writer gives for free:
//!
//! - journal batches take one advisory lock, so positions (ids and row numbers) commit in the
//!   order they were handed out and a reader following the journal never steps over one that
//!   is still being written;
//! - `claim_run` locks the project's row, so two processes cannot both take a project;
//! - claims of queued requests and of owed deliveries skip rows another claimant holds
//!   (`FOR UPDATE SKIP LOCKED`), so each is taken once;
//! - migrations run under an advisory lock, so two processes opening a fresh database do not
//!   race.

mod queue;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Transaction};

use self_healing::BoxFuture;

use super::dialect::Dialect;
use super::projection::{ItemDone, StatementBound};
use super::work::WorkQueue;
use super::{Access, Result, StoreError};

/// Schema versions, applied in order; the store records how far it got. The first is the shape
/// SQLite's four migrations reach, in PostgreSQL's dialect; the second adds the work queue.
///
/// Beyond SQLite's columns: `rowid` on runs, items, samples and logs is the `BIGSERIAL` that
/// stands for SQLite's own row number (the order rows were written in), under its name so one
/// SQL text reads both (it was `seq` until version 3). Names that are listed in order
/// (`projects.name`, `overrides.strategy`, `checks.name`, `health.check_name`, `stages.stage`,
/// `deliveries.project`) compare byte by byte (`COLLATE "C"`), as SQLite's `BINARY` does,
/// whatever the database's own collation. A run's id keeps the database's collation, in `runs`
/// and wherever a table names its run, so that joins on it can use the indexes of both sides.
/// An attempt's output is `BYTEA`: PostgreSQL's `TEXT` cannot hold the NUL bytes a process may
/// write.
const MIGRATIONS: [&str; 3] = [
    r#"
CREATE TABLE projects (
    name TEXT COLLATE "C" PRIMARY KEY,
    healing_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    reason TEXT,
    updated_ms BIGINT,
    channels TEXT
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL,
    project TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    error TEXT,
    owner TEXT,
    heartbeat_ms BIGINT,
    stages TEXT,
    strategies TEXT,
    rollback_stage TEXT,
    rollback_error TEXT,
    metrics TEXT
);
CREATE INDEX runs_by_project ON runs (project, started_ms, seq);
CREATE TABLE stages (
    run TEXT NOT NULL,
    stage TEXT COLLATE "C" NOT NULL,
    status TEXT NOT NULL,
    items BIGINT NOT NULL,
    finished_ms BIGINT NOT NULL,
    PRIMARY KEY (run, stage)
);
CREATE TABLE items (
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    finished_ms BIGINT NOT NULL,
    error TEXT,
    duration_ms DOUBLE PRECISION,
    seq BIGSERIAL NOT NULL UNIQUE,
    PRIMARY KEY (run, stage, item)
);
CREATE TABLE healing (
    id BIGSERIAL PRIMARY KEY,
    project TEXT NOT NULL,
    run TEXT,
    at_ms BIGINT NOT NULL,
    stage TEXT,
    strategy TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX healing_by_project ON healing (project, at_ms);
CREATE TABLE health (
    project TEXT NOT NULL,
    check_name TEXT COLLATE "C" NOT NULL,
    stage TEXT,
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    checked_ms BIGINT,
    last_error TEXT,
    PRIMARY KEY (project, check_name)
);
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    project TEXT,
    run TEXT,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    item TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run, id);
CREATE TABLE overrides (
    project TEXT NOT NULL,
    strategy TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (project, strategy)
);
CREATE TABLE control (
    id BIGSERIAL PRIMARY KEY,
    project TEXT NOT NULL,
    action TEXT NOT NULL,
    stage TEXT NOT NULL,
    requested_ms BIGINT NOT NULL,
    claimed_ms BIGINT,
    claimed_by TEXT
);
CREATE INDEX control_pending ON control (project, claimed_ms);
CREATE TABLE compensations (
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    hook BOOLEAN NOT NULL,
    failed BOOLEAN NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (run, stage, hook, item)
);
CREATE TABLE checks (
    project TEXT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    stage TEXT,
    target TEXT NOT NULL,
    PRIMARY KEY (project, name)
);
CREATE TABLE samples (
    seq BIGSERIAL PRIMARY KEY,
    run TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    stage TEXT,
    metric TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL
);
CREATE INDEX samples_run ON samples (run, at_ms);
CREATE TABLE logs (
    seq BIGSERIAL PRIMARY KEY,
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT,
    attempt BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    stdout BYTEA NOT NULL,
    stderr BYTEA NOT NULL,
    stdout_cut BIGINT NOT NULL,
    stderr_cut BIGINT NOT NULL
);
CREATE INDEX logs_run ON logs (run, stage, item, attempt);
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alerts_project ON alerts (project, status, updated_ms);
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    project TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    channel TEXT NOT NULL,
    about TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    delivered_ms BIGINT,
    taken_by TEXT,
    taken_ms BIGINT
);
CREATE INDEX deliveries_owed ON deliveries (status, project, id);
CREATE INDEX deliveries_alert ON deliveries (fingerprint, id);
"#,
    r#"
CREATE TABLE run_files (
    run TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    digest TEXT GENERATED ALWAYS AS (md5(name || E'\n' || text)) STORED
);
CREATE TABLE work (
    id BIGSERIAL PRIMARY KEY,
    run TEXT NOT NULL,
    project TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT,
    key TEXT,
    attempt BIGINT NOT NULL,
    role TEXT NOT NULL,
    prefer TEXT,
    status TEXT NOT NULL DEFAULT 'queued',
    worker TEXT,
    lease_ms BIGINT,
    created_ms BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    finished_ms BIGINT,
    result TEXT
);
CREATE INDEX work_open ON work (id) WHERE status IN ('queued', 'leased');
CREATE INDEX work_run ON work (run, status);
"#,
    r#"
ALTER TABLE runs RENAME COLUMN seq TO rowid;
ALTER TABLE items RENAME COLUMN seq TO rowid;
ALTER TABLE samples RENAME COLUMN seq TO rowid;
ALTER TABLE logs RENAME COLUMN seq TO rowid;
ALTER TABLE deliveries ALTER COLUMN project TYPE TEXT COLLATE "C";
"#,
];

/// The advisory lock migrations run under (`mpmigrat`).
const MIGRATION_LOCK: i64 = 0x6d70_6d69_6772_6174;

/// The advisory lock journal writes run under (`mpjourna`): positions commit in order.
const JOURNAL_LOCK: i64 = 0x6d70_6a6f_7572_6e61;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Connections that claim and finish jobs, opened when first needed. They commit without
    /// waiting for the disk: what a crash of the server could lose is a claim, a result, a
    /// renewal or a cancellation, and each only makes a job run again (delivery is at least
    /// once). Queued jobs and the journal, which must not be lost, commit durably on `pool`.
    work: PgPool,
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://user:password@host/database`, with
    /// libpq's parameters such as `sslmode`) and migrates it. Errors name the URL without its
    /// password.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, Access::Create).await
    }

    /// Connects as `access` allows: [`Access::Create`] migrates the database (an empty one
    /// becomes a store); the others need a store there already, at this version's schema, and
    /// [`Access::ReadOnly`] reads in read-only transactions.
    pub async fn open_with(url: &str, access: Access) -> Result<Self> {
        let shown = self_healing::health::redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Unusable(format!("{shown} is not a PostgreSQL connection URL: {e}"))
        })?;
        let mut options = options.application_name("migrationpilot");
        if access == Access::ReadOnly {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        let work = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unusable(format!(
                    "cannot connect to the PostgreSQL store {shown}: {e}"
                ))
            })?;
        let store = PostgresStore { pool, work };
        let ready = match access {
            Access::Create => store.migrate().await,
            Access::Existing | Access::ReadOnly => store.check_schema().await,
        };
        ready.map_err(|error| match error {
            StoreError::Unusable(why) => StoreError::Unusable(format!("{shown}: {why}")),
            other => other,
        })?;
        Ok(store)
    }
}

impl Dialect for PostgresStore {
    type Db = Postgres;

    const MIGRATIONS: &'static [&'static str] = &MIGRATIONS;
    /// 200 completions, and no more than 12 KB of values: a statement then fits one TLS record
    /// (16 KB). One that does not is written as a full record and a small one, and on a
    /// connection without `TCP_NODELAY` (sqlx sets none) the small one waits for the server's
    /// delayed acknowledgement of the first: 40 ms a statement on a loopback.
    const STATEMENT: StatementBound = StatementBound {
        rows: 200,
        bytes: 12 * 1024,
        fixed_text: true,
    };
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn begin_migration(&self) -> BoxFuture<'_, Result<Transaction<'static, Postgres>>> {
        Box::pin(async move {
            // Held until the transaction ends: a second process opening a fresh database
            // waits, then finds the schema made.
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        })
    }

    fn begin_write(&self) -> BoxFuture<'_, Result<Transaction<'static, Postgres>>> {
        Box::pin(async move { Ok(self.pool.begin().await?) })
    }

    fn insert_completions(done: &[ItemDone<'_>]) -> QueryBuilder<Postgres> {
        let mut insert = QueryBuilder::new(
            "INSERT INTO items (run, stage, item, status, attempts, finished_ms, duration_ms)
             SELECT run, stage, item, 'succeeded', attempts, finished_ms, duration_ms FROM UNNEST(",
        );
        insert
            .push_bind(done.iter().map(|d| d.run).collect::<Vec<_>>())
            .push(", ")
            .push_bind(done.iter().map(|d| d.stage).collect::<Vec<_>>())
            .push(", ")
            .push_bind(done.iter().map(|d| d.item).collect::<Vec<_>>())
            .push(", ")
            .push_bind(done.iter().map(|d| d.attempts).collect::<Vec<_>>())
            .push(", ")
            .push_bind(done.iter().map(|d| d.at).collect::<Vec<_>>())
            .push(", ")
            .push_bind(done.iter().map(|d| d.duration_ms).collect::<Vec<_>>())
            .push(") AS done (run, stage, item, attempts, finished_ms, duration_ms)");
        insert
    }

    fn begin_journal(&self) -> BoxFuture<'_, Result<Transaction<'static, Postgres>>> {
        Box::pin(async move {
            // Waits for the batch in progress, so ids and row numbers commit in the order they
            // are handed out.
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(JOURNAL_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        })
    }

    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        Some(self)
    }
}

/// The store the SQL of `sql/` is compiled for here.
type Backend = PostgresStore;

// The store's SQL, compiled for this backend; the other backend mounts the same files: one text
// per query, each backend's own types (see `sql/mod.rs`).
#[allow(clippy::duplicate_mod)]
#[path = "../sql/mod.rs"]
mod sql;

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::super::TestDatabase;
    use super::*;
    use crate::store::{Control, Queries};
    use self_healing::event::ActionKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        missing_postgres,
        ignore = "needs PostgreSQL: source .ci/services.sh start"
    )]
    async fn two_processes_opening_a_fresh_database_migrate_it_once() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let (a, b) = tokio::join!(
            PostgresStore::open(&database.url),
            PostgresStore::open(&database.url)
        );
        drop((a.unwrap(), b.unwrap()));
        let again = PostgresStore::open(&database.url).await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
            .fetch_all(&again.pool)
            .await
            .unwrap();
        let each: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, each, "each migration once");
    }

    #[tokio::test]
    #[cfg_attr(
        missing_postgres,
        ignore = "needs PostgreSQL: source .ci/services.sh start"
    )]
    async fn a_store_the_previous_version_made_reads_back_in_write_order() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        // Version 2's schema, rows numbered in its `seq` columns.
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE schema_version (version BIGINT NOT NULL);
             {}{}
             INSERT INTO schema_version (version) VALUES (1), (2);
             INSERT INTO runs (id, project, pipeline, status, started_ms)
             VALUES ('r-b', 'p', 'pipe', 'succeeded', 5), ('r-a', 'p', 'pipe', 'succeeded', 5);
             INSERT INTO items (run, stage, item, status, attempts, finished_ms)
             VALUES ('r-a', 'load', 'i1', 'succeeded', 1, 7), ('r-a', 'load', 'i2', 'succeeded', 1, 7);",
            MIGRATIONS[0], MIGRATIONS[1]
        )))
        .execute(&mut connection)
        .await
        .unwrap();
        connection.close().await.unwrap();

        let store = PostgresStore::open(&database.url).await.unwrap();
        let runs: Vec<String> = store
            .runs("p", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(runs, ["r-a", "r-b"], "the later written first, on a tie");
        let end = store.journal_end().await.unwrap();
        assert_eq!(end.item, 2);
        let resume = store
            .resume(&self_healing::event::RunId::new("r-a"))
            .await
            .unwrap();
        assert_eq!(resume.items_completed("load"), 2);
    }

    #[tokio::test]
    #[cfg_attr(
        missing_postgres,
        ignore = "needs PostgreSQL: source .ci/services.sh start"
    )]
    async fn readers_never_make_a_store_and_read_only_in_read_only_transactions() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        for access in [Access::Existing, Access::ReadOnly] {
            let error = PostgresStore::open_with(&database.url, access)
                .await
                .unwrap_err();
            assert!(error.to_string().contains("no store there"), "{error}");
        }
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        assert_eq!(tables, 0, "a reader made tables");
        connection.close().await.unwrap();
        PostgresStore::open(&database.url).await.unwrap();
        let reader = PostgresStore::open_with(&database.url, Access::ReadOnly)
            .await
            .unwrap();
        assert_eq!(reader.projects().await.unwrap(), Vec::<String>::new());
        let error = reader.set_healing_mode("p", false, None).await.unwrap_err();
        assert!(error.to_string().contains("read-only"), "{error}");
    }

    #[tokio::test]
    #[cfg_attr(
        missing_postgres,
        ignore = "needs PostgreSQL: source .ci/services.sh start"
    )]
    async fn a_store_a_newer_version_made_is_refused() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let store = PostgresStore::open(&database.url).await.unwrap();
        sqlx::query("INSERT INTO schema_version (version) VALUES (99)")
            .execute(&store.pool)
            .await
            .unwrap();
        let error = PostgresStore::open(&database.url).await.unwrap_err();
        let StoreError::Unusable(message) = error else {
            panic!("{error:?}");
        };
        assert!(message.contains("schema version 99"), "{message}");
        assert!(message.contains("upgrade migrationpilot"), "{message}");
        let shown = self_healing::health::redact_url(&database.url);
        assert!(message.starts_with(&shown), "{message}");
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_named_without_the_password() {
        let started = std::time::Instant::now();
        let error = super::super::open("postgresql://mp:s3cret@127.0.0.1:1/journal")
            .await
            .err()
            .unwrap();
        let StoreError::Unusable(message) = error else {
            panic!("{error:?}");
        };
        assert!(
            message.starts_with(
                "cannot connect to the PostgreSQL store postgresql://mp:***@127.0.0.1:1/journal: "
            ),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(15), "{message}");
    }

    #[tokio::test]
    #[cfg_attr(
        missing_postgres,
        ignore = "needs PostgreSQL: source .ci/services.sh start"
    )]
    async fn store_open_takes_a_postgres_url() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let store = super::super::open(&database.url).await.unwrap();
        store
            .enqueue("p", ActionKind::Restart, "load")
            .await
            .unwrap();
        assert_eq!(store.claim("p", "me").await.unwrap().requests.len(), 1);
    }
}
