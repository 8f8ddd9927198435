//! Nodes that share a Redis form a cluster: each shows itself there with
//! its functions and load, and finds the others without `--peer`.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{RedisServer, TestNode, guests};

/// The member URLs `node` sees, sorted.
async fn member_urls(node: &TestNode) -> Vec<String> {
    let view = node.get_json("/v1/cluster").await;
    let mut urls: Vec<String> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["url"].as_str().unwrap().to_owned())
        .collect();
    urls.sort();
    urls
}

/// Polls `node`'s view of the cluster until it lists exactly `want`.
async fn wait_for_members(node: &TestNode, want: &[&str], limit: Duration) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let until = Instant::now() + limit;
    loop {
        let got = member_urls(node).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < until, "members {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nodes_sharing_redis_find_each_other_and_work_goes_to_members() {
    let redis = RedisServer::start().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let store = ["--remote-store", redis.url.as_str()];
    let a = TestNode::start(dirs[0].path(), &store).await;
    let b = TestNode::start(dirs[1].path(), &store).await;
    wait_for_members(&a, &[&a.url, &b.url], Duration::from_secs(5)).await;
    wait_for_members(&b, &[&a.url, &b.url], Duration::from_secs(5)).await;

    // B's entry carries its functions from its next beat.
    b.deploy("echo", guests::ECHO).await;
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let view = a.get_json("/v1/cluster").await;
        let of_b = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["url"] == b.url.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        if of_b["functions"] == json!(["echo"]) {
            assert!(of_b["max_in_flight"].as_u64().unwrap() > 0, "{of_b}");
            break;
        }
        assert!(Instant::now() < until, "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A workflow sent to A, whose function only B hosts, runs on B: A was
    // never told of B.
    let spec = json!({
        "tasks": [{ "id": "t", "function": "echo" }],
        "model": "state-prop",
        "input": "through the cluster",
    });
    let (status, result) = a.run_workflow(&spec).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["outputs_text"]["t"], "through the cluster");
    assert_eq!(result["timings"][0]["node"], b.url.as_str());

    // A member may receive a migrating session without being a --peer.
    a.deploy("counter", guests::COUNTER).await;
    b.deploy("counter", guests::COUNTER).await;
    a.set_mode("m", "local").await;
    assert_eq!(a.invoke_ok("counter", Some("m"), "").await, "1");
    let r = a
        .http
        .post(a.at("/v1/sessions/m/migrate"))
        .json(&json!({ "to": b.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(a.invoke_ok("counter", Some("m"), "").await, "2");
    assert_eq!(b.session("m").await["mode"], "local");

    // A node that stops leaves at once; one that is killed drops out after
    // its entry's time (3 s).
    b.stop().await;
    wait_for_members(&a, &[&a.url], Duration::from_secs(2)).await;
    let c = TestNode::start(dirs[2].path(), &store).await;
    wait_for_members(&a, &[&a.url, &c.url], Duration::from_secs(5)).await;
    c.kill9().await;
    let killed = Instant::now();
    wait_for_members(&a, &[&a.url], Duration::from_secs(6)).await;
    assert!(
        killed.elapsed() >= Duration::from_secs(1),
        "it left too soon"
    );
}

#[tokio::test]
async fn a_node_without_redis_is_a_cluster_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestNode::start(dir.path(), &[]).await;
    let view = a.get_json("/v1/cluster").await;
    assert_eq!(view["me"], a.url.as_str());
    assert_eq!(member_urls(&a).await, vec![a.url.clone()]);
}
