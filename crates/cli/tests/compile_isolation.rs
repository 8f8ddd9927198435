//! Compile bombs do not stall the node: compilation runs in a child process
//! with a time limit and an address-space rlimit; an upload past either is
//! refused with 422 while `/healthz` and a deployed function keep answering.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{TestNode, bombs, guests};

#[tokio::test]
async fn compile_bombs_are_refused_while_the_node_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(
        TestNode::start(
            dir.path(),
            &[
                "--compile-timeout-secs",
                "3",
                "--compile-memory-mib",
                "384",
                "--compile-concurrency",
                "2",
            ],
        )
        .await,
    );
    node.deploy("echo", guests::ECHO).await;

    // A neighbour: /healthz and echo, every 20 ms, the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut calls, mut worst) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) && calls < 10_000 {
                let t0 = Instant::now();
                assert!(node.healthy().await, "healthz failed during the attack");
                let body = format!("n{calls}");
                assert_eq!(node.invoke_ok("echo", None, body.clone()).await, body);
                worst = worst.max(t0.elapsed());
                calls += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (calls, worst)
        })
    };

    let attack = [
        ("huge-function", bombs::huge_function(20_000, 650_000)),
        ("many-functions", bombs::many_functions(60_000)),
        ("nested-blocks", bombs::nested_blocks(50_000)),
        ("giant-segments", bombs::giant_segments(40 << 20, 2_000_000)),
    ];
    let mut uploads = Vec::new();
    for (name, bytes) in attack {
        let node = node.clone();
        uploads.push(tokio::spawn(async move {
            let size = bytes.len();
            let t0 = Instant::now();
            let r = node.deploy_bytes(name, bytes).await;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (name, size, status, body, t0.elapsed())
        }));
    }
    let mut refused_for_cost = Vec::new();
    for u in uploads {
        let (name, size, status, body, took) = u.await.unwrap();
        println!(
            "{name}: {size} bytes → {status} {} in {took:?}: {}",
            body["kind"].as_str().unwrap_or("?"),
            body["error"].as_str().unwrap_or("?")
        );
        assert!(
            (400..500).contains(&status),
            "{name}: expected a 4xx, got {status} {body}"
        );
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
        // Every refusal within the time limit plus scheduling slack.
        assert!(took < Duration::from_secs(15), "{name} took {took:?}");
        if body["kind"] == "compile_limit" {
            refused_for_cost.push(name);
        }
    }
    // Which bombs pass the limits depends on the machine's speed (the huge
    // function compiles in about the 3 s limit here, then fails to link):
    // at least the slowest to compile must be stopped.
    assert!(
        !refused_for_cost.is_empty(),
        "no bomb was stopped by the compile limits"
    );

    stop.store(true, Ordering::Relaxed);
    let (calls, worst) = neighbour.await.unwrap();
    println!("neighbour: {calls} healthz+echo rounds, slowest {worst:?}");
    assert!(calls > 10, "the neighbour barely ran: {calls}");
    assert!(
        worst < Duration::from_secs(2),
        "a neighbour's round took {worst:?} during the attack"
    );
    // Nothing half-registered; the node still deploys and serves.
    let list = node.get_json("/v1/functions").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"]);
    node.deploy("counter", guests::COUNTER).await;
    assert_eq!(node.invoke_ok("counter", Some("s"), "").await, "1");
    println!(
        "refused for cost: {}, compile peak RSS max bucket sum {:.0} MiB over {} worker runs",
        node.metric("edge_compile_refusals_total").await,
        node.metric("edge_compile_peak_rss_bytes_sum").await / 1048576.0,
        node.metric("edge_compile_peak_rss_bytes_count").await,
    );
}
