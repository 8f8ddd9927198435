//! `http-kv`: a `wasi:http/proxy` component keeping its state through the
//! standard `wasi:keyvalue` interfaces only, as one written for another
//! runtime's key-value store would.
//!
//! | request | answer |
//! | --- | --- |
//! | `/incr/K` | `K` incremented by 1: the new number |
//! | `/get/K` | the value of `K`, or `404` |
//! | `/set/K/V` | stores `V` under `K`: `ok` |
//! | `/trap/K` | stores `trapped` under `K`, answers, then traps |
//! | `/big/K/N` | increments `K`, answers N bytes streamed in 64 KiB writes |

mod bindings {
    wit_bindgen::generate!({
    inline: "
        package edge:http-kv;
        world http-kv {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
        }
    ",
    path: "../../wit",
    world: "edge:http-kv/http-kv",
    generate_all,
    });
}

use ::wasi::exports::http::incoming_handler::Guest;
use ::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use bindings::wasi::keyvalue::{atomics, store};

struct HttpKv;

/// Answers `status` with `body`, written in pieces of at most 64 KiB.
fn answer(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else {
        return;
    };
    for piece in body.chunks(64 << 10) {
        // At most 4 KiB per blocking write (the stream's contract).
        for part in piece.chunks(4096) {
            if stream.blocking_write_and_flush(part).is_err() {
                return;
            }
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

fn run(path: &str) -> Result<(u16, Vec<u8>), store::Error> {
    let bucket = store::open("default")?;
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    Ok(match parts.as_slice() {
        ["incr", key] => (
            200,
            atomics::increment(&bucket, key, 1)?
                .to_string()
                .into_bytes(),
        ),
        ["get", key] => match bucket.get(key)? {
            Some(value) => (200, value),
            None => (404, b"no such key".to_vec()),
        },
        ["set", key, value] => {
            bucket.set(key, value.as_bytes())?;
            (200, b"ok".to_vec())
        }
        ["trap", key] => {
            bucket.set(key, b"trapped")?;
            (200, b"about to trap".to_vec())
        }
        ["big", key, n] => {
            atomics::increment(&bucket, key, 1)?;
            (200, vec![b'x'; n.parse().unwrap_or(0)])
        }
        _ => (404, b"no such route".to_vec()),
    })
}

impl Guest for HttpKv {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match run(&path) {
            Ok((status, body)) => answer(out, status, &body),
            Err(e) => answer(out, 500, format!("{e:?}").as_bytes()),
        }
        if path.starts_with("/trap/") {
            panic!("asked to trap");
        }
    }
}

::wasi::http::proxy::export!(HttpKv);
