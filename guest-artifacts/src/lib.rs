//! Paths of the guest components in `guest-examples/`, built for
//! `wasm32-wasip2` by this crate's build script. Tests and benches read the
//! components from these paths; no `.wasm` file is ever committed.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Every built guest: (name, path).
pub const ALL: &[(&str, &str)] = &[
    ("echo", ECHO),
    ("counter", COUNTER),
    ("hog", HOG),
    ("memo", MEMO),
    ("kv", KV),
    ("stage", STAGE),
];
