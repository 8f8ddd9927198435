//! The `serve` settings, each written once below: its flag (and environment
//! variable), its key in the config file (the same name in kebab-case), and
//! its default. Three layers of the same type — the command line, the file
//! (`--config`), the profile (`--profile`) — are laid over each other, highest
//! first, and whatever none of them sets takes its default.

use crate::serve::Profile;
use edge_core::RemoteStore;
use edge_triggers::{MqttBroker, MqttTrigger, TimerTrigger};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Declares [`Layer`] (every setting optional: a flag, a file key) and
/// [`Settings`] (every setting resolved) from one list. Settings with a
/// default come first; those without one stay `Option`s.
macro_rules! settings {
    (
        defaults { $( $(#[$da:meta])* $d:ident : $dty:ty = $default:expr; )* }
        optional { $( $(#[$oa:meta])* $o:ident : $oty:ty; )* }
    ) => {
        /// One layer of settings; `None`: this layer does not say.
        #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Layer {
            $( $(#[$da])* pub $d: Option<$dty>, )*
            $( $(#[$oa])* pub $o: Option<$oty>, )*
        }

        /// Every setting, resolved.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( pub $d: $dty, )*
            $( pub $o: Option<$oty>, )*
        }

        impl Layer {
            /// This layer over `lower`: what this one says wins.
            pub fn over(self, lower: Layer) -> Layer {
                Layer {
                    $( $d: self.$d.or(lower.$d), )*
                    $( $o: self.$o.or(lower.$o), )*
                }
            }

            /// Each setting that has a default, with it as `--help` shows it.
            pub fn defaults() -> Vec<(&'static str, String)> {
                vec![ $( (stringify!($d), Show::show(&{ let v: $dty = $default; v })), )* ]
            }

            /// What no layer said takes its default.
            pub fn resolve(self) -> Settings {
                Settings {
                    $( $d: self.$d.unwrap_or_else(|| $default), )*
                    $( $o: self.$o, )*
                }
            }
        }
    };
}

settings! {
    defaults {
        /// Preset sizes for the machine: `default`, or `pi` (32 instances of
        /// at most 64 MiB, one compilation at a time, 8 MiB sled cache,
        /// 16 local sessions).
        #[arg(long, value_enum)]
        profile: Profile = Profile::Default;
        /// Address to listen on (port 0 picks a free one; the address is
        /// printed).
        #[arg(long, env = "EDGE_LISTEN")]
        listen: String = "127.0.0.1:7878".into();
        /// Where functions, artifacts and state are kept.
        #[arg(long, env = "EDGE_DATA_DIR")]
        data_dir: PathBuf = PathBuf::from("./edge-data");
        /// Wall-clock limit of one invocation, in milliseconds.
        #[arg(long)]
        deadline_ms: u64 = 5000;
        /// Largest component upload, in bytes.
        #[arg(long)]
        max_upload_bytes: usize = 64 << 20;
        /// Largest invocation body, in bytes.
        #[arg(long)]
        max_invoke_bytes: usize = 8 << 20;
        /// Instances alive at once (the pooling allocator's size).
        #[arg(long)]
        max_instances: u32 = 128;
        /// Largest linear memory of an instance, in MiB.
        #[arg(long)]
        max_memory_mib: usize = 128;
        /// Components compiled at once.
        #[arg(long)]
        compile_concurrency: usize = 2;
        /// Wall-clock limit of one compilation, in seconds (an upload past
        /// it gets 422).
        #[arg(long)]
        compile_timeout_secs: u64 = 30;
        /// Address-space limit of the compiler process, in MiB.
        #[arg(long)]
        compile_memory_mib: u64 = 2048;
        /// Compile inside the node process instead of a limited child process.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        compile_in_process: bool = false;
        /// Allocate instances on demand instead of from a pool.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        no_pooling: bool = false;
        /// sled's page cache, in MiB.
        #[arg(long)]
        sled_cache_mib: u64 = 32;
        /// State kept in memory in front of sled, in MiB (0: none); local
        /// sessions read from it.
        #[arg(long)]
        state_cache_mib: u64 = 16;
        /// Seconds a client may take to send request headers.
        #[arg(long)]
        header_timeout_secs: u64 = 10;
        /// Log as JSON lines instead of text.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        log_json: bool = false;
        /// Where remote-state sessions keep state: `local` (this node's
        /// sled), `redis://host:port`, or `http://peer:port` (another
        /// edge-node).
        #[arg(long, env = "EDGE_REMOTE_STORE")]
        #[serde(default, deserialize_with = "from_text")]
        remote_store: RemoteStore = RemoteStore::Local;
        /// Invocations admitted at once; beyond it calls get 503 `overloaded`
        /// (with Retry-After) instead of queueing.
        #[arg(long)]
        max_pending_invocations: usize = 512;
        /// Sessions in local-state mode at once (beyond: served remote,
        /// reason `capacity`).
        #[arg(long)]
        max_local_sessions: usize = 64;
        /// Seconds a pinned instance may sit idle before it is dropped.
        #[arg(long)]
        pin_ttl_secs: u64 = 300;
        /// A local session idle this many milliseconds gives its place to a
        /// session that asks for local-state mode when every place is taken
        /// (its state moves to the remote store; it asks again on its next
        /// call).
        #[arg(long)]
        demote_idle_ms: u64 = 60_000;
        /// A remote-state session called at least this many times a second
        /// is made local by the node (taking a free or idle place); 0: never.
        #[arg(long)]
        promote_calls_per_sec: f64 = 0.0;
        /// Every this many milliseconds the orchestrator plans which sessions
        /// are local from measured call rates, service times and
        /// remote-store cost, and promotes or demotes them; 0: off.
        #[arg(long)]
        orchestrate_ms: u64 = 0;
        /// A call that finds every instance slot held waits for one instead
        /// of dropping an idle pinned instance.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        no_pressure_evict: bool = false;
        /// In a cluster (a shared Redis): every this many milliseconds, the
        /// local sessions changed since are copied to Redis, so a node taking
        /// a session over from an owner that died loses at most that much;
        /// 0: only when a session becomes local.
        #[arg(long)]
        snapshot_ms: u64 = 5_000;
        /// Another node, for workflows: NAME=URL (repeatable; in the file, a
        /// `[peers]` table of NAME = "URL").
        #[arg(long = "peer", value_parser = parse_peer)]
        #[serde(default, deserialize_with = "peers_table")]
        peers: Vec<(String, String)> = Vec::new();
        /// Let GET requests that describe functions, sessions and the node
        /// in without a token.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        open_reads: bool = false;
        /// Let invocations in without a token.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        open_invoke: bool = false;
        /// A call whose guest code has run across this many epoch ticks (5 ms
        /// each) moves to the background threads (`SCHED_IDLE`: every other
        /// thread goes first), and its function starts its calls there for
        /// 10 s; 0 runs every call where it started.
        #[arg(long)]
        background_after_ticks: u32 = 2;
        /// Background threads; 0 means one fewer than the cores, at least
        /// one (a core stays free of long guest code).
        #[arg(long)]
        background_threads: usize = 0;
        /// Call a function per MQTT message: FILTER=FUNCTION[>REPLY]
        /// (repeatable; needs --mqtt-broker). The session is the topic with
        /// `/` made `.`; REPLY (`{topic}` is replaced) gets each output.
        #[arg(long = "mqtt-trigger")]
        #[serde(default, deserialize_with = "from_texts")]
        mqtt_triggers: Vec<MqttTrigger> = Vec::new();
        /// Call a function on a timer: WHEN=FUNCTION[@SESSION], WHEN an
        /// interval (250ms, 10s, 5m, 1h) or a cron expression in UTC
        /// ('*/5 * * * *', six fields with seconds first, @daily)
        /// (repeatable; the session defaults to timer.FUNCTION).
        #[arg(long = "timer-trigger")]
        #[serde(default, deserialize_with = "from_texts")]
        timer_triggers: Vec<TimerTrigger> = Vec::new();
    }
    optional {
        /// The URL other nodes reach this one at (default: http://<listen address>).
        #[arg(long, env = "EDGE_PUBLIC_URL")]
        public_url: String;
        /// Token clients must present (`Authorization: Bearer …`) on /v1 routes.
        #[arg(long, env = "EDGE_TOKEN", hide_env_values = true)]
        token: String;
        /// Token the nodes of a cluster present to each other (and accept).
        #[arg(long, env = "EDGE_CLUSTER_TOKEN", hide_env_values = true)]
        cluster_token: String;
        /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
        /// --tls-key.
        #[arg(long, env = "EDGE_TLS_CERT")]
        tls_cert: PathBuf;
        /// The private key of --tls-cert (PEM).
        #[arg(long, env = "EDGE_TLS_KEY")]
        tls_key: PathBuf;
        /// Certificate authorities (PEM) to trust for `https://` peers,
        /// members and guests' outgoing requests besides the system's: the
        /// cluster's own CA.
        #[arg(long, env = "EDGE_TLS_CA")]
        tls_ca: PathBuf;
        /// Mutual TLS among nodes: ask clients for a certificate from these
        /// authorities (PEM) and require one on the routes nodes use among
        /// themselves (needs --tls-cert, which the node presents in turn).
        #[arg(long, env = "EDGE_TLS_CLIENT_CA")]
        tls_client_ca: PathBuf;
        /// The MQTT broker the --mqtt-trigger subscriptions use:
        /// mqtt://[user:password@]host[:port], or mqtts://… for TLS
        /// (trusting --tls-ca when given).
        #[arg(long, env = "EDGE_MQTT_BROKER")]
        #[serde(default, deserialize_with = "from_text")]
        mqtt_broker: MqttBroker;
        /// The certificate chain (PEM) the node presents to an mqtts://
        /// broker that asks for one (mutual TLS); needs --mqtt-client-key
        /// and --tls-ca (the authority of the broker's certificate).
        #[arg(long, env = "EDGE_MQTT_CLIENT_CERT")]
        mqtt_client_cert: PathBuf;
        /// The private key of --mqtt-client-cert (PEM).
        #[arg(long, env = "EDGE_MQTT_CLIENT_KEY")]
        mqtt_client_key: PathBuf;
    }
}

impl Profile {
    /// What the profile changes from the defaults.
    pub fn preset(self) -> Layer {
        match self {
            Profile::Default => Layer::default(),
            Profile::Pi => Layer {
                max_instances: Some(32),
                max_memory_mib: Some(64),
                compile_concurrency: Some(1),
                compile_memory_mib: Some(768),
                sled_cache_mib: Some(8),
                state_cache_mib: Some(4),
                max_local_sessions: Some(16),
                max_pending_invocations: Some(128),
                ..Layer::default()
            },
        }
    }
}

/// A default as `--help` shows it.
trait Show {
    fn show(&self) -> String;
}

macro_rules! show_display {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
show_display!(u32, u64, usize, f64, bool, String);

impl Show for PathBuf {
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl Show for Profile {
    fn show(&self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

impl Show for RemoteStore {
    fn show(&self) -> String {
        match self {
            RemoteStore::Local => "local".into(),
            RemoteStore::Redis(url) | RemoteStore::Peer(url) => url.clone(),
        }
    }
}

impl Show for Vec<(String, String)> {
    fn show(&self) -> String {
        let peers: Vec<String> = self.iter().map(|(n, u)| format!("{n}={u}")).collect();
        if peers.is_empty() {
            "none".into()
        } else {
            peers.join(",")
        }
    }
}

impl Show for Vec<MqttTrigger> {
    fn show(&self) -> String {
        format!("{} given", self.len())
    }
}

impl Show for Vec<TimerTrigger> {
    fn show(&self) -> String {
        format!("{} given", self.len())
    }
}

/// `NAME=URL`, the URL http(s), without a trailing slash.
pub fn parse_peer(s: &str) -> Result<(String, String), String> {
    let (name, url) = s.split_once('=').ok_or("expected NAME=URL")?;
    if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("expected NAME=http://host:port, got {s:?}"));
    }
    Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
}

/// A `[peers]` table of the file.
fn peers_table<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<(String, String)>>, D::Error> {
    let table = BTreeMap::<String, String>::deserialize(d)?;
    table
        .iter()
        .map(|(n, u)| parse_peer(&format!("{n}={u}")))
        .collect::<Result<_, _>>()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A setting the file gives as text and its type parses.
fn from_text<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err: std::fmt::Display>,
{
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// A list the file gives as texts, each of which its type parses.
fn from_texts<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err: std::fmt::Display>,
{
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| t.parse().map_err(serde::de::Error::custom))
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        layer: Layer,
    }

    fn flags(args: &[&str]) -> Layer {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).unwrap().layer
    }

    #[test]
    fn flags_over_file_over_profile_over_defaults() {
        let file: Layer = toml::from_str(
            "deadline-ms = 7000\nmax-instances = 8\nopen-reads = true\n[peers]\nb = \"http://b:1/\"\n",
        )
        .unwrap();
        let cli = flags(&["--deadline-ms", "9000", "--no-pooling", "--profile", "pi"]);
        let s = cli.over(file).over(Profile::Pi.preset()).resolve();
        assert_eq!(s.deadline_ms, 9000, "the flag wins over the file");
        assert_eq!(s.max_instances, 8, "the file wins over the profile");
        assert_eq!(s.sled_cache_mib, 8, "the profile wins over the default");
        assert_eq!(s.pin_ttl_secs, 300, "the default when nobody says");
        assert!(s.no_pooling && s.open_reads && !s.open_invoke);
        assert_eq!(s.peers, vec![("b".into(), "http://b:1".into())]);
        assert_eq!(s.profile, Profile::Pi);
        assert_eq!(s.token, None);
    }

    #[test]
    fn the_example_config_parses_and_bad_keys_are_named() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/edge-node.toml");
        let layer: Layer = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(layer.profile, Some(Profile::Pi));
        assert_eq!(layer.remote_store, Some(RemoteStore::Local));
        assert_eq!(layer.orchestrate_ms, Some(1000));
        let e = toml::from_str::<Layer>("max-instancez = 3").unwrap_err();
        assert!(e.to_string().contains("max-instancez"), "{e}");
        let e = toml::from_str::<Layer>("remote-store = \"ftp://x\"").unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");
        let e = toml::from_str::<Layer>("[peers]\nb = \"b:1\"").unwrap_err();
        assert!(e.to_string().contains("NAME=http"), "{e}");
    }

    #[test]
    fn every_default_is_shown_once_per_setting() {
        let defaults = Layer::defaults();
        assert!(defaults.contains(&("listen", "127.0.0.1:7878".into())));
        assert!(defaults.contains(&("remote_store", "local".into())));
        assert!(defaults.contains(&("max_upload_bytes", (64u64 << 20).to_string())));
        let mut ids: Vec<_> = defaults.iter().map(|(id, _)| *id).collect();
        ids.dedup();
        assert_eq!(ids.len(), defaults.len());
    }
}
