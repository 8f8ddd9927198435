//! Requests that once made the node leak its cluster token, hang, panic or
//! answer in plain text — each answered now with a JSON error, in time,
//! with the node serving on.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{TestNode, assert_error, guests};
use tokio::io::AsyncReadExt;

/// A listener that records every byte sent to it and never answers: the
/// address a hostile client would like the node to call, or a hung peer.
struct Sink {
    url: String,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Sink {
    async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Sink { url, seen }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_client_token_never_makes_the_node_present_the_cluster_token() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let node = TestNode::start(
        dir.path(),
        &["--token", "client-t", "--cluster-token", "cluster-c"],
    )
    .await
    .with_token("client-t");
    node.deploy("counter", guests::COUNTER).await;
    node.set_mode("s", "local").await;
    node.invoke_ok("counter", Some("s"), "").await;
    // A migration to an address the client chose is refused before
    // anything is sent, and the session stays here.
    let r = node.migrate("s", &sink.url).await;
    let message = assert_error(r, 400, "invalid_target").await;
    assert!(message.contains("neither a peer"), "{message}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.received(), "", "nothing reached the client's address");
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "2");
    // The routes nodes use among themselves take only the cluster token.
    let cluster = [
        (
            Method::POST,
            "/v1/sessions/s/import",
            json!({ "entries": [] }),
        ),
        (
            Method::POST,
            "/v1/sessions/s/commit",
            json!({ "reads": [], "writes": [["count", "OTk5"]] }),
        ),
        (Method::GET, "/v1/sessions/s/state", json!(null)),
        (Method::GET, "/v1/sessions/s/state/count", json!(null)),
        (Method::DELETE, "/v1/sessions/s/state", json!(null)),
        (Method::GET, "/v1/wf/x/traffic", json!(null)),
    ];
    for (method, path, body) in &cluster {
        let r = node
            .http
            .request(method.clone(), node.at(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_error(r, 403, "forbidden").await;
    }
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "3");
    let peer = reqwest::Client::new();
    let r = peer
        .get(node.at("/v1/sessions/s/state"))
        .bearer_auth("cluster-c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the cluster token still works there");
}

#[tokio::test]
async fn a_migration_to_itself_or_a_hung_peer_holds_calls_no_longer_than_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let hung = Sink::start().await;
    let peer = format!("hung={}", hung.url);
    let node =
        Arc::new(TestNode::start(dir.path(), &["--deadline-ms", "1000", "--peer", &peer]).await);
    node.deploy("counter", guests::COUNTER).await;
    node.set_mode("s", "local").await;
    node.invoke_ok("counter", Some("s"), "").await;
    let started = Instant::now();
    let r = node.migrate("s", &node.url).await;
    assert_error(r, 400, "invalid_target").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The hung peer takes the import and never answers: the migration
    // gives up at the deadline, and a call waiting for the session too.
    let migrating = {
        let node = node.clone();
        let to = hung.url.clone();
        tokio::spawn(async move {
            let r = node.migrate("s", &to).await;
            r.status().as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = node.invoke("counter", Some("s"), "").await;
    let status = r.status().as_u16();
    let waited = started.elapsed();
    assert!(
        status == 504 || status == 200,
        "{status}: {}",
        r.text().await.unwrap()
    );
    assert!(waited < Duration::from_secs(5), "a call waited {waited:?}");
    assert_eq!(migrating.await.unwrap(), 504);
    assert!(hung.received().contains("/v1/sessions/s/import"));
    // The session stayed here, whole.
    let info = node.session("s").await;
    assert_eq!(info["mode"], "local");
    let n: u64 = node
        .invoke_ok("counter", Some("s"), "")
        .await
        .parse()
        .unwrap();
    assert!(n == 2 || n == 3, "{n}");
}

#[tokio::test]
async fn hostile_numbers_and_huge_specs_get_answers_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;
    let spec = |deadline: u64| {
        json!({ "tasks": [{ "id": "a", "function": "echo" }], "model": "pure-faas",
                "deadline_ms": deadline })
    };
    for d in [u64::MAX, 0, 3_600_001] {
        let r = node
            .http
            .post(node.at("/v1/workflows"))
            .json(&spec(d))
            .send()
            .await
            .unwrap();
        let message = assert_error(r, 400, "invalid_spec").await;
        assert!(message.contains("deadline_ms"), "{message}");
    }
    // The shape that was quadratic: t0 -> ti and a state [t0, ti] each.
    let shaped = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|i| json!({ "id": format!("t{i}"), "function": "echo" }))
            .collect();
        let edges: Vec<_> = (1..n).map(|i| json!(["t0", format!("t{i}")])).collect();
        let states: serde_json::Map<String, serde_json::Value> = (1..n)
            .map(|i| (format!("S{i}"), json!(["t0", format!("t{i}")])))
            .collect();
        json!({ "tasks": tasks, "edges": edges, "states": states, "model": "state-prop" })
    };
    let r = node
        .http
        .post(node.at("/v1/workflows/validate"))
        .json(&shaped(20_000))
        .send()
        .await
        .unwrap();
    let message = assert_error(r, 400, "invalid_spec").await;
    assert!(message.contains("too large"), "{message}");
    let r = node
        .http
        .post(node.at("/v1/workflows/validate"))
        .json(&shaped(4_096))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["tasks"], 4_096);
    assert!(node.healthy().await);
}

#[tokio::test]
async fn malformed_requests_on_every_json_route_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    let routes = [
        (Method::PUT, "/v1/sessions/s/mode"),
        (Method::POST, "/v1/sessions/s/migrate"),
        (Method::POST, "/v1/sessions/s/import"),
    ];
    for (method, path) in routes {
        let send = |body: &'static str, json: bool| {
            let mut req = node.http.request(method.clone(), node.at(path)).body(body);
            if json {
                req = req.header("content-type", "application/json");
            }
            req.send()
        };
        assert_error(send("{not json", true).await.unwrap(), 400, "bad_request").await;
        assert_error(
            send("{}", false).await.unwrap(),
            415,
            "unsupported_media_type",
        )
        .await;
        assert_error(
            send("{\"mode\": \"banana\", \"to\": 7, \"entries\": 3}", true)
                .await
                .unwrap(),
            400,
            "bad_request",
        )
        .await;
    }
    let r = node
        .http
        .put(node.at("/v1/sessions/s/mode"))
        .json(&json!({ "mode": "banana" }))
        .send()
        .await
        .unwrap();
    let message = assert_error(r, 400, "bad_request").await;
    assert!(message.contains("banana"), "{message}");
    // Invalid UTF-8 in a path segment.
    let r = node
        .http
        .get(node.at("/v1/sessions/%FF%FE"))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;
    let r = node
        .http
        .get(node.at("/v1/wf/x/states/S?version=minus-one"))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;
    assert!(node.healthy().await);
}
