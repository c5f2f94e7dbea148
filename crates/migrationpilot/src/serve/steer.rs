//! The four steering endpoints, behind `Authorization: Bearer TOKEN`: 401 without it, 403 with
//! a wrong one, 403 for every request when the server has no token. They ask through
//! [`control`](crate::control), as the CLI does.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use self_healing::healing::{Mode, StrategyOverride};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ApiError, App};
use crate::control;

/// The steering token. Never printed: its `Debug` shows its length only.
pub struct Token(String);

impl Token {
    pub(super) fn new(token: &str) -> Self {
        Token(token.to_owned())
    }

    /// Adds the token to `secrets`, so that it is masked wherever a run shows or keeps text,
    /// without being handed out.
    pub fn mask_in(&self, secrets: &mut crate::env::Secrets) {
        secrets.add(&self.0);
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} characters)", self.0.len())
    }
}

/// Lets a request through only with the server's token.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize_with(app, headers, None)
}

/// Lets a request through only with the server's token, from its `Authorization` header or,
/// given, `from_query` (an `EventSource`'s `?access_token=`).
pub(super) fn authorize_with(
    app: &App,
    headers: &HeaderMap,
    from_query: Option<&str>,
) -> Result<(), ApiError> {
    let Some(token) = &app.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "steering over HTTP is off: the server was started without MIGRATIONPILOT_TOKEN or --token-file",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(from_query);
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this needs `Authorization: Bearer TOKEN`",
        )),
        Some(given) if token.matches(given.trim()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// A steering request: authorized by the token, its project from the path, its JSON body (an
/// empty body reads as `{}`; errors name the field and position).
pub(super) struct Steer<T> {
    project: String,
    body: T,
}

impl<T: DeserializeOwned> FromRequest<App> for Steer<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &App) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        authorize(app, &parts.headers)?;
        let Path(project) = Path::<String>::from_request_parts(&mut parts, app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(text);
        let body = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ApiError::bad_request(format!("bad JSON body: {inner}"))
            } else {
                ApiError::bad_request(format!("bad JSON body at `{path}`: {inner}"))
            }
        })?;
        Ok(Steer { project, body })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DisableBody {
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnableBody {}

#[derive(Debug, Serialize)]
pub(super) struct ModeSet {
    project: String,
    enabled: bool,
}

async fn set_mode(
    app: &App,
    project: String,
    enabled: bool,
    reason: Option<&str>,
) -> Result<Json<ModeSet>, ApiError> {
    control::known_project(&*app.store, &project).await?;
    app.store
        .set_healing_mode(&project, enabled, reason)
        .await?;
    Ok(Json(ModeSet { project, enabled }))
}

pub(super) async fn disable(
    State(app): State<App>,
    steer: Steer<DisableBody>,
) -> Result<Json<ModeSet>, ApiError> {
    set_mode(&app, steer.project, false, steer.body.reason.as_deref()).await
}

pub(super) async fn enable(
    State(app): State<App>,
    steer: Steer<EnableBody>,
) -> Result<Json<ModeSet>, ApiError> {
    let EnableBody {} = steer.body;
    set_mode(&app, steer.project, true, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerBody {
    action: String,
    stage: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Triggered {
    queued: i64,
    action: String,
    stage: String,
    running: bool,
}

pub(super) async fn trigger(
    State(app): State<App>,
    steer: Steer<TriggerBody>,
) -> Result<Json<Triggered>, ApiError> {
    let Steer { project, body } = steer;
    let queued = control::trigger(&*app.store, &project, &body.action, &body.stage).await?;
    Ok(Json(Triggered {
        queued: queued.id,
        action: queued.action.as_str().to_owned(),
        stage: body.stage,
        running: queued.running,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ConfigureBody {
    strategy: String,
    max_attempts: Option<u32>,
    /// Milliseconds.
    cooldown: Option<u64>,
    priority: Option<i64>,
    enabled: Option<bool>,
    mode: Option<Mode>,
}

#[derive(Debug, Serialize)]
pub(super) struct Configured {
    project: String,
    strategy: String,
    configured: StrategyOverride,
}

pub(super) async fn configure(
    State(app): State<App>,
    steer: Steer<ConfigureBody>,
) -> Result<Json<Configured>, ApiError> {
    let Steer { project, body } = steer;
    let changes = StrategyOverride {
        max_attempts: body.max_attempts,
        cooldown: body.cooldown.map(Duration::from_millis),
        priority: body.priority,
        enabled: body.enabled,
        mode: body.mode,
    };
    control::configure(&*app.store, &project, &body.strategy, &changes).await?;
    Ok(Json(Configured {
        project,
        strategy: body.strategy,
        configured: changes,
    }))
}
