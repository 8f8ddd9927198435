//! Paths of the guest components in `guest-examples/`, built for
//! `wasm32-wasip2` by this crate's build script. Tests and benches read the
//! components from these paths; no `.wasm` file is ever committed.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Every built `edge:function` guest: (name, path). (`HELLO_HTTP` and
/// `WEB` are `wasi:http/proxy` components, not among them.)
pub const ALL: &[(&str, &str)] = &[
    ("echo", ECHO),
    ("counter", COUNTER),
    ("hog", HOG),
    ("memo", MEMO),
    ("kv", KV),
    ("stage", STAGE),
    ("hello", HELLO),
];
