//! The embedded store: one SQLite file in WAL mode, with versioned migrations.
//!
//! Durability: each journal batch is one transaction with `synchronous = FULL`, so a batch
//! that committed survives a crash of the process and of the machine. Readers (the command line
//! in another process) never block the writer. The queries are the store's SQL in `sql/`,
//! compiled here for SQLite; this file holds the schema and the [`Dialect`].

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use self_healing::BoxFuture;

use super::dialect::Dialect;
use super::{Result, StoreError};

/// Schema versions, applied in order; the store records how far it got.
const MIGRATIONS: [&str; 4] = [
    r#"
CREATE TABLE projects (
    name TEXT PRIMARY KEY,
    healing_enabled INTEGER NOT NULL DEFAULT 1,
    reason TEXT,
    updated_ms INTEGER
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    error TEXT
);
CREATE INDEX runs_by_project ON runs (project, started_ms);
CREATE TABLE stages (
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    items INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    PRIMARY KEY (run, stage)
);
CREATE TABLE items (
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (run, stage, item)
);
CREATE TABLE healing (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    run TEXT,
    at_ms INTEGER NOT NULL,
    stage TEXT,
    strategy TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX healing_by_project ON healing (project, at_ms);
CREATE TABLE health (
    project TEXT NOT NULL,
    check_name TEXT NOT NULL,
    stage TEXT,
    status TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (project, check_name)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    run TEXT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    item TEXT,
    body TEXT NOT NULL
);
CREATE INDEX events_by_run ON events (run, id);
CREATE TABLE overrides (
    project TEXT NOT NULL,
    strategy TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (project, strategy)
);
CREATE TABLE control (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    action TEXT NOT NULL,
    stage TEXT NOT NULL,
    requested_ms INTEGER NOT NULL,
    claimed_ms INTEGER,
    claimed_by TEXT
);
CREATE INDEX control_pending ON control (project, claimed_ms);
"#,
    r#"
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN heartbeat_ms INTEGER;
ALTER TABLE runs ADD COLUMN stages TEXT;
ALTER TABLE runs ADD COLUMN strategies TEXT;
ALTER TABLE runs ADD COLUMN rollback_stage TEXT;
ALTER TABLE runs ADD COLUMN rollback_error TEXT;
CREATE TABLE compensations (
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    hook INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (run, stage, hook, item)
);
CREATE TABLE checks (
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    stage TEXT,
    target TEXT NOT NULL,
    PRIMARY KEY (project, name)
);
ALTER TABLE health ADD COLUMN checked_ms INTEGER;
ALTER TABLE health ADD COLUMN last_error TEXT;
"#,
    r#"
DELETE FROM items WHERE status != 'succeeded';
ALTER TABLE items ADD COLUMN duration_ms REAL;
ALTER TABLE events ADD COLUMN project TEXT;
ALTER TABLE runs ADD COLUMN metrics TEXT;
CREATE TABLE samples (
    run TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    stage TEXT,
    metric TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX samples_run ON samples (run, at_ms);
CREATE TABLE logs (
    run TEXT NOT NULL,
    stage TEXT NOT NULL,
    item TEXT,
    attempt INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    stdout_cut INTEGER NOT NULL,
    stderr_cut INTEGER NOT NULL
);
CREATE INDEX logs_run ON logs (run, stage, item, attempt);
"#,
    r#"
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX alerts_project ON alerts (project, status, updated_ms);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    channel TEXT NOT NULL,
    about TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    delivered_ms INTEGER,
    taken_by TEXT,
    taken_ms INTEGER
);
CREATE INDEX deliveries_owed ON deliveries (status, project, id);
CREATE INDEX deliveries_alert ON deliveries (fingerprint, id);
ALTER TABLE projects ADD COLUMN channels TEXT;
"#,
];

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) and migrates the store at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Invalid(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let unusable = |error: StoreError| match error {
            StoreError::Database(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("26") =>
            {
                StoreError::Unusable(format!(
                    "{} is not a migrationpilot store (it is not an SQLite database)",
                    path.display()
                ))
            }
            StoreError::Unusable(why) => StoreError::Unusable(format!("{}: {why}", path.display())),
            other => other,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| unusable(e.into()))?;
        let store = SqliteStore { pool };
        store.migrate().await.map_err(unusable)?;
        Ok(store)
    }
}

impl Dialect for SqliteStore {
    type Db = Sqlite;

    const MIGRATIONS: &'static [&'static str] = &MIGRATIONS;

    fn begin_write(&self) -> BoxFuture<'_, Result<Transaction<'static, Sqlite>>> {
        Box::pin(async move { Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?) })
    }

    fn begin_journal(&self) -> BoxFuture<'_, Result<Transaction<'static, Sqlite>>> {
        Box::pin(async move { Ok(self.pool.begin().await?) })
    }
}

/// The store the SQL of `sql/` is compiled for here.
type Backend = SqliteStore;

// The store's SQL, compiled for this backend; the other backend mounts the same files: one text
// per query, each backend's own types (see `sql/mod.rs`).
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Queries;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("nested/journal.db"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn each_migration_is_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        drop(store(&dir).await);
        let again = store(&dir).await;
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
            .fetch_all(&again.pool)
            .await
            .unwrap();
        assert_eq!(versions, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn logs_and_flags_written_by_earlier_versions_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        // Earlier versions kept an attempt's output as TEXT and flags as integers.
        sqlx::query(
            "INSERT INTO logs (run, stage, item, attempt, at_ms, stdout, stderr, stdout_cut, stderr_cut)
             VALUES ('r', 'load', 'i1', 1, 5, 'out ✓', 'err', 0, 3)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO projects (name, healing_enabled) VALUES ('p', 0)")
            .execute(&store.pool)
            .await
            .unwrap();
        let logs = store
            .logs("r", &crate::store::LogFilter::default())
            .await
            .unwrap();
        assert_eq!(
            (logs[0].stdout.as_str(), logs[0].stderr.as_str()),
            ("out ✓", "err")
        );
        assert!(!store.healing_mode("p").await.unwrap().enabled);
    }
}
