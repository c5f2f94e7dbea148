//! The operator's HTTP side (docs/API.md): the read API over the store, server-sent events of
//! new journal entries, steering behind a bearer token, `/metrics`, health probes and the
//! dashboard. `serve` runs it over the whole store; `run --listen` runs it beside a run, with
//! the run's own bus feeding `/metrics`.
//!
//! - `api`: the read endpoints.
//! - `steer`: the four steering endpoints and the token.
//! - `stream`: following the journal, for the event stream and the exporter.
//! - `conn`: the connections: their cap and timeouts.
//! - `dashboard/`: the page, built into the binary.
//!
//! Every request passes, outermost first: the connection's phase (`conn::enter`/`leave`), the
//! answer's common headers and JSON errors (`answers`), the host and token rule (`guard`).

mod api;
mod conn;
mod steer;
mod stream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use self_healing::export::PrometheusExporter;
use self_healing::export::prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::error::CliError;
use crate::store::{Store, StoreError};

pub use conn::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    Limits,
};
pub use steer::Token;

/// Where `serve` listens unless told otherwise (Prometheus's exporter port range).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The largest request body taken: steering bodies are a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An error answer: a status and a message, sent as `{"error": …, "status": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Close the connection after the answer: what is left of the request cannot be trusted.
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            close: false,
        }
    }

    /// The same error, closing the connection after it is sent.
    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store cannot be read: {error}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "status": self.status.as_u16() });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The query of an endpoint that takes no parameters: any is refused, as a misspelt one
/// would otherwise be silently ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

/// Refuses any query parameter (see [`NoParams`]).
fn no_params(query: Result<Query<NoParams>, QueryRejection>) -> Result<(), ApiError> {
    api::query(query).map(|NoParams {}| ())
}

/// What every handler shares.
#[derive(Clone)]
struct App {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    token: Option<Arc<Token>>,
    journal: stream::Journal,
    shutdown: CancellationToken,
    /// Listening on loopback only: the API is open to this machine's users and browsers
    /// (requests must name a loopback host, against DNS rebinding); beyond it, every API
    /// request needs the token.
    loopback: bool,
    /// The connections' limits; handlers read the body timeout.
    limits: Limits,
}

/// Where `/metrics` gets its figures.
#[derive(Debug)]
pub enum Figures {
    /// From the journal, every project's, read from the start of the store and followed
    /// (`serve`).
    Journal,
    /// From an exporter a run's bus feeds (`run --listen`).
    Live(PrometheusExporter),
}

/// A listening socket, checked against the token rule, not serving yet.
#[derive(Debug)]
pub struct Bound {
    listener: tokio::net::TcpListener,
    token: Option<Token>,
    /// Whether it listens on loopback only.
    loopback: bool,
    limits: Limits,
}

/// Reads the steering token: `MIGRATIONPILOT_TOKEN`'s value, or the first line of
/// `token_file`. `None` when neither is given: steering over HTTP is then refused.
pub fn token(
    from_env: Option<String>,
    token_file: Option<&Path>,
) -> Result<Option<Token>, CliError> {
    let text = match (from_env, token_file) {
        (_, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Invalid(format!("--token-file {}: {e}", path.display())))?,
        (Some(value), None) => value,
        (None, None) => return Ok(None),
    };
    let token = text.lines().next().unwrap_or("").trim();
    // A header carries visible ASCII only: any other token could never be sent, and the
    // server would refuse every request while looking configured.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CliError::Invalid(
            "the steering token must be visible ASCII characters, without spaces (from MIGRATIONPILOT_TOKEN or --token-file)".into(),
        ));
    }
    if token.len() < 16 {
        return Err(CliError::Invalid(
            "the steering token must be at least 16 characters (from MIGRATIONPILOT_TOKEN or --token-file)".into(),
        ));
    }
    Ok(Some(Token::new(token)))
}

/// Binds `listen`. An address other than loopback without a token is refused: steering would
/// be open to the network otherwise, and the reading API shows commands and their output.
/// `limits` bound every connection it will serve; a cap the process's open-file limit cannot
/// hold is refused here, before anything is served.
pub async fn bind(listen: &str, token: Option<Token>, limits: Limits) -> Result<Bound, CliError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| CliError::Invalid(format!("--listen {listen}: {e}")))?
        .collect();
    if token.is_none() && addresses.iter().any(|a| !a.ip().is_loopback()) {
        return Err(CliError::Invalid(format!(
            "--listen {listen} is reachable from other machines: set MIGRATIONPILOT_TOKEN or --token-file, or listen on loopback (127.0.0.1)"
        )));
    }
    limits.fit_open_files()?;
    let listener = tokio::net::TcpListener::bind(&*addresses)
        .await
        .map_err(|e| CliError::Invalid(format!("--listen {listen}: {e}")))?;
    let loopback = addresses.iter().all(|a| a.ip().is_loopback());
    Ok(Bound {
        listener,
        token,
        loopback,
        limits,
    })
}

impl Bound {
    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then lets requests in flight finish (event
    /// streams end at once).
    pub async fn serve(
        self,
        store: Arc<dyn Store>,
        figures: Figures,
        shutdown: CancellationToken,
    ) -> Result<(), CliError> {
        let mut registry = Registry::default();
        let (exporter, replay) = match figures {
            Figures::Journal => (
                PrometheusExporter::builder()
                    .build()
                    .map_err(|e| CliError::Failed(e.to_string()))?,
                true,
            ),
            Figures::Live(exporter) => (exporter, false),
        };
        exporter.register(&mut registry);
        let journal = stream::follow(
            Arc::clone(&store),
            replay.then_some(exporter),
            shutdown.clone(),
        )
        .await;
        if replay {
            tokio::spawn(crate::project_alerts::keep_up(
                Arc::clone(&store),
                shutdown.clone(),
            ));
        }
        let app = App {
            store,
            registry: Arc::new(registry),
            token: self.token.map(Arc::new),
            journal,
            shutdown: shutdown.clone(),
            loopback: self.loopback,
            limits: self.limits,
        };
        let listener = conn::Guarded::new(self.listener, self.limits);
        let service = router(app).into_make_service_with_connect_info::<conn::Handle>();
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|e| CliError::Failed(format!("serving failed: {e}")))
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/index.html", get(dashboard::index))
        .route("/app.js", get(dashboard::script))
        .route("/style.css", get(dashboard::style))
        .route("/uplot.min.js", get(dashboard::chart_script))
        .route("/uplot.min.css", get(dashboard::chart_style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/projects", get(api::projects))
        .route("/api/v1/projects/{project}/runs", get(api::runs))
        .route("/api/v1/projects/{project}/healing", get(api::healing))
        .route("/api/v1/projects/{project}/health", get(api::health))
        .route("/api/v1/projects/{project}/alerts", get(api::alerts))
        .route("/api/v1/runs/{run}", get(api::run))
        .route("/api/v1/runs/{run}/events", get(api::events))
        .route("/api/v1/runs/{run}/samples", get(api::samples))
        .route("/api/v1/runs/{run}/logs", get(api::logs))
        .route("/api/v1/runs/{run}/logs/{id}", get(api::log_output))
        .route("/api/v1/events/stream", get(stream::events))
        .route(
            "/api/v1/projects/{project}/healing/disable",
            post(steer::disable),
        )
        .route(
            "/api/v1/projects/{project}/healing/enable",
            post(steer::enable),
        )
        .route(
            "/api/v1/projects/{project}/healing/trigger",
            post(steer::trigger),
        )
        .route(
            "/api/v1/projects/{project}/healing/configure",
            post(steer::configure),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(axum::middleware::from_fn(answers))
        .layer(axum::middleware::from_fn(track))
        .with_state(app)
}

/// Moves the request's connection through its phases (see [`conn`]): no read deadline while
/// a handler runs; the idle timeout once it has answered, or none while an event stream lasts.
async fn track(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let connection = conn::enter(&request);
    let method = request.method().clone();
    let response = next.run(request).await;
    conn::leave(connection, &method, &response);
    response
}

/// What every answer carries: `nosniff`, so a browser never reads an answer as another type
/// than it says; and an error as JSON, whoever made it (axum's own rejections are text).
async fn answers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !json {
        let (mut parts, body) = response.into_parts();
        // Rejections are a line of text; more is not a message worth keeping.
        let text = axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        let (error_parts, error_body) = ApiError::new(status, message).into_response().into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        if let Some(json) = error_parts.headers.get(header::CONTENT_TYPE) {
            parts.headers.insert(header::CONTENT_TYPE, json.clone());
        }
        response = Response::from_parts(parts, error_body);
    }
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// On loopback, refuses requests that name another host (a page elsewhere reaching this server
/// through DNS rebinding); beyond loopback, every API request needs the token, whatever its
/// method (`HEAD` reads as `GET` does); the event stream alone also takes it as
/// `?access_token=`, since an `EventSource` cannot send headers.
async fn guard(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if app.loopback {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name);
        if !matches!(name, "127.0.0.1" | "localhost" | "[::1]" | "") {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this server answers requests for its loopback address, not `{host}`"),
            )
            .into_response();
        }
    } else if request.uri().path().starts_with("/api/v1/") {
        let from_query = if request.uri().path() == stream::PATH {
            match stream::access_token(request.uri()) {
                Ok(token) => token,
                Err(refused) => return refused.into_response(),
            }
        } else {
            None
        };
        if let Err(refused) = steer::authorize_with(&app, request.headers(), from_query.as_deref())
        {
            return refused.into_response();
        }
    }
    next.run(request).await
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn healthz(q: Result<Query<NoParams>, QueryRejection>) -> Result<Response, ApiError> {
    no_params(q)?;
    Ok(axum::Json(serde_json::json!({ "status": "ok" })).into_response())
}

/// Ready when the store answers and `/metrics` has caught up with the journal.
async fn readyz(State(app): State<App>, q: Result<Query<NoParams>, QueryRejection>) -> Response {
    if let Err(refused) = no_params(q) {
        return refused.into_response();
    }
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "not-ready", "reason": reason })),
        )
            .into_response()
    };
    match tokio::time::timeout(Duration::from_secs(5), app.store.journal_end()).await {
        Err(_) => return not_ready("the store did not answer within 5 s".into()),
        Ok(Err(error)) => return not_ready(format!("the store cannot be read: {error}")),
        Ok(Ok(_)) => {}
    }
    if !app.journal.followed.borrow().caught_up {
        return not_ready("reading the journal for /metrics".into());
    }
    axum::Json(serde_json::json!({ "status": "ready" })).into_response()
}

/// The exposition: OpenMetrics when the scraper asks for it, else Prometheus's text format.
async fn metrics(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Response {
    use self_healing::export::prometheus_client::encoding::{prometheus_text, text};
    if let Err(refused) = no_params(q) {
        return refused.into_response();
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            text::encode(&mut body, &app.registry),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            prometheus_text::encode(&mut body, &app.registry),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        )
        .into_response(),
    }
}

async fn openapi(q: Result<Query<NoParams>, QueryRejection>) -> Result<Response, ApiError> {
    no_params(q)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response())
}

/// The dashboard's files, built into the binary.
mod dashboard {
    use super::*;

    /// Scripts and styles come from this server only; the page's icon is a `data:` URL.
    const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

    fn file(content_type: &'static str, body: &'static str) -> Response {
        let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }

    pub(super) async fn index() -> Response {
        file(
            "text/html; charset=utf-8",
            include_str!("dashboard/index.html"),
        )
    }

    pub(super) async fn script() -> Response {
        file(
            "text/javascript; charset=utf-8",
            include_str!("dashboard/app.js"),
        )
    }

    pub(super) async fn style() -> Response {
        file(
            "text/css; charset=utf-8",
            include_str!("dashboard/style.css"),
        )
    }

    pub(super) async fn chart_script() -> Response {
        file(
            "text/javascript; charset=utf-8",
            include_str!("dashboard/uplot.min.js"),
        )
    }

    pub(super) async fn chart_style() -> Response {
        file(
            "text/css; charset=utf-8",
            include_str!("dashboard/uplot.min.css"),
        )
    }
}
