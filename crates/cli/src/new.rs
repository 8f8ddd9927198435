//! `edge-node new`: writes a ready function project, with the SDK and the
//! WIT inside it, so it builds from any directory.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The languages a project can be written in.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Lang {
    /// Rust, on the `edge-sdk` crate.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

/// The SDK crate, as it is in `guest-examples/edge-sdk`, and the one WIT.
const SDK: &[(&str, &str)] = &[
    (
        "edge-sdk/Cargo.toml",
        include_str!("../../../guest-examples/edge-sdk/Cargo.toml"),
    ),
    (
        "edge-sdk/src/lib.rs",
        include_str!("../../../guest-examples/edge-sdk/src/lib.rs"),
    ),
    (
        "edge-sdk/wit/function.wit",
        include_str!("../../../wit/function.wit"),
    ),
];

/// The project's own files; `{name}` and `{file}` are filled in. The lock
/// is the guests' own: a new project builds with the versions this node's
/// tests built the SDK with (cargo drops the entries it does not need).
const RUST: &[(&str, &str)] = &[
    (
        "Cargo.lock",
        include_str!("../../../guest-examples/Cargo.lock"),
    ),
    ("Cargo.toml", include_str!("new/rust/Cargo.toml.in")),
    ("src/lib.rs", include_str!("new/rust/lib.rs.in")),
    ("README.md", include_str!("new/rust/README.md.in")),
    (".gitignore", include_str!("new/rust/gitignore.in")),
    (
        ".cargo/config.toml",
        include_str!("new/rust/cargo-config.toml.in"),
    ),
];

/// The Python project's files.
const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("new/python/app.py.in")),
    ("README.md", include_str!("new/python/README.md.in")),
    (".gitignore", include_str!("new/python/gitignore.in")),
    (
        "wit/function.wit",
        include_str!("../../../wit/function.wit"),
    ),
];

/// How to build and deploy project `name`, for the user.
pub fn next_steps(name: &str, lang: Lang) -> String {
    match lang {
        Lang::Rust => format!(
            "cargo build --release && edge-node deploy {name} target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        Lang::Python => format!(
            "componentize-py -d wit -w function componentize app -o {name}.wasm \
             && edge-node deploy {name} {name}.wasm"
        ),
        Lang::Js => format!("npm install && npm run build && edge-node deploy {name} {name}.wasm"),
    }
}

/// The JavaScript project's files.
const JS: &[(&str, &str)] = &[
    ("app.js", include_str!("new/js/app.js.in")),
    ("package.json", include_str!("new/js/package.json.in")),
    ("README.md", include_str!("new/js/README.md.in")),
    (".gitignore", include_str!("new/js/gitignore.in")),
    (
        "wit/function.wit",
        include_str!("../../../wit/function.wit"),
    ),
];

/// Writes project `name` in `dir/name` (which must not exist) and returns
/// its path.
pub fn scaffold(name: &str, lang: Lang, dir: &Path) -> Result<PathBuf> {
    if !edge_core::registry::valid_name(name) || name.contains('.') {
        bail!(
            "invalid project name {name:?}: use [a-z0-9][a-z0-9_-]{{0,63}} \
             (it is also the function's name)"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} exists already", root.display());
    }
    let files: Vec<&(&str, &str)> = match lang {
        Lang::Rust => RUST.iter().chain(SDK).collect(),
        Lang::Python => PYTHON.iter().collect(),
        Lang::Js => JS.iter().collect(),
    };
    // Cargo names the component after the crate, with `-` made `_`.
    let file = name.replace('-', "_");
    for (path, text) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = text.replace("{name}", name).replace("{file}", &file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_a_project_once_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = scaffold("thermo-1", Lang::Rust, dir.path()).unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"thermo-1\""), "{manifest}");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(readme.contains("release/thermo_1.wasm"), "{readme}");
        let wit = std::fs::read_to_string(root.join("edge-sdk/wit/function.wit")).unwrap();
        assert!(wit.contains("package edge:function@"));
        let again = scaffold("thermo-1", Lang::Rust, dir.path()).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
        let py = scaffold("thermo-2", Lang::Python, dir.path()).unwrap();
        let app = std::fs::read_to_string(py.join("app.py")).unwrap();
        assert!(app.starts_with("\"\"\"thermo-2: "), "{app}");
        assert!(py.join("wit/function.wit").is_file());
        assert!(next_steps("thermo-2", Lang::Python).contains("-o thermo-2.wasm"));
        let js = scaffold("thermo-3", Lang::Js, dir.path()).unwrap();
        let package: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(js.join("package.json")).unwrap())
                .unwrap();
        assert_eq!(package["name"], "thermo-3");
        assert!(
            package["scripts"]["build"]
                .as_str()
                .unwrap()
                .ends_with("-o thermo-3.wasm")
        );
        for bad in ["", "Thermo", "../x", "a.b", "a/b"] {
            assert!(scaffold(bad, Lang::Rust, dir.path()).is_err(), "{bad:?}");
        }
    }
}
