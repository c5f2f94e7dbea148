//! The four steering endpoints, behind `Authorization: Bearer TOKEN`: 401 without it, 403 with
//! a wrong one, 403 for every request when the server has no token. They ask through
//! [`control`](crate::control), as the CLI does.
//!
//! A body is read under the body timeout (`408` past it) and [`BODY_LIMIT`] (`413` over it),
//! must be sent as JSON (`415` otherwise) and be one JSON object, and every field has the type
//! and bounds the OpenAPI document gives it: a field given as `null` where the document has no
//! `null` is refused, and a whole number may be written `5` or `5.0`, as JSON Schema allows.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use self_healing::healing::{Mode, StrategyOverride};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::{ApiError, App, BODY_LIMIT, NoParams};
use crate::control::{self, JSON_SAFE};

/// The steering token. Never printed: its `Debug` shows its length only.
pub struct Token(String);

impl Token {
    pub(super) fn new(token: &str) -> Self {
        Token(token.to_owned())
    }

    /// Adds the token to `secrets`, so that it is masked wherever a run shows or keeps text,
    /// without being handed out.
    pub fn mask_in(&self, secrets: &mut crate::secrets::Secrets) {
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
    let given = match headers.get(header::AUTHORIZATION) {
        Some(value) => bearer(value.as_bytes()),
        None => from_query,
    };
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this needs `Authorization: Bearer TOKEN`",
        )),
        Some(given) if token.matches(given) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme in any case, as RFC 9110
/// has it.
fn bearer(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = text.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A steering request: authorized by the token, its project from the path, its JSON body (no
/// body reads as `{}`; errors name the field and position).
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
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        super::no_params(Query::<NoParams>::from_request_parts(&mut parts, app).await)?;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > BODY_LIMIT as u64) {
            return Err(too_large().closing());
        }
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        let timeout = app.limits.body_timeout;
        let read = Bytes::from_request(Request::from_parts(parts, body), app);
        let bytes = match tokio::time::timeout(timeout, read).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within the body timeout ({} ms)",
                        timeout.as_millis()
                    ),
                )
                .closing());
            }
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(too_large().closing());
            }
            Ok(Err(rejection)) => {
                return Err(ApiError::new(rejection.status(), rejection.body_text()));
            }
            Ok(Ok(bytes)) => bytes,
        };
        // No body at all reads as `{}`; anything else must be JSON (whitespace alone is not).
        let text: &[u8] = if bytes.is_empty() {
            b"{}"
        } else if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a body must be sent with `Content-Type: application/json`",
            ));
        } else if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // serde reads a struct from an array too (`["restart", "design"]`): refused here,
            // as the document's bodies are objects.
            return Err(ApiError::bad_request(
                "bad JSON body: it must be a JSON object",
            ));
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

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("a body must be at most {BODY_LIMIT} bytes"),
    )
}

/// `application/json`, with parameters or not.
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// A field that, when given, holds a value: `null` is refused, as the document's type for it
/// has no `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A whole number from `MIN` to `MAX`, given as `5` or `5.0`; `null` refused.
fn whole<'de, D: Deserializer<'de>, const MIN: i64, const MAX: i64>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let number = serde_json::Number::deserialize(d)?;
    let value = number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                // Saturates: out of range either way.
                .map(|f| f as i128)
        })
        .ok_or_else(|| D::Error::custom(format!("expected a whole number, not {number}")))?;
    if !(i128::from(MIN)..=i128::from(MAX)).contains(&value) {
        return Err(D::Error::custom(format!(
            "must be at least {MIN} and at most {MAX}, not {number}"
        )));
    }
    Ok(Some(value as i64))
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
    #[serde(default, deserialize_with = "whole::<_, 1, { u32::MAX as i64 }>")]
    max_attempts: Option<i64>,
    /// Milliseconds.
    #[serde(default, deserialize_with = "whole::<_, 0, JSON_SAFE>")]
    cooldown: Option<i64>,
    #[serde(default, deserialize_with = "whole::<_, { -JSON_SAFE }, JSON_SAFE>")]
    priority: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
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
    // Within their bounds, as read.
    let changes = StrategyOverride {
        max_attempts: body.max_attempts.map(|n| n as u32),
        cooldown: body.cooldown.map(|ms| Duration::from_millis(ms as u64)),
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
