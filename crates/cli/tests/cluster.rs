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
    let r = a.migrate("m", &b.url).await;
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
    // No cluster record to keep: `cluster=true` deploys here, and that is all.
    let hello = std::fs::read(guests::HELLO).unwrap();
    let r = a
        .http
        .put(a.at("/v1/functions/hello?cluster=true"))
        .body(hello)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(a.invoke_ok("hello", None, "").await, "hello, world\n");
}

#[tokio::test]
async fn without_redis_the_peers_that_answer_are_the_members() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<&std::path::Path> = dirs.iter().map(|d| d.path()).collect();
    let mut nodes = TestNode::start_cluster(&paths, &[]).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let all: Vec<&str> = urls.iter().map(String::as_str).collect();
    for n in &nodes {
        wait_for_members(n, &all, Duration::from_secs(5)).await;
    }
    // A call for a function only n2 has goes to n2, the member hosting it.
    nodes[2].deploy("counter", guests::COUNTER).await;
    let until = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = nodes[0].invoke("counter", None, "").await;
        if r.status() == 200 || Instant::now() > until {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status(), 200);
    assert_eq!(support::header(&r, "edge-owner"), urls[2]);
    // `deploy --all` through n0 reaches every member.
    let stdout =
        support::cli_ok(&["deploy", "echo", guests::ECHO, "--all", "--node", &urls[0]]).await;
    for url in &urls {
        assert!(
            stdout.contains(&format!("deployed echo to {url}")),
            "{stdout}"
        );
    }
    // A stopped peer is no member once its last answer is older than the TTL.
    let stopped = nodes.remove(1);
    drop(stopped);
    for n in &nodes {
        wait_for_members(n, &[&urls[0], &urls[2]], Duration::from_secs(8)).await;
    }
}

/// Polls `node` until it has function `name`; returns its record.
async fn wait_for_function(node: &TestNode, name: &str, limit: Duration) -> Value {
    let until = Instant::now() + limit;
    loop {
        let r = node.get(&format!("/v1/functions/{name}")).await;
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        assert!(Instant::now() < until, "{name} never reached {}", node.url);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_that_joins_later_deploys_the_functions_deployed_to_the_cluster() {
    let redis = RedisServer::start().await;
    let store = ["--remote-store", redis.url.as_str()];
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = TestNode::start(dirs[0].path(), &store).await;
    // counter to the cluster (with an option); echo to A alone.
    support::cli_ok(&[
        "deploy",
        "counter",
        guests::COUNTER,
        "--all",
        "--flush-interval-ms",
        "50",
        "--node",
        &a.url,
    ])
    .await;
    a.deploy("echo", guests::ECHO).await;

    // B starts afterwards: it deploys counter, fetched from A, as it was
    // deployed there; echo was A's alone.
    let b = TestNode::start(dirs[1].path(), &store).await;
    let info = wait_for_function(&b, "counter", Duration::from_secs(30)).await;
    let at_a = a.get_json("/v1/functions/counter").await;
    assert_eq!(info["digest"], at_a["digest"]);
    assert_eq!(info["flush_interval_ms"], 50);
    let r = b.invoke("counter", Some("s"), "").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("edge-owner").is_none(),
        "served by B itself"
    );
    assert_eq!(r.text().await.unwrap(), "1");
    support::assert_error(b.get("/v1/functions/echo").await, 404, "not_found").await;
    // What B fetched: the component as uploaded.
    let r = b.get("/v1/functions/counter/component").await;
    assert_eq!(r.status(), 200);
    let fetched = r.bytes().await.unwrap();
    assert_eq!(fetched.as_ref(), std::fs::read(guests::COUNTER).unwrap());

    // Deleted with cluster=true, it leaves the cluster's record: C, starting
    // later while B still has it, does not deploy it.
    let r = a
        .http
        .delete(a.at("/v1/functions/counter?cluster=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let c = TestNode::start(dirs[2].path(), &store).await;
    wait_for_members(&c, &[&a.url, &b.url, &c.url], Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    support::assert_error(c.get("/v1/functions/counter").await, 404, "not_found").await;
    assert_eq!(
        b.invoke_ok("counter", Some("s"), "").await,
        "2",
        "B keeps its own"
    );
}

/// A proxy to `to` (host:port) that passes requests on and drops the
/// answers: the caller sees its connection close unanswered.
async fn reply_eater(to: String) -> String {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                let upstream = tokio::net::TcpStream::connect(&to).await.unwrap();
                let (mut from_client, to_client) = client.into_split();
                let (mut from_upstream, mut to_upstream) = upstream.into_split();
                let pass = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_upstream).await;
                });
                let mut buf = vec![0u8; 1 << 16];
                let _ = from_upstream.read(&mut buf).await;
                // The answer came, and is dropped with the connection.
                pass.abort();
                drop(to_client);
            });
        }
    });
    url
}

#[tokio::test]
async fn every_local_session_has_one_owner_that_every_node_reaches() {
    let redis = RedisServer::start().await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let store = ["--remote-store", redis.url.as_str()];
    let b = TestNode::start(dirs[1].path(), &store).await;
    // A knows B also through a proxy that loses every answer.
    let eater = reply_eater(b.url.trim_start_matches("http://").to_owned()).await;
    let lossy = format!("lossy={eater}");
    let a = TestNode::start(dirs[0].path(), &[&store[..], &["--peer", &lossy]].concat()).await;
    for n in [&a, &b] {
        n.deploy("counter", guests::COUNTER).await;
    }
    wait_for_members(&a, &[&a.url, &b.url], Duration::from_secs(5)).await;

    // Local at A: a call that reaches B is served by A, on A's state.
    a.set_mode("s", "local").await;
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "1");
    let r = b.invoke("counter", Some("s"), "").await;
    assert_eq!(r.headers()["edge-owner"], a.url.as_str());
    assert_eq!(r.text().await.unwrap(), "2");
    // B cannot take it (it is sent to A, where it is local already).
    let got = b.set_mode("s", "local").await;
    assert_eq!(got["mode"], "local", "{got}");
    assert_eq!(a.session("s").await["mode"], "local");
    assert_eq!(b.session("s").await["mode"], "remote");
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "3");

    // Two nodes racing to take one session: one wins, calls go there.
    let (ra, rb) = tokio::join!(
        a.http
            .put(a.at("/v1/sessions/race/mode"))
            .json(&json!({ "mode": "local" }))
            .send(),
        b.http
            .put(b.at("/v1/sessions/race/mode"))
            .json(&json!({ "mode": "local" }))
            .send(),
    );
    assert!(ra.unwrap().status().is_success() && rb.unwrap().status().is_success());
    let mut owners = 0;
    for n in [&a, &b] {
        if n.session("race").await["mode"] == "local" {
            owners += 1;
        }
    }
    assert_eq!(owners, 1, "exactly one node holds the session");
    for (i, n) in [&a, &b, &a, &b].into_iter().enumerate() {
        assert_eq!(
            n.invoke_ok("counter", Some("race"), "").await,
            (i + 1).to_string()
        );
    }

    // Deleting on the node that does not hold it deletes the one session.
    let r = b.http.delete(b.at("/v1/sessions/s")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        a.invoke_ok("counter", Some("s"), "").await,
        "1",
        "gone at A too"
    );

    // A migration whose answer is lost leaves A the owner: B got the state
    // but never serves it; every call, on either node, continues one count.
    a.set_mode("m", "local").await;
    assert_eq!(a.invoke_ok("counter", Some("m"), "").await, "1");
    let r = a.migrate("m", &eater).await;
    assert!(!r.status().is_success(), "the answer was lost");
    assert_eq!(b.session("m").await["mode"], "local", "B has a copy");
    let mut expect = 2;
    for n in [&a, &b, &b, &a] {
        assert_eq!(
            n.invoke_ok("counter", Some("m"), "").await,
            expect.to_string()
        );
        expect += 1;
    }
    // The real hand-over then moves it: B owns it, A forwards.
    let r = a.migrate("m", &b.url).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for n in [&b, &a] {
        assert_eq!(
            n.invoke_ok("counter", Some("m"), "").await,
            expect.to_string()
        );
        expect += 1;
    }
    assert_eq!(b.session("m").await["mode"], "local");

    // The copy a lost migration left at B stays unserved after A gives the
    // session up (remote-state): nobody owns it, and B drops it as stale.
    a.set_mode("n", "local").await;
    assert_eq!(a.invoke_ok("counter", Some("n"), "").await, "1");
    assert!(!a.migrate("n", &eater).await.status().is_success());
    assert_eq!(a.invoke_ok("counter", Some("n"), "").await, "2");
    assert_eq!(a.set_mode("n", "remote").await["mode"], "remote");
    assert_eq!(b.invoke_ok("counter", Some("n"), "").await, "3");
    assert_eq!(b.session("n").await["mode"], "remote");
    assert_eq!(a.invoke_ok("counter", Some("n"), "").await, "4");
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid` (a node, Redis).
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

#[tokio::test]
async fn a_paused_node_cannot_commit_to_a_session_another_node_took() {
    let redis = RedisServer::start().await;
    let (_dirs, a, b) = support::two_sharing(&redis).await;
    for n in [&a, &b] {
        n.deploy("counter", guests::COUNTER).await;
    }
    assert_eq!(a.invoke_ok("counter", Some("f"), "").await, "1");

    // A reads count 1 for a remote-state call, then is paused mid-call.
    let held = {
        let (http, url) = (a.http.clone(), a.at("/v1/functions/counter/invoke"));
        tokio::spawn(async move {
            let r = http
                .post(url)
                .header("edge-session", "f")
                .body("hold=1500")
                .send()
                .await
                .unwrap();
            let owner = support::header(&r, "edge-owner");
            (r.status().as_u16(), owner, r.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(a.pid(), "-STOP");
    // Meanwhile B takes the session and counts on.
    let got = b.set_mode("f", "local").await;
    assert_eq!(got["mode"], "local", "{got}");
    assert_eq!(b.invoke_ok("counter", Some("f"), "").await, "2");
    assert_eq!(b.invoke_ok("counter", Some("f"), "").await, "3");
    signal(a.pid(), "-CONT");

    // A wakes with count 1 in hand; its write of 2 is refused by the fence
    // (atomically, in the commit script), and the call goes to B instead.
    let (status, owner, body) = held.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(owner, b.url, "served by the new owner");
    assert_eq!(body, "4", "the stale read was not written");
    assert_eq!(b.session("f").await["mode"], "local");
    assert_eq!(a.session("f").await["mode"], "remote");
    assert_eq!(a.invoke_ok("counter", Some("f"), "").await, "5");
    assert_eq!(b.invoke_ok("counter", Some("f"), "").await, "6");
}

#[tokio::test]
async fn a_migration_needs_the_function_at_the_target_and_deploy_all_puts_it_there() {
    let redis = RedisServer::start().await;
    let (_dirs, a, b) = support::two_sharing(&redis).await;
    a.deploy("counter", guests::COUNTER).await;
    wait_for_members(&a, &[&a.url, &b.url], Duration::from_secs(5)).await;
    a.set_mode("s", "local").await;
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "1");
    assert_eq!(a.session("s").await["functions"], json!(["counter"]));

    // B lacks counter: refused before anything moves.
    let r = a.migrate("s", &b.url).await;
    let message = support::assert_error(r, 409, "function_missing").await;
    assert!(
        message.contains("counter") && message.contains(&b.url),
        "{message}"
    );
    assert_eq!(a.session("s").await["mode"], "local");
    // B passes calls for a function it lacks: to the session's owner, or
    // (no session) to a member hosting it; a passed call is not passed on.
    assert_eq!(
        b.invoke_ok("counter", Some("s"), "").await,
        "2",
        "still A's"
    );
    let r = b.invoke("counter", None, "").await;
    let served_by = support::header(&r, "edge-owner");
    assert_eq!(served_by, a.url, "{:?}", r.text().await);
    assert_eq!(r.text().await.unwrap(), "1");
    let r = b
        .http
        .post(b.at("/v1/functions/counter/invoke"))
        .header("edge-forwarded", "1")
        .send()
        .await
        .unwrap();
    support::assert_error(r, 404, "not_found").await;

    // `deploy --all` through A reaches every member.
    let stdout = support::cli_ok(&[
        "deploy",
        "counter",
        guests::COUNTER,
        "--all",
        "--node",
        &a.url,
    ])
    .await;
    for n in [&a, &b] {
        assert!(
            stdout.contains(&format!("deployed counter to {}", n.url)),
            "{stdout}"
        );
    }
    let listed = b.get_json("/v1/functions").await.to_string();
    assert!(listed.contains("\"counter\""), "{listed}");

    // Now the hand-over goes through, with the functions it needs.
    let r = a.migrate("s", &b.url).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(b.session("s").await["mode"], "local");
    assert_eq!(b.session("s").await["functions"], json!(["counter"]));
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "3");
    // A call on B's session for a function only A has: B keeps the session
    // whatever becomes of the call (there is no node with both).
    a.deploy("echo", guests::ECHO).await;
    let r = b.invoke("echo", Some("s"), "hi").await;
    assert!(!r.status().is_success(), "{}", r.status());
    assert_eq!(b.session("s").await["mode"], "local");
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let owner: Option<String> = redis::cmd("HGET")
        .arg("edge:own:s")
        .arg("owner")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        owner.as_deref(),
        Some(b.url.as_str()),
        "the directory still names B"
    );
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "4");
    // Gone from every node, a function is not found anywhere.
    for n in [&a, &b] {
        n.delete_function("counter").await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    support::assert_error(a.invoke("counter", None, "").await, 404, "not_found").await;
}

#[tokio::test]
async fn a_session_whose_owner_is_gone_is_refused_at_once_and_can_be_taken_over() {
    let redis = RedisServer::start().await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let store = ["--remote-store", redis.url.as_str(), "--snapshot-ms", "200"];
    let a_addr = support::free_addr();
    let a = TestNode::start_at(dirs[0].path(), &a_addr, &store).await;
    let b = TestNode::start(dirs[1].path(), &store).await;
    for n in [&a, &b] {
        n.deploy("counter", guests::COUNTER).await;
    }
    wait_for_members(&b, &[&a.url, &b.url], Duration::from_secs(5)).await;

    // Counts 1, 2 land in Redis (remote-state); 3, 4 on A's disk (local),
    // and in A's snapshots in Redis (every 200 ms).
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "1");
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "2");
    assert_eq!(a.set_mode("s", "local").await["mode"], "local");
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "3");
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "4");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(a.metric("edge_snapshots_total").await >= 1.0);

    // A live owner is not taken over.
    let takeover = b.at("/v1/sessions/s/takeover");
    let r = b.http.post(&takeover).send().await.unwrap();
    support::assert_error(r, 409, "owner_alive").await;

    let a_url = a.url.clone();
    a.kill9().await;
    wait_for_members(&b, &[&b.url], Duration::from_secs(6)).await;
    // Calls for the session are refused at once, saying what can be done.
    let asked = Instant::now();
    let r = b.invoke("counter", Some("s"), "").await;
    let message = support::assert_error(r, 503, "owner_unavailable").await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        message.contains(&a_url) && message.contains("takeover"),
        "{message}"
    );
    assert!(b.healthy().await);

    // Taken over with the CLI: the session goes on from A's last snapshot.
    let stdout = support::cli_ok(&["session", "takeover", "s", "--node", &b.url]).await;
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["previous_owner"], a_url.as_str(), "{answer}");
    assert_eq!(answer["mode"], "remote", "{answer}");
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "5");
    // Nothing to take over now: nobody owns it.
    let r = b.http.post(&takeover).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["previous_owner"],
        Value::Null
    );

    // A comes back with its copy on disk: the directory no longer names it,
    // so the copy is stale and dropped; A serves the one session.
    let a = TestNode::start_at(dirs[0].path(), &a_addr, &store).await;
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "6");
    assert_eq!(a.session("s").await["mode"], "remote");
    assert_eq!(a.metric("edge_stale_copies_dropped_total").await, 1.0);
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "7");
    // And it can be made local again, anywhere.
    assert_eq!(a.set_mode("s", "local").await["mode"], "local");
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "8");
    assert_eq!(b.metric("edge_takeovers_total").await, 1.0);
}

#[tokio::test]
async fn a_node_cut_off_from_redis_stops_serving_its_local_sessions_until_it_is_back() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestNode::start(dir.path(), &["--remote-store", redis.url.as_str()]).await;
    a.deploy("counter", guests::COUNTER).await;
    assert_eq!(a.set_mode("l", "local").await["mode"], "local");
    assert_eq!(a.invoke_ok("counter", Some("l"), "").await, "1");

    // Redis stops answering: past the lease (2 s) the node no longer serves
    // its local session (another node could take it over 1 s later), and
    // says why; the node itself stays up.
    signal(redis.pid(), "-STOP");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let r = a.invoke("counter", Some("l"), "").await;
    let message = support::assert_error(r, 503, "lease").await;
    assert!(message.contains("membership"), "{message}");
    assert!(a.healthy().await);
    signal(redis.pid(), "-CONT");

    // Back once a beat goes through; nothing was written meanwhile.
    let until = Instant::now() + Duration::from_secs(10);
    let count = loop {
        let r = a.invoke("counter", Some("l"), "").await;
        if r.status() == 200 {
            break r.text().await.unwrap();
        }
        assert!(
            Instant::now() < until,
            "still refused: {}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(count, "2");
    assert_eq!(a.session("l").await["mode"], "local");
}

#[tokio::test]
async fn a_local_session_this_node_has_no_room_for_goes_to_a_member_with_room() {
    let (_redis, _dirs, a, b) = two_nodes_with_one_place_each("counter", guests::COUNTER).await;
    // A's one place goes to s1.
    assert_eq!(a.set_mode("s1", "local").await["mode"], "local");
    assert_eq!(a.invoke_ok("counter", Some("s2"), "").await, "1");
    // s2 asks A for local-state: B, with room, takes it.
    let outcome = a.set_mode("s2", "local").await;
    assert_eq!(outcome["mode"], "local", "{outcome}");
    assert_eq!(outcome["owner"], b.url.as_str(), "{outcome}");
    assert_eq!(b.session("s2").await["mode"], "local");
    // Its calls on A are served by B, from the state it had.
    let r = a.invoke("counter", Some("s2"), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(support::header(&r, "edge-owner"), b.url);
    assert_eq!(r.text().await.unwrap(), "2");
    assert_eq!(b.invoke_ok("counter", Some("s2"), "").await, "3");
    assert_eq!(b.metric("edge_sessions_spilled_total").await, 0.0);
    assert_eq!(a.metric("edge_sessions_spilled_total").await, 1.0);
    // Both full: s3 stays remote-state, refused for want of room.
    wait_for_member_local(&a, &b.url, 1).await;
    let outcome = a.set_mode("s3", "local").await;
    assert_eq!(outcome["mode"], "remote", "{outcome}");
    assert_eq!(outcome["reason"], "capacity", "{outcome}");
    assert!(outcome.get("owner").is_none(), "{outcome}");
    // Asked A for remote-state, s2 is sent to its owner, B (307, which the
    // client follows), and B lets it go; A then serves it itself.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .put(a.at("/v1/sessions/s2/mode"))
        .json(&json!({ "mode": "remote" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        support::header(&r, "location"),
        format!("{}/v1/sessions/s2/mode", b.url)
    );
    assert_eq!(a.set_mode("s2", "remote").await["mode"], "remote");
    assert_eq!(b.session("s2").await["mode"], "remote");
    let r = a.invoke("counter", Some("s2"), "").await;
    assert!(r.headers().get("edge-owner").is_none(), "served by A");
    assert_eq!(r.text().await.unwrap(), "4");
}

/// Two nodes sharing a real Redis, one local place each (idle local sessions
/// kept), `function` deployed on both, each seeing the other. Keep the
/// Redis and the directories as long as the nodes.
async fn two_nodes_with_one_place_each(
    function: &str,
    wasm: &str,
) -> (RedisServer, Vec<tempfile::TempDir>, TestNode, TestNode) {
    let redis = RedisServer::start().await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let args = [
        "--remote-store",
        redis.url.as_str(),
        "--max-local-sessions",
        "1",
        "--demote-idle-ms",
        "600000",
    ];
    let a = TestNode::start(dirs[0].path(), &args).await;
    let b = TestNode::start(dirs[1].path(), &args).await;
    for n in [&a, &b] {
        n.deploy(function, wasm).await;
    }
    wait_for_members(&a, &[&a.url, &b.url], Duration::from_secs(5)).await;
    (redis, dirs, a, b)
}

/// Waits (5 s at most) until `node` sees member `url` holding `n` local
/// sessions.
async fn wait_for_member_local(node: &TestNode, url: &str, n: u64) {
    let until = Instant::now() + Duration::from_secs(5);
    while member_local(node, url).await != n {
        assert!(
            Instant::now() < until,
            "{url} never showed {n} local sessions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many local sessions `node` sees member `url` holding.
async fn member_local(node: &TestNode, url: &str) -> u64 {
    let view = node.get_json("/v1/cluster").await;
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["url"] == url)
        .map_or(0, |m| m["local_sessions"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guest_wish_this_node_has_no_room_for_goes_to_a_member_with_room() {
    let (_redis, _dirs, a, b) = two_nodes_with_one_place_each("kv", guests::KV).await;
    assert_eq!(a.set_mode("holder", "local").await["mode"], "local");
    // The guest of `g` asks A for local-state: the call is answered and its
    // write kept; A has no room, B takes the session.
    let r = a.invoke("kv", Some("g"), "set x 1; mode local").await;
    assert_eq!(r.status(), 200);
    assert_eq!(support::header(&r, "edge-mode"), "remote");
    assert_eq!(support::header(&r, "edge-mode-reason"), "local_at_member");
    assert_eq!(r.text().await.unwrap(), "ok;ok");
    assert_eq!(b.session("g").await["mode"], "local");
    assert_eq!(a.metric("edge_sessions_spilled_total").await, 1.0);
    // A's calls on it reach B, local-state there, with the state written.
    let r = a.invoke("kv", Some("g"), "get x; whoami").await;
    assert_eq!(r.status(), 200);
    assert_eq!(support::header(&r, "edge-owner"), b.url);
    assert_eq!(support::header(&r, "edge-mode"), "local");
    assert_eq!(r.text().await.unwrap(), "1;g local");
    // With B full too, a second guest's wish is refused for want of room.
    wait_for_member_local(&a, &b.url, 1).await;
    let r = a.invoke("kv", Some("h"), "mode local").await;
    assert_eq!(support::header(&r, "edge-mode-reason"), "capacity");
    assert_eq!(a.metric("edge_sessions_spilled_total").await, 1.0);
    assert_eq!(a.session("h").await["mode"], "remote");
}
