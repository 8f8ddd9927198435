//! Small-device settings: the `pi` profile fits a 39-bit address space (and
//! far less), and the config file says what the flags say, under them.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use support::{TestNode, guests};

/// 8 GiB of address space, in KiB: a small slice of the 512 GiB a 39-bit
/// aarch64 kernel gives a process.
const ULIMIT_KIB: u64 = 8 << 20;

#[tokio::test]
async fn the_pi_profile_serves_within_a_small_address_space() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_limited(dir.path(), &["--profile", "pi"], ULIMIT_KIB).await;
    let info = node.get_json("/v1/node").await;
    assert_eq!(info["max_instances"], 32);
    assert_eq!(info["compile_concurrency"], 1);
    assert_eq!(info["sled_cache_bytes"], 8 << 20);
    assert_eq!(info["state_cache_bytes"], 4 << 20);
    assert!(info["reserved_address_space"].as_u64().unwrap() < ULIMIT_KIB * 1024);
    for (name, path) in [
        ("echo", guests::ECHO),
        ("counter", guests::COUNTER),
        ("memo", guests::MEMO),
    ] {
        node.deploy(name, path).await;
    }
    assert_eq!(node.invoke_ok("echo", None, "pi").await, "pi");
    node.set_mode("s", "local").await;
    for n in 1..=3 {
        assert_eq!(node.invoke_ok("memo", Some("s"), "").await, n.to_string());
        assert_eq!(
            node.invoke_ok("counter", Some("s"), "").await,
            n.to_string()
        );
    }
}

#[tokio::test]
async fn the_default_pool_does_not_fit_that_space() {
    // The control for the test above: the limit is real, and bites.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ULIMIT_KIB} && exec \"$0\" serve --listen 127.0.0.1:0 --data-dir \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_edge-node"))
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error"), "{stderr}");
}

#[tokio::test]
async fn the_config_file_sets_what_flags_set_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-node.toml");
    std::fs::write(
        &config,
        "profile = \"pi\"\ndeadline-ms = 1234\nmax-local-sessions = 3\nremote-store = \"local\"\n\n[peers]\nb = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let node = TestNode::start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--max-local-sessions",
            "5",
        ],
    )
    .await;
    let info = node.get_json("/v1/node").await;
    assert_eq!(info["deadline_ms"], 1234, "from the file");
    assert_eq!(info["max_instances"], 32, "from the file's profile");
    assert_eq!(info["max_local_sessions"], 5, "the flag wins over the file");
    assert_eq!(info["peers"], serde_json::json!(["b"]));
    assert!(info["wasmtime"].as_str().unwrap().starts_with("48."));

    std::fs::write(&config, "no-such-setting = 1\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let stderr = support::serve_refuses(data.path(), &["--config", config.to_str().unwrap()]);
    assert!(stderr.contains("no-such-setting"), "{stderr}");
}

#[tokio::test]
async fn version_names_the_wasmtime_it_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("edge-node ") && text.contains("(wasmtime 48."),
        "{text}"
    );
}
