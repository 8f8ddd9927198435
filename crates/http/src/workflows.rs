//! Workflow routes: `POST /v1/workflows` for clients, and the node-to-node
//! messages of an execution under `/v1/wf/`.

use super::api::{AppState, read_body};
use super::error::ApiError;
use super::extract::{Json, Path, Query};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use edge_proto::envelope::{Cost, Envelope, response_head_bytes};
use edge_proto::routes::STATE_PRESENT_HEADER;
use edge_workflow::hop::{Deliver, Reports};
use edge_workflow::pure::RunTask;
use edge_workflow::{PlanError, WorkflowError, WorkflowResult};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        let (status, kind) = match &e {
            WorkflowError::Spec(_) => (StatusCode::BAD_REQUEST, "invalid_spec"),
            WorkflowError::Task { .. } => (StatusCode::BAD_GATEWAY, "task_failed"),
            WorkflowError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "deadline"),
            WorkflowError::Session(_) => (StatusCode::INTERNAL_SERVER_ERROR, "session"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

/// Largest workflow spec taken, bytes (inputs and initial values travel in
/// it; larger data belongs in a session's state).
const MAX_SPEC_BYTES: usize = 8 << 20;

fn spec_limit(node: &AppState) -> usize {
    node.config().max_upload_bytes.min(MAX_SPEC_BYTES)
}

/// A message whose plan is unknown here (409 `plan_unknown`: the sender
/// sends it again with the plan) or invalid (400).
fn plan_error(e: PlanError) -> ApiError {
    match e {
        PlanError::Unknown { .. } => ApiError::new(
            StatusCode::CONFLICT,
            edge_workflow::PLAN_UNKNOWN,
            e.to_string(),
        ),
        PlanError::Invalid(_) => bad(e),
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
}

#[tracing::instrument(skip_all)]
pub async fn run(
    State(node): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WorkflowResult>, ApiError> {
    let spec = read_body(&headers, body, spec_limit(&node)).await?;
    Ok(Json(node.workflows.run(&spec).await?))
}

#[tracing::instrument(skip_all)]
pub async fn validate(
    State(node): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let spec = read_body(&headers, body, spec_limit(&node)).await?;
    let plan = node.workflows.validate(&spec).await?;
    let order: Vec<&str> = plan.topo.iter().map(|&i| plan.id(i)).collect();
    Ok(Json(
        serde_json::json!({ "tasks": plan.len(), "order": order, "chain": plan.is_chain }),
    ))
}

#[tracing::instrument(skip_all)]
pub async fn deliver(
    State(node): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let raw = read_body(&headers, body, node.config().max_upload_bytes).await?;
    let env = Envelope::<Deliver>::decode(raw).map_err(bad)?;
    // Stored, and run once complete: the sender does not wait (yield).
    node.workflows
        .clone()
        .accept_delivery(env)
        .map_err(plan_error)?;
    Ok(StatusCode::ACCEPTED)
}

#[tracing::instrument(skip_all)]
pub async fn run_task(
    State(node): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = read_body(&headers, body, node.config().max_upload_bytes).await?;
    let env: Envelope<RunTask> = Envelope::decode(raw).map_err(bad)?;
    let ctx = node
        .workflows
        .resolve(&env.header.ctx)
        .map_err(plan_error)?;
    let (answer, _) = node
        .workflows
        .serve_task(&ctx, env)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "task_failed", e))?;
    Ok(answer.into_response())
}

#[tracing::instrument(skip_all)]
pub async fn report(
    State(node): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let raw = read_body(&headers, body, node.config().max_upload_bytes).await?;
    node.workflows
        .accept_reports(Envelope::<Reports>::decode(raw).map_err(bad)?);
    Ok(StatusCode::NO_CONTENT)
}

/// Query of a state fetch.
#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    version: u64,
}

/// StateLocal: hands a state over to the node that asks for it.
#[tracing::instrument(skip(node))]
pub async fn take_state(
    State(node): State<AppState>,
    Path((exec, name)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let value = node
        .workflows
        .take(&exec, &name, q.version)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "not_owner", e))?;
    let present = value.is_some();
    let body = value.unwrap_or_default();
    let cost = Cost {
        states: body.len() as u64,
        wire: body.len() as u64 + response_head_bytes(body.len()),
        ..Cost::default()
    };
    node.workflows.traffic.count(&exec, &cost);
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        STATE_PRESENT_HEADER,
        HeaderValue::from_static(if present { "1" } else { "0" }),
    );
    Ok(r)
}

#[tracing::instrument(skip(node))]
pub async fn traffic(State(node): State<AppState>, Path(exec): Path<String>) -> Json<Cost> {
    Json(node.workflows.traffic.of(&exec))
}

#[tracing::instrument(skip(node))]
pub async fn abort(State(node): State<AppState>, Path(exec): Path<String>) -> StatusCode {
    node.workflows.forget(&exec);
    StatusCode::NO_CONTENT
}
