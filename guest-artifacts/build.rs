//! Builds the guests in `guest-examples/` for `wasm32-wasip2` and writes a
//! constant with the path of each built component (as wasmtime's
//! test-programs do). The guests have their own workspace and target dir,
//! `target/guests` beside the host's, so `cargo test` and `cargo clippy`
//! share one guest build.

use anyhow::{Context, Result, bail};
use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests to build: (crate name, constant name).
const GUESTS: &[(&str, &str)] = &[
    ("echo", "ECHO"),
    ("counter", "COUNTER"),
    ("hog", "HOG"),
    ("memo", "MEMO"),
    ("kv", "KV"),
    ("stage", "STAGE"),
    ("hello", "HELLO"),
    ("hello-http", "HELLO_HTTP"),
    ("web", "WEB"),
    ("wasi-kv", "WASI_KV"),
    ("http-kv", "HTTP_KV"),
];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("guest-artifacts has a parent")?;
    let guests = root.join("guest-examples");
    let wit = root.join("wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    for entry in ["Cargo.toml", "Cargo.lock", "edge-guest", "edge-sdk"]
        .into_iter()
        .chain(GUESTS.iter().map(|(name, _)| *name))
    {
        println!("cargo:rerun-if-changed={}", guests.join(entry).display());
    }

    let host_target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target_dir = host_target.join("guests");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy's among them) are not the
    // guests' business; with them the guests would rebuild on every switch.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "CLIPPY_ARGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().context("running cargo for the guests")?;
    if !status.success() {
        bail!(
            "building guest-examples for wasm32-wasip2 failed ({status}); \
             is the target installed? `rustup target add wasm32-wasip2`"
        );
    }

    let out_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut generated = String::new();
    for (name, constant) in GUESTS {
        // Cargo names a cdylib after its crate with `-` turned into `_`.
        let path = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
        check_exists(&path)?;
        writeln!(
            generated,
            "/// Path of the built `{name}` guest component.\npub const {constant}: &str = {:?};",
            path.display().to_string()
        )?;
    }
    let out = PathBuf::from(env::var("OUT_DIR")?).join("guests.rs");
    std::fs::write(&out, generated).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn check_exists(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!("guest build did not produce {}", path.display());
    }
    Ok(())
}
