//! A function written outside the repository, as a user would: `edge-node
//! new`, built by cargo in its own directory, deployed, called in both modes.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use support::{TestNode, guests};

#[tokio::test]
async fn a_new_project_builds_on_its_own_and_counts_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .args(["new", "tally", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("tally");

    // Built with plain `cargo build --release` from the project's directory
    // (into the guests' target dir, to reuse their dependencies' builds).
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
    let built = cargo.output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/tally.wasm");

    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(data.path(), &[]).await;
    node.deploy("tally", wasm.to_str().unwrap()).await;
    let mut expect = 0;
    let mut next = || {
        expect += 1;
        expect.to_string()
    };
    for mode in ["remote", "local", "remote"] {
        let got = node.set_mode("s", mode).await;
        assert_eq!(got["mode"], mode, "{got}");
        for _ in 0..3 {
            let want = next();
            assert_eq!(node.invoke_ok("tally", Some("s"), "").await, want);
        }
    }
    assert_eq!(node.invoke_ok("tally", Some("s"), "reset").await, "0");
    assert_eq!(node.invoke_ok("tally", Some("s"), "").await, "1");
    // Its error path: a non-UTF-8 body is the handler's `?` on `text()`.
    let r = node.invoke("tally", Some("s"), vec![0xff, 0xfe]).await;
    let message = support::assert_error(r, 422, "guest_error").await;
    assert!(message.contains("utf-8"), "{message}");
    assert_eq!(
        node.invoke_ok("tally", Some("s"), "").await,
        "2",
        "nothing kept"
    );
}
