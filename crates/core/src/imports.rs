//! What a component imports, checked against what this node provides before
//! anything is compiled: a component that needs `wasi:http` is refused in
//! milliseconds, not after a compile of minutes (the linker still has the
//! last word after compiling).

/// Packages whose interfaces this node provides, with the one version
/// provided where only one is: WASI 0.2 (HTTP included: outgoing requests
/// go only to a function's allowed hosts), the native `edge:function` world
/// the `wasi:keyvalue` draft served from session state and `wasi:config`
/// with each function's variables.
const PROVIDED: &[(&str, Option<&str>)] = &[
    ("wasi:io", None),
    ("wasi:clocks", None),
    ("wasi:random", None),
    ("wasi:filesystem", None),
    ("wasi:sockets", None),
    ("wasi:cli", None),
    ("wasi:http", None),
    ("wasi:keyvalue", Some("0.2.0-draft")),
    ("wasi:config", Some("0.2.0-rc.1")),
    ("edge:function", None),
];

/// The top-level imports of component `bytes` this node cannot provide (by
/// package), or the parse error. Imports of nested components and modules
/// are satisfied inside the component and are not looked at.
pub fn unprovided_imports(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut depth = 0usize;
    let mut missing = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let name = import.map_err(|e| e.to_string())?.name.name;
                    if !provided(name) {
                        missing.push(name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(missing)
}

/// True when `name` (`ns:pkg/iface@version`) is in a package (and version)
/// this node provides.
fn provided(name: &str) -> bool {
    let package = name.split(['/', '@']).next().unwrap_or(name);
    let version = name.split_once('@').map(|(_, v)| v);
    PROVIDED
        .iter()
        .any(|(p, v)| *p == package && v.is_none_or(|v| Some(v) == version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_are_matched_whole() {
        assert!(provided("wasi:io/streams@0.2.3"));
        assert!(provided("edge:function/state@0.1.0"));
        assert!(provided("wasi:http/types@0.2.0"));
        assert!(provided("wasi:keyvalue/store@0.2.0-draft"));
        assert!(provided("wasi:keyvalue/atomics@0.2.0-draft"));
        assert!(!provided("wasi:keyvalue/store@0.2.0-draft2"));
        assert!(!provided("wasi:keyvalue/store"));
        assert!(provided("wasi:config/store@0.2.0-rc.1"));
        assert!(!provided("wasi:config/store@0.2.0-draft"));
        assert!(!provided("wasi:iox/streams@0.2.0"));
        assert!(!provided("env"));
    }
}
