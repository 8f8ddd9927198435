//! MQTT triggers: the node subscribes to topic filters on a broker and calls
//! a function per message, in the session named after the message's topic,
//! optionally publishing the output to a reply topic.
//!
//! Delivery is at least once and in order per topic: subscriptions are QoS
//! 1 on a persistent session (the client id is stable for a data dir), and
//! a message is acknowledged to the broker only once its call finished — a
//! node that dies before gets it again when it reconnects. Messages of one
//! topic are called one after another; different topics run side by side.

use crate::{Outcome, ParseError, call};
use edge_core::Node;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Topics are spread over this many ordered lanes (a topic always takes
/// the same one).
const LANES: usize = 16;
/// A call the node could not run now is tried this many times in all.
const TRIES: u32 = 8;

/// Where the broker is: `mqtt://[user:password@]host[:port]` (port 1883
/// by default), or `mqtts://…` for TLS (port 8883 by default).
#[derive(Clone, PartialEq, Eq)]
pub struct MqttBroker {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Over TLS.
    pub tls: bool,
    /// User name and password the broker asks for, if any.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: settings are logged.
        f.debug_struct("MqttBroker")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl FromStr for MqttBroker {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = match (s.strip_prefix("mqtt://"), s.strip_prefix("mqtts://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(ParseError(format!(
                    "{s:?}: expected mqtt://host[:port] or mqtts://host[:port]"
                )));
            }
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((user_pass, host)) => {
                let (user, pass) = user_pass.split_once(':').ok_or_else(|| {
                    ParseError(format!("expected user:password@ before the host in {s:?}"))
                })?;
                (Some((user.to_owned(), pass.to_owned())), host)
            }
            None => (None, rest),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| ParseError(format!("{s:?}: bad port {p:?}")))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(ParseError(format!("{s:?}: no host")));
        }
        Ok(MqttBroker {
            host: host.to_owned(),
            port,
            tls,
            credentials,
        })
    }
}

/// `FILTER=FUNCTION[>REPLY]`: messages on topics matching FILTER (MQTT
/// wildcards `+` and `#`; `$share/GROUP/…` spreads them over the nodes of a
/// group) call FUNCTION; with REPLY, each output is published there, with
/// `{topic}` replaced by the message's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTrigger {
    /// The subscription's topic filter.
    pub filter: String,
    /// The function called per message.
    pub function: String,
    /// Where outputs are published.
    pub reply: Option<String>,
}

impl FromStr for MqttTrigger {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            |why: &str| ParseError(format!("{s:?}: {why} (expected FILTER=FUNCTION[>REPLY])"));
        let (filter, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        let (function, reply) = match rest.split_once('>') {
            Some((f, r)) => (f, Some(r.to_owned())),
            None => (rest, None),
        };
        if filter.is_empty() || function.is_empty() || reply.as_deref() == Some("") {
            return Err(bad("empty part"));
        }
        if !edge_core::registry::valid_name(function) {
            return Err(bad("invalid function name"));
        }
        if reply.as_deref().is_some_and(|r| r.contains(['+', '#'])) {
            return Err(bad("a reply topic cannot have wildcards"));
        }
        Ok(MqttTrigger {
            filter: filter.to_owned(),
            function: function.to_owned(),
            reply,
        })
    }
}

impl MqttTrigger {
    /// True when `topic` matches this trigger's filter.
    pub fn matches(&self, topic: &str) -> bool {
        let filter = match self.filter.strip_prefix("$share/") {
            Some(shared) => shared.split_once('/').map_or("", |(_, f)| f),
            None => &self.filter,
        };
        let mut levels = topic.split('/');
        for want in filter.split('/') {
            match (want, levels.next()) {
                ("#", _) => return true,
                ("+", Some(_)) => {}
                (w, Some(got)) if w == got => {}
                _ => return false,
            }
        }
        levels.next().is_none()
    }

    /// The session a message on `topic` is called in: the topic with `/`
    /// made `.` and any other character a session id cannot hold made `_`.
    pub fn session_for(&self, topic: &str) -> String {
        let id: String = topic
            .chars()
            .map(|c| match c {
                '/' => '.',
                c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => c,
                _ => '_',
            })
            .take(128)
            .collect();
        if id.is_empty() { "_".into() } else { id }
    }

    /// Where the output of a message on `topic` is published, if anywhere.
    pub fn reply_for(&self, topic: &str) -> Option<String> {
        self.reply.as_ref().map(|r| r.replace("{topic}", topic))
    }
}

/// The client id of the node whose data lives in `data_dir`: stable across
/// restarts, so the broker keeps its session (and what came meanwhile).
pub fn client_id(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let digest = sha2::Sha256::digest(path.to_string_lossy().as_bytes());
    format!("edge-node-{}", &hex::encode(digest)[..16])
}

/// What the node subscribes to, and how it connects.
pub struct Subscription {
    /// The broker.
    pub broker: MqttBroker,
    /// The subscriptions.
    pub triggers: Vec<MqttTrigger>,
    /// The node's client id (see [`client_id`]).
    pub client_id: String,
    /// The certificate chain and key (PEM) presented to an `mqtts://`
    /// broker that asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Subscribes `node` to the triggers on the broker for as long as the
/// process runs, reconnecting (and resubscribing) after a lost connection.
/// Over TLS, the broker's certificate must come from the node's
/// `tls_roots` when it has some, else from an authority the system trusts;
/// with an identity, the node presents it (mutual TLS).
pub fn spawn(node: Arc<Node>, subscription: Subscription) {
    let Subscription {
        broker,
        triggers,
        client_id,
        identity,
    } = subscription;
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    if let Some((user, password)) = &broker.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    if broker.tls {
        let tls = match &node.config().tls_roots {
            Some(pem) => rumqttc::TlsConfiguration::Simple {
                ca: pem.clone(),
                alpn: None,
                client_auth: identity,
            },
            None => rumqttc::TlsConfiguration::default(),
        };
        options.set_transport(rumqttc::Transport::tls_with_config(tls));
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let triggers = Arc::new(triggers);
    // Unbounded, yet bounded in fact: the broker sends no more QoS 1
    // messages than its in-flight window until they are acknowledged.
    let lanes: Vec<mpsc::UnboundedSender<Publish>> = (0..LANES)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(lane(rx, node.clone(), client.clone(), triggers.clone()));
            tx
        })
        .collect();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(broker = %broker.host, port = broker.port, "MQTT connected");
                    let (client, triggers) = (client.clone(), triggers.clone());
                    tokio::spawn(async move {
                        for t in triggers.iter() {
                            if let Err(e) = client.subscribe(&t.filter, QoS::AtLeastOnce).await {
                                tracing::warn!(filter = %t.filter, error = %e, "MQTT subscribe failed");
                            }
                        }
                    });
                }
                Ok(Event::Incoming(Packet::Publish(message))) => {
                    let lane = lane_of(&message.topic);
                    // A lane ends only with the process.
                    let _ = lanes[lane].send(message);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(broker = %broker.host, error = %e, "MQTT connection lost; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

fn lane_of(topic: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    (h.finish() % LANES as u64) as usize
}

/// Calls each message of one lane in turn, then acknowledges it.
async fn lane(
    mut rx: mpsc::UnboundedReceiver<Publish>,
    node: Arc<Node>,
    client: AsyncClient,
    triggers: Arc<Vec<MqttTrigger>>,
) {
    while let Some(message) = rx.recv().await {
        if let Some(t) = triggers.iter().find(|t| t.matches(&message.topic)) {
            deliver(&node, &client, t, &message).await;
        }
        if let Err(e) = client.ack(&message).await {
            tracing::warn!(topic = %message.topic, error = %e, "MQTT ack failed");
        }
    }
}

/// One message: its call (tried again while the node is busy), then its
/// reply.
#[tracing::instrument(skip_all, fields(topic = %message.topic, function = %t.function))]
async fn deliver(node: &Node, client: &AsyncClient, t: &MqttTrigger, message: &Publish) {
    let session = t.session_for(&message.topic);
    let mut wait = Duration::from_millis(100);
    let metrics = node.metrics();
    let count = |outcome: &str| {
        metrics
            .trigger_calls
            .with_label_values(&["mqtt", outcome])
            .inc();
    };
    for attempt in 1..=TRIES {
        match call(node, &t.function, &session, message.payload.to_vec()).await {
            Outcome::Done(output) => {
                count("done");
                if let Some(reply) = t.reply_for(&message.topic) {
                    let published = client.publish(reply, QoS::AtLeastOnce, false, output).await;
                    if let Err(e) = &published {
                        tracing::warn!(error = %e, "MQTT reply not published");
                    }
                    let outcome = if published.is_ok() {
                        "published"
                    } else {
                        "failed"
                    };
                    metrics.trigger_replies.with_label_values(&[outcome]).inc();
                }
                return;
            }
            Outcome::Failed(why) => {
                count("failed");
                tracing::warn!(error = %why, "triggered call failed");
                return;
            }
            Outcome::Busy(why) if attempt < TRIES => {
                count("retried");
                tracing::debug!(error = %why, attempt, "node busy; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Outcome::Busy(why) => {
                count("dropped");
                tracing::error!(error = %why, "triggered call dropped after {TRIES} tries");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filters_match_like_mqtt() {
        let t = |f: &str| MqttTrigger::from_str(&format!("{f}=fn")).unwrap();
        assert!(t("a/+/c").matches("a/b/c"));
        assert!(!t("a/+/c").matches("a/b/d") && !t("a/+/c").matches("a/b/c/d"));
        assert!(t("a/#").matches("a/b/c") && t("a/#").matches("a"));
        assert!(t("#").matches("x/y"));
        assert!(t("$share/g/a/+").matches("a/b"));
        assert!(!t("a/b").matches("a"));
    }

    #[test]
    fn bad_triggers_and_brokers_are_named() {
        for bad in ["nofunction", "=f", "t=", "t=F", "t=f>", "t=f>a/+"] {
            assert!(bad.parse::<MqttTrigger>().is_err(), "{bad}");
        }
        assert_eq!(
            "mqtt://10.0.0.2".parse::<MqttBroker>().unwrap(),
            MqttBroker {
                host: "10.0.0.2".into(),
                port: 1883,
                tls: false,
                credentials: None
            }
        );
        let b: MqttBroker = "mqtt://plant:s3:cr3t@broker.local:8883".parse().unwrap();
        assert_eq!(b.credentials, Some(("plant".into(), "s3:cr3t".into())));
        assert_eq!((b.host.as_str(), b.port), ("broker.local", 8883));
        assert!(!format!("{b:?}").contains("s3"), "{b:?}");
        let b: MqttBroker = "mqtts://broker.local".parse().unwrap();
        assert!(b.tls && b.port == 8883);
        for bad in ["tcp://x:1", "mqtt://", "mqtt://h:port", "mqtt://user@h"] {
            assert!(bad.parse::<MqttBroker>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sessions_are_valid_ids_named_after_topics() {
        let t: MqttTrigger = "#=fn".parse().unwrap();
        assert_eq!(t.session_for("plant 1/ä/temp"), "plant_1._.temp");
        assert!(t.session_for(&"x".repeat(500)).len() == 128);
    }
}
