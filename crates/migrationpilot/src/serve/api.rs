//! The read endpoints of docs/API.md. Unknown projects and runs are 404s; bad query values,
//! values out of the document's bounds and unknown parameters are 400s naming the parameter.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::{ApiError, App, NoParams, no_params};
use crate::control::{self, Refused};
use crate::store::{self, HealingMode, HealthRow, LogFilter, RunRow};

/// A run as the API shows it: the row, and whether a process still drives it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Run {
    #[serde(flatten)]
    row: RunRow,
    live: bool,
}

impl From<RunRow> for Run {
    fn from(row: RunRow) -> Self {
        let live = row.is_alive(store::millis(std::time::SystemTime::now()));
        Run { row, live }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Project {
    name: String,
    healing: HealingMode,
    latest_run: Option<Run>,
    live: bool,
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Store(error) => error.into(),
            Refused::UnknownProject(_) | Refused::UnknownName(_) => {
                ApiError::not_found(refused.to_string())
            }
            Refused::NoRuns(_) => {
                ApiError::new(axum::http::StatusCode::CONFLICT, refused.to_string())
            }
            Refused::Invalid(message) => ApiError::bad_request(message),
        }
    }
}

/// A query string, or a 400 saying which parameter is wrong.
pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))
}

/// `limit`, defaulting and capped as documented.
fn limit(given: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match given {
        None => Ok(default),
        Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) if n > max => Err(ApiError::bad_request(format!(
            "limit must be at most {max}"
        ))),
        Some(n) => Ok(n),
    }
}

async fn project_of(app: &App, name: String) -> Result<Project, ApiError> {
    let healing = app.store.healing_mode(&name).await?;
    let latest_run = app
        .store
        .runs(&name, 1)
        .await?
        .into_iter()
        .next()
        .map(Run::from);
    let live = latest_run.as_ref().is_some_and(|r| r.live);
    Ok(Project {
        name,
        healing,
        latest_run,
        live,
    })
}

pub(super) async fn projects(
    State(app): State<App>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<Vec<Project>>, ApiError> {
    no_params(q)?;
    let mut out = Vec::new();
    for name in app.store.projects().await? {
        out.push(project_of(&app, name).await?);
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Limit {
    limit: Option<u32>,
}

pub(super) async fn runs(
    State(app): State<App>,
    Path(project): Path<String>,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Vec<Run>>, ApiError> {
    let limit = limit(query(q)?.limit, 20, 500)?;
    control::known_project(&*app.store, &project).await?;
    let runs = app.store.runs(&project, limit).await?;
    Ok(Json(runs.into_iter().map(Run::from).collect()))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunDetail {
    run: Run,
    stages: Vec<store::StageRow>,
    metrics: Option<self_healing::PipelineMetrics>,
    failures: Vec<store::FailureCount>,
    chaos: Option<store::ChaosRow>,
}

async fn run_detail(app: &App, run: &str) -> Result<store::RunDetail, ApiError> {
    app.store
        .run(run)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run `{run}`")))
}

pub(super) async fn run(
    State(app): State<App>,
    Path(run): Path<String>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    no_params(q)?;
    let detail = run_detail(&app, &run).await?;
    Ok(Json(RunDetail {
        run: detail.run.into(),
        stages: detail.stages,
        metrics: detail.metrics,
        failures: detail.failures,
        chaos: detail.chaos,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn events(
    State(app): State<App>,
    Path(run): Path<String>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Vec<store::EventRow>>, ApiError> {
    let q = query(q)?;
    let limit = limit(q.limit, 100, 1000)?;
    let after = after(q.after)?;
    run_detail(&app, &run).await?;
    Ok(Json(app.store.events(&run, after, limit).await?))
}

/// `after`, an id: from 0 (the default, before the first).
fn after(given: Option<i64>) -> Result<i64, ApiError> {
    match given {
        Some(n) if n < 0 => Err(ApiError::bad_request("after must be at least 0")),
        given => Ok(given.unwrap_or(0)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SamplesQuery {
    metric: Option<String>,
}

pub(super) async fn samples(
    State(app): State<App>,
    Path(run): Path<String>,
    q: Result<Query<SamplesQuery>, QueryRejection>,
) -> Result<Json<Vec<store::SampleRow>>, ApiError> {
    let q = query(q)?;
    run_detail(&app, &run).await?;
    Ok(Json(app.store.samples(&run, q.metric.as_deref()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    stage: Option<String>,
    item: Option<String>,
    attempt: Option<u32>,
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /runs/{run}/logs`: a page of the run's attempts, without their output, so the answer
/// stays small however much the attempts wrote (`/logs/{id}` has one attempt's output).
pub(super) async fn logs(
    State(app): State<App>,
    Path(run): Path<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Json<Vec<store::LogEntry>>, ApiError> {
    let q = query(q)?;
    if q.attempt == Some(0) {
        return Err(ApiError::bad_request("attempt counts from 1"));
    }
    let limit = limit(q.limit, 100, 1000)?;
    let after = after(q.after)?;
    let detail = run_detail(&app, &run).await?;
    if let Some(stage) = &q.stage
        && !detail.run.stages.iter().any(|s| s == stage)
    {
        return Err(ApiError::not_found(format!(
            "run `{run}` has no stage `{stage}` (it has {})",
            detail.run.stages.join(", ")
        )));
    }
    let filter = LogFilter {
        stage: q.stage,
        item: q.item,
        attempt: q.attempt.map(i64::from),
    };
    Ok(Json(
        app.store.log_entries(&run, &filter, after, limit).await?,
    ))
}

/// `GET /runs/{run}/logs/{id}`: one attempt's output, as kept (at most the tail the library
/// keeps per stream).
pub(super) async fn log_output(
    State(app): State<App>,
    Path((run, id)): Path<(String, i64)>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<store::LogOutput>, ApiError> {
    no_params(q)?;
    if id < 1 {
        return Err(ApiError::bad_request("a log's id counts from 1"));
    }
    run_detail(&app, &run).await?;
    app.store
        .log_output(&run, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("run `{run}` has no log {id}")))
}

pub(super) async fn healing(
    State(app): State<App>,
    Path(project): Path<String>,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Vec<self_healing::healing::HealingRecord>>, ApiError> {
    let limit = limit(query(q)?.limit, 50, 1000)?;
    control::known_project(&*app.store, &project).await?;
    Ok(Json(app.store.history(&project, limit, None).await?))
}

#[derive(Debug, Serialize)]
pub(super) struct Health {
    live: bool,
    checks: Vec<HealthRow>,
}

pub(super) async fn health(
    State(app): State<App>,
    Path(project): Path<String>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<Health>, ApiError> {
    no_params(q)?;
    control::known_project(&*app.store, &project).await?;
    let project = project_of(&app, project).await?;
    Ok(Json(Health {
        live: project.live,
        checks: app.store.health(&project.name).await?,
    }))
}

pub(super) async fn alerts(
    State(app): State<App>,
    Path(project): Path<String>,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Vec<store::AlertRow>>, ApiError> {
    let limit = limit(query(q)?.limit, 50, 1000)?;
    control::known_project(&*app.store, &project).await?;
    Ok(Json(app.store.alerts(&project, limit).await?))
}
