//! The node's platform decisions: local-state places and instance slots
//! are an LRU cache over the sessions that want them.

mod support;

use std::time::Duration;
use support::{TestNode, guests};

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
    let started = std::time::Instant::now();
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
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let r = node.invoke("counter", Some("hot"), "").await;
        let mode = r.headers()["edge-mode"].to_str().unwrap().to_owned();
        assert_eq!(r.text().await.unwrap(), n.to_string());
        if mode == "local" {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "never promoted after {n} calls"
        );
    }
    assert_eq!(node.session("hot").await["mode"], "local");
    assert_eq!(node.metric("edge_promotions_total").await, 1.0);
    assert_eq!(node.session("slow").await["mode"], "remote");
}
