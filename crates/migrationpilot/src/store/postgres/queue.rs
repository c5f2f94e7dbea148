//! The work queue on PostgreSQL: jobs queued durably, claimed with `FOR UPDATE SKIP LOCKED`
//! under a lease the server's clock reads, renewed, finished and cancelled; `LISTEN/NOTIFY`
//! wakes workers and runs.

use std::time::Duration;

use futures_util::stream::BoxStream;
use sqlx::{AssertSqlSafe, Postgres};

use self_healing::{BoxFuture, StageError};

use super::PostgresStore;
use crate::store::work::{Filter, Job, JobResult, NewJob, Role, RunFile, Topic, WorkQueue};
use crate::store::{Result, StoreError};

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
            .bind(millis_of(crate::store::work::PREFERRED_FOR))
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
