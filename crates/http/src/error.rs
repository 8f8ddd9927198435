//! Errors as HTTP responses: a status and `{"error": "...", "kind": "..."}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use edge_core::invoke::InvokeError;
use edge_core::registry::RegistryError;
use edge_core::session::SessionError;
use edge_host_api::StoreError;
use http::StatusCode;
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable kind.
    pub kind: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Where the resource is now (sent as `Location`).
    pub location: Option<String>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    kind: &'a str,
}

impl ApiError {
    /// An error with `status`, `kind` and `message`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            location: None,
            retry_after: None,
        }
    }

    /// With a `Retry-After` of `secs`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A 307 to `url`: the session lives on another node now.
    pub fn moved(url: &str, path: &str) -> Self {
        let mut e = ApiError::new(
            StatusCode::TEMPORARY_REDIRECT,
            "moved",
            format!("session moved to {url}"),
        );
        e.location = Some(format!("{}{path}", url.trim_end_matches('/')));
        e
    }

    /// A 503: session `id`'s owner stopped beating (it may be powered off,
    /// and a request to it would wait out its deadline).
    pub fn owner_gone(owner: &str, id: Option<&str>) -> Self {
        let about = id.map_or_else(String::new, |s| format!("session {s} is local-state at "));
        let id = id.unwrap_or("{id}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "owner_unavailable",
            format!(
                "{about}{owner}, which is not a live member of the cluster (no heartbeat for {} s): retry when it is back, or take the session over (POST /v1/sessions/{id}/takeover), which loses what it wrote there while local",
                edge_core::cluster::MEMBER_TTL.as_secs()
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Shedding is the node working as meant: a flood must not also
        // flood the log.
        if self.status.is_server_error() && self.kind != "overloaded" {
            tracing::warn!(status = %self.status, kind = self.kind, error = %self.message, "request failed");
        }
        let body = Body {
            error: &self.message,
            kind: self.kind,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(Ok(location)) = self.location.as_deref().map(http::HeaderValue::from_str) {
            response
                .headers_mut()
                .insert(http::header::LOCATION, location);
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let (status, kind) = match &e {
            RegistryError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            RegistryError::NotAComponent(_) => (StatusCode::BAD_REQUEST, "not_a_component"),
            RegistryError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_component"),
            RegistryError::Link(_) => (StatusCode::BAD_REQUEST, "unsupported_imports"),
            RegistryError::Compile(_) => (StatusCode::INTERNAL_SERVER_ERROR, "compile_failed"),
            RegistryError::TooCostly(_) => (StatusCode::UNPROCESSABLE_ENTITY, "compile_limit"),
            RegistryError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
            RegistryError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            RegistryError::InvalidOption(_) => (StatusCode::BAD_REQUEST, "invalid_option"),
            RegistryError::NoPrevious(_) => (StatusCode::CONFLICT, "no_previous"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, kind) = match &e {
            StoreError::InvalidSession => (StatusCode::BAD_REQUEST, "invalid_session"),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            StoreError::Backend(_) => (StatusCode::SERVICE_UNAVAILABLE, "state_store"),
            StoreError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            StoreError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "deadline"),
            StoreError::Owned(_) => (StatusCode::CONFLICT, "owned_elsewhere"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::Registry(e) => e.into(),
            InvokeError::State(e) => e.into(),
            InvokeError::InvalidSession => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_session", e.to_string())
            }
            InvokeError::Guest(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "guest_error", m)
            }
            InvokeError::Trap { kind, .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                kind.as_str(),
                e.to_string(),
            ),
            InvokeError::Deadline(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "deadline", e.to_string())
            }
            InvokeError::Capacity(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "capacity", e.to_string())
            }
            InvokeError::Overloaded(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
                    .retry_after(1)
            }
            InvokeError::Contention(_) => {
                ApiError::new(StatusCode::CONFLICT, "contention", e.to_string())
            }
            InvokeError::Moved(url) => ApiError::moved(&url, ""),
            InvokeError::Session(e) => e.into(),
            InvokeError::WrongKind { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "wrong_kind", e.to_string())
            }
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::InvalidId => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_session", e.to_string())
            }
            SessionError::Store(e) => e.into(),
            SessionError::Moved(url) => ApiError::moved(&url, ""),
            SessionError::NotLocal => {
                ApiError::new(StatusCode::CONFLICT, "not_local", e.to_string())
            }
            SessionError::InvalidTarget(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_target", e.to_string())
            }
            SessionError::Busy(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "deadline", e.to_string())
            }
            SessionError::Storage(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
            }
            SessionError::MissingFunctions(_) => {
                ApiError::new(StatusCode::CONFLICT, "function_missing", e.to_string())
            }
            SessionError::NoLease(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "lease", e.to_string())
            }
            SessionError::NoDirectory => {
                ApiError::new(StatusCode::CONFLICT, "no_directory", e.to_string())
            }
            SessionError::OwnerAlive(_) => {
                ApiError::new(StatusCode::CONFLICT, "owner_alive", e.to_string())
            }
        }
    }
}
