//! The checks an upload gets before anything is compiled: its name, the
//! component preamble, the imports this node provides, and validation.

use super::RegistryError;

/// True when `name` matches `[a-z0-9][a-z0-9._-]{0,63}` and has no `..`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !name.contains("..")
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// True when `host` is `*` (any host), or a host name or IP address with an
/// optional `:port`, in lower case.
pub fn valid_host(host: &str) -> bool {
    if host == "*" {
        return true;
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Whether a `wasi:http` component keeps state: one that imports
/// `wasi:keyvalue` is served in a session (its writes committed when the
/// request is done). One that imports `edge:function` is refused: that is
/// the native world's contract, whose handler it does not export.
pub(super) fn http_keeps_state(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Result<bool, RegistryError> {
    let ty = component.component_type();
    let mut keyvalue = false;
    for (name, _) in ty.imports(engine) {
        if name.starts_with("edge:function/") {
            return Err(RegistryError::Link(format!(
                "a wasi:http component cannot import {name}: keep its state with wasi:keyvalue, or use the edge:function world"
            )));
        }
        keyvalue |= name.starts_with("wasi:keyvalue/");
    }
    Ok(keyvalue)
}

/// The checks an upload gets inside the node before any compiler runs:
/// the component preamble, then full validation (linear time; every
/// feature allowed, so the compiler has the last word). The fuzz target
/// `upload` drives this with arbitrary bytes.
pub fn precheck(bytes: &[u8]) -> Result<(), RegistryError> {
    check_preamble(bytes)?;
    validate(bytes)
}

pub(super) fn validate(bytes: &[u8]) -> Result<(), RegistryError> {
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(bytes)
        .map(|_| ())
        .map_err(|e| RegistryError::Invalid(e.to_string()))
}

/// Classifies `bytes` by the WebAssembly preamble.
pub(super) fn check_preamble(bytes: &[u8]) -> Result<(), RegistryError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    const CORE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    match bytes.get(..8) {
        None if bytes.is_empty() => Err(RegistryError::NotAComponent("empty body")),
        None => Err(RegistryError::NotAComponent(
            "shorter than the 8-byte preamble",
        )),
        Some(p) if &p[..4] != MAGIC => Err(RegistryError::NotAComponent("no \\0asm magic")),
        Some(p) if p[4..] == CORE => Err(RegistryError::NotAComponent(
            "this is a core module; build a component (e.g. --target wasm32-wasip2)",
        )),
        Some(p) if p[4..] == COMPONENT => Ok(()),
        Some(_) => Err(RegistryError::NotAComponent("unknown binary version")),
    }
}

/// Refuses a component whose top-level imports this node does not provide,
/// before anything is compiled.
pub(super) fn check_imports(bytes: &[u8]) -> Result<(), RegistryError> {
    match crate::imports::unprovided_imports(bytes) {
        Err(e) => Err(RegistryError::Invalid(e)),
        Ok(missing) if !missing.is_empty() => Err(RegistryError::Link(format!(
            "this node does not provide {} (it provides WASI 0.2 with wasi:http, \
             wasi:keyvalue@0.2.0-draft, wasi:config@0.2.0-rc.1 and edge:function)",
            missing.join(", ")
        ))),
        Ok(_) => Ok(()),
    }
}
