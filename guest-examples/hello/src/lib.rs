//! `hello`: answers every call with the same short constant body — the
//! trivial work the bench runner compares against `hello-http` under
//! `wasmtime serve`.

use edge_guest::{Guest, types::Input};

/// The body both hello guests return.
const BODY: &[u8] = b"hello, world\n";

struct Hello;

impl Guest for Hello {
    fn handle(_inputs: Vec<Input>) -> Result<Vec<u8>, String> {
        Ok(BODY.to_vec())
    }
}

edge_guest::export!(Hello with_types_in edge_guest);
