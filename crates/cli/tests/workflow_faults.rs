//! Workflow faults: three nodes run a chain while the middle one is killed
//! (kill -9) and restarted at random moments. Every run ends by its deadline,
//! with its result or an error naming the task or node that failed, and no
//! state commit is applied twice or in part: the shared state's counter is
//! exactly (uses per run) × (successful runs).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{TestNode, guests};

const MODELS: [&str; 3] = ["pure-faas", "state-prop", "state-local"];
const DEADLINE_MS: u64 = 2000;

fn counter(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("an 8-byte counter"))
}

#[tokio::test]
async fn the_middle_node_killed_during_runs_fails_runs_cleanly_and_commits_once() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b_listen = format!("127.0.0.1:{port}");
    let mut b = Some(TestNode::start_at(dirs[1].path(), &b_listen, &[]).await);
    let b_url = b.as_ref().unwrap().url.clone();
    let c = TestNode::start(dirs[2].path(), &[]).await;
    let (pb, pc) = (format!("b={b_url}"), format!("c={}", c.url));
    let a = TestNode::start(dirs[0].path(), &["--peer", &pb, "--peer", &pc]).await;
    for n in [&a, b.as_ref().unwrap(), &c] {
        n.deploy("stage", guests::STAGE).await;
    }
    // One 8-byte counter, used by the first and the last task: +2 per run.
    let state_url = a.at("/v1/sessions/faults/state/S");
    let r = a
        .http
        .put(&state_url)
        .body(vec![0u8; 8])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let runs = support::env_or("EDGE_FAULT_RUNS", 200);
    let mut rng = support::Rng::new(0xfa017);
    let (mut ok, mut failed, mut kills) = (0u64, 0u64, 0u64);
    let mut worst = Duration::ZERO;
    for i in 0..runs {
        let model = MODELS[i as usize % 3];
        let spec = json!({
            "tasks": [
                { "id": "t1", "function": "stage", "node": "self" },
                { "id": "t2", "function": "stage", "node": "b", "args": format!("sleep={}", rng.below(20)) },
                { "id": "t3", "function": "stage", "node": "c" },
            ],
            "edges": [["t1", "t2"], ["t2", "t3"]],
            "states": { "S": ["t1", "t3"] },
            "model": model,
            "session": "faults",
            "input": format!("run {i}"),
            "deadline_ms": DEADLINE_MS,
        });
        let call = tokio::spawn(a.http.post(a.at("/v1/workflows")).json(&spec).send());
        let started = Instant::now();
        // Sometimes kill b while the run is in flight; bring it back later.
        if b.is_some() && rng.below(6) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
            b.take().unwrap().kill9().await;
            kills += 1;
        } else if b.is_none() && rng.below(3) == 0 {
            b = Some(TestNode::start_at(dirs[1].path(), &b_listen, &[]).await);
        }
        let r = call.await.unwrap();
        let r = r.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        let took = started.elapsed();
        worst = worst.max(took);
        assert!(
            took < Duration::from_millis(DEADLINE_MS + 1500),
            "run {i} ({model}) took {took:?}"
        );
        if status == 200 {
            ok += 1;
        } else {
            failed += 1;
            let message = body["error"].as_str().unwrap_or_default();
            assert!(
                matches!(status, 502 | 504),
                "run {i} ({model}): {status} {body}"
            );
            assert!(
                message.contains(&b_url)
                    || message.contains("\"t2\"")
                    || message.contains("\"t3\""),
                "run {i} ({model}) failed without naming the node or task: {message}"
            );
        }
    }
    // Let whatever a failed run left behind expire, then check the count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let value = a.http.get(&state_url).send().await.unwrap();
    assert_eq!(value.status(), 200);
    let count = counter(&value.bytes().await.unwrap());
    println!(
        "workflow faults: {runs} runs, {kills} kills of the middle node, {ok} succeeded, {failed} failed cleanly, slowest {worst:?}; state counter {count} = 2 × {ok}"
    );
    assert!(ok > 0 && failed > 0, "the campaign needs both outcomes");
    assert_eq!(count, 2 * ok, "a state commit was lost or applied twice");
}

fn signal(node: &TestNode, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_hung_peer_delays_no_run_that_skips_it_and_is_named_by_runs_that_need_it() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = TestNode::start(dirs[1].path(), &[]).await;
    let c = TestNode::start(dirs[2].path(), &[]).await;
    let (pb, pc) = (format!("b={}", b.url), format!("c={}", c.url));
    let a = TestNode::start(dirs[0].path(), &["--peer", &pb, "--peer", &pc]).await;
    for n in [&a, &b, &c] {
        n.deploy("stage", guests::STAGE).await;
    }
    let run = |spec: serde_json::Value| {
        let a = &a;
        async move {
            let started = Instant::now();
            let (status, body) = a.run_workflow(&spec).await;
            (status, body, started.elapsed())
        }
    };
    let fan_out = |sleep_ms: u32| {
        json!({
            "tasks": [
                { "id": "t1", "function": "stage", "node": "self", "args": format!("sleep={sleep_ms}") },
                { "id": "t2", "function": "stage", "node": "b" },
                { "id": "t3", "function": "stage", "node": "c" },
            ],
            "edges": [["t1", "t2"], ["t1", "t3"]],
            "model": "state-prop",
            "deadline_ms": DEADLINE_MS,
        })
    };
    signal(&c, "-STOP");
    // A run on a and b only never waits for c.
    for model in MODELS {
        let spec = json!({
            "tasks": [
                { "id": "t1", "function": "stage", "node": "self" },
                { "id": "t2", "function": "stage", "node": "b" },
            ],
            "edges": [["t1", "t2"]],
            "model": model,
            "deadline_ms": DEADLINE_MS,
        });
        let (status, body, took) = run(spec).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert!(took < Duration::from_millis(1500), "{model} took {took:?}");
    }
    // A run that needs c fails by its deadline, naming c.
    let (status, body, took) = run(fan_out(0)).await;
    assert!(status == 502 || status == 504, "{status} {body}");
    assert!(body["error"].as_str().unwrap().contains(&c.url), "{body}");
    assert!(took < Duration::from_millis(DEADLINE_MS + 1500), "{took:?}");
    // c hangs after the placement: the run fails by its deadline naming c,
    // not the node whose delivery to it hung.
    signal(&c, "-CONT");
    let hang = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        signal(&c, "-STOP");
    };
    let ((status, body, took), ()) = tokio::join!(run(fan_out(400)), hang);
    assert!(status == 502 || status == 504, "{status} {body}");
    assert!(body["error"].as_str().unwrap().contains(&c.url), "{body}");
    assert!(took < Duration::from_millis(DEADLINE_MS + 1500), "{took:?}");
    signal(&c, "-CONT");
    assert!(a.healthy().await && c.healthy().await);
}
