//! What the command line, the API and a resuming run read.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;

use self_healing::BoxFuture;
use self_healing::StageError;
use self_healing::event::{Event, EventKind, MetricSample, RunId};
use self_healing::healing::{HealingRecord, StrategyOverride};
use self_healing::pipeline::Resume;

use super::{Backend, RUN_COLUMNS, output_text, read_bodies, run_row};
use crate::store::projection::{Found, read_back};
use crate::store::{
    ChaosRow, EventRow, FailureCount, HealingMode, HealthRow, JournalCursor, JournalEntry,
    LogEntry, LogFilter, LogOutput, LogRow, Queries, Result, RunDetail, RunRow, SampleRow,
    StageRow, StoreError, millis,
};

/// The columns [`log_entry`] reads: a log without its output, its sizes counted by the
/// database (in bytes, whichever type an earlier version stored the output as).
const LOG_ENTRY_COLUMNS: &str = "rowid, stage, item, attempt, at_ms,
     CAST(octet_length(stdout) AS BIGINT) AS stdout_bytes, CAST(octet_length(stderr) AS BIGINT) AS stderr_bytes,
     stdout_cut, stderr_cut";

/// rowid, stage, item, attempt, at, stdout bytes, stderr bytes, stdout cut, stderr cut.
type LogEntryRow = (i64, String, Option<String>, i64, i64, i64, i64, i64, i64);

fn log_entry(
    (id, stage, item, attempt, at, stdout_bytes, stderr_bytes, stdout_cut, stderr_cut): LogEntryRow,
) -> LogEntry {
    LogEntry {
        id,
        stage,
        item,
        attempt,
        at,
        stdout_bytes,
        stderr_bytes,
        stdout_cut,
        stderr_cut,
    }
}

/// Failed attempts (stage, event body) counted by stage, code and whether they were injected.
fn count_failures(failed: &[(Option<String>, String)]) -> Vec<FailureCount> {
    let mut counts: Vec<FailureCount> = Vec::new();
    for (stage, body) in failed {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(body) else {
            continue;
        };
        let error = &event["error"];
        let code = error["code"].as_str().map(str::to_owned);
        let injected = error["rule"].as_str() == Some(StageError::INJECTED_RULE);
        let stage = stage.clone().unwrap_or_default();
        match counts
            .iter_mut()
            .find(|c| c.stage == stage && c.code == code && c.injected == injected)
        {
            Some(count) => count.count += 1,
            None => counts.push(FailureCount {
                stage,
                code,
                injected,
                count: 1,
            }),
        }
    }
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.stage.cmp(&b.stage)));
    counts
}

impl Queries for Backend {
    fn runs<'a>(&'a self, project: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<RunRow>>> {
        Box::pin(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 ORDER BY started_ms DESC, rowid DESC LIMIT $2"
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
            // By name: stages the run did not declare come after its own in this order.
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
            let failed: Vec<(Option<String>, String)> = sqlx::query_as(
                "SELECT stage, body FROM events WHERE run = $1 AND kind = 'attempt-failed'",
            )
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
            let chaos: Option<(String,)> = sqlx::query_as(
                "SELECT body FROM events WHERE run = $1 AND kind = 'chaos-injecting' ORDER BY id DESC LIMIT 1",
            )
            .bind(run)
            .fetch_optional(&self.pool)
            .await?;
            let chaos = chaos
                .map(|(body,)| serde_json::from_str::<Event>(&body))
                .transpose()
                .map_err(|e| StoreError::Invalid(format!("a run's chaos: {e}")))?
                .and_then(|event| match event.kind {
                    EventKind::ChaosInjecting { faults, seed } => Some(ChaosRow { faults, seed }),
                    _ => None,
                });
            Ok(Some(RunDetail {
                run: run_row,
                failures: count_failures(&failed),
                chaos,
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
                 AND (CAST($2 AS TEXT) IS NULL OR metric = $2) ORDER BY at_ms, rowid",
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
                 WHERE run = $1 AND (CAST($2 AS TEXT) IS NULL OR stage = $2) AND (CAST($3 AS TEXT) IS NULL OR item = $3)
                 AND (CAST($4 AS BIGINT) IS NULL OR attempt = $4) ORDER BY at_ms, rowid",
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

    fn log_entries<'a>(
        &'a self,
        run: &'a str,
        filter: &'a LogFilter,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<LogEntry>>> {
        Box::pin(async move {
            let rows: Vec<LogEntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {LOG_ENTRY_COLUMNS} FROM logs
                 WHERE run = $1 AND rowid > $2 AND (CAST($3 AS TEXT) IS NULL OR stage = $3)
                 AND (CAST($4 AS TEXT) IS NULL OR item = $4) AND (CAST($5 AS BIGINT) IS NULL OR attempt = $5)
                 ORDER BY rowid LIMIT $6"
            )))
            .bind(run)
            .bind(after)
            .bind(&filter.stage)
            .bind(&filter.item)
            .bind(filter.attempt)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(log_entry).collect())
        })
    }

    fn log_output<'a>(&'a self, run: &'a str, id: i64) -> BoxFuture<'a, Result<Option<LogOutput>>> {
        Box::pin(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {LOG_ENTRY_COLUMNS}, stdout, stderr FROM logs WHERE run = $1 AND rowid = $2"
            )))
            .bind(run)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let entry = log_entry(sqlx::FromRow::from_row(&row)?);
            Ok(Some(LogOutput {
                entry,
                stdout: output_text(row.try_get("stdout")?)?,
                stderr: output_text(row.try_get("stderr")?)?,
            }))
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
            /// rowid, run, stage, item, attempts, finished, duration, project
            type Item = (i64, String, String, String, i64, i64, Option<f64>, String);
            let items: Vec<Item> = sqlx::query_as(
                "SELECT i.rowid, i.run, i.stage, i.item, i.attempts, i.finished_ms, i.duration_ms, r.project
                 FROM items i JOIN runs r ON r.id = i.run WHERE i.rowid > $1 ORDER BY i.rowid LIMIT $2",
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
                "SELECT id, project, body FROM healing WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(cursor.healing)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for (id, project, body) in decisions {
                let event = serde_json::from_str::<Box<HealingRecord>>(&body)
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
                 JOIN runs r ON r.id = s.run WHERE s.rowid > $1 ORDER BY s.rowid LIMIT $2",
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
                 ORDER BY finished_ms, rowid",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_stage_and_code_with_the_injected_apart() {
        let failed = |stage: &str, code: Option<&str>, rule: Option<&str>| {
            let mut error = StageError::new("x");
            if let Some(code) = code {
                error = error.with_code(code.to_owned());
            }
            if let Some(rule) = rule {
                error = error.with_rule(rule.to_owned());
            }
            let body = serde_json::json!({ "type": "attempt-failed", "error": error });
            (Some(stage.to_owned()), body.to_string())
        };
        let counted = count_failures(&[
            failed("load", Some("ECONNRESET"), Some("builtin:libpq")),
            failed("load", Some("ECONNRESET"), Some(StageError::INJECTED_RULE)),
            failed("load", Some("ECONNRESET"), None),
            failed("load", None, None),
            failed("verify", Some("ECONNRESET"), None),
            (Some("load".into()), "not json".into()),
        ]);
        let seen: Vec<(&str, Option<&str>, bool, u64)> = counted
            .iter()
            .map(|c| (c.stage.as_str(), c.code.as_deref(), c.injected, c.count))
            .collect();
        assert_eq!(
            seen,
            [
                ("load", Some("ECONNRESET"), false, 2),
                ("load", Some("ECONNRESET"), true, 1),
                ("load", None, false, 1),
                ("verify", Some("ECONNRESET"), false, 1),
            ]
        );
    }
}
