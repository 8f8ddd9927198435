//! Upload, list, invoke, delete and restart, over HTTP against a real node.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{TestNode, assert_error, guests};

#[tokio::test]
async fn echo_round_trips_empty_small_and_large_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;

    for size in [0usize, 1, 1 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let r = node.invoke("echo", None, body.clone()).await;
        assert_eq!(r.status(), 200);
        let session = r.headers()["edge-session"].to_str().unwrap().to_owned();
        assert_eq!(session.len(), 32, "a new session id is issued: {session}");
        assert_eq!(r.headers()["edge-start"], "cold");
        assert!(
            r.headers()["edge-duration-us"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            body.as_slice(),
            "size {size}"
        );
    }
}

#[tokio::test]
async fn counter_counts_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("counter", guests::COUNTER).await;

    for expected in 1..=3 {
        assert_eq!(
            node.invoke_ok("counter", Some("s-1"), "").await,
            expected.to_string()
        );
    }
    // Another session has a state of its own.
    assert_eq!(node.invoke_ok("counter", Some("s-2"), "").await, "1");

    // A session the node issued can be continued with the id it returned.
    let r = node.invoke("counter", None, "").await;
    let issued = r.headers()["edge-session"].to_str().unwrap().to_owned();
    assert_eq!(r.text().await.unwrap(), "1");
    assert_eq!(node.invoke_ok("counter", Some(&issued), "").await, "2");

    let bad = node.invoke("counter", Some("has space"), "").await;
    assert_error(bad, 400, "invalid_session").await;
}

#[tokio::test]
async fn concurrent_calls_on_one_session_lose_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let node = std::sync::Arc::new(TestNode::start(dir.path(), &[]).await);
    node.deploy("counter", guests::COUNTER).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                node.invoke_ok("counter", Some("shared"), "").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(node.invoke_ok("counter", Some("shared"), "").await, "41");
}

#[tokio::test]
async fn functions_are_listed_described_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;
    node.deploy("echo-2", guests::ECHO).await;
    node.deploy("counter", guests::COUNTER).await;

    let list: Vec<serde_json::Value> =
        serde_json::from_value(node.get_json("/v1/functions").await).unwrap();
    let names: Vec<&str> = list.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["counter", "echo", "echo-2"]);

    let info: serde_json::Value = node.get_json("/v1/functions/echo").await;
    let bytes = std::fs::read(guests::ECHO).unwrap();
    assert_eq!(info["size"], bytes.len());
    assert_eq!(info["digest"].as_str().unwrap().len(), 64);
    assert!(info["compile_ms"].as_f64().unwrap() > 0.0);
    assert!(info["uploaded_at"].as_u64().unwrap() > 1_700_000_000);

    // Deleting one of two names for the same component keeps the other working.
    let r = node.delete_function("echo").await;
    assert_eq!(r.status(), 200);
    assert_error(node.invoke("echo", None, "x").await, 404, "not_found").await;
    assert_eq!(
        node.invoke_ok("echo-2", None, "still here").await,
        "still here"
    );
    assert_error(node.delete_function("echo").await, 404, "not_found").await;
    assert_error(
        node.http
            .get(node.at("/v1/functions/echo"))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn restart_loads_artifacts_without_compiling_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    for (name, path) in guests::ALL {
        node.deploy(name, path).await;
    }
    assert_eq!(
        node.metric("edge_compilations_total").await,
        guests::ALL.len() as f64
    );
    assert_eq!(node.invoke_ok("counter", Some("kept"), "").await, "1");
    assert_eq!(node.invoke_ok("counter", Some("kept"), "").await, "2");
    node.stop().await;

    let node = TestNode::start(dir.path(), &[]).await;
    let list: Vec<serde_json::Value> =
        serde_json::from_value(node.get_json("/v1/functions").await).unwrap();
    assert_eq!(list.len(), guests::ALL.len());
    assert_eq!(node.invoke_ok("echo", None, "again").await, "again");
    assert_eq!(node.invoke_ok("counter", Some("kept"), "").await, "3");
    assert_eq!(
        node.metric("edge_compilations_total").await,
        0.0,
        "nothing recompiled"
    );
    // Only what was called is loaded: functions nobody calls cost nothing.
    assert_eq!(node.metric("edge_artifact_loads_total").await, 2.0);
    // The process collector: the node's own memory, CPU and descriptors.
    let rss = node.metric("process_resident_memory_bytes").await;
    assert!(rss > f64::from(1u32 << 20), "rss {rss}");
    assert!(node.metric("process_open_fds").await >= 3.0);
    assert!(node.metric("process_max_fds").await > 0.0);
}

/// One of the compiled artifacts in a node's data dir.
fn an_artifact(data_dir: &std::path::Path) -> std::path::PathBuf {
    let artifacts = data_dir.join("functions/artifacts");
    let entry = std::fs::read_dir(artifacts).unwrap().next().unwrap();
    entry.unwrap().path()
}

#[tokio::test]
async fn tampered_artifact_is_recompiled_from_source_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;
    node.stop().await;

    let artifact = an_artifact(dir.path());
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();

    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(node.invoke_ok("echo", None, "ok").await, "ok");
    assert_eq!(node.metric("edge_artifact_loads_total").await, 0.0);
    assert_eq!(node.metric("edge_compilations_total").await, 1.0);
}

/// An artifact that is gone (or from another engine: an upgrade) is
/// recompiled in the background after start, not by the first caller.
#[tokio::test]
async fn missing_artifacts_are_recompiled_after_start_before_a_call_asks() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;
    node.deploy("counter", guests::COUNTER).await;
    node.stop().await;
    let artifact = an_artifact(dir.path());
    std::fs::remove_file(&artifact).unwrap();

    let node = TestNode::start(dir.path(), &[]).await;
    node.wait_for_metric("edge_compilations_total", 1.0).await;
    // Counted when compiled; written to disk a moment later.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !artifact.is_file() && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(artifact.is_file(), "the artifact is back");
    assert_eq!(node.invoke_ok("echo", None, "ok").await, "ok");
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "1");
    assert_eq!(node.metric("edge_compilations_total").await, 1.0);
}

/// A restarted node reads its records only and loads each function on its
/// first call: a function not loaded yet can be listed, called, replaced
/// and deleted at once.
#[tokio::test]
async fn functions_not_loaded_yet_serve_every_request_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    for (name, path) in [
        ("echo", guests::ECHO),
        ("counter", guests::COUNTER),
        ("kv", guests::KV),
    ] {
        node.deploy(name, path).await;
    }
    node.deploy("echo-too", guests::ECHO).await;
    assert_eq!(node.invoke_ok("counter", Some("kept"), "").await, "1");
    node.stop().await;

    let node = TestNode::start(dir.path(), &[]).await;
    let r = node.delete_function("echo").await;
    assert_eq!(r.status(), 200);
    // The same bytes again: the recorded artifact serves, nothing compiles.
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(node.metric("edge_compilations_total").await, 0.0);
    assert_eq!(node.metric("edge_compile_reuses_total").await, 1.0);
    assert_eq!(node.invoke_ok("counter", Some("kept"), "").await, "2");
    // echo's files stay: echo-too has the same component.
    assert_eq!(node.invoke_ok("echo-too", None, "hi").await, "hi");
    assert_error(node.invoke("echo", None, "x").await, 404, "not_found").await;
    let names: Vec<String> = node
        .get_json("/v1/functions")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["counter", "echo-too", "kv"]);
    node.wait_for_metric("edge_functions", 3.0).await;
    node.stop().await;

    // Nothing the restart did was lost or left behind.
    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(node.invoke_ok("counter", Some("kept"), "").await, "3");
    assert_eq!(node.invoke_ok("echo-too", None, "again").await, "again");
    assert_eq!(node.metric("edge_compilations_total").await, 0.0);
}

#[tokio::test]
async fn unknown_routes_methods_and_functions_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    assert_error(node.invoke("nope", None, "x").await, 404, "not_found").await;
    assert_error(
        node.http.get(node.at("/v2/whatever")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        node.http
            .post(node.at("/v1/functions"))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    let health: serde_json::Value = node.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn oversized_invoke_body_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--max-invoke-bytes", "1000"]).await;
    node.deploy("echo", guests::ECHO).await;
    assert_eq!(
        node.invoke_ok("echo", None, vec![7u8; 1000]).await.len(),
        1000
    );
    assert_error(
        node.invoke("echo", None, vec![7u8; 1001]).await,
        413,
        "body_too_large",
    )
    .await;
    // Without a Content-Length (chunked), the limit still holds.
    let chunks = futures_util::stream::iter(
        (0..11).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 100]))),
    );
    let r = node
        .invoke("echo", None, reqwest::Body::wrap_stream(chunks))
        .await;
    assert_error(r, 413, "body_too_large").await;
    assert!(node.healthy().await);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--header-timeout-secs", "1"]).await;
    let addr = node.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // The rest of the headers never comes: the node closes the connection.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        slow.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(node.healthy().await, "and the node still serves others");
}

#[tokio::test]
async fn shutdown_lets_the_call_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("stage", guests::STAGE).await;
    let (http, url) = (node.http.clone(), node.at("/v1/functions/stage/invoke"));
    // `sleep=800` makes the call take 0.8 s.
    let call = tokio::spawn(async move {
        http.post(url)
            .body("sleep=800")
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    node.stop().await; // SIGTERM, and the process exits cleanly...
    assert_eq!(
        call.await.unwrap(),
        200,
        "...after answering the call in flight"
    );
}

#[tokio::test]
async fn identical_bytes_are_not_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;
    // The same bytes again, under the same name and under another.
    node.deploy("echo", guests::ECHO).await;
    node.deploy("echo2", guests::ECHO).await;
    assert_eq!(node.metric("edge_compilations_total").await, 1.0);
    assert_eq!(node.metric("edge_compile_reuses_total").await, 2.0);
    let info = node.get_json("/v1/functions/echo2").await;
    assert_eq!(info["compile_ms"], 0.0, "{info}");
    assert_eq!(node.invoke_ok("echo2", None, "same").await, "same");
    // Removing one keeps the files the other uses.
    let r = node.delete_function("echo").await;
    assert_eq!(r.status(), 200);
    assert_eq!(node.invoke_ok("echo2", None, "kept").await, "kept");
    node.stop().await;
    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(node.invoke_ok("echo2", None, "after").await, "after");
    assert_eq!(node.metric("edge_compilations_total").await, 0.0);
    // Other bytes are compiled.
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(node.metric("edge_compilations_total").await, 1.0);
}

/// Files under the data dir's `functions/`.
fn function_files(data: &std::path::Path) -> usize {
    ["sources", "artifacts"]
        .iter()
        .map(|sub| {
            std::fs::read_dir(data.join("functions").join(sub))
                .unwrap()
                .count()
        })
        .sum()
}

#[tokio::test]
async fn a_redeploy_keeps_the_previous_version_for_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("f", guests::ECHO).await;
    assert_error(node.rollback("f").await, 409, "no_previous").await;
    assert_error(node.rollback("nope").await, 404, "not_found").await;
    // v2 replaces v1: calls run v2, v1 is kept.
    node.deploy("f", guests::COUNTER).await;
    assert_eq!(node.invoke_ok("f", Some("s"), "").await, "1");
    let info = node.get_json("/v1/functions/f").await;
    let v1 = info["previous"]["digest"].as_str().unwrap().to_owned();
    assert_ne!(info["digest"], v1.as_str());
    // Back to v1 (echo), then forward again to v2 (counter, its state kept).
    let r = node.rollback("f").await;
    assert_eq!(r.status(), 200);
    assert_eq!(node.invoke_ok("f", None, "v1 again").await, "v1 again");
    assert_eq!(
        node.get_json("/v1/functions/f").await["digest"],
        v1.as_str()
    );
    // Survives a restart, both ways.
    node.stop().await;
    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(
        node.invoke_ok("f", None, "after restart").await,
        "after restart"
    );
    assert_eq!(node.rollback("f").await.status(), 200);
    assert_eq!(node.invoke_ok("f", Some("s"), "").await, "2");
    // A third version displaces the oldest: its files go.
    node.deploy("f", guests::MEMO).await;
    assert_eq!(
        function_files(dir.path()),
        4,
        "current and previous, source and artifact each"
    );
    // Delete removes every version.
    let r = node.delete_function("f").await;
    assert_eq!(r.status(), 200);
    assert_eq!(function_files(dir.path()), 0);
    assert_error(node.rollback("f").await, 404, "not_found").await;
}
