//! A function's `wasi:config` variables: `PUT /v1/functions/{name}/config`
//! replaces them (a JSON object of strings), `GET` lists their names. The
//! values are never shown back: they may be secrets.

use super::api::{AppState, read_body};
use super::error::ApiError;
use super::extract::{Json, Path};
use axum::body::Body;
use axum::extract::State;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The largest configuration body, bytes.
const MAX_CONFIG_BODY: usize = 1 << 20;

/// `PUT /v1/functions/{name}/config`.
#[tracing::instrument(skip(node, headers, body))]
pub(super) async fn put_config(
    State(node): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&headers, body, MAX_CONFIG_BODY).await?;
    let vars: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the configuration is a JSON object of strings: {e}"),
        )
    })?;
    let keys = node.registry().set_config(&name, vars).await?;
    Ok(Json(json!({ "name": name, "keys": keys })))
}

/// `GET /v1/functions/{name}/config`: the names only.
#[tracing::instrument(skip(node))]
pub(super) async fn get_config(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    node.registry().info(&name)?;
    let config = node.registry().config_of(&name);
    Ok(Json(json!({ "name": name, "keys": config.keys() })))
}
