//! How operators steer, and how a run takes its project.

use self_healing::BoxFuture;
use self_healing::event::ActionKind;
use self_healing::healing::StrategyOverride;

use super::{Backend, RUN_COLUMNS, json, now, run_row};
use crate::store::dialect::Dialect;
use crate::store::work::WorkQueue;
use crate::store::{Claimed, Control, KEEP_RUNS, Owner, Result, RunClaim, RunRow, StoreError};

impl Control for Backend {
    fn work_queue(&self) -> Option<&dyn WorkQueue> {
        Dialect::work_queue(self)
    }

    fn claim_run<'a>(&'a self, claim: &'a RunClaim) -> BoxFuture<'a, Result<Option<RunRow>>> {
        Box::pin(async move {
            let now = now();
            let mut tx = self.begin_write().await?;
            // The project's row is the claim's lock where writers run side by side (SQLite's
            // write transaction already holds the whole database): a second claimant waits
            // here until the first commits, then reads the run it took.
            sqlx::query("INSERT INTO projects (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                .bind(&claim.project)
                .execute(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM projects WHERE name = $1{}",
                Self::FOR_UPDATE
            )))
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
            // A run's id is its own: a fresh run never takes the row of another, and only a
            // run in the store can be resumed.
            let taken = if claim.resuming {
                sqlx::query(
                    "UPDATE runs SET owner = $3, heartbeat_ms = $4, stages = $5, strategies = $6,
                     finished_ms = NULL, error = NULL,
                     status = CASE WHEN status = 'rolling-back' THEN 'rolling-back' ELSE 'running' END
                     WHERE id = $1 AND project = $2",
                )
                .bind(&claim.run)
                .bind(&claim.project)
                .bind(claim.owner.to_string())
                .bind(now)
                .bind(json(&claim.stages)?)
                .bind(json(&claim.strategies)?)
                .execute(&mut *tx)
                .await?
            } else {
                sqlx::query(
                    "INSERT INTO runs (id, project, pipeline, status, started_ms, owner, heartbeat_ms, stages, strategies)
                     VALUES ($1, $2, $3, 'running', $4, $5, $4, $6, $7) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&claim.run)
                .bind(&claim.project)
                .bind(&claim.pipeline)
                .bind(now)
                .bind(claim.owner.to_string())
                .bind(json(&claim.stages)?)
                .bind(json(&claim.strategies)?)
                .execute(&mut *tx)
                .await?
            };
            if taken.rows_affected() == 0 {
                return Err(StoreError::Invalid(if claim.resuming {
                    format!(
                        "run `{}` of project `{}` is not in the store: there is nothing to resume",
                        claim.run, claim.project
                    )
                } else {
                    format!(
                        "run id `{}` is already in the store: a run's id is never used twice",
                        claim.run
                    )
                }));
            }
            // Logs and samples are kept for the project's newest runs only.
            for table in ["logs", "samples"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE run IN (SELECT id FROM runs WHERE project = $1)
                     AND run NOT IN (SELECT id FROM runs WHERE project = $1
                     ORDER BY started_ms DESC, rowid DESC LIMIT $2)"
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
                .bind(now())
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
            .bind(now())
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
            let now = now();
            // Read, merge, write on a locked row: the row is made first if missing, so two
            // operators merging into the same new override both keep their changes.
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO overrides (project, strategy, body, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (project, strategy) DO NOTHING",
            )
            .bind(project)
            .bind(strategy)
            .bind(json(&StrategyOverride::default())?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let existing: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT body FROM overrides WHERE project = $1 AND strategy = $2{}",
                Self::FOR_UPDATE
            )))
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
            .bind(json(&merged)?)
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
            .bind(now())
            .fetch_one(&self.pool)
            .await?)
        })
    }

    fn claim<'a>(&'a self, project: &'a str, claimant: &'a str) -> BoxFuture<'a, Result<Claimed>> {
        Box::pin(async move {
            // Requests another claimant is taking are skipped, not waited for and taken again:
            // each request goes to exactly one claimant.
            let mut rows: Vec<(i64, String, String, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE control SET claimed_ms = $1, claimed_by = $2
                 WHERE id IN (SELECT id FROM control WHERE project = $3 AND claimed_ms IS NULL{})
                 RETURNING id, action, stage, requested_ms",
                    Self::SKIP_LOCKED
                )))
                .bind(now())
                .bind(claimant)
                .bind(project)
                .fetch_all(&self.pool)
                .await?;
            rows.sort_by_key(|r| r.0);
            Ok(Claimed::from_rows(rows))
        })
    }
}
