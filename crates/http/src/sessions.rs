//! Session routes: modes, migration, and the state server other nodes (and
//! tools) use to read and write a session's state on this node.

use super::api::AppState;
use super::error::ApiError;
use super::extract::{Json, Path};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use edge_core::node::{MigrateOutcome, SessionInfo};
use edge_core::session::{ModeOutcome, SessionError, SessionMode, TakeOver};
use edge_core::spill::ClusterModeOutcome;
use edge_host_api::{Commit, StateStore, StoreError};
use edge_proto::ImportRequest;
use edge_proto::{KeyVersion, WireCommit};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

/// Body of `PUT /v1/sessions/{id}/mode`.
#[derive(Deserialize)]
pub struct ModeRequest {
    mode: SessionMode,
}

/// Body of `POST /v1/sessions/{id}/migrate`.
#[derive(Deserialize)]
pub struct MigrateRequest {
    to: String,
}

fn or_moved(e: SessionError, path: &str) -> ApiError {
    match e {
        SessionError::Moved(url) => ApiError::moved(&url, path),
        e => e.into(),
    }
}

#[tracing::instrument(skip(node))]
pub async fn get_session(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    node.session_info(&id)
        .await
        .map(Json)
        .map_err(|e| or_moved(e, &format!("/v1/sessions/{id}")))
}

#[tracing::instrument(skip(node, req))]
pub async fn set_mode(
    State(node): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<ModeRequest>,
) -> Result<Json<ClusterModeOutcome>, ApiError> {
    let forwarded = headers.contains_key(edge_proto::routes::FORWARDED_HEADER);
    node.set_mode_in_cluster(&id, req.mode, forwarded)
        .await
        .map(Json)
        .map_err(|e| or_moved(e, &format!("/v1/sessions/{id}/mode")))
}

#[tracing::instrument(skip(node))]
pub async fn delete_session(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match node.delete_session(&id).await {
        Ok(deleted) => Ok(Json(serde_json::json!({ "deleted": deleted }))),
        // The session lives on another node: deleted there, so that it is
        // never split into a copy here and one there.
        Err(SessionError::Moved(owner)) => forward_delete(&node, &owner, &id).await,
        Err(e) => Err(e.into()),
    }
}

#[tracing::instrument(skip(node))]
pub async fn take_over(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TakeOver>, ApiError> {
    Ok(Json(node.take_over(&id).await?))
}

/// Deletes session `id` on `owner`, answering with its answer.
async fn forward_delete(
    node: &AppState,
    owner: &str,
    id: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    let failed = |e: edge_proto::PeerError| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "forward_failed",
            format!("the session is at {owner}, which did not delete it: {e}"),
        )
    };
    if node.is_gone(owner).await {
        return Err(ApiError::owner_gone(owner, Some(id)));
    }
    let url = edge_proto::routes::session(owner, id, &[]).map_err(failed)?;
    let request = edge_proto::PeerRequest::delete(url).timeout(node.config().invoke_deadline);
    let answer = node
        .peer()
        .send(request)
        .await
        .and_then(|a| a.success())
        .map_err(failed)?;
    Ok(Json(answer.json().map_err(failed)?))
}

#[tracing::instrument(skip(node, req))]
pub async fn migrate(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<MigrateRequest>,
) -> Result<Json<MigrateOutcome>, ApiError> {
    let to = edge_proto::routes::normalise(&req.to).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`to` is not an http(s) URL: {:?}", req.to),
        )
    })?;
    node.migrate(&id, &to)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

#[tracing::instrument(skip(node, req))]
pub async fn import(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<ImportRequest>,
) -> Result<Json<ModeOutcome>, ApiError> {
    let entries = req
        .entries
        .into_iter()
        .map(|e| e.decode())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("bad base64: {e}"),
            )
        })?;
    Ok(Json(
        node.import_session(&id, entries, &req.functions).await?,
    ))
}

// ---- the state server: this node's sled, by session ----

#[tracing::instrument(skip(node))]
pub async fn list_state(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<KeyVersion>>, ApiError> {
    let keys = node.sessions().local.keys(&id).await?;
    Ok(Json(
        keys.into_iter()
            .map(|(key, version)| KeyVersion { key, version })
            .collect(),
    ))
}

#[tracing::instrument(skip(node))]
pub async fn clear_state(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deleted = node.state_clear(&id).await?;
    Ok(Json(serde_json::json!({ "deleted": deleted })))
}

#[tracing::instrument(skip(node))]
pub async fn get_key(
    State(node): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match node.sessions().local.get(&id, &key).await? {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key {key:?} in session {id}"),
        )),
        Some(v) => {
            let mut r = Response::new(Body::from(v.value));
            r.headers_mut().insert(header::ETAG, etag(v.version));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(r)
        }
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from(version)
        .to_str()
        .map_or(HeaderValue::from_static("\"0\""), |v| {
            HeaderValue::from_str(&format!("\"{v}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
        })
}

/// The version a write is conditional on: `If-Match: "<v>"` (must be
/// exactly that version), `If-None-Match: *` (must be absent), or nothing.
fn precondition(headers: &HeaderMap, key: &str) -> Result<Vec<(String, Option<u64>)>, ApiError> {
    if let Some(v) = headers.get(header::IF_MATCH) {
        let version = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().trim_matches('"').parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "If-Match must be a quoted version",
                )
            })?;
        return Ok(vec![(key.to_owned(), Some(version))]);
    }
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == "*") {
        return Ok(vec![(key.to_owned(), None)]);
    }
    Ok(Vec::new())
}

async fn conditional_write(
    node: &AppState,
    id: &str,
    commit: Commit,
) -> Result<StatusCode, ApiError> {
    match node.state_commit(id, &commit).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(SessionError::Store(StoreError::Conflict { key })) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("key {key:?} is not at the version given"),
        )),
        Err(e) => Err(e.into()),
    }
}

#[tracing::instrument(skip(node, headers, body))]
pub async fn put_key(
    State(node): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let limits = node.config().state_limits;
    if key.is_empty() || key.len() > limits.max_key_bytes as usize {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            format!("keys are 1 to {} bytes", limits.max_key_bytes),
        ));
    }
    let value = super::api::read_body(&headers, body, limits.max_value_bytes as usize).await?;
    let commit = Commit {
        reads: precondition(&headers, &key)?,
        writes: vec![(key, Some(value.to_vec()))],
    };
    conditional_write(&node, &id, commit).await
}

#[tracing::instrument(skip(node, headers))]
pub async fn delete_key(
    State(node): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let commit = Commit {
        reads: precondition(&headers, &key)?,
        writes: vec![(key, None)],
    };
    conditional_write(&node, &id, commit).await
}

#[tracing::instrument(skip(node, body))]
pub async fn commit(
    State(node): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<WireCommit>,
) -> Result<Response, ApiError> {
    let commit = Commit::try_from(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("bad base64: {e}"),
        )
    })?;
    match node.state_commit(&id, &commit).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(SessionError::Store(StoreError::Conflict { key })) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": format!("key {key:?} changed"), "kind": "conflict", "key": key })),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}
