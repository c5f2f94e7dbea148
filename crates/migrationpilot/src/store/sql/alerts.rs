//! The alerts' outbox: alerts kept with what each channel is owed, taken under a lease.

use self_healing::BoxFuture;
use self_healing::alert::{Alert, AlertStatus, Delivery};

use super::{Backend, json, now, read_bodies};
use crate::store::dialect::Dialect;
use crate::store::{AlertRow, Alerts, DeliveryRow, Owing, Result, StoreError};

impl Alerts for Backend {
    fn keep_alert<'a>(
        &'a self,
        owner: &'a str,
        alert: &'a Alert,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let fingerprint = alert.fingerprint();
            let body = json(alert)?;
            let now = now();
            let mut tx = self.begin_write().await?;
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

    fn raise_once<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut tx = self.begin_write().await?;
            let raised = sqlx::query(
                "INSERT INTO alerts (fingerprint, project, status, updated_ms, body) VALUES ($1, $2, 'firing', $3, $4)
                 ON CONFLICT (fingerprint) DO UPDATE SET status = excluded.status,
                 updated_ms = excluded.updated_ms, body = excluded.body
                 WHERE alerts.status <> 'firing'",
            )
            .bind(alert.fingerprint())
            .bind(&*alert.project)
            .bind(now())
            .bind(json(alert)?)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            tx.commit().await?;
            Ok(raised)
        })
    }

    fn take_deliveries<'a>(
        &'a self,
        owner: &'a str,
        lease: std::time::Duration,
        project: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Delivery>>> {
        Box::pin(async move {
            let now = now();
            let expired = now - i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
            // Rows another process is taking are skipped, not waited for and taken again: two
            // processes never take the same delivery within its lease.
            let rows: Vec<(i64, String, String, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE deliveries SET taken_by = $1, taken_ms = $2
                 WHERE id IN (SELECT id FROM deliveries
                     WHERE status = 'owed' AND (CAST($3 AS TEXT) IS NULL OR project = $3)
                     AND (taken_by = $1 OR taken_ms IS NULL OR taken_ms <= $4){}
                 )
                 RETURNING id, channel, body, attempts",
                    Self::SKIP_LOCKED
                )))
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
            let now = now();
            // Rows locked in one order, whatever order the caller names them in.
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            let mut tx = self.begin_write().await?;
            for id in ids {
                sqlx::query(
                    // A success counts whoever holds the row now; a failure only from its
                    // holder (a late report must not reopen what another process delivered).
                    "UPDATE deliveries SET attempts = attempts + 1, taken_by = NULL, taken_ms = NULL,
                     status = CASE WHEN CAST($2 AS TEXT) IS NULL THEN 'delivered'
                                   WHEN attempts + 1 >= $5 THEN 'dead' ELSE 'owed' END,
                     last_error = $2, delivered_ms = CASE WHEN CAST($2 AS TEXT) IS NULL THEN $3 ELSE NULL END
                     WHERE id = $1 AND status = 'owed' AND (CAST($2 AS TEXT) IS NULL OR taken_by = $4)",
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

    fn set_alert_settings<'a>(
        &'a self,
        project: &'a str,
        settings: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO projects (name, channels) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET channels = excluded.channels",
            )
            .bind(project)
            .bind(settings.to_string())
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn alert_settings<'a>(
        &'a self,
        project: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>>> {
        Box::pin(async move {
            let kept: Option<Option<String>> =
                sqlx::query_scalar("SELECT channels FROM projects WHERE name = $1")
                    .bind(project)
                    .fetch_optional(&self.pool)
                    .await?;
            kept.flatten()
                .map(|text| {
                    serde_json::from_str(&text).map_err(|e| {
                        StoreError::Invalid(format!("project `{project}`'s alert settings: {e}"))
                    })
                })
                .transpose()
        })
    }

    fn owing_projects(&self) -> BoxFuture<'_, Result<Vec<Owing>>> {
        Box::pin(async move {
            let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT d.project, p.channels FROM (SELECT DISTINCT project FROM deliveries
                 WHERE status = 'owed') d LEFT JOIN projects p ON p.name = d.project
                 ORDER BY d.project",
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
