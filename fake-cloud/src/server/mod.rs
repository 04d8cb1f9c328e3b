//! The HTTP server: the model behind the DigitalOcean v2 paths, bodies, status
//! codes, error shape, pagination, bearer-token check, rate limits (per minute and
//! per hour) with their headers and injected faults, plus `/admin` routes to change
//! faults and latency, register droplets, count the requests served by route and
//! spend a budget ahead of time.
//!
//! Every `/v2` and `/admin` request needs `Authorization: Bearer <token>`.
//! Only `/v2` requests count against the rate limit and suffer injected faults.

mod admin;
mod extract;
mod gate;
mod handlers;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::error::CloudError;
use crate::model::Cloud;
pub use gate::{BudgetUse, RequestCounts};
use gate::{Gate, RateHeaders, Verdict};

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    cloud: Cloud,
    /// Run model calls on the blocking pool: they may copy or fsync files.
    disk_backed: bool,
    inner: Arc<Shared>,
}

struct Shared {
    /// The expected `Authorization` header value, `Bearer <token>`.
    expected_auth: String,
    gate: Gate,
}

impl AppState {
    /// Runs a model call, off the async threads when it may touch the disk.
    async fn call<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Cloud) -> Result<R, CloudError> + Send + 'static,
    {
        if !self.disk_backed {
            return f(&self.cloud).map_err(ApiError);
        }
        let cloud = self.cloud.clone();
        match tokio::task::spawn_blocking(move || f(&cloud)).await {
            Ok(result) => result.map_err(ApiError),
            Err(err) => Err(ApiError(CloudError::server_error(format!(
                "internal task failed: {err}"
            )))),
        }
    }
}

/// A [`CloudError`] as a handler's answer. The body is rendered by the
/// middleware, which knows the request id.
#[derive(Debug)]
pub struct ApiError(pub CloudError);

impl From<CloudError> for ApiError {
    fn from(e: CloudError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = error_response(&self.0, "");
        response.extensions_mut().insert(self.0);
        response
    }
}

fn error_response(err: &CloudError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "id": err.id, "message": err.message, "request_id": request_id });
    (status, axum::Json(body)).into_response()
}

/// The HTTP API over `cloud`, answering only requests that carry
/// `Authorization: Bearer <token>`.
pub fn router(cloud: Cloud, token: String) -> Router {
    let state = AppState {
        disk_backed: cloud.config().data_dir.is_some(),
        cloud,
        inner: Arc::new(Shared {
            expected_auth: format!("Bearer {token}"),
            gate: Gate::new(),
        }),
    };
    Router::new()
        .route(
            "/v2/volumes",
            get(handlers::list_volumes)
                .post(handlers::create_volume)
                .delete(handlers::delete_volume_by_name),
        )
        .route(
            "/v2/volumes/{id}",
            get(handlers::get_volume)
                .delete(handlers::delete_volume)
                .patch(handlers::update_volume),
        )
        .route(
            "/v2/volumes/{id}/actions",
            get(handlers::list_volume_actions).post(handlers::volume_action),
        )
        .route(
            "/v2/volumes/{id}/actions/{action_id}",
            get(handlers::get_volume_action),
        )
        .route("/v2/actions/{id}", get(handlers::get_action))
        .route(
            "/v2/volumes/{id}/snapshots",
            get(handlers::list_volume_snapshots).post(handlers::create_snapshot),
        )
        .route("/v2/snapshots", get(handlers::list_snapshots))
        .route(
            "/v2/snapshots/{id}",
            get(handlers::get_snapshot).delete(handlers::delete_snapshot),
        )
        .route("/v2/droplets", get(handlers::list_droplets))
        .route("/v2/droplets/{id}", get(handlers::get_droplet))
        .route("/v2/account", get(handlers::account))
        .route("/v2/regions", get(handlers::regions))
        .route(
            "/admin/faults",
            get(admin::get_faults).put(admin::put_faults),
        )
        .route(
            "/admin/latency",
            get(admin::get_latency).put(admin::put_latency),
        )
        .route(
            "/admin/droplets",
            get(admin::list_droplets).post(admin::add_droplet),
        )
        .route("/admin/droplet-id", get(admin::droplet_id))
        .route(
            "/admin/requests",
            get(admin::get_requests).delete(admin::reset_requests),
        )
        .route(
            "/admin/ratelimit",
            get(admin::get_ratelimit).put(admin::put_ratelimit),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            api_middleware,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(CloudError::resource_not_found())
}

async fn method_not_allowed() -> ApiError {
    ApiError(CloudError::new(
        405,
        "method_not_allowed",
        "The method is not allowed for this resource.",
    ))
}

/// Authentication, the rate limit and injected faults, request ids in error
/// bodies, and one log line per request. Never logs the token.
async fn api_middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = request.method().clone();
    let path = request.uri().path().to_string();

    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == state.inner.expected_auth.as_bytes());
    if !authorized {
        tracing::debug!(%method, %path, %request_id, "unauthenticated request");
        return error_response(&CloudError::unauthorized(), &request_id);
    }

    let faulty = path.starts_with("/v2/") || path == "/v2";
    let (verdict, rate) = if faulty {
        let (verdict, rate) = state.inner.gate.admit(&state.cloud);
        (verdict, Some(rate))
    } else {
        (
            Verdict::Proceed {
                lose_response: false,
            },
            None,
        )
    };

    let mut response = match verdict {
        Verdict::Throttle { retry_after } => {
            let mut r = error_response(&CloudError::too_many_requests(), &request_id);
            if let Some(seconds) = retry_after {
                set_header(r.headers_mut(), "retry-after", seconds.to_string());
            }
            r
        }
        Verdict::Fail => error_response(&injected_server_error(), &request_id),
        Verdict::Proceed { lose_response } => {
            let response = next.run(request).await;
            if lose_response {
                tracing::info!(%method, %path, %request_id, status = response.status().as_u16(),
                    "injected fault: request applied, response lost");
                error_response(&injected_server_error(), &request_id)
            } else if let Some(err) = response.extensions().get::<CloudError>() {
                error_response(err, &request_id)
            } else if is_plain_error(&response) {
                // An axum rejection (bad path, body too large...): same shape.
                let err = plain_error(response).await;
                error_response(&err, &request_id)
            } else {
                response
            }
        }
    };
    if let Some(rate) = rate {
        set_rate_headers(response.headers_mut(), rate);
        let throttled = response.status() == StatusCode::TOO_MANY_REQUESTS;
        state
            .inner
            .gate
            .count(gate::route_of(method.as_str(), &path), throttled);
    }
    tracing::debug!(%method, %path, %request_id, status = response.status().as_u16(), "request");
    response
}

fn is_plain_error(response: &Response) -> bool {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    (response.status().is_client_error() || response.status().is_server_error()) && !json
}

/// A non-JSON error response as a [`CloudError`], its text as the message.
async fn plain_error(response: Response) -> CloudError {
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let id = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        s if s >= 500 => "server_error",
        _ => "error",
    };
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    CloudError::new(status.as_u16(), id, message)
}

fn injected_server_error() -> CloudError {
    CloudError::server_error("Server was unable to give you a response.")
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

fn set_rate_headers(headers: &mut HeaderMap, rate: RateHeaders) {
    set_header(headers, "ratelimit-limit", rate.limit.to_string());
    set_header(headers, "ratelimit-remaining", rate.remaining.to_string());
    set_header(headers, "ratelimit-reset", rate.reset.to_string());
}

/// Serves `router` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains
/// connections.
pub async fn serve_with_shutdown<F>(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: F,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A server running in the current tokio runtime, for tests: stopped when
/// dropped.
#[derive(Debug)]
pub struct SpawnedServer {
    /// The bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SpawnedServer {
    /// `http://<addr>`, the base URL of the API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `cloud` on `127.0.0.1:<a free port>` in the current tokio runtime.
pub async fn spawn(cloud: Cloud, token: String) -> std::io::Result<SpawnedServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, router(cloud, token)));
    Ok(SpawnedServer { addr, task })
}

/// A `204 No Content` with an empty body.
fn no_content() -> Response {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::NO_CONTENT.into_response())
}
