//! The journal's writer: each batch of events, projected into rows, in one transaction.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{QueryBuilder, Transaction};

use self_healing::event::Event;
use self_healing::{BoxFuture, PipelineMetrics};

use super::{Backend, Db, json};
use crate::store::dialect::Dialect;
use crate::store::projection::{self, ItemDone, Write};
use crate::store::{CheckSeen, Journal, Result, StoreError};

impl Journal for Backend {
    fn append<'a>(
        &'a self,
        project: &'a str,
        events: &'a [Arc<Event>],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let writes = projection::project(project, events, Backend::STATEMENT)?;
            // Completions go in without reporting which rows they inserted. In the rare batch
            // where an item had completed before, the batch is undone and written again,
            // reporting them (no savepoints: a PostgreSQL transaction with many slows the
            // whole server).
            for reporting in [false, true] {
                let mut tx = self.begin_journal().await?;
                let mut whole = true;
                // A statement of completions is built while the one before it runs.
                let mut ahead = None;
                for (i, write) in writes.iter().enumerate() {
                    match write {
                        Write::ItemsSucceeded(done) => {
                            let insert = ahead
                                .take()
                                .unwrap_or_else(|| Backend::insert_completions(done));
                            let next = match writes.get(i + 1) {
                                Some(Write::ItemsSucceeded(next)) => Some(next),
                                _ => None,
                            };
                            let (written, built) = tokio::join!(
                                biased;
                                insert_completions(&mut tx, insert, done, reporting),
                                async { next.map(|next| Backend::insert_completions(next)) },
                            );
                            ahead = built;
                            if !written? {
                                whole = false;
                                break;
                            }
                        }
                        write => execute(&mut tx, write).await?,
                    }
                }
                if whole {
                    tx.commit().await?;
                    return Ok(());
                }
                tx.rollback().await?;
            }
            Err(StoreError::Invalid(
                "item completions could not be written".into(),
            ))
        })
    }

    fn record_metrics<'a>(
        &'a self,
        run: &'a str,
        metrics: &'a PipelineMetrics,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query("UPDATE runs SET metrics = $1 WHERE id = $2")
                .bind(json(metrics)?)
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
            // The journal's transaction: a batch that changes the same checks' health in
            // another order cannot deadlock with this one.
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

/// Carries out one write of the projection inside the batch's transaction; completions are
/// `append`'s own (see `insert_completions`).
async fn execute(tx: &mut Transaction<'_, Db>, write: &Write<'_>) -> Result<()> {
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
        Write::ItemsSucceeded(_) => unreachable!("`append` writes completions itself"),
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
            let mut insert =
                QueryBuilder::<Db>::new("INSERT INTO samples (run, at_ms, stage, metric, value) ");
            // Rows are numbered in the order of VALUES: one tick's samples keep it.
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

/// Item completions in one multi-row statement, `insert` (the dialect's, for `done`). A
/// completion is final: an item run again keeps its first row, and, when `reporting`, the new
/// completion is kept as an event (see `projection::completed_again`). Without `reporting`,
/// returns false when an item had completed before (the insert failed on the key, and the
/// transaction with it), for the caller to write the batch again reporting them.
async fn insert_completions(
    tx: &mut Transaction<'_, Db>,
    mut insert: QueryBuilder<Db>,
    done: &[ItemDone<'_>],
    reporting: bool,
) -> Result<bool> {
    let bound = Backend::STATEMENT;
    let keep = bound.fixed_text || done.len() == bound.rows;
    if !reporting {
        // A plain insert: the key is looked up once, where `ON CONFLICT` looks it up before
        // inserting and again as it inserts.
        return match insert.build().persistent(keep).execute(&mut **tx).await {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        };
    }
    insert.push(" ON CONFLICT (run, stage, item) DO NOTHING RETURNING run, stage, item");
    let inserted: HashSet<(String, String, String)> = insert
        .build_query_as::<(String, String, String)>()
        .persistent(keep)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    if inserted.len() < done.len() {
        for write in projection::completed_again(done, inserted)? {
            execute(tx, &write).await?;
        }
    }
    Ok(true)
}
