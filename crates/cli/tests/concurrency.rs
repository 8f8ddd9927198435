//! Concurrent stateful load at the level that once wedged the node for good
//! (sled transactions racing per-commit flushes on the async workers): 64
//! clients over 64 local-state sessions, 64 clients on one remote-state
//! session and new sessions moving between modes, all at once, for tens of
//! seconds, with `/healthz` asked every 100 ms throughout. Every count is
//! exact at the end.
//!
//! `EDGE_LOAD_SECS` sets how long the load runs (the campaign runs 30 s,
//! ten times).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{TestNode, env_or, guests};

/// Clients per group.
const CLIENTS: usize = 64;

/// One counter call; `Some(value)` on 200, `None` on a refusal the node may
/// give under contention (409 contention, 503 shed, 504 deadline), which
/// commits nothing. Anything else fails the test.
async fn count(http: &reqwest::Client, node: &TestNode, session: &str) -> Option<u64> {
    let r = http
        .post(node.at("/v1/functions/counter/invoke"))
        .header("edge-session", session)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("counter on {session}: the node did not answer: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    match status {
        200 => Some(text.parse().unwrap()),
        409 | 503 | 504 => {
            assert!(text.starts_with('{'), "refusal is JSON: {text}");
            None
        }
        s => panic!("counter on {session}: {s} {text}"),
    }
}

async fn set_mode(http: &reqwest::Client, node: &TestNode, session: &str, mode: &str) -> bool {
    let r = http
        .put(node.at(&format!("/v1/sessions/{session}/mode")))
        .json(&serde_json::json!({ "mode": mode }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("mode of {session}: the node did not answer: {e}"));
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        status == 200 || status == 504,
        "mode {mode} of {session}: {status} {body}"
    );
    status == 200 && body["mode"] == mode
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_per_group_never_wedge_the_node_and_lose_nothing() {
    let secs = env_or("EDGE_LOAD_SECS", 20);
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(
        TestNode::start(
            dir.path(),
            &[
                "--max-local-sessions",
                "1000",
                "--max-pending-invocations",
                "1024",
            ],
        )
        .await,
    );
    node.deploy("counter", guests::COUNTER).await;
    // One connection pool per client, as separate clients have.
    let http = || reqwest::Client::new();
    for i in 0..CLIENTS {
        assert!(set_mode(&http(), &node, &format!("local-{i}"), "local").await);
    }
    let until = Instant::now() + Duration::from_secs(secs);

    // 64 clients, each on a local-state session of its own: its count is
    // exactly its own successful calls.
    let locals: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move {
                let (http, id) = (http(), format!("local-{i}"));
                let (mut ok, mut calls) = (0u64, 0u64);
                while Instant::now() < until && calls < 1_000_000 {
                    calls += 1;
                    if let Some(n) = count(&http, &node, &id).await {
                        ok += 1;
                        assert_eq!(n, ok, "{id}: every acknowledged call counted once");
                    }
                }
                ok
            })
        })
        .collect();

    // 64 clients on one remote-state session: the final count is the sum
    // of their successes.
    let shared_ok = Arc::new(AtomicU64::new(0));
    let remotes: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (node, shared_ok) = (node.clone(), shared_ok.clone());
            tokio::spawn(async move {
                let http = http();
                let mut calls = 0u64;
                while Instant::now() < until && calls < 1_000_000 {
                    calls += 1;
                    if count(&http, &node, "shared").await.is_some() {
                        shared_ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // New sessions moving remote → local → remote under that load.
    let mover = {
        let node = node.clone();
        tokio::spawn(async move {
            let http = http();
            let mut moved = 0u64;
            for i in 0..100_000u64 {
                if Instant::now() >= until {
                    break;
                }
                let id = format!("moving-{i}");
                let mut ok = u64::from(count(&http, &node, &id).await.is_some());
                if set_mode(&http, &node, &id, "local").await {
                    moved += 1;
                }
                for _ in 0..3 {
                    if let Some(n) = count(&http, &node, &id).await {
                        ok += 1;
                        assert_eq!(n, ok, "{id} after moving local");
                    }
                }
                if set_mode(&http, &node, &id, "remote").await {
                    moved += 1;
                }
                if let Some(n) = count(&http, &node, &id).await {
                    assert_eq!(n, ok + 1, "{id} after moving back");
                }
            }
            moved
        })
    };

    // /healthz must answer within 2 s every time, all along.
    let health = support::HealthWatch::start(&node);

    let mut local_total = 0;
    for (i, c) in locals.into_iter().enumerate() {
        let ok = c.await.unwrap();
        let stored = count(&http(), &node, &format!("local-{i}")).await.unwrap();
        assert_eq!(stored, ok + 1, "local-{i}");
        local_total += ok;
    }
    for c in remotes {
        c.await.unwrap();
    }
    let moved = mover.await.unwrap();
    let checks = health.stop().await;
    let shared = shared_ok.load(Ordering::Relaxed);
    let stored = count(&http(), &node, "shared").await.unwrap();
    assert_eq!(stored, shared + 1, "shared remote session");
    eprintln!(
        "concurrent load for {secs} s: {local_total} local calls over {CLIENTS} sessions, \
         {shared} on one remote session, {moved} transitions, {checks} health checks"
    );
    assert!(
        local_total >= CLIENTS as u64,
        "every local client got through"
    );
    assert!(shared > 0 && moved > 0);
    assert!(node.healthy().await);
}
