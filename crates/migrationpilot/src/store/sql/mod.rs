//! The store's SQL, written once for every backend: the journal writer, the queries, the
//! control plane and the alerts' outbox.
//!
//! Each backend mounts this folder as a module of its own (`#[path = "sql/mod.rs"] mod sql;`
//! in `sqlite.rs`, the same from `postgres/mod.rs`) beside `type Backend = …Store`, a struct
//! whose `pool` holds its connections, so the one text compiles against that backend's
//! concrete sqlx types: no generic bounds, no runtime dispatch, and what differs between the
//! databases is asked of its [`Dialect`]. Why this
//! rather than generics, `sqlx::Any`, a query builder or a macro: docs/ARCHITECTURE.md,
//! "The store".

mod alerts;
mod control;
mod journal;
mod queries;

use sqlx::Row;

use super::Backend;
use crate::store::dialect::Dialect;
use crate::store::{Owner, Result, RunRow, RunState, StoreError};

impl Backend {
    /// Brings the schema up to the newest of the dialect's migrations, in one transaction.
    /// A store a newer version made is refused, unchanged.
    pub(super) async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin_migration().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                .fetch_one(&mut *tx)
                .await?;
        let known = Self::MIGRATIONS.len();
        if current > known as i64 {
            return Err(StoreError::Unusable(format!(
                "the store has schema version {current}, newer than this migrationpilot knows ({known}): upgrade migrationpilot"
            )));
        }
        for (version, script) in Self::MIGRATIONS.iter().enumerate().skip(current as usize) {
            sqlx::raw_sql(*script).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(version as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Backend {
    /// Checks, without changing anything, that a store of this version's schema is there: a
    /// command that must not make or migrate one says why it cannot go on.
    pub(super) async fn check_schema(&self) -> Result<()> {
        let known = Self::MIGRATIONS.len() as i64;
        let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&self.pool)
            .await
            .map_err(|_| {
                StoreError::Unusable("no store there: a `migrationpilot run` makes one".to_owned())
            })?;
        match current.unwrap_or(0) {
            0 => Err(StoreError::Unusable(
                "no store there: a `migrationpilot run` makes one".to_owned(),
            )),
            version if version > known => Err(StoreError::Unusable(format!(
                "the store has schema version {version}, newer than this migrationpilot knows ({known}): upgrade migrationpilot"
            ))),
            version if version < known => Err(StoreError::Unusable(format!(
                "the store has schema version {version}, older than this migrationpilot's ({known}): a `migrationpilot run` (or `worker`) migrates it"
            ))),
            _ => Ok(()),
        }
    }
}

/// The backend's sqlx database.
type Db = <Backend as Dialect>::Db;

/// A row as the backend returns it.
type DbRow = <Db as sqlx::Database>::Row;

/// The columns [`run_row`] reads.
const RUN_COLUMNS: &str =
    "id, project, status, started_ms, finished_ms, error, owner, heartbeat_ms, stages, strategies";

/// A run read back from [`RUN_COLUMNS`].
fn run_row(row: &DbRow) -> Result<RunRow> {
    let status: String = row.try_get("status")?;
    let names = |column: &str| -> Result<Vec<String>> {
        let text: Option<String> = row.try_get(column)?;
        text.map_or(Ok(Vec::new()), |text| {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Invalid(format!("a run's {column}: {e}")))
        })
    };
    let owner: Option<String> = row.try_get("owner")?;
    Ok(RunRow {
        owner: owner.as_deref().and_then(Owner::parse),
        heartbeat_ms: row.try_get("heartbeat_ms")?,
        stages: names("stages")?,
        strategies: names("strategies")?,
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        status: RunState::parse(&status)?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        error: row.try_get("error")?,
    })
}

/// JSON bodies read back; a body this version cannot read is an error naming `what` it is.
fn read_bodies<T: serde::de::DeserializeOwned>(bodies: &[String], what: &str) -> Result<Vec<T>> {
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(|e| StoreError::Invalid(format!("{what}: {e}"))))
        .collect()
}

/// A value as JSON text, for a column that keeps it so.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// An attempt's output as kept (bytes: PostgreSQL's `TEXT` cannot hold the NUL bytes a process
/// may write), read back as the text it was written as.
fn output_text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes)
        .map_err(|e| StoreError::Invalid(format!("an attempt's log is not UTF-8: {e}")))
}

/// Milliseconds since the Unix epoch, now.
fn now() -> i64 {
    crate::store::millis(std::time::SystemTime::now())
}
