//! A full disk: a node whose data dir is a small tmpfs. Writes fail with
//! 507 and a clear message, nothing acknowledged is lost, nothing refused
//! shows up later, and the node recovers when space returns (by exiting for
//! its supervisor to restart it: sled cannot write again without a reopen).
//! (Mounting a tmpfs needs root, which the test machines have.)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use support::{TestNode, guests};

/// A tmpfs of `mib` MiB mounted on a temp dir; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u32) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): this test needs root"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system at `dir` with `filler` until it refuses a byte more.
fn fill(filler: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).unwrap();
    let block = vec![0u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let one = [0u8; 1];
    while f.write_all(&one).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_full_disk_gets_507_loses_nothing_and_recovers() {
    let fs = Tmpfs::mount(48);
    let data = fs.path().join("node");
    let node = TestNode::start(&data, &[]).await;
    node.deploy("kv", guests::KV).await;
    node.set_mode("full", "local").await;
    // Each call writes a 60 kB blob and records its number in `last`.
    let write = |i: u32| format!("fill blob{i} 60000;set last {i}");
    let mut acked = None;
    for i in 0..5 {
        node.invoke_ok("kv", Some("full"), write(i)).await;
        acked = Some(i);
    }

    let filler = fs.path().join("filler");
    fill(&filler);
    // Writes now fail with 507 and say why; what is acknowledged is kept.
    let (mut full, mut streak, mut other) = (0, 0, Vec::new());
    for i in 5..400 {
        let r = node.invoke("kv", Some("full"), write(i)).await;
        match r.status().as_u16() {
            200 => {
                acked = Some(i);
                streak = 0;
            }
            507 => {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["kind"], "disk_full", "{body}");
                assert!(body["error"].as_str().unwrap().contains("disk full"));
                full += 1;
                streak += 1;
                if streak == 5 {
                    break;
                }
            }
            s => other.push((s, r.text().await.unwrap())),
        }
    }
    let acked = acked.unwrap();
    println!(
        "disk full: {full} calls refused with 507; last acknowledged write #{acked}; other answers {other:?}"
    );
    assert!(full > 0, "no call hit the full disk");
    assert!(other.is_empty(), "unexpected answers: {other:?}");
    let r = node
        .deploy_bytes("echo", std::fs::read(guests::ECHO).unwrap())
        .await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (status, body["kind"].as_str()),
        (507, Some("disk_full")),
        "{body}"
    );
    // The node says why it is not healthy.
    let health = node.http.get(node.at("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "storage_failed");

    // Space returns: the node exits for its supervisor to restart it, which
    // reopens the database at the last acknowledged write.
    std::fs::remove_file(&filler).unwrap();
    let status = node.wait_exit(std::time::Duration::from_secs(10)).await;
    assert!(
        !status.success(),
        "the node should exit non-zero for a restart"
    );
    let node = TestNode::start(&data, &[]).await;
    assert_eq!(
        node.invoke_ok("kv", Some("full"), "get last").await,
        acked.to_string(),
        "every acknowledged write, and no refused one"
    );
    node.invoke_ok("kv", Some("full"), "set last after").await;
    node.deploy("echo", guests::ECHO).await;
    node.stop().await;
    let node = TestNode::start(&data, &[]).await;
    assert_eq!(
        node.invoke_ok("kv", Some("full"), "get last").await,
        "after"
    );
    assert_eq!(node.invoke_ok("echo", None, "back").await, "back");
}

#[tokio::test]
async fn a_full_disk_under_stateful_load_answers_507_never_422_and_sigterm_stops_the_node() {
    let fs = Tmpfs::mount(48);
    let data = fs.path().join("node");
    let node = std::sync::Arc::new(TestNode::start(&data, &[]).await);
    node.deploy("counter", guests::COUNTER).await;
    node.deploy("kv", guests::KV).await;
    for i in 0..8 {
        node.set_mode(&format!("l{i}"), "local").await;
    }
    let filler = fs.path().join("filler");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Sixteen clients on local and remote (embedded store) sessions while
    // the disk fills: every answer is 200 or 507, never a guest error.
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (node, stop) = (node.clone(), stop.clone());
            tokio::spawn(async move {
                let session = if i % 2 == 0 {
                    format!("l{}", i / 2)
                } else {
                    format!("r{i}")
                };
                let mut answers = std::collections::BTreeMap::<u16, u32>::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = node
                        .invoke("kv", Some(&session), "fill blob 30000;get blob")
                        .await;
                    let status = r.status().as_u16();
                    if status != 200 {
                        let body: serde_json::Value = r.json().await.unwrap();
                        // sled can block a write for seconds while it fails
                        // to write its log out: 504 `deadline` (the writer
                        // could not start the commit, nothing written) or
                        // 503 `state_store` (started, never confirmed, not
                        // acknowledged) are true answers; the client tries
                        // again and must meet the 507.
                        let kind = body["kind"].as_str();
                        assert!(
                            (status, kind) == (507, Some("disk_full"))
                                || (status, kind) == (504, Some("deadline"))
                                || (status, kind) == (503, Some("state_store")),
                            "{body}"
                        );
                    }
                    *answers.entry(status).or_default() += 1;
                    if status == 507 {
                        break;
                    }
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    fill(&filler);
    let mut refused = 0;
    for c in clients {
        let answers = tokio::time::timeout(std::time::Duration::from_secs(60), c)
            .await
            .expect("a client never got its 507")
            .unwrap();
        refused += answers.get(&507).copied().unwrap_or(0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(refused > 0);
    // SIGTERM while storage is stopped: the process ends promptly.
    let node = std::sync::Arc::into_inner(node).unwrap();
    let status = node.terminate(std::time::Duration::from_secs(20)).await;
    assert!(!status.success(), "storage had stopped: {status}");
    std::fs::remove_file(&filler).unwrap();
    let node = TestNode::start(&data, &[]).await;
    assert_eq!(node.invoke_ok("counter", Some("l0"), "").await, "1");
    node.stop().await;
}

/// Runs a node the way `Restart=on-failure` does: whenever it exits
/// non-zero, start it again on the same address, until `stop`; returns the
/// number of restarts.
async fn supervise(
    data: std::path::PathBuf,
    listen: String,
    stop: std::sync::Arc<tokio::sync::Notify>,
) -> u64 {
    let mut restarts = 0;
    loop {
        let node = TestNode::start_at(&data, &listen, &[]).await;
        tokio::select! {
            status = node.wait_exit(std::time::Duration::from_secs(600)) => {
                assert!(!status.success(), "the node exits non-zero for a restart");
                restarts += 1;
            }
            // The node is killed as its handle drops.
            () = stop.notified() => return restarts,
        }
    }
}

#[tokio::test]
async fn under_a_supervisor_each_full_disk_ends_in_a_restart_that_serves_again() {
    let cycles = support::env_or("EDGE_DISK_CYCLES", 2);
    let fs = Tmpfs::mount(48);
    let data = fs.path().join("node");
    let listen = support::free_addr();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let supervisor = tokio::spawn(supervise(data.clone(), listen.clone(), stop.clone()));
    let url = format!("http://{listen}");
    let http = reqwest::Client::new();
    let healthy = || async {
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the node never came back");
    };
    healthy().await;
    let deploy = http
        .put(format!("{url}/v1/functions/kv"))
        .body(std::fs::read(guests::KV).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deploy.status(), 201);
    let call = |body: String| {
        http.post(format!("{url}/v1/functions/kv/invoke"))
            .header("edge-session", "sup")
            .body(body)
            .send()
    };
    let filler = fs.path().join("filler");
    let mut acked = 0u64;
    for cycle in 0..cycles {
        healthy().await;
        let mut full = false;
        for i in 0..400u64 {
            if i == 3 {
                fill(&filler);
            }
            let r = call(format!("fill blob{i} 60000;set last {}", acked + 1)).await;
            let Ok(r) = r else { break };
            match r.status().as_u16() {
                200 => acked += 1,
                507 => {
                    full = true;
                    break;
                }
                s => panic!("cycle {cycle}: {s} {}", r.text().await.unwrap()),
            }
        }
        assert!(full, "cycle {cycle}: the disk never filled");
        // Space comes back; the node exits and the supervisor restarts it.
        std::fs::remove_file(&filler).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        healthy().await;
        let last = call("get last".into()).await.unwrap().text().await.unwrap();
        assert_eq!(
            last,
            acked.to_string(),
            "cycle {cycle}: every acknowledged write"
        );
        // Make room for the next cycle.
        let clear = http
            .delete(format!("{url}/v1/sessions/sup/state"))
            .send()
            .await
            .unwrap();
        assert!(clear.status().is_success());
        let r = call(format!("set last {acked}")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    stop.notify_one();
    let restarts = supervisor.await.unwrap();
    println!(
        "disk full: {cycles} cycles under a supervisor, {restarts} restarts, {acked} writes acknowledged"
    );
    assert_eq!(restarts, cycles);
}
