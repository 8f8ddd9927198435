//! Tokens: every /v1 route refuses a request without one (401) or with a
//! wrong one (403), and nothing is deployed or read meanwhile; the open-*
//! flags open exactly what they say; a cluster token lets nodes work together.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::json;
use support::{TestNode, guests, header};

const TOKEN: &str = "s3cret-node-token";

/// Every route of the API (method, path, body).
fn routes() -> Vec<(Method, &'static str, Vec<u8>)> {
    let echo = std::fs::read(guests::ECHO).unwrap();
    let j = |v: serde_json::Value| v.to_string().into_bytes();
    vec![
        (Method::PUT, "/v1/functions/echo", echo),
        (Method::GET, "/v1/functions", vec![]),
        (Method::GET, "/v1/functions/echo", vec![]),
        (Method::DELETE, "/v1/functions/echo", vec![]),
        (Method::POST, "/v1/functions/echo/invoke", b"x".to_vec()),
        (Method::POST, "/v1/functions/echo/rollback", vec![]),
        (Method::GET, "/v1/node", vec![]),
        (Method::GET, "/v1/cluster", vec![]),
        (Method::GET, "/v1/sessions/s", vec![]),
        (
            Method::PUT,
            "/v1/sessions/s/mode",
            j(json!({ "mode": "local" })),
        ),
        (Method::DELETE, "/v1/sessions/s", vec![]),
        (
            Method::POST,
            "/v1/sessions/s/migrate",
            j(json!({ "to": "http://127.0.0.1:9" })),
        ),
        (
            Method::POST,
            "/v1/sessions/s/import",
            j(json!({ "entries": [] })),
        ),
        (Method::GET, "/v1/functions/f/config", vec![]),
        (
            Method::PUT,
            "/v1/functions/f/config",
            j(json!({ "k": "v" })),
        ),
        (Method::GET, "/v1/sessions/s/state", vec![]),
        (Method::DELETE, "/v1/sessions/s/state", vec![]),
        (Method::GET, "/v1/sessions/s/state/k", vec![]),
        (Method::PUT, "/v1/sessions/s/state/k", b"stolen".to_vec()),
        (Method::DELETE, "/v1/sessions/s/state/k", vec![]),
        (
            Method::POST,
            "/v1/sessions/s/commit",
            j(json!({ "reads": [], "writes": [["k", null]] })),
        ),
        (
            Method::POST,
            "/v1/workflows",
            j(json!({ "tasks": [{ "id": "a", "function": "echo" }], "model": "pure-faas" })),
        ),
        (
            Method::POST,
            "/v1/workflows/validate",
            j(json!({ "tasks": [{ "id": "a", "function": "echo" }], "model": "pure-faas" })),
        ),
        (Method::POST, "/v1/wf/deliver", vec![0, 0, 0, 2, b'{', b'}']),
        (Method::POST, "/v1/wf/run", vec![0, 0, 0, 2, b'{', b'}']),
        (Method::POST, "/v1/wf/report", vec![0, 0, 0, 2, b'{', b'}']),
        (Method::GET, "/v1/wf/x/traffic", vec![]),
        (Method::DELETE, "/v1/wf/x", vec![]),
        (Method::GET, "/v1/wf/x/states/S?version=1", vec![]),
    ]
}

#[tokio::test]
async fn every_route_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--token", TOKEN]).await;
    let plain = reqwest::Client::new();
    for (method, path, body) in routes() {
        for (presented, status, kind) in [
            (None, 401, "unauthorized"),
            (Some("Bearer wrong"), 403, "forbidden"),
            (Some("Basic Zm9v"), 401, "unauthorized"),
        ] {
            let mut r = plain
                .request(method.clone(), node.at(path))
                .body(body.clone());
            if let Some(h) = presented {
                r = r.header("authorization", h);
            }
            let r = r.send().await.unwrap();
            let got = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(got, status, "{method} {path} with {presented:?}: {text}");
            assert!(text.contains(kind), "{method} {path}: {text}");
        }
    }
    // Nothing got in: no function, no state.
    let node = node.with_token(TOKEN);
    assert_eq!(node.get_json("/v1/functions").await, json!([]));
    assert_eq!(node.get_json("/v1/sessions/s/state").await, json!([]));
    // Open routes stay open; with the token everything works.
    let open = reqwest::Client::new();
    assert_eq!(
        open.get(node.at("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        open.get(node.at("/metrics")).send().await.unwrap().status(),
        200
    );
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "1");
    let r = node
        .http
        .get(node.at("/v1/sessions/s/state/count"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "1");
}

#[tokio::test]
async fn open_flags_open_reads_and_invocation_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &["--token", TOKEN, "--open-reads", "--open-invoke"],
    )
    .await;
    let node = node.with_token(TOKEN);
    node.deploy("counter", guests::COUNTER).await;
    let anyone = reqwest::Client::new();
    assert_eq!(
        anyone
            .get(node.at("/v1/functions"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        anyone
            .get(node.at("/v1/functions/counter"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = anyone
        .post(node.at("/v1/functions/counter/invoke"))
        .header("edge-session", "o")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "1");
    // State, deploys and modes stay closed.
    assert_eq!(
        anyone
            .get(node.at("/v1/sessions/o/state/count"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        anyone
            .put(node.at("/v1/functions/x"))
            .body(vec![0u8; 8])
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = anyone
        .put(node.at("/v1/sessions/o/mode"))
        .json(&json!({ "mode": "local" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_cluster_token_lets_nodes_work_together() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let cluster = ["--cluster-token", "k-cluster"];
    let b = TestNode::start(dirs[1].path(), &[&["--token", "tb"][..], &cluster].concat())
        .await
        .with_token("tb");
    let c = TestNode::start(dirs[2].path(), &[&["--token", "tc"][..], &cluster].concat())
        .await
        .with_token("tc");
    let (pb, pc) = (format!("b={}", b.url), format!("c={}", c.url));
    let a_args = [
        &["--token", TOKEN, "--peer", &pb, "--peer", &pc][..],
        &cluster,
    ]
    .concat();
    let a = TestNode::start(dirs[0].path(), &a_args)
        .await
        .with_token(TOKEN);
    for n in [&a, &b, &c] {
        n.deploy("stage", guests::STAGE).await;
        n.deploy("counter", guests::COUNTER).await;
    }
    // A workflow across the three nodes (deliveries, fetches, reports).
    for model in ["pure-faas", "state-prop", "state-local"] {
        let spec = json!({
            "tasks": [
                { "id": "t1", "function": "stage", "node": "self", "args": "name=t1" },
                { "id": "t2", "function": "stage", "node": "b", "args": "name=t2" },
                { "id": "t3", "function": "stage", "node": "c", "args": "name=t3" },
            ],
            "edges": [["t1", "t2"], ["t2", "t3"]],
            "states": { "S": ["t1", "t3"] },
            "initial": { "S": "" },
            "session": format!("wf-{model}"),
            "model": model,
            "input": "in",
        });
        let r = a
            .http
            .post(a.at("/v1/workflows"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{model}: {v}");
        assert_eq!(v["states"]["S"]["text"], "t1;t3;");
    }
    // A migration (A hands the session to B, then forwards).
    a.set_mode("m", "local").await;
    assert_eq!(a.invoke_ok("counter", Some("m"), "").await, "1");
    let r = a.migrate("m", &b.url).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = a.invoke("counter", Some("m"), "").await;
    assert_eq!(header(&r, "edge-owner"), b.url);
    assert_eq!(r.text().await.unwrap(), "2");
    // A remote store on a peer, through the cluster token.
    let d = TestNode::start(
        dirs[3].path(),
        &[&["--token", "td", "--remote-store", &b.url][..], &cluster].concat(),
    )
    .await
    .with_token("td");
    d.deploy("counter", guests::COUNTER).await;
    for n in 1..=3 {
        assert_eq!(d.invoke_ok("counter", Some("p"), "").await, n.to_string());
    }
    // Without the cluster token, the peer refuses the node: the guest gets
    // a state error it handles (counter returns it as its own error).
    let e = TestNode::start(dirs[4].path(), &["--remote-store", &b.url]).await;
    e.deploy("counter", guests::COUNTER).await;
    let r = e.invoke("counter", Some("p"), "").await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("401 Unauthorized"));
}
