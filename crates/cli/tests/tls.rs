//! HTTPS: nodes serve TLS with certificates from a CA the test makes, talk
//! to each other over it (trusting that CA), and the CLI does too.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;
use support::{TestNode, guests};
use tokio::io::AsyncReadExt;

fn arg(dir: &Path, file: &str) -> String {
    dir.join(file).to_str().unwrap().to_owned()
}

/// Nodes A and B (in `dirs[0]` and `dirs[1]`) started with `args`, A
/// knowing B as a peer, each handle made by `handle`, `counter` on both.
async fn pair(
    dirs: &[tempfile::TempDir],
    args: &[&str],
    handle: impl Fn(TestNode) -> TestNode,
) -> (TestNode, TestNode) {
    let b = handle(TestNode::start(dirs[1].path(), args).await);
    let peer = format!("b={}", b.url);
    let a = handle(TestNode::start(dirs[0].path(), &[args, &["--peer", &peer]].concat()).await);
    for n in [&a, &b] {
        n.deploy("counter", guests::COUNTER).await;
    }
    (a, b)
}

/// Session `s`, local at A with a count of 1, moves to B and counts 2 there.
async fn hand_over(a: &TestNode, b: &TestNode) {
    a.set_mode("s", "local").await;
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "1");
    let r = a.migrate("s", &b.url).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "2");
}

#[tokio::test]
async fn nodes_serve_https_and_talk_to_each_other_over_it() {
    let certs = tempfile::tempdir().unwrap();
    let ca = support::make_certificates(certs.path());
    let c = certs.path();
    let tls = [
        "--tls-cert".to_owned(),
        arg(c, "cert.pem"),
        "--tls-key".to_owned(),
        arg(c, "key.pem"),
        "--tls-ca".to_owned(),
        arg(c, "ca.pem"),
        "--header-timeout-secs".to_owned(),
        "1".to_owned(),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = pair(&dirs, &tls, |n| n.with_ca(&ca)).await;
    assert!(b.url.starts_with("https://127.0.0.1:"), "{}", b.url);
    let peer = format!("b={}", b.url);

    // A local session moves from A to B over HTTPS; A forwards over it too.
    hand_over(&a, &b).await;
    let r = a.invoke("counter", Some("s"), "").await;
    assert_eq!(support::header(&r, "edge-owner"), b.url);
    assert_eq!(r.text().await.unwrap(), "3");

    // A node that does not trust the cluster's CA cannot hand B a session:
    // nothing moves.
    let untrusting = [&tls[..4], &["--peer", &peer]].concat();
    let stranger = TestNode::start(dirs[2].path(), &untrusting)
        .await
        .with_ca(&ca);
    stranger.deploy("counter", guests::COUNTER).await;
    stranger.set_mode("t", "local").await;
    assert_eq!(stranger.invoke_ok("counter", Some("t"), "").await, "1");
    let r = stranger.migrate("t", &b.url).await;
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert_eq!(stranger.invoke_ok("counter", Some("t"), "").await, "2");

    // Plain HTTP, a client that does not trust the CA, and a client that
    // never finishes its handshake all fail; the node serves on.
    let plain = b.url.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
    let e = reqwest::get(b.at("/healthz")).await.unwrap_err();
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    let mut silent = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(b.healthy().await);

    // The CLI talks HTTPS with --ca, and refuses a node it cannot trust.
    let cli = |with_ca: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edge-node"));
        command.args(["invoke", "counter", "--session", "s", "--node", &b.url]);
        if with_ca {
            command.args(["--ca", &arg(c, "ca.pem")]);
        }
        command.output().unwrap()
    };
    let out = cli(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
    let out = cli(false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

/// A client trusting the CA in `dir`, presenting `token`, and the
/// certificate and key in `identity` when given.
fn client(dir: &Path, token: &str, identity: Option<&Path>) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .default_headers(headers);
    if let Some(dir) = identity {
        let mut pem = std::fs::read(dir.join("cert.pem")).unwrap();
        pem.extend(std::fs::read(dir.join("key.pem")).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn with_client_certificates_only_nodes_of_the_cluster_reach_its_node_routes() {
    let certs = tempfile::tempdir().unwrap();
    support::make_certificates(certs.path());
    let c = certs.path();
    // Another fleet's CA and a certificate it signed.
    let others = tempfile::tempdir().unwrap();
    support::make_certificates(others.path());
    let o = others.path();
    let mtls = |dir: &Path| {
        vec![
            "--tls-cert".to_owned(),
            arg(dir, "cert.pem"),
            "--tls-key".to_owned(),
            arg(dir, "key.pem"),
            "--tls-ca".to_owned(),
            arg(c, "ca.pem"),
            "--tls-client-ca".to_owned(),
            arg(c, "ca.pem"),
            "--token".to_owned(),
            "client-token".to_owned(),
            "--cluster-token".to_owned(),
            "cluster-token".to_owned(),
        ]
    };
    let ours = mtls(c);
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = pair(&dirs, &ours, |n| {
        n.with_client(client(c, "client-token", None))
    })
    .await;
    let peer = format!("b={}", b.url);

    // Nodes present their certificates to each other: a session moves from
    // A to B, and A forwards to B.
    hand_over(&a, &b).await;
    assert_eq!(a.invoke_ok("counter", Some("s"), "").await, "3");

    // The cluster token without a certificate is not enough for a node
    // route; clients need no certificate for theirs.
    let state = b.at("/v1/sessions/s/state");
    let tokened = client(c, "cluster-token", None);
    let r = tokened.get(&state).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("client_certificate_required"), "{text}");
    let r = tokened
        .post(b.at("/v1/functions/counter/invoke"))
        .header("edge-session", "s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "4");
    // With the cluster's certificate, the same request is a node's.
    let certified = client(c, "cluster-token", Some(c));
    let r = certified.get(&state).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The certificate does not replace the token.
    let r = client(c, "client-token", Some(c))
        .get(&state)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A certificate from another CA fails the handshake.
    let e = client(c, "cluster-token", Some(o))
        .get(&state)
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect() || e.is_request(), "{e:?}");

    // A node with the cluster token and a certificate from another CA
    // cannot hand B a session: nothing moves, it counts on.
    let stranger = mtls(o);
    let stranger: Vec<&str> = stranger.iter().map(String::as_str).collect();
    let stranger = TestNode::start(
        dirs[2].path(),
        &[&stranger[..], &["--peer", &peer]].concat(),
    )
    .await
    .with_client(client(o, "client-token", None));
    stranger.deploy("counter", guests::COUNTER).await;
    stranger.set_mode("t", "local").await;
    assert_eq!(stranger.invoke_ok("counter", Some("t"), "").await, "1");
    let r = stranger.migrate("t", &b.url).await;
    assert_eq!(r.status(), 500, "{}", r.text().await.unwrap());
    assert_eq!(stranger.invoke_ok("counter", Some("t"), "").await, "2");
    assert!(b.healthy().await);
    assert_eq!(b.invoke_ok("counter", Some("s"), "").await, "5");
}

#[tokio::test]
async fn a_bad_certificate_setting_stops_the_node_with_a_message() {
    let certs = tempfile::tempdir().unwrap();
    support::make_certificates(certs.path());
    let c = certs.path();
    let data = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--tls-cert", &arg(c, "cert.pem")], "go together"),
        (
            vec![
                "--tls-cert",
                &arg(c, "key.pem"),
                "--tls-key",
                &arg(c, "key.pem"),
            ],
            "no certificate",
        ),
        (
            vec![
                "--tls-cert",
                &arg(c, "cert.pem"),
                "--tls-key",
                &arg(c, "ca.pem"),
            ],
            "ca.pem",
        ),
        (vec!["--tls-ca", &arg(c, "key.pem")], "certificate"),
        (
            vec!["--tls-client-ca", &arg(c, "ca.pem")],
            "needs --tls-cert",
        ),
        (
            vec![
                "--tls-cert",
                &arg(c, "cert.pem"),
                "--tls-key",
                &arg(c, "key.pem"),
                "--tls-client-ca",
                &arg(c, "key.pem"),
            ],
            "key.pem: no certificate",
        ),
    ] {
        let stderr = support::serve_refuses(data.path(), &args);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn nodes_keep_state_in_a_redis_that_speaks_only_tls() {
    let certs = tempfile::tempdir().unwrap();
    support::make_certificates(certs.path());
    let c = certs.path();
    let redis = support::RedisServer::start_tls(c).await;
    assert!(redis.url.starts_with("rediss://"));
    let ca = arg(c, "ca.pem");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = TestNode::start(
        dirs[0].path(),
        &["--remote-store", &redis.url, "--tls-ca", &ca],
    )
    .await;
    let b = TestNode::start(
        dirs[1].path(),
        &["--remote-store", &redis.url, "--tls-ca", &ca],
    )
    .await;
    for n in [&a, &b] {
        n.deploy("counter", guests::COUNTER).await;
    }
    // Remote-state calls on either node share one count, kept in Redis.
    for (i, n) in [&a, &b, &a, &b].into_iter().enumerate() {
        assert_eq!(
            n.invoke_ok("counter", Some("r"), "").await,
            (i + 1).to_string()
        );
    }
    // The membership runs over it too.
    let view = a.get_json("/v1/cluster").await;
    assert_eq!(view["members"].as_array().unwrap().len(), 2, "{view}");
    // A node that does not trust the CA stops at start, saying why (within
    // seconds: the Redis connection is bounded).
    let stderr = support::serve_refuses(dirs[2].path(), &["--remote-store", &redis.url]);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert_eq!(a.invoke_ok("counter", Some("r"), "").await, "5");
}

#[tokio::test]
async fn a_redis_that_wants_client_certificates_gets_the_nodes_own() {
    let certs = tempfile::tempdir().unwrap();
    support::make_certificates(certs.path());
    let c = certs.path();
    let redis = support::RedisServer::start_mutual_tls(c).await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ca = arg(c, "ca.pem");
    // A node with a certificate from the CA Redis trusts keeps its
    // remote-state sessions there.
    let node = TestNode::start(
        dirs[0].path(),
        &[
            "--remote-store",
            &redis.url,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &arg(c, "cert.pem"),
            "--tls-key",
            &arg(c, "key.pem"),
        ],
    )
    .await
    .with_ca(&std::fs::read_to_string(c.join("ca.pem")).unwrap());
    node.deploy("counter", guests::COUNTER).await;
    for expected in ["1", "2", "3"] {
        assert_eq!(node.invoke_ok("counter", Some("r"), "").await, expected);
    }
    // Without one, the node cannot connect and stops at start, saying so.
    let stderr = support::serve_refuses(
        dirs[1].path(),
        &["--remote-store", &redis.url, "--tls-ca", &ca],
    );
    assert!(stderr.contains("CertificateRequired"), "{stderr}");
    assert_eq!(node.invoke_ok("counter", Some("r"), "").await, "4");
}

/// A guest's `https://` request to a host with a certificate from the
/// node's own CA goes through when the node was given that CA
/// (`--tls-ca`), and fails verification when it was not; the allow-list
/// and the bundled roots hold either way.
#[tokio::test]
async fn guests_https_requests_trust_the_nodes_own_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ca = support::make_certificates(certs.path());
    let c = certs.path();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let serving = [
        "--tls-cert",
        &arg(c, "cert.pem"),
        "--tls-key",
        &arg(c, "key.pem"),
    ];
    let upstream = TestNode::start(dirs[0].path(), &serving).await.with_ca(&ca);
    upstream.deploy("hello-http", guests::HELLO_HTTP).await;
    let host = upstream.url.trim_start_matches("https://").to_owned();
    let trusting = TestNode::start(dirs[1].path(), &["--tls-ca", &arg(c, "ca.pem")]).await;
    let plain = TestNode::start(dirs[2].path(), &[]).await;
    let fetch = |node: &TestNode, url: String| {
        let (http, at) = (node.http.clone(), node.at(&format!("/web/fetch?url={url}")));
        async move {
            let r = http.get(at).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for node in [&trusting, &plain] {
        let r = node
            .http
            .put(node.at(&format!("/v1/functions/web?allow_hosts={host}")))
            .body(std::fs::read(guests::WEB).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let url = format!("https://{host}/hello-http/");
    assert_eq!(
        fetch(&trusting, url.clone()).await,
        (200, "hello, world\n".to_owned())
    );
    // Several in a row, each on a connection of its own.
    for _ in 0..3 {
        assert_eq!(fetch(&trusting, url.clone()).await.0, 200);
    }
    let (status, body) = fetch(&plain, url.clone()).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.to_lowercase().contains("tls") || body.contains("certificate"),
        "{body}"
    );
    // The allow-list still holds with the CA: another port is another host.
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let elsewhere = format!("https://127.0.0.1:{}/hello-http/", port + 1);
    let (status, body) = fetch(&trusting, elsewhere).await;
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    // A CA file with no certificate stops the node with a message.
    let fresh = tempfile::tempdir().unwrap();
    let empty = fresh.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let said = support::serve_refuses(fresh.path(), &["--tls-ca", empty.to_str().unwrap()]);
    assert!(said.contains("certificate"), "{said}");
}
