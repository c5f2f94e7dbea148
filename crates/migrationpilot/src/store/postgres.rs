//! The shared store: one PostgreSQL database, with versioned migrations, that processes on
//! several machines journal into and steer through.
//!
//! Durability is the server's: each journal batch is one transaction, committed before the run
//! goes on. The semantics are the SQLite store's, query for query; where PostgreSQL lets writers
//! run side by side, locks keep what SQLite's single writer gave for free:
//!
//! - journal batches take one advisory lock, so positions (ids and `seq`s) commit in the order
//!   they were handed out and a reader following the journal never steps over one that is still
//!   being written;
//! - `claim_run` locks the project's row, so two processes cannot both take a project;
//! - claims of queued requests and of owed deliveries skip rows another claimant holds
//!   (`FOR UPDATE SKIP LOCKED`), so each is taken once;
//! - migrations run under an advisory lock, so two processes opening a fresh database do not
//!   race.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use self_healing::BoxFuture;
use self_healing::alert::{Alert, AlertStatus, Delivery};
use self_healing::event::{ActionKind, Event, EventKind, MetricSample, RunId};
use self_healing::healing::{HealingRecord, StrategyOverride};
use self_healing::pipeline::Resume;
use self_healing::{PipelineMetrics, StageError};

use super::projection::{self, Found, ItemDone, Write, read_back};
use super::work::{Filter, Job, JobResult, NewJob, Role, RunFile, Topic, WorkQueue};
use super::{
    AlertRow, Alerts, DeliveryRow, EventRow, JournalCursor, JournalEntry, KEEP_RUNS, LogFilter,
    LogRow, Owing, RunDetail, SampleRow, StageRow,
};
use super::{
    CheckSeen, Claimed, Control, HealingMode, HealthRow, Journal, Owner, Queries, Result, RunClaim,
    RunRow, RunState, StoreError, millis,
};

/// Schema versions, applied in order; the store records how far it got. The first is the shape
/// SQLite's four migrations reach, in PostgreSQL's dialect.
///
/// Beyond SQLite's columns: `seq` on runs, items, samples and logs stands for SQLite's `rowid`
/// (the order rows were written in). Names that are listed in order (`projects.name`,
/// `overrides.strategy`, `checks.name`, `health.check_name`, `stages.stage`) compare byte by
/// byte (`COLLATE "C"`), as SQLite's `BINARY` does, whatever the database's own collation. An
/// attempt's output is `BYTEA`: PostgreSQL's `TEXT` cannot hold the NUL bytes a process may
/// write.
const MIGRATIONS: [&str; 2] = [
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
        let shown = self_healing::health::redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Unusable(format!("{shown} is not a PostgreSQL connection URL: {e}"))
        })?;
        let options = options.application_name("migrationpilot");
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
        store.migrate().await.map_err(|error| match error {
            StoreError::Unusable(why) => StoreError::Unusable(format!("{shown}: {why}")),
            other => other,
        })?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Held until the transaction ends: a second process opening a fresh database waits,
        // then finds the schema made.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
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
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(version as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Begins a transaction that writes the journal: it waits for the one in progress, so ids
    /// and `seq`s commit in the order they are handed out.
    async fn begin_journal(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(JOURNAL_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// Carries out one write of the projection inside the batch's transaction.
async fn execute(tx: &mut Transaction<'_, Postgres>, write: &Write<'_>) -> Result<()> {
    let query = match write {
        Write::RunStarted {
            run,
            project,
            pipeline,
            at,
        } => {
            sqlx::query("INSERT INTO projects (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                .bind(*project)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO runs (id, project, pipeline, status, started_ms) VALUES ($1, $2, $3, 'running', $4)
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
        } => sqlx::query("UPDATE runs SET status = $1, finished_ms = $2, error = $3 WHERE id = $4")
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
            "INSERT INTO stages (run, stage, status, items, finished_ms) VALUES ($1, $2, $3, $4, $5)
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
            "INSERT INTO healing (project, run, at_ms, stage, strategy, action, outcome, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
            "UPDATE runs SET status = 'rolling-back', rollback_stage = $1, rollback_error = $2 WHERE id = $3",
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
            "INSERT INTO compensations (run, stage, item, hook, failed, at_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run, stage, hook, item) DO UPDATE SET failed = excluded.failed, at_ms = excluded.at_ms",
        )
        .bind(*run)
        .bind(*stage)
        .bind(item.unwrap_or(""))
        .bind(item.is_none())
        .bind(*failed)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(*run)
        .bind(*stage)
        .bind(*item)
        .bind(*attempt)
        .bind(*at)
        .bind(output.stdout.as_bytes())
        .bind(output.stderr.as_bytes())
        .bind(i64::try_from(output.stdout_cut).unwrap_or(i64::MAX))
        .bind(i64::try_from(output.stderr_cut).unwrap_or(i64::MAX)),
        Write::Samples { run, at, samples } => {
            if samples.is_empty() {
                return Ok(());
            }
            let mut insert = sqlx::QueryBuilder::<Postgres>::new(
                "INSERT INTO samples (run, at_ms, stage, metric, value) ",
            );
            // VALUES are numbered in their order: one tick's samples keep it.
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
            "INSERT INTO health (project, check_name, stage, status, at_ms) VALUES ($1, $2, $3, $4, $5)
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
            "INSERT INTO events (project, run, at_ms, kind, stage, item, body) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

/// An attempt's output as kept: the text it was written as.
fn output_text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes)
        .map_err(|e| StoreError::Invalid(format!("an attempt's log is not UTF-8: {e}")))
}

/// Item completions in one multi-row statement.
async fn insert_completions(
    tx: &mut Transaction<'_, Postgres>,
    done: &[ItemDone<'_>],
) -> Result<()> {
    let mut insert = sqlx::QueryBuilder::<Postgres>::new(
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

fn run_row(row: &PgRow) -> Result<RunRow> {
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

impl Journal for PostgresStore {
    fn append<'a>(
        &'a self,
        project: &'a str,
        events: &'a [Arc<Event>],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let writes = projection::project(project, events)?;
            let mut tx = self.begin_journal().await?;
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
            sqlx::query("UPDATE runs SET metrics = $1 WHERE id = $2")
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
            // The journal's lock: a batch that changes the same checks' health in another order
            // cannot deadlock with this one.
            let mut tx = self.begin_journal().await?;
            for check in seen {
                sqlx::query(
                    "INSERT INTO health (project, check_name, stage, status, at_ms, checked_ms, last_error)
                     VALUES ($1, $2, (SELECT stage FROM checks WHERE project = $1 AND name = $2), $3, $4, $4, $5)
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

impl Queries for PostgresStore {
    fn runs<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<RunRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 ORDER BY started_ms DESC, seq DESC LIMIT $2"
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
                "SELECT {RUN_COLUMNS}, metrics FROM runs WHERE id = $1"
            )))
            .bind(run)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let metrics: Option<String> = row.try_get("metrics")?;
            let run_row = run_row(&row)?;
            // By name, as SQLite reads them through the primary key: stages the run did not
            // declare come after its own in this order.
            let ended: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT stage, status, items, finished_ms FROM stages WHERE run = $1 ORDER BY stage",
            )
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
            let started: Vec<(String, i64)> = sqlx::query_as(
                "SELECT stage, MAX(at_ms) FROM events WHERE run = $1 AND kind = 'stage-started' GROUP BY stage",
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
                "SELECT id, at_ms, kind, stage, item, body FROM events WHERE run = $1 AND id > $2
                 ORDER BY id LIMIT $3",
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
                "SELECT at_ms, stage, metric, value FROM samples WHERE run = $1
                 AND ($2::TEXT IS NULL OR metric = $2) ORDER BY at_ms, seq",
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
            type Row = (String, Option<String>, i64, i64, Vec<u8>, Vec<u8>, i64, i64);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT stage, item, attempt, at_ms, stdout, stderr, stdout_cut, stderr_cut FROM logs
                 WHERE run = $1 AND ($2::TEXT IS NULL OR stage = $2) AND ($3::TEXT IS NULL OR item = $3)
                 AND ($4::BIGINT IS NULL OR attempt = $4) ORDER BY at_ms, seq",
            )
            .bind(run)
            .bind(&filter.stage)
            .bind(&filter.item)
            .bind(filter.attempt)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(
                    |(stage, item, attempt, at, stdout, stderr, stdout_cut, stderr_cut)| {
                        Ok(LogRow {
                            stage,
                            item,
                            attempt,
                            at,
                            stdout: output_text(stdout)?,
                            stderr: output_text(stderr)?,
                            stdout_cut,
                            stderr_cut,
                        })
                    },
                )
                .collect()
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
                 LEFT JOIN runs r ON r.id = e.run WHERE e.id > $1 ORDER BY e.id LIMIT $2",
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
            /// seq, run, stage, item, attempts, finished, duration, project
            type Item = (i64, String, String, String, i64, i64, Option<f64>, String);
            let items: Vec<Item> = sqlx::query_as(
                "SELECT i.seq, i.run, i.stage, i.item, i.attempts, i.finished_ms, i.duration_ms, r.project
                 FROM items i JOIN runs r ON r.id = i.run WHERE i.seq > $1 ORDER BY i.seq LIMIT $2",
            )
            .bind(cursor.item)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for (seq, run, stage, item, attempts, at, duration_ms, project) in items {
                let kind = EventKind::ItemSucceeded {
                    stage: stage.into(),
                    item: item.into(),
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    duration: Duration::try_from_secs_f64(duration_ms.unwrap_or(0.0) / 1000.0)
                        .unwrap_or_default(),
                };
                let event = read_back(Some(RunId::new(run)), at, kind);
                found.items.push((seq, Some((project, event))));
            }
            let decisions: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT id, project, body FROM healing WHERE id > $1 ORDER BY id LIMIT $2",
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
            /// seq, run, at, stage, metric, value, project
            type Sample = (i64, String, i64, Option<String>, String, f64, String);
            let samples: Vec<Sample> = sqlx::query_as(
                "SELECT s.seq, s.run, s.at_ms, s.stage, s.metric, s.value, r.project FROM samples s
                 JOIN runs r ON r.id = s.run WHERE s.seq > $1 ORDER BY s.seq LIMIT $2",
            )
            .bind(cursor.sample)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            // One tick's samples were written together: consecutive rows of a run and a time
            // are one `metrics-sampled` event again.
            for (seq, run, at, stage, metric, value, project) in samples {
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
                    *last = seq;
                    continue;
                }
                let kind = EventKind::MetricsSampled {
                    samples: vec![sample],
                };
                let event = read_back(Some(RunId::new(run)), at, kind);
                found.samples.push((seq, Some((project, event))));
            }
            Ok(found.merge(cursor))
        })
    }

    fn journal_end(&self) -> BoxFuture<'_, Result<JournalCursor>> {
        Box::pin(async move {
            let (event, item, healing, sample): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM events),
                        (SELECT COALESCE(MAX(seq), 0) FROM items),
                        (SELECT COALESCE(MAX(id), 0) FROM healing),
                        (SELECT COALESCE(MAX(seq), 0) FROM samples)",
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
                "SELECT stage FROM stages WHERE run = $1 AND status = 'succeeded'",
            )
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
            for stage in stages {
                resume.stage_completed(stage);
            }
            let items: Vec<(String, String)> = sqlx::query_as(
                "SELECT stage, item FROM items WHERE run = $1 AND status = 'succeeded'
                 ORDER BY finished_ms, seq",
            )
            .bind(run.as_str())
            .fetch_all(&self.pool)
            .await?;
            for (stage, item) in items {
                resume.item_completed(&stage, item);
            }
            let compensations: Vec<(String, String, bool)> =
                sqlx::query_as("SELECT stage, item, hook FROM compensations WHERE run = $1")
                    .bind(run.as_str())
                    .fetch_all(&self.pool)
                    .await?;
            for (stage, item, hook) in compensations {
                resume.compensated(stage, (!hook).then_some(item));
            }
            let rollback: Option<(Option<String>, Option<String>)> =
                sqlx::query_as("SELECT rollback_stage, rollback_error FROM runs WHERE id = $1")
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
                "SELECT body FROM healing WHERE project = $1 AND at_ms >= $2 ORDER BY id DESC LIMIT $3",
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
                 WHERE c.project = $1
                 UNION ALL
                 SELECT h.check_name, h.stage, NULL, h.status, h.at_ms, h.checked_ms, h.last_error
                 FROM health h WHERE h.project = $1
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
            let row: Option<(bool, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT healing_enabled, reason, updated_ms FROM projects WHERE name = $1",
            )
            .bind(project)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some((enabled, reason, updated_ms)) => HealingMode {
                    enabled,
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
                "SELECT strategy, body FROM overrides WHERE project = $1 ORDER BY strategy",
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

impl Alerts for PostgresStore {
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
                "INSERT INTO alerts (fingerprint, project, status, updated_ms, body) VALUES ($1, $2, $3, $4, $5)
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
                     taken_by, taken_ms) VALUES ($1, $2, $3, $4, 'owed', $5, $6, $7, $8)",
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
            // Rows another process is taking are skipped, not waited for and taken again: two
            // processes never take the same delivery within its lease.
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "UPDATE deliveries SET taken_by = $1, taken_ms = $2
                 WHERE id IN (SELECT id FROM deliveries
                     WHERE status = 'owed' AND ($3::TEXT IS NULL OR project = $3)
                     AND (taken_by = $1 OR taken_ms IS NULL OR taken_ms <= $4)
                     FOR UPDATE SKIP LOCKED)
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
            // Rows locked in one order, whatever order the caller names them in.
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            let mut tx = self.pool.begin().await?;
            for id in ids {
                sqlx::query(
                    // A success counts whoever holds the row now; a failure only from its
                    // holder (a late report must not reopen what another process delivered).
                    "UPDATE deliveries SET attempts = attempts + 1, taken_by = NULL, taken_ms = NULL,
                     status = CASE WHEN $2::TEXT IS NULL THEN 'delivered'
                                   WHEN attempts + 1 >= $5 THEN 'dead' ELSE 'owed' END,
                     last_error = $2, delivered_ms = CASE WHEN $2::TEXT IS NULL THEN $3 ELSE NULL END
                     WHERE id = $1 AND status = 'owed' AND ($2::TEXT IS NULL OR taken_by = $4)",
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
                 WHERE taken_by = $1 AND status = 'owed'",
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
                "SELECT body FROM alerts WHERE project = $1 AND status = 'firing' ORDER BY updated_ms",
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
                "SELECT fingerprint, updated_ms, body FROM alerts WHERE project = $1
                 ORDER BY status = 'firing' DESC, updated_ms DESC LIMIT $2",
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
                     FROM deliveries WHERE fingerprint = $1 ORDER BY id",
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
                "INSERT INTO projects (name, channels) VALUES ($1, $2)
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
            // By name, the order SQLite's index on (status, project, id) gives.
            let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT d.project, p.channels FROM (SELECT DISTINCT project FROM deliveries
                 WHERE status = 'owed') d LEFT JOIN projects p ON p.name = d.project
                 ORDER BY d.project COLLATE \"C\"",
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

impl Control for PostgresStore {
    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        Some(self)
    }

    fn claim_run<'a>(&'a self, claim: &'a RunClaim) -> BoxFuture<'a, Result<Option<RunRow>>> {
        Box::pin(async move {
            let now = millis(std::time::SystemTime::now());
            let mut tx = self.pool.begin().await?;
            // The project's row is the claim's lock: a second claimant waits here until the
            // first commits, then reads the run it took.
            sqlx::query("INSERT INTO projects (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                .bind(&claim.project)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT name FROM projects WHERE name = $1 FOR UPDATE")
                .bind(&claim.project)
                .execute(&mut *tx)
                .await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 AND status IN ('running', 'rolling-back')"
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
            sqlx::query(
                "INSERT INTO runs (id, project, pipeline, status, started_ms, owner, heartbeat_ms, stages, strategies)
                 VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8)
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
                    "DELETE FROM {table} WHERE run IN (SELECT id FROM runs WHERE project = $1
                     ORDER BY started_ms DESC, seq DESC OFFSET $2)"
                )))
                .bind(&claim.project)
                .bind(KEEP_RUNS)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM checks WHERE project = $1")
                .bind(&claim.project)
                .execute(&mut *tx)
                .await?;
            for check in &claim.checks {
                sqlx::query(
                    "INSERT INTO checks (project, name, stage, target) VALUES ($1, $2, $3, $4)",
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
            sqlx::query("UPDATE runs SET heartbeat_ms = $1 WHERE id = $2 AND owner = $3")
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
                "INSERT INTO projects (name, healing_enabled, reason, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET healing_enabled = excluded.healing_enabled,
                 reason = excluded.reason, updated_ms = excluded.updated_ms",
            )
            .bind(project)
            .bind(enabled)
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
            let encode = |o: &StrategyOverride| {
                serde_json::to_string(o).map_err(|e| StoreError::Invalid(e.to_string()))
            };
            let now = millis(std::time::SystemTime::now());
            // Read, merge, write on a locked row: the row is made first if missing, so two
            // operators merging into the same new override both keep their changes.
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO overrides (project, strategy, body, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (project, strategy) DO NOTHING",
            )
            .bind(project)
            .bind(strategy)
            .bind(encode(&StrategyOverride::default())?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let existing: String = sqlx::query_scalar(
                "SELECT body FROM overrides WHERE project = $1 AND strategy = $2 FOR UPDATE",
            )
            .bind(project)
            .bind(strategy)
            .fetch_one(&mut *tx)
            .await?;
            let mut merged: StrategyOverride =
                serde_json::from_str(&existing).map_err(|e| StoreError::Invalid(e.to_string()))?;
            merged.merge(changes);
            sqlx::query(
                "UPDATE overrides SET body = $3, updated_ms = $4 WHERE project = $1 AND strategy = $2",
            )
            .bind(project)
            .bind(strategy)
            .bind(encode(&merged)?)
            .bind(now)
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
                "INSERT INTO control (project, action, stage, requested_ms) VALUES ($1, $2, $3, $4) RETURNING id",
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
            // Requests another claimant is taking are skipped, not waited for and taken again:
            // each request goes to exactly one claimant.
            let mut rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "UPDATE control SET claimed_ms = $1, claimed_by = $2
                 WHERE id IN (SELECT id FROM control WHERE project = $3 AND claimed_ms IS NULL
                     FOR UPDATE SKIP LOCKED)
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

/// The server's time, in milliseconds since the Unix epoch: what the work queue's leases and
/// its preference are read on.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// A duration in whole milliseconds, as the work queue binds it.
fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

/// The `NOTIFY` channel a topic of the work queue is sent on.
fn channel(topic: Topic) -> &'static str {
    match topic {
        Topic::Queued => "migrationpilot_work_queued",
        Topic::Finished => "migrationpilot_work_finished",
    }
}

/// A job's result as stored, or a failure saying why it cannot be read.
fn job_result(text: &str) -> JobResult {
    serde_json::from_str(text).unwrap_or_else(|e| JobResult {
        error: Some(StageError::new(format!(
            "the result a worker stored cannot be read: {e}"
        ))),
        ..JobResult::default()
    })
}

impl WorkQueue for PostgresStore {
    fn keep_file<'a>(&'a self, run: &'a str, file: &'a RunFile) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO run_files (run, project, name, text) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (run) DO UPDATE SET name = excluded.name, text = excluded.text",
            )
            .bind(run)
            .bind(&file.project)
            .bind(&file.name)
            .bind(&file.text)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn run_file<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<Option<(RunFile, String)>>> {
        Box::pin(async move {
            let row: Option<(String, String, String, String)> =
                sqlx::query_as("SELECT project, name, text, digest FROM run_files WHERE run = $1")
                    .bind(run)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(|(project, name, text, digest)| {
                (
                    RunFile {
                        project,
                        name,
                        text,
                    },
                    digest,
                )
            }))
        })
    }

    fn queue_jobs<'a>(&'a self, jobs: &'a [NewJob]) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            // Durable: a job lost to a crash of the server would be waited for forever. One
            // statement queues the jobs and wakes the workers.
            let mut insert = sqlx::QueryBuilder::<Postgres>::new(
                "WITH queued AS (INSERT INTO work (run, project, stage, item, key, attempt, role, prefer) ",
            );
            insert.push_values(jobs, |mut row, job| {
                row.push_bind(&job.run)
                    .push_bind(&job.project)
                    .push_bind(&job.stage)
                    .push_bind(&job.item)
                    .push_bind(&job.key)
                    .push_bind(i64::from(job.attempt))
                    .push_bind(job.role.as_str())
                    .push_bind(&job.prefer);
            });
            insert
                .push(" RETURNING id) SELECT queued.id FROM queued CROSS JOIN (SELECT pg_notify(");
            insert.push_bind(channel(Topic::Queued));
            insert.push(", '')) AS woken ORDER BY queued.id");
            let ids: Vec<i64> = insert.build_query_scalar().fetch_all(&self.pool).await?;
            Ok(ids)
        })
    }

    fn claim_jobs<'a>(
        &'a self,
        worker: &'a str,
        filter: &'a Filter,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Job>>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            type Claimed = (
                i64,
                String,
                String,
                String,
                Option<String>,
                Option<String>,
                i64,
                String,
                Option<String>,
                String,
            );
            // Leases and the preference are read on the server's clock: the workers' clocks
            // need not agree. A job of a run whose file is not kept is not claimable.
            let rows: Vec<Claimed> = sqlx::query_as(AssertSqlSafe(format!(
                "UPDATE work SET status = 'leased', worker = $1, lease_ms = {NOW_MS} + $2
                 FROM run_files f
                 WHERE f.run = work.run AND work.id IN (
                     SELECT id FROM work
                     WHERE (status = 'queued' OR (status = 'leased' AND lease_ms < {NOW_MS}))
                       AND (prefer IS NULL OR prefer = $1 OR created_ms < {NOW_MS} - $3)
                       AND (cardinality($4::text[]) = 0 OR project = ANY($4))
                       AND ($5::text IS NULL OR run = $5)
                     ORDER BY id LIMIT $6
                     FOR UPDATE SKIP LOCKED)
                 RETURNING work.id, work.run, work.project, work.stage, work.item, work.key,
                           work.attempt, work.role, work.prefer, f.digest"
            )))
            .bind(worker)
            .bind(millis_of(lease))
            .bind(millis_of(super::work::PREFERRED_FOR))
            .bind(&filter.projects)
            .bind(&filter.run)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.work)
            .await?;
            let mut jobs: Vec<Job> = rows
                .into_iter()
                .map(
                    |(id, run, project, stage, item, key, attempt, role, prefer, file)| {
                        Ok(Job {
                            id,
                            file,
                            job: NewJob {
                                run,
                                project,
                                stage,
                                item,
                                key,
                                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                                role: Role::parse(&role).ok_or_else(|| {
                                    StoreError::Invalid(format!(
                                        "job {id} has an unknown role `{role}`"
                                    ))
                                })?,
                                prefer,
                            },
                        })
                    },
                )
                .collect::<Result<_>>()?;
            jobs.sort_by_key(|j| j.id);
            Ok(jobs)
        })
    }

    fn renew_jobs<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [i64],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let held: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "UPDATE work SET lease_ms = {NOW_MS} + $1
                 WHERE id = ANY($2) AND worker = $3 AND status = 'leased'
                 RETURNING id"
            )))
            .bind(millis_of(lease))
            .bind(ids)
            .bind(worker)
            .fetch_all(&self.work)
            .await?;
            let held: std::collections::HashSet<i64> = held.into_iter().collect();
            Ok(ids
                .iter()
                .copied()
                .filter(|id| !held.contains(id))
                .collect())
        })
    }

    fn finish_jobs<'a>(
        &'a self,
        worker: &'a str,
        results: &'a [(i64, JobResult)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if results.is_empty() {
                return Ok(());
            }
            let ids: Vec<i64> = results.iter().map(|(id, _)| *id).collect();
            let bodies: Vec<String> = results
                .iter()
                .map(|(_, result)| {
                    serde_json::to_string(result).map_err(|e| StoreError::Invalid(e.to_string()))
                })
                .collect::<Result<_>>()?;
            // A job another worker took after this one's lease ran out is finished by whichever
            // ends first; a cancelled one stays cancelled. One statement records the results
            // and wakes the runs waiting for them.
            sqlx::query(AssertSqlSafe(format!(
                "WITH finished AS (
                     UPDATE work SET status = 'done', worker = $1, finished_ms = {NOW_MS},
                     result = r.body
                     FROM UNNEST($2::bigint[], $3::text[]) AS r(id, body)
                     WHERE work.id = r.id AND work.status = 'leased')
                 SELECT pg_notify($4, '')"
            )))
            .bind(worker)
            .bind(&ids)
            .bind(&bodies)
            .bind(channel(Topic::Finished))
            .execute(&self.work)
            .await?;
            Ok(())
        })
    }

    fn job_results<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<Vec<(i64, JobResult)>>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, result FROM work WHERE id = ANY($1) AND status = 'done'",
            )
            .bind(ids)
            .fetch_all(&self.work)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, body)| (id, job_result(&body)))
                .collect())
        })
    }

    fn cancel_jobs<'a>(&'a self, ids: &'a [i64]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            sqlx::query(
                "UPDATE work SET status = 'cancelled' WHERE id = ANY($1) AND status IN ('queued', 'leased')",
            )
            .bind(ids)
            .execute(&self.work)
            .await?;
            Ok(())
        })
    }

    fn cancel_run_jobs<'a>(&'a self, run: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE work SET status = 'cancelled' WHERE run = $1 AND status IN ('queued', 'leased')",
            )
            .bind(run)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    fn notifications(&self, topic: Topic) -> BoxFuture<'_, Result<BoxStream<'static, ()>>> {
        Box::pin(async move {
            let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
            listener.listen(channel(topic)).await?;
            let stream = futures_util::stream::unfold(listener, |mut listener| async move {
                // `try_recv` gives `None` when the connection was lost: the stream ends, and
                // its reader goes on polling.
                match listener.try_recv().await {
                    Ok(Some(_)) => Some(((), listener)),
                    _ => None,
                }
            });
            Ok(Box::pin(stream) as BoxStream<'static, ()>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::TestDatabase;
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_opening_a_fresh_database_migrate_it_once() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let (a, b) = tokio::join!(
            PostgresStore::open(&database.url),
            PostgresStore::open(&database.url)
        );
        let (a, _b) = (a.unwrap(), b.unwrap());
        a.set_healing_mode("p", false, Some("freeze"))
            .await
            .unwrap();
        let again = PostgresStore::open(&database.url).await.unwrap();
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version")
            .fetch_all(&again.pool)
            .await
            .unwrap();
        assert_eq!(versions, [1, 2], "each migration once");
        let mode = again.healing_mode("p").await.unwrap();
        assert_eq!(
            (mode.enabled, mode.reason.as_deref()),
            (false, Some("freeze"))
        );
    }

    #[tokio::test]
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
