//! A misbehaving guest gets its documented status by the deadline and never
//! takes the node down; its neighbours keep answering meanwhile.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use support::{TestNode, assert_error, guests};

const DEADLINE_MS: u64 = 1000;

#[tokio::test]
async fn each_hog_mode_gets_its_status_while_echo_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(
        TestNode::start(
            dir.path(),
            &[
                "--deadline-ms",
                &DEADLINE_MS.to_string(),
                "--max-memory-mib",
                "64",
            ],
        )
        .await,
    );
    node.deploy("hog", guests::HOG).await;
    node.deploy("echo", guests::ECHO).await;

    // A neighbour calling echo the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU32::new(0));
    let neighbour = {
        let (node, stop, answered) = (node.clone(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let body = format!("n{i}");
                assert_eq!(node.invoke_ok("echo", None, body.clone()).await, body);
                answered.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let cases = [
        ("loop", 504, "deadline"),
        ("grow", 500, "memory_limit"),
        ("trap", 500, "trap"),
        ("deep", 500, "stack_overflow"),
    ];
    // All modes at once, twice each, then each alone.
    let mut running = Vec::new();
    for _ in 0..2 {
        for (input, status, kind) in cases {
            let node = node.clone();
            running.push(tokio::spawn(async move {
                let started = Instant::now();
                let r = node.invoke("hog", None, input).await;
                // All at once, the spinners hold the background thread (one
                // core is kept free of long calls): a grow, trap or deep
                // call queued behind them may run out of its time and get
                // the documented 504 `deadline` instead — never anything
                // else, and never late. Alone (below) each gets its own.
                let (status, kind) = if r.status() == 504 {
                    (504, "deadline")
                } else {
                    (status, kind)
                };
                let message = assert_error(r, status, kind).await;
                let took = started.elapsed();
                assert!(
                    took < Duration::from_millis(DEADLINE_MS + 2000),
                    "{input} answered after {took:?}"
                );
                message
            }));
        }
    }
    for r in running {
        r.await.unwrap();
    }
    for (input, status, kind) in cases {
        let before = answered.load(Ordering::Relaxed);
        let message = assert_error(node.invoke("hog", None, input).await, status, kind).await;
        if input == "grow" {
            assert!(message.contains("memory limit"), "{message}");
        }
        // The neighbour got answers while this call was running or right after it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while answered.load(Ordering::Relaxed) == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("echo stopped answering");
    }
    assert_eq!(node.invoke_ok("hog", None, "fine").await, "ok");

    stop.store(true, Ordering::Relaxed);
    neighbour.await.unwrap();
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert!(node.healthy().await);
    assert_eq!(
        node.settled_metric("edge_live_instances", 0.0).await,
        0.0,
        "every instance was dropped"
    );
}

#[tokio::test]
async fn a_spinning_guest_does_not_stall_other_calls() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(TestNode::start(dir.path(), &["--deadline-ms", "3000"]).await);
    node.deploy("hog", guests::HOG).await;
    node.deploy("echo", guests::ECHO).await;

    // More spinners than the machine has cores: they must yield.
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move {
                assert_error(node.invoke("hog", None, "loop").await, 504, "deadline").await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While all of them spin, echo still completes, well before they end.
    let started = Instant::now();
    for i in 0..5 {
        assert_eq!(
            node.invoke_ok("echo", None, format!("{i}")).await,
            i.to_string()
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "echo waited for the spinners"
    );
    for s in spinners {
        s.await.unwrap();
    }
}

#[tokio::test]
async fn a_spinning_guest_moves_to_the_background_and_its_next_calls_start_there() {
    const BACKGROUND: &str = "edge_background_calls_total";
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--deadline-ms", "400"]).await;
    node.deploy("hog", guests::HOG).await;
    assert_error(node.invoke("hog", None, "loop").await, 504, "deadline").await;
    assert_eq!(node.metric_where(BACKGROUND, "reason=\"moved\"").await, 1.0);
    // The function is penalised: its next calls start in the background,
    // and still get their answers there.
    assert_eq!(node.invoke_ok("hog", None, "hello").await, "ok");
    assert_error(node.invoke("hog", None, "trap").await, 500, "trap").await;
    assert_eq!(
        node.metric_where(BACKGROUND, "reason=\"penalised\"").await,
        2.0
    );
    assert_eq!(node.metric_where(BACKGROUND, "reason=\"moved\"").await, 1.0);
    assert_eq!(node.settled_metric("edge_live_instances", 0.0).await, 0.0);

    // With the background off, a spinner stays where it started.
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &["--deadline-ms", "300", "--background-after-ticks", "0"],
    )
    .await;
    node.deploy("hog", guests::HOG).await;
    assert_error(node.invoke("hog", None, "loop").await, 504, "deadline").await;
    assert_eq!(node.metric(BACKGROUND).await, 0.0);
}
