//! `web`: a `wasi:http/proxy` function, as Spin or `wasmtime serve` would
//! run it. Under edge-node it is served at `/{name}/…`:
//! - `/echo…`: answers 200 with `METHOD PATH`, the `x-test` header and the
//!   request body, one per line;
//! - `/fetch?url=http[s]://host:port/path`: sends a GET there (outgoing HTTP,
//!   allowed only to the hosts the function was deployed with) and answers
//!   with its status and body, or 502 with the error;
//! - anything else: 404.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::StreamError;

struct Web;

impl wasi::exports::http::incoming_handler::Guest for Web {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = if path.starts_with("/echo") {
            (200, echo(&request, &path))
        } else if let Some(url) = path.strip_prefix("/fetch?url=") {
            match fetch(url) {
                Ok((status, body)) => (status, body),
                Err(e) => (502, format!("error: {e}").into_bytes()),
            }
        } else {
            (404, b"no such page\n".to_vec())
        };
        respond(out, status, &body);
    }
}

fn echo(request: &IncomingRequest, path: &str) -> Vec<u8> {
    let method = match request.method() {
        Method::Get => "GET".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        other => format!("{other:?}"),
    };
    let header = request
        .headers()
        .get("x-test")
        .into_iter()
        .next()
        .unwrap_or_default();
    let body = request.consume().map(read_all).unwrap_or_default();
    let mut out = format!("{method} {path}\n").into_bytes();
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

/// Reads a whole incoming body.
fn read_all(body: IncomingBody) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(stream) = body.stream() {
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) | Err(StreamError::LastOperationFailed(_)) => break,
            }
        }
    }
    out
}

/// GETs `url` (`http[s]://authority/path`); its status and body.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (Scheme::Http, rest),
        (_, Some(rest)) => (Scheme::Https, rest),
        _ => return Err("only http:// and https:// URLs are fetched".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;
    let body = request.body().map_err(|()| "request body")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(format!("{e:?}")),
        _ => return Err("no response".into()),
    };
    let status = response.status();
    let body = response.consume().map(read_all).unwrap_or_default();
    Ok((status, body))
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    if response.set_status_code(status).is_err() {
        return;
    }
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasi::http::proxy::export!(Web);
