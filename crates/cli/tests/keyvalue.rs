//! The standard `wasi:keyvalue` interfaces served from session state: a
//! component that keeps its state only through them (`wasi-kv`) shares
//! keys with a native function of the same session, in both modes and on
//! every store, with the native state API's transaction semantics.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{RedisServer, TestNode, assert_error, guests, header};

/// Runs a `wasi-kv` script on `session`: (answer, mode).
async fn kv(node: &TestNode, session: &str, script: &str) -> (String, String) {
    let r = node
        .invoke("wasi-kv", Some(session), script.to_owned())
        .await;
    let mode = header(&r, "edge-mode");
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{script}: {text}");
    (text, mode)
}

/// `wasi:keyvalue` increments and the native counter's writes are one count,
/// remote and local, moving between the modes.
async fn one_count_with_the_native_counter(node: &TestNode) {
    node.deploy("wasi-kv", guests::WASI_KV).await;
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(
        kv(node, "s", "incr count 1").await,
        ("1".into(), "remote".into())
    );
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "2");
    assert_eq!(kv(node, "s", "incr count 5;get count").await.0, "7;7");
    assert_eq!(node.set_mode("s", "local").await["mode"], "local");
    assert_eq!(
        kv(node, "s", "incr count 1").await,
        ("8".into(), "local".into())
    );
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "9");
    assert_eq!(
        kv(node, "s", "exists count;incr count 1").await.0,
        "true;10"
    );
    assert_eq!(node.set_mode("s", "remote").await["mode"], "remote");
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "11");
    assert_eq!(
        kv(node, "s", "get count").await,
        ("11".into(), "remote".into())
    );
}

#[tokio::test]
async fn wasi_keyvalue_and_the_native_state_share_one_count_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    one_count_with_the_native_counter(&node).await;
}

#[tokio::test]
async fn wasi_keyvalue_and_the_native_state_share_one_count_on_redis() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--remote-store", &redis.url]).await;
    one_count_with_the_native_counter(&node).await;
}

#[tokio::test]
async fn every_operation_keeps_the_state_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("wasi-kv", guests::WASI_KV).await;
    // Reads see the call's own writes.
    let script = "set a 1;get a;exists a;exists b;del a;exists a;get a";
    assert_eq!(
        kv(&node, "t", script).await.0,
        "ok;1;true;false;ok;false;<none>"
    );
    // Batches.
    let script = "setmany a=1,b=2,c=3;getmany a,z,c;delmany a,b;list";
    assert_eq!(kv(&node, "t", script).await.0, "ok;a=1,<none>,c=3;ok;c");
    assert_eq!(kv(&node, "t", "list;get c").await.0, "c;3");
    // One bucket per session: "" and "default"; any other is no store.
    let script = "open nope;open -;get c;open default;get c";
    assert_eq!(
        kv(&node, "t", script).await.0,
        "err:no-such-store;ok;3;ok;3"
    );
    // Bad keys, values and counters are errors the guest handles.
    let big = "x".repeat(300);
    let script = format!("get {big};set n abc;incr n 1;incr c 18446744073709551615");
    let (answer, _) = kv(&node, "t", &script).await;
    let answers: Vec<&str> = answer.split(';').collect();
    assert!(answers[0].starts_with("err:other(invalid key"), "{answer}");
    assert_eq!(answers[1], "ok");
    assert!(answers[2].contains("not a decimal number"), "{answer}");
    assert!(answers[3].contains("overflow"), "{answer}");
    // A call that fails commits nothing of what it wrote.
    let r = node
        .invoke("wasi-kv", Some("t"), "set lost 1;incr c 1;fail")
        .await;
    assert_error(r, 422, "guest_error").await;
    assert_eq!(
        kv(&node, "t", "get lost;get c;list").await.0,
        "<none>;3;c,n"
    );
    // Keys come in pages of 1,000: all 2,500 through the cursor, in the
    // call that wrote them and in the next.
    let (answer, _) = kv(&node, "many", "fill 2500 k;list").await;
    assert_eq!(answer.split(';').nth(1).unwrap().split(',').count(), 2500);
    let listed = kv(&node, "many", "list").await.0;
    let keys: Vec<&str> = listed.split(',').collect();
    assert_eq!(
        (keys.len(), keys[0], keys[2499]),
        (2500, "k00000", "k02499")
    );
}

/// One `wasi-kv` or `counter` call on `session`; `Some(count)` on 200,
/// `None` on a refusal the node may give under load (409, 503, 504).
async fn add_one(http: &reqwest::Client, node: &TestNode, session: &str, native: bool) -> bool {
    let (function, body) = if native {
        ("counter", "")
    } else {
        ("wasi-kv", "incr count 1")
    };
    let r = http
        .post(node.at(&format!("/v1/functions/{function}/invoke")))
        .header("edge-session", session)
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{function} on {session}: no answer: {e}"));
    match r.status().as_u16() {
        200 => true,
        409 | 503 | 504 => false,
        s => panic!("{function} on {session}: {s} {}", r.text().await.unwrap()),
    }
}

/// 64 clients on one remote-state session and 64 on local-state sessions
/// of their own, alternating `wasi:keyvalue` increments and the native
/// counter: every acknowledged call is counted exactly once, and the node
/// answers `/healthz` all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_mixing_both_apis_lose_no_increment() {
    const CLIENTS: usize = 64;
    let secs = support::env_or("EDGE_KV_LOAD_SECS", 8);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--max-local-sessions",
        "100",
        "--max-pending-invocations",
        "1024",
    ];
    let node = Arc::new(TestNode::start(dir.path(), &args).await);
    node.deploy("wasi-kv", guests::WASI_KV).await;
    node.deploy("counter", guests::COUNTER).await;
    for i in 0..CLIENTS {
        node.set_mode(&format!("own-{i}"), "local").await;
    }
    let until = Instant::now() + Duration::from_secs(secs);
    let shared_ok = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2 * CLIENTS)
        .map(|i| {
            let (node, shared_ok) = (node.clone(), shared_ok.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let session = if i < CLIENTS {
                    "shared".to_owned()
                } else {
                    format!("own-{}", i - CLIENTS)
                };
                let (mut ok, mut calls) = (0u64, 0u64);
                while Instant::now() < until && calls < 100_000 {
                    calls += 1;
                    if add_one(&http, &node, &session, calls % 2 == 0).await {
                        ok += 1;
                    }
                }
                if i < CLIENTS {
                    shared_ok.fetch_add(ok, Ordering::Relaxed);
                }
                (session, ok)
            })
        })
        .collect();
    let health = support::HealthWatch::start(&node);
    let mut own_total = 0;
    for client in clients {
        let (session, ok) = client.await.unwrap();
        if session != "shared" {
            let (stored, mode) = kv(&node, &session, "get count").await;
            assert_eq!(
                (stored.parse::<u64>().unwrap(), mode.as_str()),
                (ok, "local")
            );
            own_total += ok;
        }
    }
    let checks = health.stop().await;
    let shared = shared_ok.load(Ordering::Relaxed);
    let (stored, _) = kv(&node, "shared", "get count").await;
    assert_eq!(stored.parse::<u64>().unwrap(), shared, "shared session");
    assert!(shared > 0 && own_total > 0, "{shared} {own_total}");
    assert!(checks >= secs, "{checks} health checks");
    eprintln!("{secs} s: {shared} calls on the shared session, {own_total} on 64 local ones");
}

/// `GET /http-kv{path}` on `session` (none: the function's own): (status,
/// body, the session the node answered for).
async fn web(node: &TestNode, session: Option<&str>, path: &str) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(node.at(&format!("/http-kv{path}")));
    if let Some(s) = session {
        req = req.header("edge-session", s);
    }
    let r = req.send().await.unwrap();
    let (status, session) = (r.status().as_u16(), header(&r, "edge-session"));
    (status, r.text().await.unwrap(), session)
}

/// A `wasi:http` component's requests run in a session and share its state
/// with native functions, whatever mode the session is in.
async fn http_requests_keep_session_state(node: &TestNode) {
    node.deploy("http-kv", guests::HTTP_KV).await;
    node.deploy("counter", guests::COUNTER).await;
    // Without a session header: the session named after the function.
    for n in 1..=3 {
        let want = (200, n.to_string(), "http-kv".to_owned());
        assert_eq!(web(node, None, "/incr/hits").await, want);
    }
    assert_eq!(kv(node, "http-kv", "get hits").await.0, "3");
    // With one: its state, shared with the native counter, in both modes.
    let at = |path| web(node, Some("a"), path);
    assert_eq!(at("/incr/count").await.1, "1");
    assert_eq!(node.invoke_ok("counter", Some("a"), "").await, "2");
    assert_eq!(at("/incr/count").await.1, "3");
    assert_eq!(node.set_mode("a", "local").await["mode"], "local");
    assert_eq!(at("/incr/count").await.1, "4");
    assert_eq!(node.invoke_ok("counter", Some("a"), "").await, "5");
    assert_eq!(at("/set/k/v").await.1, "ok");
    assert_eq!(node.set_mode("a", "remote").await["mode"], "remote");
    assert_eq!(at("/incr/count").await.1, "6");
    assert_eq!(at("/get/k").await.1, "v");
    assert_eq!(at("/get/nothing").await.0, 404);
    assert_eq!(kv(node, "a", "get count;get hits").await.0, "6;<none>");
}

#[tokio::test]
async fn wasi_http_requests_keep_session_state_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("wasi-kv", guests::WASI_KV).await;
    http_requests_keep_session_state(&node).await;
}

#[tokio::test]
async fn wasi_http_requests_keep_session_state_on_redis() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--remote-store", &redis.url]).await;
    node.deploy("wasi-kv", guests::WASI_KV).await;
    http_requests_keep_session_state(&node).await;
}

/// A request whose guest traps after answering commits nothing, and its
/// body does not end as if it had; a long body ends only after the commit.
#[tokio::test]
async fn a_wasi_http_request_commits_only_when_its_handler_returns() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("http-kv", guests::HTTP_KV).await;
    let r = reqwest::get(node.at("/http-kv/trap/t")).await.unwrap();
    assert_eq!(r.status(), 200, "the guest answered before trapping");
    assert!(r.text().await.is_err(), "the body is cut off, not ended");
    assert_eq!(web(&node, None, "/get/t").await.0, 404, "nothing committed");
    let (status, body, _) = web(&node, None, "/big/b/3000000").await;
    assert_eq!((status, body.len()), (200, 3_000_000));
    assert_eq!(web(&node, None, "/get/b").await.1, "1");
    // A session id the node refuses.
    let bad = reqwest::Client::new()
        .get(node.at("/http-kv/incr/x"))
        .header("edge-session", "no spaces")
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "invalid_session").await;
    assert!(node.healthy().await);
}

/// 64 clients on one session (requests run one at a time there) and 64
/// on sessions of their own: every answered increment is counted once,
/// `/healthz` answers all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_http_clients_on_one_session_and_many_lose_nothing() {
    const CLIENTS: usize = 64;
    let secs = support::env_or("EDGE_KV_LOAD_SECS", 8);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--max-pending-invocations", "1024"];
    let node = Arc::new(TestNode::start(dir.path(), &args).await);
    node.deploy("http-kv", guests::HTTP_KV).await;
    node.deploy("wasi-kv", guests::WASI_KV).await;
    let until = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..2 * CLIENTS)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let session = if i < CLIENTS {
                    "one".to_owned()
                } else {
                    format!("own-{i}")
                };
                let (mut ok, mut calls) = (0u64, 0u64);
                while Instant::now() < until && calls < 100_000 {
                    calls += 1;
                    let r = http
                        .get(node.at("/http-kv/incr/n"))
                        .header("edge-session", &session)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{session}: no answer: {e}"));
                    match r.status().as_u16() {
                        200 => {
                            let n: u64 = r.text().await.unwrap().parse().unwrap();
                            ok += 1;
                            if i >= CLIENTS {
                                assert_eq!(n, ok, "{session}: its own count");
                            }
                        }
                        503 | 504 => {}
                        s => panic!("{session}: {s} {}", r.text().await.unwrap()),
                    }
                }
                (session, ok)
            })
        })
        .collect();
    let health = support::HealthWatch::start(&node);
    let (mut one, mut own) = (0, 0);
    for client in clients {
        let (session, ok) = client.await.unwrap();
        if session == "one" {
            one += ok;
        } else {
            assert_eq!(kv(&node, &session, "get n").await.0, ok.to_string());
            own += ok;
        }
    }
    assert!(health.stop().await >= secs, "health checks");
    assert_eq!(kv(&node, "one", "get n").await.0, one.to_string());
    assert!(one > 0 && own > 0, "{one} {own}");
    eprintln!("{secs} s: {one} requests on one session, {own} on 64 of their own");
}

/// Two nodes sharing Redis: a request for a session whose state the other
/// node holds is passed there and answered from there; a request for a
/// function only the other node has goes there too.
#[tokio::test]
async fn wasi_http_requests_reach_the_session_owner_and_the_function_from_any_node() {
    let redis = RedisServer::start().await;
    let (_dirs, a, b) = support::two_sharing(&redis).await;
    for n in [&a, &b] {
        n.deploy("http-kv", guests::HTTP_KV).await;
    }
    assert_eq!(
        web(&b, Some("s"), "/incr/n").await.1,
        "1",
        "remote-state at B"
    );
    assert_eq!(a.set_mode("s", "local").await["mode"], "local");
    assert_eq!(
        web(&a, Some("s"), "/incr/n").await.1,
        "2",
        "local-state at A"
    );
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = direct
        .get(b.at("/http-kv/incr/n"))
        .header("edge-session", "s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served through B, not redirected");
    assert_eq!(header(&r, "edge-owner"), a.url);
    assert_eq!(header(&r, "edge-session"), "s");
    assert_eq!(r.text().await.unwrap(), "3");
    assert_eq!(web(&a, Some("s"), "/get/n").await.1, "3");

    // hello-http only at A: B passes its requests there once it knows.
    a.deploy("hello-http", guests::HELLO_HTTP).await;
    let until = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = direct.get(b.at("/hello-http/")).send().await.unwrap();
        if r.status() == 200 || Instant::now() > until {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "edge-owner"), a.url);
    assert_eq!(r.text().await.unwrap(), "hello, world\n");
    // A function no node has is still 404 at once.
    let r = direct.get(b.at("/nowhere/")).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
}
