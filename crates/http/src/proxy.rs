//! Requests to `wasi:http/proxy` functions: `ANY /{function}[/rest…]` is
//! served by the function's `incoming-handler`, which sees the method, the
//! headers, the body and the path after the function's name (`/rest…`, with
//! the query). The body is read first, within `--max-invoke-bytes`; the
//! response streams back as the guest writes it.

use super::api::{AppState, read_body};
use super::error::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use edge_core::invoke::InvokeError;
use edge_core::registry::valid_name;
use http::{HeaderValue, StatusCode, Uri, header};
use http_body_util::Full;

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
    parts.uri = path;
    // An HTTP/1.0 request may come without a host; the guest gets one.
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let request = http::Request::from_parts(parts, Full::new(input));
    match node.node.serve_http(&name, request).await {
        Ok(response) => Ok(response.map(Body::new)),
        // The session's state is on another node: the same request there.
        Err(InvokeError::Moved(owner)) => Err(ApiError::moved(&owner, &asked)),
        Err(e) => Err(e.into()),
    }
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
