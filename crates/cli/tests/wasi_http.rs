//! `wasi:http/proxy` components are functions too: served under their name
//! with method, path, headers and body; and any guest's outgoing HTTP goes
//! only to the hosts its function was deployed with, within its deadline.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};
use support::{TestNode, assert_error, guests};

#[tokio::test]
async fn wasi_http_components_are_served_under_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--max-invoke-bytes", "4096"]).await;
    node.deploy("hello-http", guests::HELLO_HTTP).await;
    node.deploy("web", guests::WEB).await;
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(node.get_json("/v1/functions/web").await["kind"], "http");
    assert_eq!(node.get_json("/v1/functions/counter").await["kind"], "edge");

    // The very component `wasmtime serve` runs, unchanged.
    for path in ["/hello-http", "/hello-http/", "/hello-http/any/path?x=1"] {
        let r = node.http.get(node.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "hello, world\n");
    }
    // The guest sees the method, its own path, a header and the body.
    let r = node
        .http
        .post(node.at("/web/echo/a/b?c=1"))
        .header("x-test", "yes")
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "POST /echo/a/b?c=1\nyes\ndata");
    // Its status codes are the answer's.
    let r = node.http.get(node.at("/web/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "no such page\n");

    // Each world is called its own way; the other way says which.
    let r = node
        .http
        .post(node.at("/v1/functions/web/invoke"))
        .send()
        .await
        .unwrap();
    let message = assert_error(r, 400, "wrong_kind").await;
    assert!(message.contains("/web/"), "{message}");
    let r = node.http.get(node.at("/counter/")).send().await.unwrap();
    let message = assert_error(r, 400, "wrong_kind").await;
    assert!(
        message.contains("/v1/functions/counter/invoke"),
        "{message}"
    );
    let r = node.http.get(node.at("/nobody/here")).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = node.http.get(node.at("/v1/nothing")).send().await.unwrap();
    assert_error(r, 404, "not_found").await;

    // Bad input: a body past the limit, a name the node's routes take.
    let r = node
        .http
        .post(node.at("/web/echo"))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "body_too_large").await;
    let r = node
        .deploy_bytes("v1", std::fs::read(guests::HELLO_HTTP).unwrap())
        .await;
    let message = assert_error(r, 400, "unsupported_imports").await;
    assert!(message.contains("cannot be named"), "{message}");

    let calls = node
        .metric_where("edge_invocations_total", "function=\"web\"")
        .await;
    assert_eq!(calls, 2.0, "the echo and the 404 page");
    assert!(node.healthy().await);
}

/// A server on loopback that accepts connections and never answers.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn outgoing_requests_go_only_to_allowed_hosts_within_the_deadline() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // The upstream: another node serving hello-http.
    let upstream = TestNode::start(dirs[0].path(), &[]).await;
    upstream.deploy("hello-http", guests::HELLO_HTTP).await;
    let up = upstream.url.trim_start_matches("http://").to_owned();
    let node = TestNode::start(dirs[1].path(), &["--deadline-ms", "1500"]).await;
    let fetch = |function: &str, target: &str| {
        let url = node.at(&format!(
            "/{function}/fetch?url=http://{target}/hello-http/"
        ));
        let http = node.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // Deployed without hosts: every outgoing request is denied.
    node.deploy("closed", guests::WEB).await;
    let (status, body) = fetch("closed", &up).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // Allowed to the upstream (with the real CLI): the request goes through.
    support::cli_ok(&[
        "deploy",
        "open",
        guests::WEB,
        "--allow-host",
        &up,
        "--node",
        &node.url,
    ])
    .await;
    let info = node.get_json("/v1/functions/open").await;
    assert_eq!(info["allow_hosts"], serde_json::json!([up]), "{info}");
    let (status, body) = fetch("open", &up).await;
    assert_eq!((status, body.as_str()), (200, "hello, world\n"));
    // The same host on another port is another host.
    let other_port = format!(
        "127.0.0.1:{}",
        support::free_addr().rsplit(':').next().unwrap()
    );
    let (status, body) = fetch("open", &other_port).await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // A host that never answers costs the call its deadline, not more.
    let (silent, _server) = silent_server().await;
    let r = node
        .http
        .put(node.at("/v1/functions/slow?allow_hosts=127.0.0.1"))
        .body(std::fs::read(guests::WEB).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let asked = Instant::now();
    let (status, body) = fetch("slow", &silent).await;
    assert!(status == 502 || status == 504, "{status} {body}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    // Hosts are checked at deploy.
    let r = node
        .http
        .put(node.at("/v1/functions/bad?allow_hosts=http://x/"))
        .body(std::fs::read(guests::WEB).unwrap())
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_option").await;
    assert!(node.healthy().await);
}
