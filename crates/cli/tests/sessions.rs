//! Sessions: the same guests in local and remote mode on every store,
//! transitions under load, capacity, migration, and crash safety.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::{RedisServer, TestNode, assert_error, guests, header};

/// Calls counter on `session` and returns (value, mode, start).
async fn count(node: &TestNode, session: &str) -> (u64, String, String) {
    let r = node.invoke("counter", Some(session), "").await;
    let (mode, start) = (header(&r, "edge-mode"), header(&r, "edge-start"));
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    (text.parse().unwrap(), mode, start)
}

/// The same counter.wasm counts on in both modes, moving between them.
async fn counter_in_both_modes(node: &TestNode) {
    node.deploy("counter", guests::COUNTER).await;
    for n in 1..=3 {
        assert_eq!(count(node, "s").await, (n, "remote".into(), "cold".into()));
    }
    let moved = node.set_mode("s", "local").await;
    assert_eq!(moved["mode"], "local");
    assert_eq!(count(node, "s").await, (4, "local".into(), "cold".into()));
    assert_eq!(count(node, "s").await, (5, "local".into(), "warm".into()));
    assert_eq!(count(node, "s").await, (6, "local".into(), "warm".into()));
    let info = node.session("s").await;
    assert_eq!(info["mode"], "local");
    assert_eq!(info["pinned"], serde_json::json!(["counter"]));
    assert_eq!(node.set_mode("s", "remote").await["mode"], "remote");
    assert_eq!(count(node, "s").await, (7, "remote".into(), "cold".into()));
    assert_eq!(node.session("s").await["pinned"], serde_json::json!([]));
}

#[tokio::test]
async fn counter_in_both_modes_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    counter_in_both_modes(&node).await;
}

#[tokio::test]
async fn counter_in_both_modes_on_redis() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--remote-store", &redis.url]).await;
    counter_in_both_modes(&node).await;
    // In remote mode the state is in Redis, not on the node.
    let local: Vec<serde_json::Value> =
        serde_json::from_value(node.get_json("/v1/sessions/s/state").await).unwrap();
    assert!(local.is_empty(), "{local:?}");
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let v: String = redis::cmd("HGET")
        .arg("edge:s:s")
        .arg("d:count")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "7");
}

#[tokio::test]
async fn counter_in_both_modes_on_a_peer_node() {
    let (pdir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let peer = TestNode::start(pdir.path(), &[]).await;
    let node = TestNode::start(dir.path(), &["--remote-store", &peer.url]).await;
    counter_in_both_modes(&node).await;
    // The state is on the peer, served by its state server.
    let r = peer
        .http
        .get(peer.at("/v1/sessions/s/state/count"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "etag").starts_with('"'));
    assert_eq!(r.text().await.unwrap(), "7");
}

#[tokio::test]
async fn memo_keeps_its_memory_only_while_pinned_and_is_evicted_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--pin-ttl-secs", "1"]).await;
    node.deploy("memo", guests::MEMO).await;
    for _ in 0..3 {
        assert_eq!(
            node.invoke_ok("memo", Some("m"), "").await,
            "1",
            "a fresh instance every call"
        );
    }
    node.set_mode("m", "local").await;
    for n in 1..=3 {
        assert_eq!(node.invoke_ok("memo", Some("m"), "").await, n.to_string());
    }
    assert_eq!(node.metric("edge_pinned_instances").await, 1.0);
    // Idle past the TTL: the instance goes, the session stays local.
    node.wait_for_metric("edge_pinned_instances", 0.0).await;
    let r = node.invoke("memo", Some("m"), "").await;
    assert_eq!(
        (
            header(&r, "edge-mode").as_str(),
            header(&r, "edge-start").as_str()
        ),
        ("local", "cold")
    );
    assert_eq!(r.text().await.unwrap(), "1");
    assert!(node.metric("edge_pinned_evictions_total").await >= 1.0);
}

#[tokio::test]
async fn state_semantics_seen_from_a_guest() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("kv", guests::KV).await;
    for mode in ["remote", "local"] {
        let s = format!("sem-{mode}");
        node.set_mode(&s, mode).await;
        let kv = |script: &'static str| {
            let (node, s) = (&node, s.clone());
            async move { node.invoke_ok("kv", Some(&s), script).await }
        };
        // Reads see the invocation's own writes.
        assert_eq!(
            kv("set a 1;get a;list;del a;get a;list").await,
            "ok;1;a;ok;<none>;"
        );
        // An error or a trap commits nothing.
        assert_error(
            node.invoke("kv", Some(&s), "set a 1;fail").await,
            422,
            "guest_error",
        )
        .await;
        assert_error(
            node.invoke("kv", Some(&s), "set a 1;trap").await,
            500,
            "trap",
        )
        .await;
        assert_eq!(kv("get a").await, "<none>");
        // Limits are errors the guest handles.
        assert_eq!(kv("key 256;key 257").await, "ok;err:invalid-key(256)");
        assert_eq!(
            kv("fill v 1048576;fill w 1048577").await,
            "ok;err:value-too-large(1048576)"
        );
        assert_eq!(kv("set b 2").await, "ok");
        // Another session sees none of it, whatever its id shares.
        let other = format!("{s}x");
        assert_eq!(
            node.invoke_ok("kv", Some(&other), "list;get b").await,
            ";<none>"
        );
        assert_eq!(kv("whoami").await, format!("{s} {mode}"));
    }
}

#[tokio::test]
async fn the_guest_asks_for_a_mode_from_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("kv", guests::KV).await;
    let r = node.invoke("kv", Some("g"), "set k v;mode local").await;
    assert_eq!(header(&r, "edge-mode"), "remote");
    assert_eq!(
        node.invoke_ok("kv", Some("g"), "whoami;get k").await,
        "g local;v"
    );
    assert_eq!(node.invoke_ok("kv", Some("g"), "mode remote").await, "ok");
    assert_eq!(
        node.invoke_ok("kv", Some("g"), "whoami;get k").await,
        "g remote;v"
    );
    assert!(node.metric("edge_transitions_total").await >= 2.0);
}

#[tokio::test]
async fn capacity_serves_remote_with_a_reason_until_a_place_frees() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--max-local-sessions", "1"]).await;
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(node.set_mode("a", "local").await["mode"], "local");
    let refused = node.set_mode("b", "local").await;
    assert_eq!(
        (refused["mode"].as_str(), refused["reason"].as_str()),
        (Some("remote"), Some("capacity"))
    );
    let r = node.invoke("counter", Some("b"), "").await;
    assert_eq!(
        (
            header(&r, "edge-mode").as_str(),
            header(&r, "edge-mode-reason").as_str()
        ),
        ("remote", "capacity")
    );
    assert_eq!(r.text().await.unwrap(), "1");
    // A frees its place; b's standing wish is granted by the node's policy.
    node.set_mode("a", "remote").await;
    let r = node.invoke("counter", Some("b"), "").await;
    assert_eq!(r.text().await.unwrap(), "2");
    let r = node.invoke("counter", Some("b"), "").await;
    assert_eq!(header(&r, "edge-mode"), "local");
    assert_eq!(r.text().await.unwrap(), "3");
}

#[tokio::test]
async fn transitions_under_load_lose_no_increment() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(TestNode::start(dir.path(), &[]).await);
    node.deploy("counter", guests::COUNTER).await;
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (node, done, ok) = (node.clone(), done.clone(), ok.clone());
            tokio::spawn(async move {
                let mut calls = 0;
                while !done.load(Ordering::Relaxed) && calls < 2000 {
                    let r = node.invoke("counter", Some("busy"), "").await;
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                    ok.fetch_add(1, Ordering::Relaxed);
                    calls += 1;
                }
            })
        })
        .collect();
    for i in 0..100 {
        node.set_mode("busy", if i % 2 == 0 { "local" } else { "remote" })
            .await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let successes = ok.load(Ordering::Relaxed);
    let (last, _, _) = count(&node, "busy").await;
    assert_eq!(last, successes + 1);
    assert!(node.metric("edge_transitions_total").await >= 100.0);
}

#[tokio::test]
async fn two_nodes_share_one_session_through_redis() {
    let redis = RedisServer::start().await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(TestNode::start(da.path(), &["--remote-store", &redis.url]).await);
    let b = Arc::new(TestNode::start(db.path(), &["--remote-store", &redis.url]).await);
    a.deploy("counter", guests::COUNTER).await;
    b.deploy("counter", guests::COUNTER).await;
    let mut tasks = Vec::new();
    for node in [a.clone(), b.clone()] {
        for _ in 0..8 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    count(&node, "shared").await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(count(&a, "shared").await.0, 401);
}

#[tokio::test]
async fn migration_while_a_client_calls_loses_nothing() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut nodes = TestNode::start_cluster(&[da.path(), db.path()], &[]).await;
    let b = nodes.pop().unwrap();
    let a = Arc::new(nodes.pop().unwrap());
    a.deploy("counter", guests::COUNTER).await;
    b.deploy("counter", guests::COUNTER).await;
    a.set_mode("mig", "local").await;
    for n in 1..=10 {
        assert_eq!(count(&a, "mig").await.0, n);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (a, stop) = (a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = 10;
            while !stop.load(Ordering::Relaxed) && last < 5000 {
                let (n, _, _) = count(&a, "mig").await;
                assert_eq!(n, last + 1, "every call counted once, in order");
                last = n;
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = a
        .http
        .post(a.at("/v1/sessions/mig/migrate"))
        .json(&serde_json::json!({ "to": b.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["keys"], 1);
    let mut downtimes = vec![report["downtime_us"].as_u64().unwrap()];
    // Eight more moves, back and forth (ending on B), while the client keeps calling A.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (from, to) = if i % 2 == 0 { (&b, &*a) } else { (&*a, &b) };
        let r = from
            .http
            .post(from.at("/v1/sessions/mig/migrate"))
            .json(&serde_json::json!({ "to": to.url }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "move {i}: {}", r.text().await.unwrap());
        let report: serde_json::Value = r.json().await.unwrap();
        downtimes.push(report["downtime_us"].as_u64().unwrap());
    }
    downtimes.sort();
    eprintln!(
        "migration downtime over {} moves: p50 {} us, max {} us",
        downtimes.len(),
        downtimes[downtimes.len() / 2],
        downtimes[downtimes.len() - 1]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let last = client.await.unwrap();
    // B owns it now: local there, and A forwards.
    let r = a.invoke("counter", Some("mig"), "").await;
    assert_eq!(header(&r, "edge-owner"), b.url);
    assert_eq!(header(&r, "edge-mode"), "local");
    assert_eq!(r.text().await.unwrap(), (last + 1).to_string());
    assert_eq!(count(&b, "mig").await.0, last + 2);
    assert_eq!(b.session("mig").await["mode"], "local");
    // A's session info redirects to B.
    let info = a.session("mig").await;
    assert_eq!(info["mode"], "local");
}

#[tokio::test]
async fn state_server_writes_are_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    let url = node.at("/v1/sessions/cas/state/k");
    let put = |body: &'static str, cond: Option<(&'static str, String)>| {
        let mut r = node.http.put(&url).body(body);
        if let Some((h, v)) = cond {
            r = r.header(h, v);
        }
        r.send()
    };
    assert_eq!(
        put("1", Some(("if-none-match", "*".into())))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        put("1", Some(("if-none-match", "*".into())))
            .await
            .unwrap()
            .status(),
        412
    );
    let r = node.http.get(&url).send().await.unwrap();
    let etag = header(&r, "etag");
    assert_eq!(r.text().await.unwrap(), "1");
    assert_eq!(
        put("2", Some(("if-match", "\"999999\"".into())))
            .await
            .unwrap()
            .status(),
        412
    );
    assert_eq!(
        put("2", Some(("if-match", etag.clone())))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        put("3", Some(("if-match", etag))).await.unwrap().status(),
        412,
        "the old version no longer matches"
    );
    let keys: Vec<serde_json::Value> =
        serde_json::from_value(node.get_json("/v1/sessions/cas/state").await).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(node.http.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(node.http.get(&url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_local_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]).await;
    node.deploy("counter", guests::COUNTER).await;
    node.set_mode("crash", "local").await;
    let (mut acked, mut kills, mut attempts) = (0u64, 0u64, 0u64);
    let mut rng = support::Rng::new(0x9e37_79b9_7f4a_7c15u64);
    let mut rand = move |n: u64| rng.below(n);
    // scripts/campaigns.sh scales this up: ≥ 1,000 kill points.
    let total = support::env_or("EDGE_KILL_CALLS", 1000);
    let between = support::env_or("EDGE_KILL_CALLS_BETWEEN", 20);
    while attempts < total {
        // Some calls, then a kill that lands while one may be in flight.
        for _ in 0..rand(between + 1) {
            attempts += 1;
            if node.invoke("counter", Some("crash"), "").await.status() == 200 {
                acked += 1;
            }
        }
        let (http, url) = (node.http.clone(), node.at("/v1/functions/counter/invoke"));
        let inflight = tokio::spawn(async move {
            let r = http.post(url).header("edge-session", "crash").send().await;
            matches!(r, Ok(r) if r.status() == 200)
        });
        tokio::time::sleep(Duration::from_micros(rand(3000))).await;
        node.kill9().await;
        attempts += 1;
        if inflight.await.unwrap() {
            acked += 1;
        }
        kills += 1;
        node = TestNode::start(dir.path(), &[]).await;
    }
    let (last, mode, _) = count(&node, "crash").await;
    let committed = last - 1;
    eprintln!(
        "kill -9: {attempts} calls, {kills} kills, {acked} acknowledged, {committed} committed"
    );
    assert_eq!(mode, "local", "the mode survived the crashes");
    assert!(
        committed >= acked,
        "an acknowledged write was lost: {committed} < {acked}"
    );
    assert!(
        committed <= acked + kills,
        "more writes than calls: {committed} > {acked} + {kills}"
    );
}

#[tokio::test]
async fn a_guest_error_in_local_mode_commits_nothing_and_the_next_call_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("kv", guests::KV).await;
    node.set_mode("e", "local").await;
    node.invoke_ok("kv", Some("e"), "set a 1").await;
    let r = node.invoke("kv", Some("e"), "get a").await;
    assert_eq!(header(&r, "edge-start"), "warm");
    // Writes, then fails: nothing is committed, and the instance whose
    // memory saw the write is not used again.
    let r = node.invoke("kv", Some("e"), "set a 2;fail").await;
    assert_error(r, 422, "guest_error").await;
    assert_eq!(node.settled_metric("edge_pinned_instances", 0.0).await, 0.0);
    let r = node.invoke("kv", Some("e"), "get a").await;
    assert_eq!(header(&r, "edge-start"), "cold");
    assert_eq!(r.text().await.unwrap(), "1");
}

#[tokio::test]
async fn relaxed_durability_is_opt_in_per_function_and_flushed_within_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    let counter = std::fs::read(guests::COUNTER).unwrap();
    let deploy = |query: &str| {
        node.http
            .put(node.at(&format!("/v1/functions/fast{query}")))
            .body(counter.clone())
            .send()
    };
    for bad in [
        "?flush_interval_ms=0",
        "?flush_interval_ms=10001",
        "?flush_interval_ms=x",
    ] {
        let r = deploy(bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = deploy("?flush_interval_ms=100").await.unwrap();
    assert_eq!(r.status(), 201);
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(
        node.get_json("/v1/functions/fast").await["flush_interval_ms"],
        100
    );
    assert!(
        node.get_json("/v1/functions/counter")
            .await
            .get("flush_interval_ms")
            .is_none()
    );
    node.set_mode("r", "local").await;
    for n in 1..=20 {
        assert_eq!(node.invoke_ok("fast", Some("r"), "").await, n.to_string());
    }
    // Past the interval the writes are on disk: a kill loses none of them.
    tokio::time::sleep(Duration::from_millis(600)).await;
    node.kill9().await;
    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(
        node.get_json("/v1/functions/fast").await["flush_interval_ms"],
        100
    );
    assert_eq!(node.invoke_ok("fast", Some("r"), "").await, "21");
    // A clean stop flushes what is pending at once.
    assert_eq!(node.invoke_ok("fast", Some("r"), "").await, "22");
    node.stop().await;
    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(node.invoke_ok("fast", Some("r"), "").await, "23");
}

/// A local session's reads come from the state cache; with the cache off
/// they all go to sled, and the counts are the same either way.
#[tokio::test]
async fn local_reads_come_from_the_state_cache_and_counts_do_not_depend_on_it() {
    for (flags, cached) in [(&[][..], true), (&["--state-cache-mib", "0"][..], false)] {
        let dir = tempfile::tempdir().unwrap();
        let node = TestNode::start(dir.path(), flags).await;
        node.deploy("counter", guests::COUNTER).await;
        node.set_mode("c", "local").await;
        for n in 1..=5 {
            assert_eq!(
                node.invoke_ok("counter", Some("c"), "").await,
                n.to_string()
            );
        }
        let (hits, misses) = (
            node.metric("edge_state_cache_hits_total").await,
            node.metric("edge_state_cache_misses_total").await,
        );
        if cached {
            // The first call read an empty session; each later one read
            // what the call before it wrote, from memory.
            assert!(hits >= 4.0 && misses <= 2.0, "hits {hits}, misses {misses}");
            assert!(node.metric("edge_state_cache_bytes").await > 0.0);
        } else {
            assert_eq!(hits, 0.0);
            assert!(misses >= 5.0, "misses {misses}");
        }
        node.stop().await;
    }
}
