//! The HTTP API: trigger, list and fetch backups, status, health and metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use proto::backup::{
    ApiErrorBody, BackupList, BackupRequest, HEADER_BACKUP_NAME, HEADER_ETCD_VERSION, HEADER_REVISION, HEADER_SHA256,
};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::backup::{BackupError, Engine, Outcome};
use crate::storage::StorageError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The backup engine.
    pub engine: Arc<Engine>,
    /// When set, every `/v1/` request must carry `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// The DNS name whose addresses are this cluster's members (its headless Service, which lists every member
    /// pod, ready or not). When set, a backup request may name only endpoints at that
    /// name's addresses (given as addresses, or as names resolving only to them, as a member pod's DNS name does):
    /// the sidecar never snapshots another cluster into this one's backups.
    pub members: Option<Arc<str>>,
}

/// Errors as clients see them: a stable JSON body and a status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// No such backup.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be understood.
    #[error("{0}")]
    BadRequest(String),
    /// Something the request needs is not available now.
    #[error("{0}")]
    Unavailable(String),
    /// The request body is larger than [`MAX_BODY`].
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// A backup attempt failed.
    #[error("backup failed: {0}")]
    Backup(Arc<BackupError>),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(StorageError),
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound(name) => Self::NotFound(format!("no backup named {name:?}")),
            other => Self::Storage(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_string()),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found".to_string()),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request".to_string()),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".to_string()),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable".to_string()),
            Self::Backup(error) => {
                let status = match error.as_ref() {
                    BackupError::Etcd(_) | BackupError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                (status, error.reason().to_string())
            }
            Self::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage".to_string()),
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let body = ApiErrorBody { error: kind, detail: self.to_string() };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The largest request body taken: a backup request names a few endpoints.
pub const MAX_BODY: usize = 64 * 1024;

/// The sidecar's router.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/backups", get(list_backups).post(take_backup).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .route("/backups/{name}", get(fetch_backup))
        .route("/backups/{name}/pin", post(pin_backup).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)))
        .route("/status", get(status))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Serves `app(state)` on `listener` until `shutdown` completes: over TLS with `tls`, else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(config) => crate::https::serve(listener, app(state), config, shutdown).await,
        None => axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await,
    }
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(expected) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare in constant time so the token cannot be guessed byte by byte from response times.
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// `POST /v1/backups`, with an optional body naming the endpoints to take it from.
async fn take_backup(
    State(state): State<AppState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    // The body's rejections are this API's errors too, in its JSON shape.
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        _ => ApiError::BadRequest(format!("the request body: {}", rejection.body_text())),
    })?;
    let request: BackupRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BackupRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("the request body: {e}")))?
    };
    if let Some(bad) = request.endpoints.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://"))) {
        return Err(ApiError::BadRequest(format!("endpoint {bad:?} is no http(s) URL")));
    }
    if let (Some(members), false) = (&state.members, request.endpoints.is_empty()) {
        check_members(members, &request.endpoints).await?;
    }
    let endpoints = (!request.endpoints.is_empty()).then_some(request.endpoints);
    match state.engine.backup_from(endpoints).await.map_err(ApiError::Backup)? {
        Outcome::Created(info) => Ok((StatusCode::CREATED, Json(info)).into_response()),
        Outcome::Unchanged(info) => Ok((StatusCode::OK, Json(info)).into_response()),
    }
}

/// Refuses any endpoint that is not at one of `members`' addresses (an address, or a name that resolves only to
/// such addresses).
async fn check_members(members: &str, endpoints: &[String]) -> Result<(), ApiError> {
    let addresses: std::collections::BTreeSet<std::net::IpAddr> = tokio::net::lookup_host((members, 0))
        .await
        .map_err(|e| ApiError::Unavailable(format!("resolving the member addresses ({members}): {e}")))?
        .map(|a| a.ip())
        .collect();
    for endpoint in endpoints {
        let url = url::Url::parse(endpoint).map_err(|e| ApiError::BadRequest(format!("endpoint {endpoint:?}: {e}")))?;
        let member = match url.host() {
            Some(url::Host::Ipv4(ip)) => addresses.contains(&std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => addresses.contains(&std::net::IpAddr::V6(ip)),
            // A name is a member when everything it resolves to is a member's address (a pod's own DNS name is).
            Some(url::Host::Domain(host)) => match tokio::net::lookup_host((host, 0)).await {
                Ok(resolved) => {
                    let resolved: Vec<std::net::IpAddr> = resolved.map(|a| a.ip()).collect();
                    !resolved.is_empty() && resolved.iter().all(|ip| addresses.contains(ip))
                }
                Err(_) => false,
            },
            None => false,
        };
        if !member {
            return Err(ApiError::BadRequest(format!(
                "endpoint {endpoint:?} is not a member of this cluster (members are at the addresses of {members})"
            )));
        }
    }
    Ok(())
}

/// `GET /v1/backups`: this cluster's backups; `?all=true`: every backup in the storage prefix, other clusters'
/// included (a restore that names one on purpose looks it up there).
async fn list_backups(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<BackupList>, ApiError> {
    let all = query.is_some_and(|q| q.split('&').any(|pair| pair == "all=true"));
    let backups = if all { state.engine.list_all().await? } else { state.engine.list().await? };
    Ok(Json(BackupList { backups }))
}

/// `POST /v1/backups/{name}/pin` with `{"reason": ...}`: keeps this cluster's backup `name` whatever the retention
/// (the newest pinned one; see `BackupInfo::pinned`).
async fn pin_backup(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<proto::backup::PinRequest>,
) -> Result<Json<proto::backup::BackupInfo>, ApiError> {
    if !crate::storage::valid_name(&name) {
        return Err(ApiError::BadRequest(format!("invalid backup name {name:?}")));
    }
    if request.reason.is_empty() || request.reason.len() > 256 {
        return Err(ApiError::BadRequest("a pin needs a reason of 1 to 256 bytes".into()));
    }
    Ok(Json(state.engine.pin(&name, &request.reason).await?))
}

async fn fetch_backup(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
) -> Result<Response, ApiError> {
    let storage = state.engine.storage();
    // `latest` is this cluster's newest backup, never another's that shares the storage prefix.
    let name =
        match name.as_str() {
            "latest" => state.engine.list().await?.into_iter().next().map(|b| b.name).ok_or_else(|| {
                crate::storage::StorageError::NotFound("latest (this cluster has no backup yet)".into())
            })?,
            _ => name,
        };
    let manifest = storage.manifest(&name).await?;
    let info = &manifest.info;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.compressed_size));
    headers.insert(HEADER_REVISION, HeaderValue::from(info.revision));
    headers.insert(HEADER_SHA256, HeaderValue::from_str(&info.sha256).expect("hex is a valid header"));
    headers.insert(HEADER_BACKUP_NAME, HeaderValue::from_str(&info.name).expect("names are checked"));
    if let Ok(version) = HeaderValue::from_str(&info.etcd_version) {
        headers.insert(HEADER_ETCD_VERSION, version);
    }
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{}.db.gz\"", info.name)) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    if method == Method::HEAD {
        return Ok((headers, Body::empty()).into_response());
    }
    let stream = storage.data(&manifest).await?;
    let name = info.name.clone();
    // A read error mid-stream aborts the response, so the client sees a short body, never a silently cut one.
    let body = Body::from_stream(stream.map(move |chunk| {
        chunk.inspect_err(|error| tracing::warn!(backup = %name, %error, "streaming a backup failed"))
    }));
    Ok((headers, body).into_response())
}

async fn status(State(state): State<AppState>) -> Json<proto::backup::SidecarStatus> {
    Json(state.engine.status())
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.engine.storage_reached() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "storage not reached yet").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.engine.metrics.encode(),
    )
        .into_response()
}
