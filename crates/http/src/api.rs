//! Routes and handlers of the node's HTTP API. Handlers translate HTTP into
//! calls on [`Node`] and back; the runtime knows nothing of HTTP.

use super::error::ApiError;
use super::extract::{Json, Path, Query};
use super::{sessions, workflows};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use edge_core::invoke::{InvokeError, InvokeOutcome, InvokeRequest};
use edge_core::node::Node;
use edge_core::registry::FunctionInfo;
use edge_proto::PeerRequest;
use edge_proto::routes::{
    DURATION_HEADER, FORWARDED_HEADER, MODE_HEADER, MODE_REASON_HEADER, OWNER_HEADER,
    SESSION_HEADER, START_HEADER,
};
use edge_workflow::Workflows;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a refused body is read and dropped before answering, so the
/// client sees the answer rather than a reset connection.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Answers `err` after draining a little of the body the request still carries.
pub(super) async fn refuse(body: Body, err: impl Into<ApiError>) -> ApiError {
    let mut data = body.into_data_stream();
    let mut seen = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = data.next().await {
            seen += chunk.len();
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
    err.into()
}

/// What every handler gets: the node, and its workflow side. It derefs to
/// the node, so a handler reads `node.registry()` either way.
#[derive(Clone)]
pub struct AppState {
    /// The node.
    pub node: Arc<Node>,
    /// Workflows run on it.
    pub workflows: Arc<Workflows>,
}

impl AppState {
    /// `node` with a workflow side of its own.
    pub fn new(node: Arc<Node>) -> Self {
        let workflows = Workflows::new(node.clone());
        Self { node, workflows }
    }
}

impl std::ops::Deref for AppState {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

/// The API's routes, bound to `node` and its workflow side.
pub fn router(node: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/node", get(node_info))
        .route("/v1/cluster", get(cluster))
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            get(get_function).put(deploy).delete(delete_function),
        )
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/functions/{name}/rollback", post(rollback))
        .route("/v1/functions/{name}/component", get(component))
        .route(
            "/v1/functions/{name}/config",
            get(super::config::get_config).put(super::config::put_config),
        )
        .route(
            "/v1/sessions/{id}",
            get(sessions::get_session).delete(sessions::delete_session),
        )
        .route("/v1/sessions/{id}/mode", put(sessions::set_mode))
        .route("/v1/sessions/{id}/migrate", post(sessions::migrate))
        .route("/v1/sessions/{id}/takeover", post(sessions::take_over))
        .route("/v1/sessions/{id}/import", post(sessions::import))
        .route(
            "/v1/sessions/{id}/state",
            get(sessions::list_state).delete(sessions::clear_state),
        )
        .route(
            "/v1/sessions/{id}/state/{key}",
            get(sessions::get_key)
                .put(sessions::put_key)
                .delete(sessions::delete_key),
        )
        .route("/v1/sessions/{id}/commit", post(sessions::commit))
        .route("/v1/workflows", post(workflows::run))
        .route("/v1/workflows/validate", post(workflows::validate))
        .route("/v1/wf/deliver", post(workflows::deliver))
        .route("/v1/wf/run", post(workflows::run_task))
        .route("/v1/wf/report", post(workflows::report))
        .route("/v1/wf/{exec}", axum::routing::delete(workflows::abort))
        .route("/v1/wf/{exec}/traffic", get(workflows::traffic))
        .route("/v1/wf/{exec}/states/{name}", get(workflows::take_state))
        // wasi:http functions, each under its name.
        .route("/{function}", axum::routing::any(super::proxy::serve))
        .route("/{function}/", axum::routing::any(super::proxy::serve))
        .route(
            "/{function}/{*rest}",
            axum::routing::any(super::proxy::serve),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            storage_gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            super::auth::require_token,
        ))
        // A handler that panics (a bug) answers 500 with a JSON message;
        // the connection and the node go on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(node)
}

/// The answer to a request whose handler panicked.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the node failed while handling this request",
    )
    .into_response()
}

/// After a full disk (see `crate::storage`): 507 on every `/v1` route and
/// 503 on `/healthz` until the node restarts; a 507 from any handler is what
/// stops storage.
async fn storage_gate(
    State(node): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(why) = node.storage().failed() {
        let path = request.uri().path();
        if path == "/healthz" {
            let body = serde_json::json!({ "status": "storage_failed", "error": why });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
        if path.starts_with("/v1/") {
            let err = ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                format!(
                    "disk full: storage stopped ({why}); every acknowledged write is kept \
                     and the node restarts once space returns"
                ),
            );
            return refuse(request.into_body(), err).await.into_response();
        }
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::INSUFFICIENT_STORAGE {
        node.storage().stop("a write hit a full disk");
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Reads a request body of at most `limit` bytes within [`BODY_TIMEOUT`].
/// A declared length over the limit is refused before anything is read.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body exceeds the limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "invalid Content-Length",
                )
            })?;
        if len > limit as u64 {
            return Err(refuse(body, too_large()).await);
        }
    }
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "request body not received in time",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("reading body: {e}"),
        )),
    }
}

/// The cluster's live members (this node alone without a shared Redis).
#[tracing::instrument(skip_all)]
async fn cluster(State(node): State<AppState>) -> Json<serde_json::Value> {
    let members = node.members().await;
    Json(serde_json::json!({ "me": node.url(), "members": members }))
}

#[tracing::instrument(skip_all)]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[tracing::instrument(skip_all)]
async fn metrics(State(node): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics().render(),
    )
        .into_response()
}

/// The node's identity and effective settings.
#[tracing::instrument(skip_all)]
async fn node_info(State(node): State<AppState>) -> Json<serde_json::Value> {
    let c = node.config();
    let remote = match &c.remote_store {
        edge_core::RemoteStore::Local => "local".to_owned(),
        edge_core::RemoteStore::Redis(_) => "redis".to_owned(),
        edge_core::RemoteStore::Peer(url) => url.clone(),
    };
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "wasmtime": edge_core::WASMTIME_VERSION,
        "url": c.public_url,
        "arch": std::env::consts::ARCH,
        "deadline_ms": c.invoke_deadline.as_millis() as u64,
        "max_instances": c.engine.max_instances,
        "max_memory_bytes": c.engine.max_memory_bytes,
        "pooling": c.engine.pooling,
        "reserved_address_space": c.engine.reserved_address_space(),
        "max_pending_invocations": c.max_pending_invocations,
        "compile_concurrency": c.compile.concurrency,
        "compile_isolated": c.compile.worker.is_some(),
        "compile_timeout_secs": c.compile.timeout.as_secs_f64(),
        "compile_memory_mib": c.compile.memory_bytes >> 20,
        "sled_cache_bytes": c.sled_cache_bytes,
        "state_cache_bytes": c.state_cache_bytes,
        "max_local_sessions": c.max_local_sessions,
        "demote_idle_ms": c.demote_idle.as_millis() as u64,
        "local_sessions": node.metrics().local_sessions.get(),
        "demotions": node.metrics().demotions.get(),
        "promotions": node.metrics().promotions.get(),
        "promote_calls_per_sec": c.promote_calls_per_sec,
        "orchestrate_ms": c.orchestrate.as_millis() as u64,
        "orchestrator": node.sessions().orchestrator(),
        "pressure_evict": c.pressure_evict,
        "pressure_evictions": node.metrics().pressure_evictions.get(),
        "snapshot_ms": c.snapshot.as_millis() as u64,
        "snapshots": node.metrics().snapshots.get(),
        "takeovers": node.metrics().takeovers.get(),
        "remote_store": remote,
        "peers": c.peers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    }))
}

#[tracing::instrument(skip_all)]
async fn list_functions(State(node): State<AppState>) -> Json<Vec<FunctionInfo>> {
    Json(node.registry().list())
}

#[tracing::instrument(skip(node))]
async fn get_function(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let info = node.registry().info(&name)?;
    let mut out = serde_json::to_value(&info).unwrap_or_default();
    // The version a rollback would bring back.
    out["previous"] = match node.registry().previous(&name) {
        Some(p) => serde_json::json!({ "digest": p.digest, "uploaded_at": p.uploaded_at }),
        None => serde_json::Value::Null,
    };
    Ok(Json(out))
}

/// Makes the function's previous version current (and the current one
/// previous).
#[tracing::instrument(skip(node))]
async fn rollback(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionInfo>, ApiError> {
    Ok(Json(node.registry().rollback(&name).await?))
}

/// Query of `PUT /v1/functions/{name}`.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct DeployQuery {
    /// Relaxed durability: flush local-state commits within this many ms.
    flush_interval_ms: Option<u64>,
    /// Hosts outgoing requests may reach, comma-separated.
    allow_hosts: Option<String>,
    /// Deployed to the whole cluster (`deploy --all`): recorded on the
    /// shared Redis, so that nodes joining later deploy it too (a node
    /// without one has no record to keep).
    cluster: Option<bool>,
}

/// `?cluster=true` on a delete: the function leaves the cluster's record too.
#[derive(Debug, serde::Deserialize)]
pub(super) struct DeleteQuery {
    cluster: Option<bool>,
}

#[tracing::instrument(skip(node, headers, body))]
async fn deploy(
    State(node): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<DeployQuery>, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FunctionInfo>), ApiError> {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return Err(refuse(body, e).await),
    };
    // Refuse a bad name before reading a possibly large body.
    if !edge_core::registry::valid_name(&name) {
        return Err(refuse(body, edge_core::registry::RegistryError::InvalidName(name)).await);
    }
    let bytes = read_body(&headers, body, node.config().max_upload_bytes).await?;
    let options = edge_core::registry::DeployOptions {
        flush_interval_ms: query.flush_interval_ms,
        allow_hosts: query
            .allow_hosts
            .iter()
            .flat_map(|list| list.split(','))
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
    };
    let info = node
        .registry()
        .deploy_with(&name, bytes.to_vec(), options)
        .await?;
    if query.cluster == Some(true) {
        node.record_cluster_function(&info).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_record",
                format!("deployed here, but not recorded as the cluster's (deploy again): {e}"),
            )
        })?;
    }
    Ok((StatusCode::CREATED, Json(info)))
}

#[tracing::instrument(skip(node))]
async fn delete_function(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<Json<FunctionInfo>, ApiError> {
    if query.cluster == Some(true) {
        node.forget_cluster_function(&name).await?;
    }
    Ok(Json(node.registry().delete(&name).await?))
}

/// The component a function was deployed from: for nodes of the cluster
/// deploying the cluster's functions as they join.
#[tracing::instrument(skip(node))]
async fn component(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (_, bytes) = node.registry().source(&name).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

#[tracing::instrument(skip(node, headers, body))]
async fn invoke(
    State(node): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let session = match headers.get(SESSION_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_owned()),
        Some(Err(_)) => {
            let e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_session",
                "session header is not ASCII",
            );
            return Err(refuse(body, e).await);
        }
    };
    // A function this node lacks: passed to the session's owner or to a
    // member that has it (once: a passed call is never passed on), else
    // refused before its body is read.
    if let Err(e) = node.registry().info(&name) {
        let to = match headers.contains_key(FORWARDED_HEADER) {
            true => None,
            false => node.broker(&name, session.as_deref()).await,
        };
        let Some(to) = to else {
            return Err(refuse(body, e).await);
        };
        let input = read_body(&headers, body, node.config().max_invoke_bytes).await?;
        return forward(&node, &to, &name, session.as_deref(), input).await;
    }
    let input = read_body(&headers, body, node.config().max_invoke_bytes).await?;
    match node
        .invoke(InvokeRequest::from_client(
            name.clone(),
            session.clone(),
            input.to_vec(),
        ))
        .await
    {
        Ok(outcome) => Ok(invoke_response(outcome)),
        Err(InvokeError::Moved(owner)) => {
            forward(&node, &owner, &name, session.as_deref(), input).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Passes a call to `owner`: the node that owns its session now, or a
/// member hosting a function this node lacks.
async fn forward(
    node: &Node,
    owner: &str,
    name: &str,
    session: Option<&str>,
    input: Bytes,
) -> Result<Response, ApiError> {
    let unreachable = |e: edge_proto::PeerError| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "forward_failed",
            format!("the call went to {owner}, which did not answer: {e}"),
        )
    };
    // A node that stopped beating may be powered off: a call to it would
    // wait out its deadline. Said at once, with what can be done.
    if node.is_gone(owner).await {
        return Err(ApiError::owner_gone(owner, session));
    }
    let request =
        PeerRequest::forwarded_invoke(owner, name, session, input, node.config().invoke_deadline)
            .map_err(unreachable)?;
    let answer = node.peer().send(request).await.map_err(unreachable)?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (k, v) in &answer.headers {
        if k.as_str().starts_with("edge-") || k == header::CONTENT_TYPE {
            headers.insert(k.clone(), v.clone());
        }
    }
    let body = answer.body;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if let Ok(v) = HeaderValue::from_str(owner) {
        response.headers_mut().insert(OWNER_HEADER, v);
    }
    Ok(response)
}

fn invoke_response(outcome: InvokeOutcome) -> Response {
    let mut response = Response::new(Body::from(outcome.output));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&outcome.session) {
        h.insert(SESSION_HEADER, v);
    }
    h.insert(
        START_HEADER,
        HeaderValue::from_static(outcome.start.as_str()),
    );
    h.insert(
        DURATION_HEADER,
        HeaderValue::from(outcome.duration.as_micros() as u64),
    );
    let mode = match outcome.mode {
        edge_host_api::Mode::Local => "local",
        edge_host_api::Mode::Remote => "remote",
    };
    h.insert(MODE_HEADER, HeaderValue::from_static(mode));
    if let Some(reason) = outcome.mode_reason {
        h.insert(MODE_REASON_HEADER, HeaderValue::from_static(reason));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("a bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json() {
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "ok" }))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked));
        let request = |path: &str| {
            http::Request::builder()
                .uri(path)
                .body(Body::empty())
                .unwrap()
        };
        let r = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "internal");
        let r = app.oneshot(request("/fine")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
