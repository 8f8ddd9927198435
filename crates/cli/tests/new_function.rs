//! Functions written outside the repository, as a user would: `edge-node
//! new` in a temporary directory, built there with the language's own tool
//! (cargo; componentize-py), deployed, and called in both modes.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{TestNode, guests};

/// `edge-node new tally --lang LANG` in a fresh directory.
fn new_project(lang: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .args(["new", "tally", "--lang", lang, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("edge-node deploy tally"), "{stdout}");
    let project = dir.path().join("tally");
    (dir, project)
}

/// Runs `command`, asserting it succeeds.
fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The template's behaviour, the same in every language: it counts
/// through remote → local → remote, `reset` starts again, and a stored
/// count that is not a number is the handler's error (422, nothing kept).
async fn counts_in_both_modes(node: &TestNode) {
    let mut expect = 0;
    for mode in ["remote", "local", "remote"] {
        let got = node.set_mode("s", mode).await;
        assert_eq!(got["mode"], mode, "{got}");
        for _ in 0..3 {
            expect += 1;
            let got = node.invoke_ok("tally", Some("s"), "").await;
            assert_eq!(got, expect.to_string());
        }
    }
    assert_eq!(node.invoke_ok("tally", Some("s"), "reset").await, "0");
    assert_eq!(node.invoke_ok("tally", Some("s"), "").await, "1");

    node.set_mode("bad", "local").await;
    let r = node
        .http
        .put(node.at("/v1/sessions/bad/state/count"))
        .body("twelve")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = node.invoke("tally", Some("bad"), "").await;
    let message = support::assert_error(r, 422, "guest_error").await;
    assert!(!message.is_empty());
    let state = node.get_json("/v1/sessions/bad").await;
    assert_eq!(state["keys"].as_array().unwrap().len(), 1, "{state}");
    assert_eq!(node.invoke_ok("tally", Some("bad"), "reset").await, "0");
    assert_eq!(node.invoke_ok("tally", Some("bad"), "").await, "1");
}

#[tokio::test]
async fn a_new_rust_project_builds_on_its_own_and_counts_in_both_modes() {
    let (_dir, project) = new_project("rust");
    // Plain `cargo build --release` in the project (into the guests' target
    // dir, to reuse their dependencies' builds: same lock, same profile).
    let target = Path::new(guests::COUNTER).ancestors().nth(3).unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(&project)
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", target);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    run(&mut cargo);
    let wasm = target.join("wasm32-wasip2/release/tally.wasm");

    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(data.path(), &[]).await;
    node.deploy("tally", wasm.to_str().unwrap()).await;
    counts_in_both_modes(&node).await;
    // A body that is not UTF-8 is the handler's `?` on `text()`.
    let r = node.invoke("tally", Some("s"), vec![0xff, 0xfe]).await;
    let message = support::assert_error(r, 422, "guest_error").await;
    assert!(message.contains("utf-8"), "{message}");
}

#[tokio::test]
async fn a_new_python_project_builds_with_componentize_py_and_counts_in_both_modes() {
    let (_dir, project) = new_project("python");
    // The test command installs componentize-py and names it here.
    let tool = std::env::var("EDGE_COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into());
    assert!(
        Command::new(&tool).arg("--version").output().is_ok(),
        "{tool} not found: run ./scripts/test.sh (it installs componentize-py) \
         or set EDGE_COMPONENTIZE_PY"
    );
    run(Command::new(&tool).current_dir(&project).args([
        "-d",
        "wit",
        "-w",
        "function",
        "componentize",
        "app",
        "-o",
        "tally.wasm",
    ]));

    let data = tempfile::tempdir().unwrap();
    // An 18 MB component: a debug build of the node takes ~30 s to compile
    // it (a release build a fraction of that), past the 30 s default.
    let node = TestNode::start(data.path(), &["--compile-timeout-secs", "600"]).await;
    node.deploy("tally", project.join("tally.wasm").to_str().unwrap())
        .await;
    counts_in_both_modes(&node).await;
}

#[tokio::test]
async fn a_new_js_project_builds_with_componentize_js_and_counts_in_both_modes() {
    let (_dir, project) = new_project("js");
    // The project's own `npm run build`, on the componentize-js the test
    // command installed (instead of an `npm install` per run).
    let modules = std::env::var("EDGE_JS_MODULES").unwrap_or_default();
    assert!(
        Path::new(&modules).join(".bin/componentize-js").exists(),
        "componentize-js not found: run ./scripts/test.sh (it installs it) \
         or set EDGE_JS_MODULES to a node_modules that has it"
    );
    std::os::unix::fs::symlink(&modules, project.join("node_modules")).unwrap();
    run(Command::new("npm")
        .current_dir(&project)
        .args(["run", "--silent", "build"]));

    let data = tempfile::tempdir().unwrap();
    // A 12 MB component: ~25 s to compile on a debug build of the node.
    let node = TestNode::start(data.path(), &["--compile-timeout-secs", "600"]).await;
    node.deploy("tally", project.join("tally.wasm").to_str().unwrap())
        .await;
    counts_in_both_modes(&node).await;
}
