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
use sqlx::{QueryBuilder, Sqlite, Transaction};

use self_healing::BoxFuture;

use super::dialect::Dialect;
use super::projection::ItemDone;
use super::{Access, Result, StoreError};

/// Schema versions, applied in order; the store records how far it got.
const MIGRATIONS: [&str; 5] = [
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
    // An attempt's output is kept as bytes, as on PostgreSQL (one SQL text writes both); rows
    // kept as text before are made alike, and a binary that reads them as text refuses the
    // store instead of failing on the first new log.
    r#"
UPDATE logs SET stdout = CAST(stdout AS BLOB), stderr = CAST(stderr AS BLOB)
WHERE typeof(stdout) = 'text' OR typeof(stderr) = 'text';
"#,
];

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// Written into the header of every store this program makes (`PRAGMA application_id`,
/// "MPJL"), so a file is known to be ours before anything in it is changed.
const APPLICATION_ID: i64 = 0x4D50_4A4C;

/// What a file at the store's path is, looked at without changing it.
enum Found {
    /// Nothing there.
    Missing,
    /// An SQLite database with no tables (or an empty file): a store can be made in it.
    Empty,
    /// A store of ours.
    Ours,
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) and migrates the store at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Access::Create).await
    }

    /// Opens the store at `path` as `access` allows. A file that is not one of ours (another
    /// program's database, not a database at all) is refused and left as it was; a store is
    /// created `0600` (its folder `0700` when this makes it).
    pub async fn open_with(path: &Path, access: Access) -> Result<Self> {
        let shown = path.display();
        let unusable = |error: StoreError| match error {
            StoreError::Database(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("26") =>
            {
                StoreError::Unusable(format!(
                    "{shown} is not a migrationpilot store (it is not an SQLite database)"
                ))
            }
            StoreError::Unusable(why) => StoreError::Unusable(format!("{shown}: {why}")),
            other => other,
        };
        let found = inspect(path).await.map_err(unusable)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let options = match (access, found) {
            (Access::Create, Found::Missing) => {
                create_private(path)?;
                options.journal_mode(SqliteJournalMode::Wal)
            }
            (Access::Create, _) => options.journal_mode(SqliteJournalMode::Wal),
            (_, Found::Missing | Found::Empty) => {
                return Err(StoreError::Unusable(format!(
                    "no store at {shown}: a `migrationpilot run` makes one there"
                )));
            }
            (Access::Existing, Found::Ours) => options,
            (Access::ReadOnly, Found::Ours) => options.read_only(true),
        };
        let pool = match connect(options.clone()).await {
            Err(StoreError::Database(sqlx::Error::Database(db)))
                if access == Access::ReadOnly && cannot_share(&*db) =>
            {
                connect(options.immutable(true)).await
            }
            other => other,
        }
        .map_err(unusable)?;
        let store = SqliteStore { pool };
        if access == Access::Create {
            store.migrate().await.map_err(unusable)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA application_id = {APPLICATION_ID}"
            )))
            .execute(&store.pool)
            .await?;
        } else {
            store.check_schema().await.map_err(unusable)?;
        }
        Ok(store)
    }
}

/// Whether a read-only connection failed for want of writing SQLite's shared-memory file (a
/// store in WAL mode in a folder or file the user may only read): such a store is read as the
/// file it is (`immutable`), and what another process writes meanwhile may not be seen.
fn cannot_share(error: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(error.code().as_deref(), Some("8" | "14" | "1544"))
}

/// A pool on `options`, with one connection opened and used, so a file that cannot be read
/// says so here.
async fn connect(options: SqliteConnectOptions) -> Result<SqlitePool> {
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    sqlx::query("SELECT 1 FROM sqlite_master LIMIT 1")
        .execute(&pool)
        .await?;
    Ok(pool)
}

/// Makes the store's file, readable and writable by its owner only, and its folder (`0700`)
/// if missing. SQLite gives its `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &Path) -> Result<()> {
    let cannot = |what: &Path, e: std::io::Error| {
        StoreError::Unusable(format!("cannot create {}: {e}", what.display()))
    };
    let mut file = std::fs::OpenOptions::new();
    let mut folder = std::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        file.mode(0o600);
        folder.mode(0o700);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        folder.create(parent).map_err(|e| cannot(parent, e))?;
    }
    file.write(true)
        .create_new(true)
        .open(path)
        .map(drop)
        .map_err(|e| cannot(path, e))
}

/// What is at `path`, read without changing it: a read-only connection that sets no pragma
/// that writes. A file of ours carries [`APPLICATION_ID`], or (made before it was written) our
/// `schema_version` and `runs` tables.
async fn inspect(path: &Path) -> Result<Found> {
    let metadata = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(StoreError::Unusable(format!("cannot be read: {e}"))),
        Ok(metadata) => metadata,
    };
    if !metadata.is_file() {
        return Err(StoreError::Unusable(
            "is not a file (a store is an SQLite file)".to_owned(),
        ));
    }
    if metadata.len() == 0 {
        return Ok(Found::Empty);
    }
    use sqlx::Connection;
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options).await?;
    let id = match sqlx::query_scalar::<_, i64>("PRAGMA application_id")
        .fetch_one(&mut connection)
        .await
    {
        Err(sqlx::Error::Database(db)) if cannot_share(&*db) => {
            connection = sqlx::SqliteConnection::connect_with(&options.immutable(true)).await?;
            sqlx::query_scalar("PRAGMA application_id")
                .fetch_one(&mut connection)
                .await?
        }
        other => other?,
    };
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    let ours = |name: &str| tables.iter().any(|t| t == name);
    match id {
        APPLICATION_ID => Ok(Found::Ours),
        0 if tables.is_empty() => Ok(Found::Empty),
        0 if ours("schema_version") && ours("runs") => Ok(Found::Ours),
        0 => Err(StoreError::Unusable(format!(
            "is another program's database (it holds {}), not a migrationpilot store: nothing in it was changed",
            tables.join(", ")
        ))),
        other => Err(StoreError::Unusable(format!(
            "is another program's database (application id {other:#x}), not a migrationpilot store: nothing in it was changed"
        ))),
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

    fn insert_completions(done: &[ItemDone<'_>]) -> QueryBuilder<Sqlite> {
        let mut insert = QueryBuilder::new(
            "INSERT INTO items (run, stage, item, status, attempts, finished_ms, duration_ms) ",
        );
        insert.push_values(done, |mut row, item| {
            row.push_bind(item.run)
                .push_bind(item.stage)
                .push_bind(item.item)
                .push("'succeeded'")
                .push_bind(item.attempts)
                .push_bind(item.at)
                .push_bind(item.duration_ms);
        });
        insert
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
        assert_eq!(versions, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn logs_and_flags_written_by_earlier_versions_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        // A store of version 4 kept an attempt's output as TEXT, and flags as integers.
        sqlx::raw_sql(
            "INSERT INTO logs (run, stage, item, attempt, at_ms, stdout, stderr, stdout_cut, stderr_cut)
             VALUES ('r', 'load', 'i1', 1, 5, 'out ✓', 'err', 0, 3);
             INSERT INTO projects (name, healing_enabled) VALUES ('p', 0);
             DELETE FROM schema_version WHERE version = 5;",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        drop(store);
        let store = self::store(&dir).await;
        let kinds: (String, String) =
            sqlx::query_as("SELECT typeof(stdout), typeof(stderr) FROM logs")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(kinds, ("blob".to_owned(), "blob".to_owned()));
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
