//! `hello-http`: the `hello` guest's work as a `wasi:http/proxy` component,
//! so `wasmtime serve` can run the same thing the bench runner measures on
//! edge-node. It answers every request with `200` and a constant body.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The body both hello guests return.
const BODY: &[u8] = b"hello, world\n";

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        let Ok(stream) = body.write() else {
            return;
        };
        let written = stream.blocking_write_and_flush(BODY);
        drop(stream);
        if written.is_ok() {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

wasi::http::proxy::export!(Hello);
