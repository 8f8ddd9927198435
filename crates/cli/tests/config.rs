//! A function's `wasi:config` variables: set by `edge-node deploy --config`
//! and `PUT /v1/functions/{name}/config`, read by the guest through the
//! standard `wasi:config/store`, kept across redeploys and restarts,
//! removed with the function, never shown back by the API.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{TestNode, assert_error, guests};

/// `PUT /v1/functions/{name}/config` with `body`.
async fn put_config(
    node: &TestNode,
    name: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    node.http
        .put(node.at(&format!("/v1/functions/{name}/config")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn variables_set_at_deploy_reach_the_guest_and_follow_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    let file = dir.path().join("vars.env");
    std::fs::write(
        &file,
        "# settings of line 3\napi_url=http://plc.local\n\nmode=test\n",
    )
    .unwrap();
    let wasm = guests::WASI_KV;
    let file_arg = file.to_str().unwrap();
    let args = [
        "deploy",
        "kv",
        wasm,
        "--node",
        &node.url,
        "--config-file",
        file_arg,
    ];
    let printed = support::cli_ok(
        &[
            &args[..],
            &["--config", "mode=live", "--config", "token=s3cr3t"],
        ]
        .concat(),
    )
    .await;
    assert!(
        printed.contains("config: api_url, mode, token"),
        "{printed}"
    );
    let script = "config api_url;config mode;config nope;config-all";
    assert_eq!(
        node.invoke_ok("kv", Some("s"), script).await,
        "http://plc.local;live;<none>;api_url=http://plc.local,mode=live,token=s3cr3t"
    );
    // The API names the variables and never shows a value.
    let shown = node.get_json("/v1/functions/kv/config").await;
    assert_eq!(shown["keys"], json!(["api_url", "mode", "token"]));
    assert!(!shown.to_string().contains("s3cr3t"), "{shown}");

    // A change reaches the next call, a pinned (local-state) instance too.
    node.set_mode("p", "local").await;
    assert_eq!(node.invoke_ok("kv", Some("p"), "config mode").await, "live");
    let r = put_config(&node, "kv", json!({ "mode": "maintenance" }).to_string()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        node.invoke_ok("kv", Some("p"), "config-all").await,
        "mode=maintenance"
    );
    assert_eq!(
        node.invoke_ok("kv", Some("s"), "config mode").await,
        "maintenance"
    );

    // A redeploy without --config keeps them; so does a restart.
    support::cli_ok(&args[..5]).await;
    assert_eq!(
        node.invoke_ok("kv", None, "config mode").await,
        "maintenance"
    );
    node.stop().await;
    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(
        node.invoke_ok("kv", None, "config mode").await,
        "maintenance"
    );
    // Deleting the function deletes them: a new one starts with none.
    let r = node.delete_function("kv").await;
    assert_eq!(r.status(), 200);
    node.deploy("kv", guests::WASI_KV).await;
    assert_eq!(node.invoke_ok("kv", None, "config-all").await, "");
    assert_eq!(
        node.get_json("/v1/functions/kv/config").await["keys"],
        json!([])
    );
}

#[tokio::test]
async fn bad_configurations_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("kv", guests::WASI_KV).await;
    let r = put_config(&node, "kv", json!({ "k": "v" }).to_string()).await;
    assert_eq!(r.status(), 200);
    let refusals = [
        (json!({ "k": 1 }).to_string(), 400, "bad_request"),
        ("[1, 2]".to_owned(), 400, "bad_request"),
        ("{".to_owned(), 400, "bad_request"),
        (json!({ "": "v" }).to_string(), 400, "invalid_option"),
        (
            json!({ "k": "v".repeat(65 << 10) }).to_string(),
            400,
            "invalid_option",
        ),
        (
            json!({ "k": "v".repeat((1 << 20) + 100) }).to_string(),
            413,
            "body_too_large",
        ),
    ];
    for (body, status, kind) in refusals {
        assert_error(put_config(&node, "kv", body).await, status, kind).await;
    }
    let many: serde_json::Map<String, serde_json::Value> =
        (0..300).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = put_config(&node, "kv", serde_json::Value::Object(many).to_string()).await;
    assert_error(r, 400, "invalid_option").await;
    let r = put_config(&node, "nope", json!({ "k": "v" }).to_string()).await;
    assert_error(r, 404, "not_found").await;
    let r = node
        .http
        .get(node.at("/v1/functions/nope/config"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    assert_eq!(
        node.invoke_ok("kv", None, "config-all").await,
        "k=v",
        "unchanged"
    );
}
