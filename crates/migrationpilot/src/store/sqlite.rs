//! The embedded store: one SQLite file in WAL mode, with versioned migrations.
//!
//! Durability: each journal batch is one transaction with `synchronous = FULL`, so a batch
//! that committed survives a crash of the process and of the machine. Readers (the command line
//! in another process) never block the writer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use self_healing::BoxFuture;
use self_healing::alert::{Alert, AlertStatus, Delivery};
use self_healing::event::{ActionKind, Event, EventKind, MetricSample, RunId};
use self_healing::healing::{HealingRecord, StrategyOverride};
use self_healing::pipeline::Resume;
use self_healing::{PipelineMetrics, StageError};

use super::projection::{self, Found, ItemDone, Write, read_back};
use super::{
    AlertRow, Alerts, DeliveryRow, EventRow, JournalCursor, JournalEntry, KEEP_RUNS, LogFilter,
    LogRow, Owing, RunDetail, SampleRow, StageRow,
};
use super::{
    CheckSeen, Claimed, Control, HealingMode, HealthRow, Journal, Owner, Queries, Result, RunClaim,
    RunRow, RunState, StoreError, millis,
};

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

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                .fetch_one(&mut *tx)
                .await?;
        if current > MIGRATIONS.len() as i64 {
            return Err(StoreError::Unusable(format!(
                "the store has schema version {current}, newer than this migrationpilot knows ({}): upgrade migrationpilot",
                MIGRATIONS.len()
            )));
        }
        for (version, script) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            sqlx::raw_sql(*script).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
                .bind(version as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Carries out one write of the projection inside the batch's transaction.
async fn execute(tx: &mut Transaction<'_, Sqlite>, write: &Write<'_>) -> Result<()> {
    let query = match write {
        Write::RunStarted {
            run,
            project,
            pipeline,
            at,
        } => {
            sqlx::query("INSERT INTO projects (name) VALUES (?) ON CONFLICT (name) DO NOTHING")
                .bind(*project)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO runs (id, project, pipeline, status, started_ms) VALUES (?, ?, ?, 'running', ?)
                 ON CONFLICT (id) DO UPDATE SET finished_ms = NULL, error = NULL,
                 status = CASE WHEN runs.status = 'rolling-back' THEN 'rolling-back' ELSE 'running' END",
            )
            .bind(*run)
            .bind(*project)
            .bind(*pipeline)
            .bind(*at)
        }
        Write::RunFinished {
            run,
            status,
            at,
            error,
        } => sqlx::query("UPDATE runs SET status = ?, finished_ms = ?, error = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(*at)
            .bind(error.clone())
            .bind(*run),
        Write::StageEnded {
            run,
            stage,
            succeeded,
            items,
            at,
        } => sqlx::query(
            "INSERT INTO stages (run, stage, status, items, finished_ms) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (run, stage) DO UPDATE SET status = excluded.status, items = excluded.items,
             finished_ms = excluded.finished_ms WHERE stages.status != 'succeeded'",
        )
        .bind(*run)
        .bind(*stage)
        .bind(if *succeeded { "succeeded" } else { "failed" })
        .bind(*items)
        .bind(*at),
        Write::ItemsSucceeded(done) => return insert_completions(tx, done).await,
        Write::Healing {
            project,
            run,
            at,
            stage,
            strategy,
            action,
            outcome,
            body,
        } => sqlx::query(
            "INSERT INTO healing (project, run, at_ms, stage, strategy, action, outcome, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(*project)
        .bind(*run)
        .bind(*at)
        .bind(*stage)
        .bind(*strategy)
        .bind(*action)
        .bind(*outcome)
        .bind(body.clone()),
        Write::RollbackStarted { run, stage, error } => sqlx::query(
            "UPDATE runs SET status = 'rolling-back', rollback_stage = ?, rollback_error = ? WHERE id = ?",
        )
        .bind(*stage)
        .bind(error.clone())
        .bind(*run),
        Write::Compensated {
            run,
            stage,
            item,
            failed,
            at,
        } => sqlx::query(
            "INSERT INTO compensations (run, stage, item, hook, failed, at_ms) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (run, stage, hook, item) DO UPDATE SET failed = excluded.failed, at_ms = excluded.at_ms",
        )
        .bind(*run)
        .bind(*stage)
        .bind(item.unwrap_or(""))
        .bind(i64::from(item.is_none()))
        .bind(i64::from(*failed))
        .bind(*at),
        Write::Log {
            run,
            stage,
            item,
            attempt,
            at,
            output,
        } => sqlx::query(
            "INSERT INTO logs (run, stage, item, attempt, at_ms, stdout, stderr, stdout_cut, stderr_cut)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(*run)
        .bind(*stage)
        .bind(*item)
        .bind(*attempt)
        .bind(*at)
        .bind(output.stdout.clone())
        .bind(output.stderr.clone())
        .bind(i64::try_from(output.stdout_cut).unwrap_or(i64::MAX))
        .bind(i64::try_from(output.stderr_cut).unwrap_or(i64::MAX)),
        Write::Samples { run, at, samples } => {
            if samples.is_empty() {
                return Ok(());
            }
            let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO samples (run, at_ms, stage, metric, value) ",
            );
            insert.push_values(samples.iter(), |mut row, sample| {
                row.push_bind(run.to_string())
                    .push_bind(*at)
                    .push_bind(sample.stage.as_deref().map(str::to_owned))
                    .push_bind(sample.metric.to_string())
                    .push_bind(sample.value);
            });
            insert.build().execute(&mut **tx).await?;
            return Ok(());
        }
        Write::Health {
            project,
            check,
            stage,
            status,
            at,
        } => sqlx::query(
            "INSERT INTO health (project, check_name, stage, status, at_ms) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (project, check_name) DO UPDATE SET stage = excluded.stage, status = excluded.status, at_ms = excluded.at_ms",
        )
        .bind(*project)
        .bind(*check)
        .bind(*stage)
        .bind(status.as_str())
        .bind(*at),
        Write::Event {
            project,
            run,
            at,
            kind,
            stage,
            item,
            body,
        } => sqlx::query(
            "INSERT INTO events (project, run, at_ms, kind, stage, item, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(*project)
        .bind(*run)
        .bind(*at)
        .bind(kind.clone())
        .bind(*stage)
        .bind(*item)
        .bind(body.clone()),
    };
    query.execute(&mut **tx).await?;
    Ok(())
}

/// JSON bodies read back; a body this version cannot read is an error naming `what` it is.
fn read_bodies<T: serde::de::DeserializeOwned>(bodies: &[String], what: &str) -> Result<Vec<T>> {
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(|e| StoreError::Invalid(format!("{what}: {e}"))))
        .collect()
}

/// Item completions in one multi-row statement.
async fn insert_completions(tx: &mut Transaction<'_, Sqlite>, done: &[ItemDone<'_>]) -> Result<()> {
    let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
        "INSERT INTO items (run, stage, item, status, attempts, finished_ms, duration_ms) ",
    );
    insert.push_values(done, |mut row, item| {
        row.push_bind(item.run.map(str::to_owned))
            .push_bind(item.stage.to_owned())
            .push_bind(item.item.to_owned())
            .push("'succeeded'")
            .push_bind(item.attempts)
            .push_bind(item.at)
            .push_bind(item.duration_ms);
    });
    // A completion is final: an item run again keeps its first row, and the new completion is
    // kept as an event (see `projection::completed_again`).
    insert.push(" ON CONFLICT (run, stage, item) DO NOTHING RETURNING stage, item");
    let inserted: std::collections::HashSet<(String, String)> = insert
        .build_query_as::<(String, String)>()
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    if inserted.len() < done.len() {
        for write in projection::completed_again(done, inserted)? {
            Box::pin(execute(tx, &write)).await?;
        }
    }
    Ok(())
}

fn run_row(row: &sqlx::sqlite::SqliteRow) -> Result<RunRow> {
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

const RUN_COLUMNS: &str =
    "id, project, status, started_ms, finished_ms, error, owner, heartbeat_ms, stages, strategies";

impl Journal for SqliteStore {
    fn append<'a>(
        &'a self,
        project: &'a str,
        events: &'a [Arc<Event>],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let writes = projection::project(project, events)?;
            let mut tx = self.pool.begin().await?;
            for write in &writes {
                execute(&mut tx, write).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn record_metrics<'a>(
        &'a self,
        run: &'a str,
        metrics: &'a PipelineMetrics,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let json =
                serde_json::to_string(metrics).map_err(|e| StoreError::Invalid(e.to_string()))?;
            sqlx::query("UPDATE runs SET metrics = ? WHERE id = ?")
                .bind(json)
                .bind(run)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn checks_seen<'a>(
        &'a self,
        project: &'a str,
        seen: &'a [CheckSeen],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            for check in seen {
                sqlx::query(
                    "INSERT INTO health (project, check_name, stage, status, at_ms, checked_ms, last_error)
                     VALUES (?1, ?2, (SELECT stage FROM checks WHERE project = ?1 AND name = ?2), ?3, ?4, ?4, ?5)
                     ON CONFLICT (project, check_name) DO UPDATE SET
                     at_ms = CASE WHEN health.status = excluded.status THEN health.at_ms ELSE excluded.at_ms END,
                     status = excluded.status, checked_ms = excluded.checked_ms,
                     last_error = excluded.last_error",
                )
                .bind(project)
                .bind(&check.name)
                .bind(check.status.as_str())
                .bind(check.checked_ms)
                .bind(&check.last_error)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Queries for SqliteStore {
    fn runs<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<RunRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE project = ? ORDER BY started_ms DESC, rowid DESC LIMIT ?"
            )))
            .bind(project)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(run_row).collect()
        })
    }

    fn projects(&self) -> BoxFuture<'_, Result<Vec<String>>> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar("SELECT name FROM projects ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?,
            )
        })
    }

    fn run<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<Option<RunDetail>>> {
        Box::pin(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS}, metrics FROM runs WHERE id = ?"
            )))
            .bind(run)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let metrics: Option<String> = row.try_get("metrics")?;
            let run_row = run_row(&row)?;
            let ended: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT stage, status, items, finished_ms FROM stages WHERE run = ?",
            )
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
            let started: Vec<(String, i64)> = sqlx::query_as(
                "SELECT stage, MAX(at_ms) FROM events WHERE run = ? AND kind = 'stage-started' GROUP BY stage",
            )
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
            let mut names = run_row.stages.clone();
            for (stage, ..) in &ended {
                if !names.contains(stage) {
                    names.push(stage.clone());
                }
            }
            let stages = names
                .into_iter()
                .map(|stage| {
                    let started_ms = started.iter().find(|(s, _)| *s == stage).map(|(_, at)| *at);
                    let end = ended.iter().find(|(s, ..)| *s == stage);
                    let (status, items, finished_ms) = match (end, started_ms) {
                        // An end before the latest start is a pass a restart or resume redid.
                        (Some((_, status, items, finished)), start)
                            if start.is_none_or(|s| s <= *finished) =>
                        {
                            let status = if status == "succeeded" {
                                "succeeded"
                            } else {
                                "failed"
                            };
                            (status, *items, Some(*finished))
                        }
                        (_, Some(_)) => ("running", 0, None),
                        _ => ("pending", 0, None),
                    };
                    StageRow {
                        duration_ms: started_ms
                            .zip(finished_ms)
                            .map(|(s, f)| (f - s).max(0) as f64),
                        stage,
                        status,
                        items,
                        started_ms,
                        finished_ms,
                    }
                })
                .collect();
            let metrics = metrics
                .map(|m| serde_json::from_str(&m))
                .transpose()
                .map_err(|e| StoreError::Invalid(format!("a run's metrics: {e}")))?;
            Ok(Some(RunDetail {
                run: run_row,
                stages,
                metrics,
            }))
        })
    }

    fn events<'a>(
        &'a self,
        run: &'a str,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<EventRow>>> {
        Box::pin(async move {
            /// id, at, kind, stage, item, body
            type Row = (i64, i64, String, Option<String>, Option<String>, String);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, at_ms, kind, stage, item, body FROM events WHERE run = ? AND id > ?
                     ORDER BY id LIMIT ?",
            )
            .bind(run)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|(id, at, kind, stage, item, body)| {
                    Ok(EventRow {
                        event: serde_json::from_str(&body)
                            .map_err(|e| StoreError::Invalid(format!("event {id}: {e}")))?,
                        id,
                        at,
                        kind,
                        stage,
                        item,
                    })
                })
                .collect()
        })
    }

    fn samples<'a>(
        &'a self,
        run: &'a str,
        metric: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SampleRow>>> {
        Box::pin(async move {
            let rows: Vec<(i64, Option<String>, String, f64)> = sqlx::query_as(
                "SELECT at_ms, stage, metric, value FROM samples WHERE run = ?1
                 AND (?2 IS NULL OR metric = ?2) ORDER BY at_ms, rowid",
            )
            .bind(run)
            .bind(metric)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(at, stage, metric, value)| SampleRow {
                    at,
                    stage,
                    metric,
                    value,
                })
                .collect())
        })
    }

    fn logs<'a>(
        &'a self,
        run: &'a str,
        filter: &'a LogFilter,
    ) -> BoxFuture<'a, Result<Vec<LogRow>>> {
        Box::pin(async move {
            type Row = (String, Option<String>, i64, i64, String, String, i64, i64);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT stage, item, attempt, at_ms, stdout, stderr, stdout_cut, stderr_cut FROM logs
                 WHERE run = ?1 AND (?2 IS NULL OR stage = ?2) AND (?3 IS NULL OR item = ?3)
                 AND (?4 IS NULL OR attempt = ?4) ORDER BY at_ms, rowid",
            )
            .bind(run)
            .bind(&filter.stage)
            .bind(&filter.item)
            .bind(filter.attempt)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(stage, item, attempt, at, stdout, stderr, stdout_cut, stderr_cut)| LogRow {
                        stage,
                        item,
                        attempt,
                        at,
                        stdout,
                        stderr,
                        stdout_cut,
                        stderr_cut,
                    },
                )
                .collect())
        })
    }

    fn journal_since(
        &self,
        cursor: JournalCursor,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<JournalEntry>, JournalCursor)>> {
        Box::pin(async move {
            let limit = i64::from(limit);
            let mut found = Found::default();
            let events: Vec<(i64, Option<String>, String)> = sqlx::query_as(
                "SELECT e.id, COALESCE(e.project, r.project), e.body FROM events e
                 LEFT JOIN runs r ON r.id = e.run WHERE e.id > ? ORDER BY e.id LIMIT ?",
            )
            .bind(cursor.event)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for (id, project, body) in events {
                // An event of no known project, or one this version cannot read, is passed
                // over: the cursor still moves past it.
                let event = project.zip(serde_json::from_str::<Event>(&body).ok());
                found.events.push((id, event));
            }
            /// rowid, run, stage, item, attempts, finished, duration, project
            type Item = (i64, String, String, String, i64, i64, Option<f64>, String);
            let items: Vec<Item> = sqlx::query_as(
                "SELECT i.rowid, i.run, i.stage, i.item, i.attempts, i.finished_ms, i.duration_ms, r.project
                 FROM items i JOIN runs r ON r.id = i.run WHERE i.rowid > ? ORDER BY i.rowid LIMIT ?",
            )
            .bind(cursor.item)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for (rowid, run, stage, item, attempts, at, duration_ms, project) in items {
                let kind = EventKind::ItemSucceeded {
                    stage: stage.into(),
                    item: item.into(),
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    duration: Duration::try_from_secs_f64(duration_ms.unwrap_or(0.0) / 1000.0)
                        .unwrap_or_default(),
                };
                let event = read_back(Some(RunId::new(run)), at, kind);
                found.items.push((rowid, Some((project, event))));
            }
            let decisions: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT id, project, body FROM healing WHERE id > ? ORDER BY id LIMIT ?",
            )
            .bind(cursor.healing)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for (id, project, body) in decisions {
                let event = serde_json::from_str::<HealingRecord>(&body)
                    .ok()
                    .map(|record| {
                        let event = Event {
                            seq: 0,
                            at: record.at,
                            run: record.run.clone(),
                            kind: EventKind::HealingDecision { record },
                        };
                        (project, event)
                    });
                found.decisions.push((id, event));
            }
            /// rowid, run, at, stage, metric, value, project
            type Sample = (i64, String, i64, Option<String>, String, f64, String);
            let samples: Vec<Sample> = sqlx::query_as(
                "SELECT s.rowid, s.run, s.at_ms, s.stage, s.metric, s.value, r.project FROM samples s
                 JOIN runs r ON r.id = s.run WHERE s.rowid > ? ORDER BY s.rowid LIMIT ?",
            )
            .bind(cursor.sample)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            // One tick's samples were written together: consecutive rows of a run and a time
            // are one `metrics-sampled` event again.
            for (rowid, run, at, stage, metric, value, project) in samples {
                let sample = MetricSample {
                    stage: stage.map(Arc::from),
                    metric: metric.into(),
                    value,
                };
                if let Some((last, Some((_, event)))) = found.samples.last_mut()
                    && event.run.as_ref().is_some_and(|r| r.as_str() == run)
                    && millis(event.at) == at
                    && let EventKind::MetricsSampled { samples } = &mut event.kind
                {
                    samples.push(sample);
                    *last = rowid;
                    continue;
                }
                let kind = EventKind::MetricsSampled {
                    samples: vec![sample],
                };
                let event = read_back(Some(RunId::new(run)), at, kind);
                found.samples.push((rowid, Some((project, event))));
            }
            Ok(found.merge(cursor))
        })
    }

    fn journal_end(&self) -> BoxFuture<'_, Result<JournalCursor>> {
        Box::pin(async move {
            let (event, item, healing, sample): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM events),
                        (SELECT COALESCE(MAX(rowid), 0) FROM items),
                        (SELECT COALESCE(MAX(id), 0) FROM healing),
                        (SELECT COALESCE(MAX(rowid), 0) FROM samples)",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(JournalCursor {
                event,
                item,
                healing,
                sample,
            })
        })
    }

    fn resume<'a>(&'a self, run: &'a RunId) -> BoxFuture<'a, Result<Resume>> {
        Box::pin(async move {
            let mut resume = Resume::default();
            let stages: Vec<String> = sqlx::query_scalar(
                "SELECT stage FROM stages WHERE run = ? AND status = 'succeeded'",
            )
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
            for stage in stages {
                resume.stage_completed(stage);
            }
            let items: Vec<(String, String)> = sqlx::query_as(
                "SELECT stage, item FROM items WHERE run = ? AND status = 'succeeded'
                 ORDER BY finished_ms, rowid",
            )
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
            for (stage, item) in items {
                resume.item_completed(&stage, item);
            }
            let compensations: Vec<(String, String, i64)> =
                sqlx::query_as("SELECT stage, item, hook FROM compensations WHERE run = ?")
                    .bind(run.as_str())
                    .fetch_all(&self.pool)
                    .await?;
            for (stage, item, hook) in compensations {
                resume.compensated(stage, (hook == 0).then_some(item));
            }
            let rollback: Option<(Option<String>, Option<String>)> =
                sqlx::query_as("SELECT rollback_stage, rollback_error FROM runs WHERE id = ?")
                    .bind(run.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some((Some(stage), error)) = rollback {
                let error: StageError = match error {
                    Some(json) => serde_json::from_str(&json)
                        .map_err(|e| StoreError::Invalid(format!("a rollback's error: {e}")))?,
                    None => StageError::new("rolling back"),
                };
                resume.rolling_back(stage, error);
            }
            Ok(resume)
        })
    }

    fn history<'a>(
        &'a self,
        project: &'a str,
        limit: u32,
        since_ms: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<HealingRecord>>> {
        Box::pin(async move {
            let bodies: Vec<String> = sqlx::query_scalar(
                "SELECT body FROM healing WHERE project = ? AND at_ms >= ? ORDER BY id DESC LIMIT ?",
            )
            .bind(project)
            .bind(since_ms.unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            read_bodies(&bodies, "a healing record")
        })
    }

    fn health<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<HealthRow>>> {
        Box::pin(async move {
            type Row = (
                String,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<String>,
            );
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT c.name, c.stage, c.target, h.status, h.at_ms, h.checked_ms, h.last_error
                 FROM checks c LEFT JOIN health h ON h.project = c.project AND h.check_name = c.name
                 WHERE c.project = ?1
                 UNION ALL
                 SELECT h.check_name, h.stage, NULL, h.status, h.at_ms, h.checked_ms, h.last_error
                 FROM health h WHERE h.project = ?1
                 AND NOT EXISTS (SELECT 1 FROM checks c WHERE c.project = h.project AND c.name = h.check_name)
                 ORDER BY 1",
            )
            .bind(project)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(
                    |(check, stage, target, status, changed_ms, checked_ms, last_error)| {
                        let status = status
                            .map(|status| {
                                status.parse().map_err(|_| {
                                    StoreError::Invalid(format!(
                                        "check `{check}` has the unknown status `{status}`"
                                    ))
                                })
                            })
                            .transpose()?;
                        Ok(HealthRow {
                            check,
                            stage,
                            target,
                            status,
                            changed_ms,
                            checked_ms,
                            last_error,
                        })
                    },
                )
                .collect()
        })
    }

    fn healing_mode<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<HealingMode>> {
        Box::pin(async move {
            let row: Option<(i64, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT healing_enabled, reason, updated_ms FROM projects WHERE name = ?",
            )
            .bind(project)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some((enabled, reason, updated_ms)) => HealingMode {
                    enabled: enabled != 0,
                    reason,
                    updated_ms,
                },
                None => HealingMode {
                    enabled: true,
                    reason: None,
                    updated_ms: None,
                },
            })
        })
    }

    fn overrides<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, StrategyOverride)>>> {
        Box::pin(async move {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT strategy, body FROM overrides WHERE project = ? ORDER BY strategy",
            )
            .bind(project)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|(strategy, body)| {
                    serde_json::from_str(&body)
                        .map(|o| (strategy, o))
                        .map_err(|e| StoreError::Invalid(e.to_string()))
                })
                .collect()
        })
    }
}

impl Alerts for SqliteStore {
    fn keep_alert<'a>(
        &'a self,
        owner: &'a str,
        alert: &'a Alert,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let fingerprint = alert.fingerprint();
            let body =
                serde_json::to_string(alert).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let now = millis(std::time::SystemTime::now());
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO alerts (fingerprint, project, status, updated_ms, body) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (fingerprint) DO UPDATE SET status = excluded.status,
                 updated_ms = excluded.updated_ms, body = excluded.body",
            )
            .bind(&fingerprint)
            .bind(&*alert.project)
            .bind(alert.status.as_str())
            .bind(now)
            .bind(&body)
            .execute(&mut *tx)
            .await?;
            for channel in channels {
                sqlx::query(
                    "INSERT INTO deliveries (project, fingerprint, channel, about, status, body, created_ms,
                     taken_by, taken_ms) VALUES (?, ?, ?, ?, 'owed', ?, ?, ?, ?)",
                )
                .bind(&*alert.project)
                .bind(&fingerprint)
                .bind(channel)
                .bind(alert.status.as_str())
                .bind(&body)
                .bind(now)
                .bind(owner)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn take_deliveries<'a>(
        &'a self,
        owner: &'a str,
        lease: std::time::Duration,
        project: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        Box::pin(async move {
            let now = millis(std::time::SystemTime::now());
            let expired = now - i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
            // One statement: two processes never take the same delivery within its lease.
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "UPDATE deliveries SET taken_by = ?1, taken_ms = ?2
                 WHERE status = 'owed' AND (?3 IS NULL OR project = ?3)
                 AND (taken_by = ?1 OR taken_ms IS NULL OR taken_ms <= ?4)
                 RETURNING id, channel, body, attempts",
            )
            .bind(owner)
            .bind(now)
            .bind(project)
            .bind(expired)
            .fetch_all(&self.pool)
            .await?;
            let mut taken: Vec<Delivery> = rows
                .into_iter()
                .map(|(id, channel, body, attempts)| {
                    Ok(Delivery {
                        id,
                        channel,
                        alert: serde_json::from_str(&body)
                            .map_err(|e| StoreError::Invalid(format!("delivery {id}: {e}")))?,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    })
                })
                .collect::<Result<_>>()?;
            taken.sort_by_key(|d| d.id);
            Ok(taken)
        })
    }

    fn delivery_attempted<'a>(
        &'a self,
        owner: &'a str,
        ids: &'a [i64],
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let now = millis(std::time::SystemTime::now());
            let mut tx = self.pool.begin().await?;
            for id in ids {
                // A success counts whoever holds the row now; a failure only from its holder
                // (a late report must not reopen what another process delivered).
                sqlx::query(
                    "UPDATE deliveries SET attempts = attempts + 1, taken_by = NULL, taken_ms = NULL,
                     status = CASE WHEN ?2 IS NULL THEN 'delivered'
                                   WHEN attempts + 1 >= ?5 THEN 'dead' ELSE 'owed' END,
                     last_error = ?2, delivered_ms = CASE WHEN ?2 IS NULL THEN ?3 ELSE NULL END
                     WHERE id = ?1 AND status = 'owed' AND (?2 IS NULL OR taken_by = ?4)",
                )
                .bind(id)
                .bind(error)
                .bind(now)
                .bind(owner)
                .bind(i64::from(self_healing::alert::MAX_ATTEMPTS))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn release_deliveries<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE deliveries SET taken_by = NULL, taken_ms = NULL
                 WHERE taken_by = ? AND status = 'owed'",
            )
            .bind(owner)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn firing_alerts<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<Alert>>> {
        Box::pin(async move {
            let bodies: Vec<String> = sqlx::query_scalar(
                "SELECT body FROM alerts WHERE project = ? AND status = 'firing' ORDER BY updated_ms",
            )
            .bind(project)
            .fetch_all(&self.pool)
            .await?;
            read_bodies(&bodies, "an alert")
        })
    }

    fn alerts<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<AlertRow>>> {
        Box::pin(async move {
            let rows: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT fingerprint, updated_ms, body FROM alerts WHERE project = ?
                 ORDER BY status = 'firing' DESC, updated_ms DESC LIMIT ?",
            )
            .bind(project)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for (fingerprint, updated_ms, body) in rows {
                /// channel, about, status, attempts, last error, created, delivered
                type Row = (
                    String,
                    String,
                    String,
                    i64,
                    Option<String>,
                    i64,
                    Option<i64>,
                );
                let deliveries: Vec<Row> = sqlx::query_as(
                    "SELECT channel, about, status, attempts, last_error, created_ms, delivered_ms
                     FROM deliveries WHERE fingerprint = ? ORDER BY id",
                )
                .bind(&fingerprint)
                .fetch_all(&self.pool)
                .await?;
                let deliveries = deliveries
                    .into_iter()
                    .map(
                        |(
                            channel,
                            about,
                            status,
                            attempts,
                            last_error,
                            created_ms,
                            delivered_ms,
                        )| {
                            DeliveryRow {
                                channel,
                                about: if about == "resolved" {
                                    AlertStatus::Resolved
                                } else {
                                    AlertStatus::Firing
                                },
                                status,
                                attempts,
                                last_error,
                                created_ms,
                                delivered_ms,
                            }
                        },
                    )
                    .collect();
                out.push(AlertRow {
                    alert: serde_json::from_str(&body)
                        .map_err(|e| StoreError::Invalid(format!("alert {fingerprint}: {e}")))?,
                    fingerprint,
                    updated_ms,
                    deliveries,
                });
            }
            Ok(out)
        })
    }

    fn set_channels<'a>(
        &'a self,
        project: &'a str,
        channels: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO projects (name, channels) VALUES (?, ?)
                 ON CONFLICT (name) DO UPDATE SET channels = excluded.channels",
            )
            .bind(project)
            .bind(channels.to_string())
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn owing_projects(&self) -> BoxFuture<'_, Result<Vec<Owing>>> {
        Box::pin(async move {
            let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT d.project, p.channels FROM (SELECT DISTINCT project FROM deliveries
                 WHERE status = 'owed') d LEFT JOIN projects p ON p.name = d.project",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(project, channels)| {
                    (
                        project,
                        channels.and_then(|c| serde_json::from_str(&c).ok()),
                    )
                })
                .collect())
        })
    }
}

impl Control for SqliteStore {
    fn claim_run<'a>(&'a self, claim: &'a RunClaim) -> BoxFuture<'a, Result<Option<RunRow>>> {
        Box::pin(async move {
            let now = millis(std::time::SystemTime::now());
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE project = ? AND status IN ('running', 'rolling-back')"
            )))
            .bind(&claim.project)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let run = run_row(row)?;
                if run.is_alive(now) {
                    return Ok(Some(run));
                }
            }
            let json = |names: &[String]| {
                serde_json::to_string(names).map_err(|e| StoreError::Invalid(e.to_string()))
            };
            sqlx::query("INSERT INTO projects (name) VALUES (?) ON CONFLICT (name) DO NOTHING")
                .bind(&claim.project)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO runs (id, project, pipeline, status, started_ms, owner, heartbeat_ms, stages, strategies)
                 VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, heartbeat_ms = excluded.heartbeat_ms,
                 stages = excluded.stages, strategies = excluded.strategies, finished_ms = NULL, error = NULL,
                 status = CASE WHEN runs.status = 'rolling-back' THEN 'rolling-back' ELSE 'running' END",
            )
            .bind(&claim.run)
            .bind(&claim.project)
            .bind(&claim.pipeline)
            .bind(now)
            .bind(claim.owner.to_string())
            .bind(now)
            .bind(json(&claim.stages)?)
            .bind(json(&claim.strategies)?)
            .execute(&mut *tx)
            .await?;
            for table in ["logs", "samples"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE run IN (SELECT id FROM runs WHERE project = ?
                     ORDER BY started_ms DESC, rowid DESC LIMIT -1 OFFSET ?)"
                )))
                .bind(&claim.project)
                .bind(KEEP_RUNS)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM checks WHERE project = ?")
                .bind(&claim.project)
                .execute(&mut *tx)
                .await?;
            for check in &claim.checks {
                sqlx::query(
                    "INSERT INTO checks (project, name, stage, target) VALUES (?, ?, ?, ?)",
                )
                .bind(&claim.project)
                .bind(&check.name)
                .bind(&check.stage)
                .bind(&check.target)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(None)
        })
    }

    fn heartbeat<'a>(&'a self, run: &'a str, owner: &'a Owner) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query("UPDATE runs SET heartbeat_ms = ? WHERE id = ? AND owner = ?")
                .bind(millis(std::time::SystemTime::now()))
                .bind(run)
                .bind(owner.to_string())
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn set_healing_mode<'a>(
        &'a self,
        project: &'a str,
        enabled: bool,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO projects (name, healing_enabled, reason, updated_ms) VALUES (?, ?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET healing_enabled = excluded.healing_enabled,
                 reason = excluded.reason, updated_ms = excluded.updated_ms",
            )
            .bind(project)
            .bind(i64::from(enabled))
            .bind(reason)
            .bind(millis(std::time::SystemTime::now()))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn set_override<'a>(
        &'a self,
        project: &'a str,
        strategy: &'a str,
        changes: &'a StrategyOverride,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Read, merge, write: IMMEDIATE takes the write lock first, so a journal commit in
            // between cannot turn the write into SQLITE_BUSY.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let existing: Option<String> =
                sqlx::query_scalar("SELECT body FROM overrides WHERE project = ? AND strategy = ?")
                    .bind(project)
                    .bind(strategy)
                    .fetch_optional(&mut *tx)
                    .await?;
            let mut merged: StrategyOverride = match existing {
                Some(body) => {
                    serde_json::from_str(&body).map_err(|e| StoreError::Invalid(e.to_string()))?
                }
                None => StrategyOverride::default(),
            };
            merged.merge(changes);
            sqlx::query(
                "INSERT INTO overrides (project, strategy, body, updated_ms) VALUES (?, ?, ?, ?)
                 ON CONFLICT (project, strategy) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
            )
            .bind(project)
            .bind(strategy)
            .bind(serde_json::to_string(&merged).map_err(|e| StoreError::Invalid(e.to_string()))?)
            .bind(millis(std::time::SystemTime::now()))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn enqueue<'a>(
        &'a self,
        project: &'a str,
        action: ActionKind,
        stage: &'a str,
    ) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(
                "INSERT INTO control (project, action, stage, requested_ms) VALUES (?, ?, ?, ?) RETURNING id",
            )
            .bind(project)
            .bind(action.as_str())
            .bind(stage)
            .bind(millis(std::time::SystemTime::now()))
            .fetch_one(&self.pool)
            .await?)
        })
    }

    fn claim<'a>(&'a self, project: &'a str, claimant: &'a str) -> BoxFuture<'a, Result<Claimed>> {
        Box::pin(async move {
            // One statement: each request goes to exactly one claimant.
            let mut rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "UPDATE control SET claimed_ms = ?, claimed_by = ? WHERE project = ? AND claimed_ms IS NULL
                 RETURNING id, action, stage, requested_ms",
            )
            .bind(millis(std::time::SystemTime::now()))
            .bind(claimant)
            .bind(project)
            .fetch_all(&self.pool)
            .await?;
            rows.sort_by_key(|r| r.0);
            Ok(Claimed::from_rows(rows))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("nested/journal.db"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn reopening_migrates_once_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        store(&dir)
            .await
            .set_healing_mode("p", false, Some("freeze"))
            .await
            .unwrap();
        let again = store(&dir).await;
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
            .fetch_all(&again.pool)
            .await
            .unwrap();
        assert_eq!(versions, [1, 2, 3, 4]);
        let mode = again.healing_mode("p").await.unwrap();
        assert_eq!(
            (mode.enabled, mode.reason.as_deref()),
            (false, Some("freeze"))
        );
    }
}
