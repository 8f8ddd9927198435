//! Who may call what. With a node token (`--token`) or a cluster token
//! (`--cluster-token`) configured, every `/v1` route needs
//! `Authorization: Bearer <token>` with one of them: 401 without one, 403
//! with a wrong one. `/healthz` and `/metrics` stay open; `--open-reads`
//! opens the GET routes that describe functions, sessions and the node, and
//! `--open-invoke` opens invocation (and the `wasi:http` functions served
//! under `/{function}/`). State and node-to-node routes are never
//! opened by those flags.
//!
//! With a cluster token configured, the routes nodes use between themselves
//! (imports, the state server, `/v1/wf/*`) accept **only** the cluster
//! token: a client token gets 403 there, so a client can never write a
//! session's state behind its guest's back nor pose as a peer. With client
//! authorities configured (`--tls-client-ca`), those routes also need a
//! client certificate the TLS handshake verified.

use super::api::AppState;
use super::error::ApiError;
use super::tls::ClientCertified;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use edge_core::AuthConfig;
use http::{Method, StatusCode, header};
use subtle::ConstantTimeEq;

/// True when `presented` is a token `auth` takes on `path`.
fn accepts(auth: &AuthConfig, presented: &str, path: &str) -> bool {
    let cluster = auth.cluster_token.as_ref();
    let node = auth.token.as_ref().filter(|_| {
        // Where nodes talk among themselves, only the cluster token
        // counts once there is one.
        cluster.is_none() || !is_cluster_route(path)
    });
    // Compared in constant time (for equal lengths), so the time taken says
    // nothing about how much of a token was right; every token is compared.
    [node, cluster]
        .into_iter()
        .flatten()
        .fold(false, |found, t| {
            found | bool::from(t.as_bytes().ct_eq(presented.as_bytes()))
        })
}

/// True when `auth` opens `method path` without a token.
fn is_open(auth: &AuthConfig, method: &Method, path: &str) -> bool {
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
                | ["v1", "cluster"]
        );
    // An invocation: through the API, or a request to a wasi:http function.
    let invoke = (*method == Method::POST
        && matches!(segs.as_slice(), ["v1", "functions", _, "invoke"]))
        || segs.first().is_some_and(|s| *s != "v1");
    (auth.open_reads && read) || (auth.open_invoke && invoke)
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
            | ["v1", "functions", _, "component"]
            | ["v1", "wf", ..]
    )
}

/// The middleware.
pub async fn require_token(State(node): State<AppState>, request: Request, next: Next) -> Response {
    let auth = &node.config().auth;
    if auth.peer_certificates
        && is_cluster_route(request.uri().path())
        && request.extensions().get::<ClientCertified>().is_none()
    {
        let err = ApiError::new(
            StatusCode::FORBIDDEN,
            "client_certificate_required",
            "this route is for the nodes of the cluster: it needs a client certificate \
             from the cluster's CA (--tls-client-ca)",
        );
        return super::api::refuse(request.into_body(), err)
            .await
            .into_response();
    }
    if !auth.enabled() || is_open(auth, request.method(), request.uri().path()) {
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
        Some(t) if accepts(auth, t.trim(), request.uri().path()) => next.run(request).await,
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
        assert!(is_open(&a, &Method::GET, "/healthz"));
        assert!(is_open(&a, &Method::GET, "/v1/functions/echo"));
        assert!(is_open(&a, &Method::GET, "/v1/sessions/s"));
        assert!(
            !is_open(&a, &Method::GET, "/v1/sessions/s/state"),
            "state is never opened"
        );
        assert!(!is_open(&a, &Method::GET, "/v1/sessions/s/state/k"));
        assert!(!is_open(&a, &Method::PUT, "/v1/functions/echo"));
        assert!(!is_open(&a, &Method::POST, "/v1/functions/echo/invoke"));
        assert!(
            accepts(&a, "t", "/v1/x") && !accepts(&a, "tt", "/v1/x") && !accepts(&a, "", "/v1/x")
        );
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
            "/v1/functions/f/component",
        ] {
            assert!(!accepts(&a, "t", path), "{path}");
            assert!(accepts(&a, "c", path), "{path}");
        }
        for path in [
            "/v1/sessions/s/migrate",
            "/v1/sessions/s",
            "/v1/functions/f/invoke",
        ] {
            assert!(accepts(&a, "t", path) && accepts(&a, "c", path), "{path}");
        }
        // Without a cluster token the node token is the cluster's too.
        let single = AuthConfig {
            token: Some("t".into()),
            ..AuthConfig::default()
        };
        assert!(accepts(&single, "t", "/v1/wf/deliver"));
    }
}
