//! The node's platform decisions: local-state places and instance slots
//! are an LRU cache over the sessions that want them, and the orchestrator
//! plans which sessions are local from what it measures.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::slow_link::SlowLink;
use support::{RedisServer, TestNode, guests};

#[tokio::test]
async fn an_idle_local_session_is_demoted_and_its_place_reused() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &["--max-local-sessions", "2", "--demote-idle-ms", "300"],
    )
    .await;
    node.deploy("counter", guests::COUNTER).await;
    for s in ["s1", "s2"] {
        assert_eq!(node.set_mode(s, "local").await["mode"], "local");
        assert_eq!(node.invoke_ok("counter", Some(s), "").await, "1");
    }
    // s2 is used again: s1 is the one idle the longest.
    assert_eq!(node.invoke_ok("counter", Some("s2"), "").await, "2");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let got = node.set_mode("s3", "local").await;
    assert_eq!(got["mode"], "local", "{got}");
    assert_eq!(node.session("s1").await["mode"], "remote");
    assert_eq!(
        node.session("s1").await["desired"],
        "local",
        "it keeps its wish"
    );
    assert_eq!(node.session("s2").await["mode"], "local");
    assert_eq!(node.metric("edge_demotions_total").await, 1.0);
    assert_eq!(node.metric("edge_local_sessions").await, 2.0);
    // Its state went with it.
    assert_eq!(node.invoke_ok("counter", Some("s1"), "").await, "2");
    let info = node.get_json("/v1/node").await;
    assert!(info["demotions"].as_i64().unwrap() >= 1, "{info}");
}

#[tokio::test]
async fn a_busy_local_session_keeps_its_place() {
    let dir = tempfile::tempdir().unwrap();
    // The default threshold: a minute of idleness.
    let node = TestNode::start(dir.path(), &["--max-local-sessions", "1"]).await;
    node.deploy("counter", guests::COUNTER).await;
    node.set_mode("a", "local").await;
    assert_eq!(node.invoke_ok("counter", Some("a"), "").await, "1");
    let got = node.set_mode("b", "local").await;
    assert_eq!(got["mode"], "remote", "{got}");
    assert_eq!(got["reason"], "capacity");
    assert_eq!(node.session("a").await["mode"], "local");
    assert_eq!(node.metric("edge_demotions_total").await, 0.0);
}

#[tokio::test]
async fn pool_pressure_evicts_an_idle_pinned_instance_before_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &["--max-instances", "2", "--deadline-ms", "3000"],
    )
    .await;
    node.deploy("counter", guests::COUNTER).await;
    node.deploy("echo", guests::ECHO).await;
    for s in ["p1", "p2"] {
        node.set_mode(s, "local").await;
        assert_eq!(node.invoke_ok("counter", Some(s), "").await, "1");
    }
    assert_eq!(node.settled_metric("edge_pinned_instances", 2.0).await, 2.0);
    // Both slots are held by idle pinned instances; a call that needs an
    // instance gets one at once instead of waiting to be refused.
    let started = Instant::now();
    assert_eq!(node.invoke_ok("echo", None, "hi").await, "hi");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(node.metric("edge_pressure_evictions_total").await, 1.0);
    assert_eq!(node.settled_metric("edge_pinned_instances", 1.0).await, 1.0);
    // The evicted one's session is still local; its next call starts cold
    // from its committed state.
    assert_eq!(node.invoke_ok("counter", Some("p1"), "").await, "2");
    assert_eq!(node.invoke_ok("counter", Some("p2"), "").await, "2");
    assert_eq!(node.session("p1").await["mode"], "local");
}

#[tokio::test]
async fn a_hot_remote_session_is_made_local_and_a_slow_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--promote-calls-per-sec", "20"]).await;
    node.deploy("counter", guests::COUNTER).await;
    // A slow session: a call every 300 ms stays remote-state.
    for n in 1..=5 {
        assert_eq!(
            node.invoke_ok("counter", Some("slow"), "").await,
            n.to_string()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(node.session("slow").await["mode"], "remote");
    // A hot one, called back to back, is made local once a second of calls
    // shows its rate; its count goes on.
    let until = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let r = node.invoke("counter", Some("hot"), "").await;
        let mode = r.headers()["edge-mode"].to_str().unwrap().to_owned();
        assert_eq!(r.text().await.unwrap(), n.to_string());
        if mode == "local" {
            break;
        }
        assert!(Instant::now() < until, "never promoted after {n} calls");
    }
    assert_eq!(node.session("hot").await["mode"], "local");
    assert_eq!(node.metric("edge_promotions_total").await, 1.0);
    assert_eq!(node.session("slow").await["mode"], "remote");
}

/// Calls `counter` on each of `sessions` every `every`, without waiting for
/// the answers (open-loop, as independent clients do), for `run`; every
/// call must succeed. Returns how many calls each session got.
async fn open_loop(
    node: &Arc<TestNode>,
    sessions: &[&str],
    every: Duration,
    run: Duration,
) -> HashMap<String, u64> {
    let mut calls = Vec::new();
    let mut sent: HashMap<String, u64> = HashMap::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    while started.elapsed() < run {
        tick.tick().await;
        for s in sessions {
            *sent.entry(s.to_string()).or_default() += 1;
            let (node, s) = (node.clone(), s.to_string());
            calls.push(tokio::spawn(async move {
                let r = node.invoke("counter", Some(&s), "").await;
                let status = r.status();
                (status, r.text().await.unwrap())
            }));
        }
        assert!(node.healthy().await, "/healthz failed under load");
    }
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    sent
}

async fn local_ones(node: &TestNode, sessions: &[&str]) -> usize {
    let mut n = 0;
    for s in sessions {
        if node.session(s).await["mode"] == "local" {
            n += 1;
        }
    }
    n
}

/// A node with 4 instance slots, each local session's instance its own,
/// rounds every `round_ms`, and `counter` deployed; its remote store a real
/// Redis 5 ms away each way (a remote-state call pays its round trips).
/// Keep the Redis and the link alive as long as the node.
async fn orchestrated_node(
    dir: &std::path::Path,
    round_ms: &str,
) -> (Arc<TestNode>, RedisServer, SlowLink) {
    let redis = RedisServer::start().await;
    let link = SlowLink::start(
        redis.url.trim_start_matches("redis://"),
        Duration::from_millis(5),
    )
    .await
    .unwrap();
    let remote = format!("redis://{}", link.addr);
    let args = [
        "--remote-store",
        &remote,
        "--max-instances",
        "4",
        "--no-pressure-evict",
        "--orchestrate-ms",
        round_ms,
    ];
    let node = Arc::new(TestNode::start(dir, &args).await);
    node.deploy("counter", guests::COUNTER).await;
    (node, redis, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_orchestrator_makes_busy_sessions_local_within_its_slots_and_follows_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _redis, _link) = orchestrated_node(dir.path(), "300").await;
    let first = ["a0", "a1", "a2", "a3"];
    let second = ["b0", "b1", "b2", "b3"];

    // Four sessions called 12.5 times a second each: remote-state, together
    // they keep about half the slots busy. Nobody asks for local-state.
    let mut sent = open_loop(
        &node,
        &first,
        Duration::from_millis(80),
        Duration::from_secs(6),
    )
    .await;
    let local = local_ones(&node, &first).await;
    let view = node.get_json("/v1/node").await["orchestrator"].clone();
    assert!(
        (2..=3).contains(&local),
        "{local} of 4 busy sessions local on 4 slots: {view}"
    );
    assert!(view["rounds"].as_u64().unwrap() >= 10, "{view}");
    assert!(view["promoted"].as_u64().unwrap() >= 2, "{view}");
    // The split does not swing: nothing went back and forth.
    assert!(view["promoted"].as_u64().unwrap() <= 4, "{view}");
    assert!(view["demoted"].as_u64().unwrap() <= 1, "{view}");
    // It measured the remote store's cost (two 5 ms legs per round trip)
    // and a local call's, which is far cheaper.
    let store = view["remote_store_ms"].as_f64().unwrap();
    assert!(store >= 8.0, "{view}");
    assert!(
        view["local_service_ms"].as_f64().unwrap() < view["remote_service_ms"].as_f64().unwrap(),
        "{view}"
    );
    assert!(node.metric("edge_orchestrator_planned_local").await >= 2.0);

    // The load moves to four other sessions: the idle local ones are demoted
    // and the busy ones take their places.
    sent.extend(
        open_loop(
            &node,
            &second,
            Duration::from_millis(80),
            Duration::from_secs(6),
        )
        .await,
    );
    let view = node.get_json("/v1/node").await["orchestrator"].clone();
    assert!(
        (2..=3).contains(&local_ones(&node, &second).await),
        "{view}"
    );
    assert!(local_ones(&node, &first).await <= 1, "{view}");
    assert!(view["demoted"].as_u64().unwrap() >= 2, "{view}");
    assert!(view["promoted"].as_u64().unwrap() <= 8, "{view}");
    // Never more local sessions than the slots allow beside the pool.
    assert!(node.metric("edge_local_sessions").await <= 3.0);
    // No call was lost on the moves: each count is exact.
    for (s, n) in sent {
        assert_eq!(
            node.invoke_ok("counter", Some(&s), "").await,
            (n + 1).to_string(),
            "{s}"
        );
    }
}

#[tokio::test]
async fn a_wish_withdrawn_during_a_call_is_not_granted_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(TestNode::start(dir.path(), &["--max-local-sessions", "1"]).await);
    node.deploy("stage", guests::STAGE).await;
    assert_eq!(node.set_mode("holder", "local").await["mode"], "local");
    // No place left: `s` stays remote-state and remembers it asked.
    let got = node.set_mode("s", "local").await;
    assert_eq!(got["reason"], "capacity", "{got}");
    let call = {
        let node = node.clone();
        tokio::spawn(async move { node.invoke_ok("stage", Some("s"), "sleep=600").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While the call runs, a place frees and the client takes its wish
    // back: its word comes after the wish the call read when it started.
    assert_eq!(node.set_mode("holder", "remote").await["mode"], "remote");
    assert_eq!(node.set_mode("s", "remote").await["mode"], "remote");
    call.await.unwrap();
    let s = node.session("s").await;
    assert_eq!(s["mode"], "remote", "{s}");
    assert_eq!(s["desired"], "remote", "{s}");
    assert_eq!(node.metric("edge_local_sessions").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overloaded_node_turns_its_plan_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Rounds every 4 s: a plan that turns back would otherwise hold for 4
    // rounds (16 s) before it is followed.
    let (node, _redis, _link) = orchestrated_node(dir.path(), "4000").await;
    let first = ["a0", "a1", "a2", "a3"];
    let mut sent = open_loop(
        &node,
        &first,
        Duration::from_millis(80),
        Duration::from_secs(9),
    )
    .await;
    let view = node.get_json("/v1/node").await["orchestrator"].clone();
    let local = local_ones(&node, &first).await;
    assert!(local >= 2, "{local} local after the first phase: {view}");
    assert_eq!(view["demoted"], 0, "{view}");

    // Six more sessions as busy: the slot or two the local sessions left
    // cannot keep up, calls queue, and fewer local sessions serve everyone
    // better. The node acts within a round called early by the queue, not
    // at its next tick, and not after the hold.
    let busy: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    let all: Vec<&str> = first
        .iter()
        .copied()
        .chain(busy.iter().map(String::as_str))
        .collect();
    let started = Instant::now();
    let watch = {
        let node = node.clone();
        tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(6) {
                let view = node.get_json("/v1/node").await["orchestrator"].clone();
                if view["demoted"].as_u64().unwrap() > 0 {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        })
    };
    for (s, n) in open_loop(
        &node,
        &all,
        Duration::from_millis(80),
        Duration::from_secs(6),
    )
    .await
    {
        *sent.entry(s).or_default() += n;
    }
    let view = node.get_json("/v1/node").await["orchestrator"].clone();
    let first_demotion = watch.await.unwrap();
    println!("first demotion {first_demotion:?} after the load grew; {view}");
    assert!(
        first_demotion.is_some_and(|t| t < Duration::from_secs(3)),
        "first demotion {first_demotion:?} after the load grew: {view}"
    );
    assert!(view["early_rounds"].as_u64().unwrap() >= 1, "{view}");
    assert!(view["overloaded_rounds"].as_u64().unwrap() >= 1, "{view}");
    assert!(local_ones(&node, &all).await < local, "{view}");
    assert!(node.healthy().await);
    // No call was lost on the moves: each count is exact.
    for (s, n) in sent {
        assert_eq!(
            node.invoke_ok("counter", Some(&s), "").await,
            (n + 1).to_string(),
            "{s}"
        );
    }
}
