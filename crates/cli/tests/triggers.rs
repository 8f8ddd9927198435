//! Triggers besides HTTP: MQTT messages from a real broker (mosquitto, on
//! a free port) and timers call functions.
#![allow(clippy::unwrap_used)]

mod support;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Mosquitto, TestNode, free_addr, guests};

/// A test client subscribed to `filter`; the replies it receives arrive on
/// the returned channel as (topic, payload).
/// How the test's own client speaks TLS: the CA it trusts, and the
/// certificate and key it presents if any.
struct Tls<'a> {
    ca: &'a str,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

async fn listener(
    port: u16,
    filter: &str,
    login: Option<(&str, &str)>,
    tls: Option<Tls<'_>>,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let mut options = MqttOptions::new(format!("test-{}", std::process::id()), "127.0.0.1", port);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    if let Some(tls) = tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca: tls.ca.as_bytes().to_vec(),
                alpn: None,
                client_auth: tls.identity,
            },
        ));
    }
    let (client, mut events) = AsyncClient::new(options, 256);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    tokio::spawn(async move {
        loop {
            let event = match events.poll().await {
                Ok(event) => event,
                Err(e) => {
                    eprintln!("test client: {e}");
                    break;
                }
            };
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let text = String::from_utf8_lossy(&p.payload).into_owned();
                    let _ = tx.send((p.topic.clone(), text));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .unwrap()
        .unwrap();
    (client, rx)
}

/// Collects `n` replies (at most `limit` to wait), by topic in arrival order.
async fn replies(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    n: usize,
    limit: Duration,
) -> BTreeMap<String, Vec<String>> {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let until = Instant::now() + limit;
    for _ in 0..n {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(Some((topic, payload))) = tokio::time::timeout(left, rx.recv()).await else {
            panic!("only {got:?} within {limit:?}");
        };
        got.entry(topic).or_default().push(payload);
    }
    got
}

/// Publishes to `topic` until a reply comes (the node subscribes once it
/// is connected), at most 10 s.
async fn answered(
    client: &AsyncClient,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    topic: &str,
) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        client
            .publish(topic, QoS::AtLeastOnce, false, "")
            .await
            .unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            return;
        }
        assert!(Instant::now() < until, "the node never answered on {topic}");
    }
}

fn counting(from: u64, to: u64) -> Vec<String> {
    (from..=to).map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn mqtt_messages_call_a_function_per_topic_in_order_at_least_once() {
    let broker = Mosquitto::start().await;
    let data = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let args = [
        "--mqtt-broker",
        &broker.url(),
        "--mqtt-trigger",
        "sensors/+/temp=counter>counts/{topic}",
    ];
    let node = TestNode::start_at(data.path(), &listen, &args).await;
    node.deploy("counter", guests::COUNTER).await;
    let (client, mut rx) = listener(broker.port, "counts/#", None, None).await;
    answered(&client, &mut rx, "sensors/probe/temp").await;

    // 30 messages on one sensor, 20 on another, interleaved: each topic is
    // its own session, counted in order.
    for i in 0..30 {
        client
            .publish("sensors/a/temp", QoS::AtLeastOnce, false, "")
            .await
            .unwrap();
        if i < 20 {
            client
                .publish("sensors/b/temp", QoS::AtLeastOnce, false, "")
                .await
                .unwrap();
        }
    }
    let got = replies(&mut rx, 50, Duration::from_secs(30)).await;
    assert_eq!(got["counts/sensors/a/temp"], counting(1, 30));
    assert_eq!(got["counts/sensors/b/temp"], counting(1, 20));
    // The same session over HTTP.
    assert_eq!(
        node.invoke_ok("counter", Some("sensors.a.temp"), "").await,
        "31"
    );
    // Counted: the probe (however many it took) and the 50, each answered
    // and replied to.
    const CALLS: &str = "edge_trigger_calls_total";
    let done = node.metric_where(CALLS, r#"outcome="done""#).await;
    assert!(done >= 51.0, "{done}");
    assert_eq!(node.metric_where(CALLS, r#"outcome="failed""#).await, 0.0);
    let published = node
        .metric_where("edge_trigger_replies_total", r#"outcome="published""#)
        .await;
    // (A probe sent again may still be between its call and its reply.)
    assert!((51.0..=done).contains(&published), "{published} of {done}");

    // Messages sent while the node is down reach it when it is back (its
    // broker session persists), in order, none lost.
    node.stop().await;
    for _ in 0..10 {
        client
            .publish("sensors/a/temp", QoS::AtLeastOnce, false, "")
            .await
            .unwrap();
    }
    let node = TestNode::start_at(data.path(), &listen, &args).await;
    let got = replies(&mut rx, 10, Duration::from_secs(30)).await;
    assert_eq!(got["counts/sensors/a/temp"], counting(32, 41));
    assert!(node.healthy().await);
    assert_eq!(
        node.metric_where("edge_trigger_calls_total", r#"trigger="mqtt""#)
            .await,
        10.0
    );
}

#[tokio::test]
async fn a_broker_that_asks_for_a_password_gets_the_one_in_the_url() {
    let broker = Mosquitto::start_with_password("plant", "s3:cret").await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let url = |password: &str| format!("mqtt://plant:{password}@127.0.0.1:{}", broker.port);
    let node = TestNode::start(
        dirs[0].path(),
        &[
            "--mqtt-broker",
            &url("s3:cret"),
            "--mqtt-trigger",
            "probe/#=counter>echo/{topic}",
        ],
    )
    .await;
    node.deploy("counter", guests::COUNTER).await;
    let (client, mut rx) = listener(broker.port, "echo/#", Some(("plant", "s3:cret")), None).await;
    answered(&client, &mut rx, "probe/a").await;

    // With a wrong password the broker refuses the node, which serves on.
    let other = TestNode::start(
        dirs[1].path(),
        &[
            "--mqtt-broker",
            &url("nope"),
            "--mqtt-trigger",
            "other/#=counter>echo/{topic}",
        ],
    )
    .await;
    other.deploy("counter", guests::COUNTER).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {}
    client
        .publish("other/a", QoS::AtLeastOnce, false, "")
        .await
        .unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(1500), rx.recv()).await;
    assert!(nothing.is_err(), "{nothing:?}");
    assert!(other.healthy().await);
}

#[tokio::test]
async fn an_mqtts_broker_is_reached_over_tls_trusting_the_nodes_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ca = support::make_certificates(certs.path());
    let broker = Mosquitto::start_tls(certs.path()).await;
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let ca_file = certs.path().join("ca.pem").display().to_string();
    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        data.path(),
        &[
            "--mqtt-broker",
            &url,
            "--tls-ca",
            &ca_file,
            "--mqtt-trigger",
            "secure/#=counter>echo/{topic}",
        ],
    )
    .await;
    node.deploy("counter", guests::COUNTER).await;
    let tls = Tls {
        ca: &ca,
        identity: None,
    };
    let (client, mut rx) = listener(broker.port, "echo/#", None, Some(tls)).await;
    answered(&client, &mut rx, "secure/a").await;
    while rx.try_recv().is_ok() {}
    for _ in 0..3 {
        client
            .publish("secure/b", QoS::AtLeastOnce, false, "")
            .await
            .unwrap();
    }
    let got = replies(&mut rx, 3, Duration::from_secs(10)).await;
    assert_eq!(got["echo/secure/b"], counting(1, 3));
}

/// A broker that asks every client for a certificate: the node presents
/// its own (`--mqtt-client-cert`/`--mqtt-client-key`) and is served; a node
/// without one is refused at the handshake and calls nothing, yet keeps
/// serving. Settings that cannot work stop the node with a message.
#[tokio::test]
async fn a_broker_requiring_client_certificates_serves_the_node_that_has_one() {
    let certs = tempfile::tempdir().unwrap();
    let ca = support::make_certificates(certs.path());
    let broker = Mosquitto::start_mutual_tls(certs.path()).await;
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (ca_file, cert, key) = (file("ca.pem"), file("cert.pem"), file("key.pem"));
    let tls = ["--mqtt-broker", &url, "--tls-ca", &ca_file];
    let identity = ["--mqtt-client-cert", &cert, "--mqtt-client-key", &key];
    let data = tempfile::tempdir().unwrap();
    let trigger = ["--mqtt-trigger", "mutual/#=counter>echo/{topic}"];
    let node = TestNode::start(data.path(), &[&tls[..], &identity, &trigger].concat()).await;
    node.deploy("counter", guests::COUNTER).await;
    let pem = |name: &str| std::fs::read(certs.path().join(name)).unwrap();
    let own = Tls {
        ca: &ca,
        identity: Some((pem("cert.pem"), pem("key.pem"))),
    };
    let (client, mut rx) = listener(broker.port, "echo/#", None, Some(own)).await;
    answered(&client, &mut rx, "mutual/a").await;

    // Without a certificate: refused by the broker, nothing called.
    let bare_data = tempfile::tempdir().unwrap();
    let other = ["--mqtt-trigger", "bare/#=counter>echo/{topic}"];
    let bare = TestNode::start(bare_data.path(), &[&tls[..], &other].concat()).await;
    bare.deploy("counter", guests::COUNTER).await;
    for _ in 0..3 {
        client
            .publish("bare/x", QoS::AtLeastOnce, false, "")
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bare.metric("edge_trigger_calls_total").await, 0.0);
    assert!(bare.healthy().await);
    assert!(node.healthy().await);

    let refused = tempfile::tempdir().unwrap();
    let plain = "mqtt://127.0.0.1:1883";
    for (args, said) in [
        (
            vec![
                "--mqtt-broker",
                &url,
                "--tls-ca",
                &ca_file,
                "--mqtt-client-cert",
                &cert,
            ],
            "go together",
        ),
        (
            [&["--mqtt-broker", url.as_str()][..], &identity].concat(),
            "needs --tls-ca",
        ),
        (
            [
                &["--mqtt-broker", plain, "--tls-ca", &ca_file][..],
                &identity,
            ]
            .concat(),
            "mqtts://",
        ),
    ] {
        let message = support::serve_refuses(refused.path(), &args);
        assert!(message.contains(said), "{args:?}: {message}");
    }
}

#[tokio::test]
async fn a_timer_calls_its_function_at_its_interval() {
    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(data.path(), &["--timer-trigger", "100=counter@tick"]).await;
    node.deploy("counter", guests::COUNTER).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let count: u64 = node
        .invoke_ok("counter", Some("tick"), "")
        .await
        .parse()
        .unwrap();
    // ~14 ticks since the deploy; a slow machine may skip some.
    assert!((5..=20).contains(&count), "{count}");
    // Each tick is counted: the ones before the deploy failed (no such
    // function), the others called it.
    const CALLS: &str = "edge_trigger_calls_total";
    let done = node.metric_where(CALLS, r#"outcome="done""#).await;
    assert!(
        done >= (count - 1) as f64,
        "{done} done for a count of {count}"
    );
    assert_eq!(node.metric_where(CALLS, r#"outcome="dropped""#).await, 0.0);
}

#[tokio::test]
async fn a_cron_timer_calls_its_function_on_the_second_it_names() {
    let data = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        data.path(),
        &["--timer-trigger", "*/1 * * * * *=counter@each-second"],
    )
    .await;
    node.deploy("counter", guests::COUNTER).await;
    // Watch the calls counted: each lands just after a whole second of the
    // wall clock (an interval timer would land anywhere in the second).
    const CALLS: &str = "edge_trigger_calls_total";
    let mut seen = node.metric_where(CALLS, r#"outcome="done""#).await;
    let mut landed = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(15);
    while landed.len() < 3 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = node.metric_where(CALLS, r#"outcome="done""#).await;
        if done > seen {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_millis();
            landed.push(ms);
            seen = done;
        }
    }
    assert_eq!(landed.len(), 3, "calls seen after {landed:?} ms");
    assert!(
        landed.iter().all(|ms| *ms < 400),
        "{landed:?} ms past the second"
    );
    let count: u64 = node
        .invoke_ok("counter", Some("each-second"), "")
        .await
        .parse()
        .unwrap();
    assert!(count >= 3, "{count}");
    assert_eq!(node.metric_where(CALLS, r#"outcome="dropped""#).await, 0.0);
}

#[tokio::test]
async fn triggers_that_do_not_parse_stop_the_node_with_a_message() {
    let data = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--mqtt-trigger", "a/b=counter"], "needs --mqtt-broker"),
        (
            vec!["--mqtt-broker", "tcp://x", "--mqtt-trigger", "a=f"],
            "mqtt://",
        ),
        (vec!["--timer-trigger", "5=counter"], "10 ms"),
        (vec!["--timer-trigger", "0 0 30 2 *=counter"], "never fire"),
        (vec!["--timer-trigger", "61 * * * *=counter"], "minute 61"),
        (
            vec!["--mqtt-broker", "mqtt://x", "--mqtt-trigger", "a/b"],
            "FILTER=FUNCTION",
        ),
    ] {
        let stderr = support::serve_refuses(data.path(), &args);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
