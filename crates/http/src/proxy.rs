//! Requests to `wasi:http/proxy` functions: `ANY /{function}[/rest…]` is
//! served by the function's `incoming-handler`, which sees the method, the
//! headers, the body and the path after the function's name (`/rest…`, with
//! the query). The body is read first, within `--max-invoke-bytes`; the
//! response streams back as the guest writes it. A request for a function
//! this node lacks goes to a member that has it, and one for a session whose
//! state another node holds goes to that node; the answer streams back.

use super::api::{AppState, read_body};
use super::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use edge_core::invoke::InvokeError;
use edge_core::registry::valid_name;
use edge_proto::routes::{FORWARDED_HEADER, HOP_BY_HOP, OWNER_HEADER, SESSION_HEADER};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::Full;
use std::time::Duration;

/// What a passed request may take beyond the deadline it has at the node
/// serving it.
const PASS_GRACE: Duration = Duration::from_secs(5);

/// Where a request's path names a function: its name and what follows.
fn split(uri: &Uri) -> Option<(&str, String)> {
    let path = uri.path().strip_prefix('/')?;
    let (name, rest) = match path.split_once('/') {
        Some((name, rest)) => (name, format!("/{rest}")),
        None => (path, "/".to_owned()),
    };
    let rest = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    Some((name, rest))
}

/// The handler of `/{function}` and `/{function}/{*rest}`.
#[tracing::instrument(skip(node, request), fields(path = %request.uri().path()))]
pub async fn serve(State(node): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let no_route = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route");
    let (name, rest) = split(request.uri()).ok_or_else(no_route)?;
    // `/v1/…` routes this node does not have are not functions.
    if name == "v1" || !valid_name(name) {
        return Err(no_route());
    }
    let name = name.to_owned();
    let path: Uri = rest.parse().map_err(|_| no_route())?;
    let asked = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.to_string());
    let (mut parts, body) = request.into_parts();
    let input = read_body(&parts.headers, body, node.config().max_invoke_bytes).await?;
    let passed = parts.headers.contains_key(FORWARDED_HEADER);
    // A function this node lacks: passed to the session's owner or to a
    // member that has it (once: a passed request is never passed on).
    let here = node.registry().function(&name).await;
    if here.is_err() && !passed {
        let session = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Some(to) = node.broker(&name, session).await {
            return pass(&node, &to, parts.method, &asked, &parts.headers, input).await;
        }
    }
    // What passing it to the session's owner would need: kept only for a
    // function with sessions (no other is ever `Moved`).
    let keep = match &here {
        Ok(f) if f.keeps_state && !passed => Some((parts.method.clone(), parts.headers.clone())),
        _ => None,
    };
    parts.uri = path;
    // An HTTP/1.0 request may come without a host; the guest gets one.
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let request = http::Request::from_parts(parts, Full::new(input.clone()));
    match (node.node.serve_http(&name, request).await, keep) {
        (Ok(response), _) => Ok(response.map(Body::new)),
        // The session's state is on another node: the request goes there.
        (Err(InvokeError::Moved(owner)), Some((method, headers))) => {
            pass(&node, &owner, method, &asked, &headers, input).await
        }
        (Err(InvokeError::Moved(owner)), None) => Err(ApiError::moved(&owner, &asked)),
        (Err(e), _) => Err(e.into()),
    }
}

/// Passes the request to `to` (a session's owner, or a member with the
/// function) and streams its answer back, naming who served it.
async fn pass(
    node: &AppState,
    to: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    input: Bytes,
) -> Result<Response, ApiError> {
    let failed = |e: edge_proto::PeerError| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "forward_failed",
            format!("the request went to {to}, which did not answer: {e}"),
        )
    };
    if node.is_gone(to).await {
        let session = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
        return Err(ApiError::owner_gone(to, session));
    }
    let limit = node.config().invoke_deadline + PASS_GRACE;
    let answer = node
        .peer()
        .pass_http(to, method, path, headers, input, limit)
        .await
        .map_err(failed)?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    response
        .header(OWNER_HEADER, to)
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "forward_failed", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_and_its_rest_are_split() {
        let at = |s: &str| {
            let uri: Uri = s.parse().unwrap();
            split(&uri).map(|(n, r)| (n.to_owned(), r))
        };
        assert_eq!(at("/hello"), Some(("hello".into(), "/".into())));
        assert_eq!(at("/hello/"), Some(("hello".into(), "/".into())));
        assert_eq!(
            at("/hello/a/b?x=1"),
            Some(("hello".into(), "/a/b?x=1".into()))
        );
        assert_eq!(at("/hello?x=1"), Some(("hello".into(), "/?x=1".into())));
    }
}
