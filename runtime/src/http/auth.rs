//! Who may call what. With a node token (`--token`) or a cluster token
//! (`--cluster-token`) configured, every `/v1` route needs
//! `Authorization: Bearer <token>` with one of them: 401 without one, 403
//! with a wrong one. `/healthz` and `/metrics` stay open; `--open-reads`
//! opens the GET routes that describe functions, sessions and the node, and
//! `--open-invoke` opens invocation. State and node-to-node routes are never
//! opened by those flags.
//!
//! With a cluster token configured, the routes nodes use between themselves
//! (imports, the state server, `/v1/wf/*`) accept **only** the cluster
//! token: a client token gets 403 there, so a client can never write a
//! session's state behind its guest's back nor pose as a peer.

use super::api::AppState;
use super::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};

/// Who may call what.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The token clients present.
    pub token: Option<String>,
    /// The token nodes of one cluster present to each other.
    pub cluster_token: Option<String>,
    /// GET routes describing functions, sessions and the node need no token.
    pub open_reads: bool,
    /// Invocation needs no token.
    pub open_invoke: bool,
}

impl AuthConfig {
    /// True when any token is configured.
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.cluster_token.is_some()
    }

    /// The token this node presents to its peers.
    pub fn outgoing(&self) -> Option<&str> {
        self.cluster_token.as_deref().or(self.token.as_deref())
    }

    fn accepts(&self, presented: &str, path: &str) -> bool {
        let cluster = self.cluster_token.as_ref();
        let node = self.token.as_ref().filter(|_| {
            // Where nodes talk among themselves, only the cluster token
            // counts once there is one.
            cluster.is_none() || !is_cluster_route(path)
        });
        [node, cluster]
            .into_iter()
            .flatten()
            .any(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()))
    }

    fn is_open(&self, method: &Method, path: &str) -> bool {
        if path == "/healthz" || path == "/metrics" {
            return true;
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let read = *method == Method::GET
            && matches!(
                segs.as_slice(),
                ["v1", "functions"]
                    | ["v1", "functions", _]
                    | ["v1", "sessions", _]
                    | ["v1", "node"]
            );
        let invoke =
            *method == Method::POST && matches!(segs.as_slice(), ["v1", "functions", _, "invoke"]);
        (self.open_reads && read) || (self.open_invoke && invoke)
    }
}

/// The routes nodes of a cluster use between themselves: migration imports,
/// the state server (what a peer store reads and writes) and every
/// workflow message.
pub fn is_cluster_route(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        segs.as_slice(),
        ["v1", "sessions", _, "import" | "commit" | "state"]
            | ["v1", "sessions", _, "state", _]
            | ["v1", "wf", ..]
    )
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware.
pub async fn require_token(State(node): State<AppState>, request: Request, next: Next) -> Response {
    let auth = &node.config().auth;
    if !auth.enabled() || auth.is_open(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    // A refusal drains some of the body first (an upload, say): closing a
    // connection with unread data resets it, and the client would see the
    // reset instead of the answer.
    match presented {
        None => {
            let err = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required",
            );
            let mut r = super::api::refuse(request.into_body(), err)
                .await
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            r
        }
        Some(t) if auth.accepts(t.trim(), request.uri().path()) => next.run(request).await,
        Some(_) => {
            let err = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token is not valid for this node",
            );
            super::api::refuse(request.into_body(), err)
                .await
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_routes() {
        let a = AuthConfig {
            token: Some("t".into()),
            open_reads: true,
            ..AuthConfig::default()
        };
        assert!(a.is_open(&Method::GET, "/healthz"));
        assert!(a.is_open(&Method::GET, "/v1/functions/echo"));
        assert!(a.is_open(&Method::GET, "/v1/sessions/s"));
        assert!(
            !a.is_open(&Method::GET, "/v1/sessions/s/state"),
            "state is never opened"
        );
        assert!(!a.is_open(&Method::GET, "/v1/sessions/s/state/k"));
        assert!(!a.is_open(&Method::PUT, "/v1/functions/echo"));
        assert!(!a.is_open(&Method::POST, "/v1/functions/echo/invoke"));
        assert!(a.accepts("t", "/v1/x") && !a.accepts("tt", "/v1/x") && !a.accepts("", "/v1/x"));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }

    #[test]
    fn cluster_routes_take_only_the_cluster_token() {
        let a = AuthConfig {
            token: Some("t".into()),
            cluster_token: Some("c".into()),
            ..AuthConfig::default()
        };
        for path in [
            "/v1/sessions/s/import",
            "/v1/sessions/s/commit",
            "/v1/sessions/s/state",
            "/v1/sessions/s/state/k",
            "/v1/wf/deliver",
            "/v1/wf/x/states/S",
        ] {
            assert!(!a.accepts("t", path), "{path}");
            assert!(a.accepts("c", path), "{path}");
        }
        for path in [
            "/v1/sessions/s/migrate",
            "/v1/sessions/s",
            "/v1/functions/f/invoke",
        ] {
            assert!(a.accepts("t", path) && a.accepts("c", path), "{path}");
        }
        // Without a cluster token the node token is the cluster's too.
        let single = AuthConfig {
            token: Some("t".into()),
            ..AuthConfig::default()
        };
        assert!(single.accepts("t", "/v1/wf/deliver"));
    }
}
