//! Node configuration: every knob with a default that fits a small device.

use edge_host_api::StateLimits;
use std::path::PathBuf;
use std::time::Duration;

/// How the wasmtime engine and its instance pool are sized.
///
/// The pool reserves virtual address space up front: about
/// `max_instances × memories_per_instance × (max_memory_bytes + memory_guard_bytes)`.
/// The defaults (128 × 2 × (128 MiB + 2 MiB) ≈ 33 GiB) fit in the 512 GiB a
/// 39-bit aarch64 kernel (Raspberry Pi OS) gives a process, with headroom.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Component instances alive at once (the pool size).
    pub max_instances: u32,
    /// Linear memories an instance may have.
    pub memories_per_instance: u32,
    /// Largest linear memory a guest may grow to (also the per-store cap).
    pub max_memory_bytes: usize,
    /// Guard region after each linear memory.
    pub memory_guard_bytes: u64,
    /// Largest wasm stack before a stack-overflow trap.
    pub max_wasm_stack: usize,
    /// How often the epoch advances (the granularity of deadlines and yields).
    pub epoch_tick: Duration,
    /// Use the pooling allocator (otherwise on-demand allocation).
    pub pooling: bool,
}

impl EngineConfig {
    /// Virtual address space the instance pool reserves up front, in bytes:
    /// linear memory slots (with guards), async stacks and tables.
    pub fn reserved_address_space(&self) -> u64 {
        if !self.pooling {
            return 0;
        }
        let n = u64::from(self.max_instances);
        let memories = n
            * u64::from(self.memories_per_instance)
            * (self.max_memory_bytes as u64 + self.memory_guard_bytes);
        let stacks = n * (self.max_wasm_stack as u64 + (512 << 10) + 4096);
        let tables = n * 8 * 50_000 * 8;
        memories + stacks + tables
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            memories_per_instance: 2,
            max_memory_bytes: 128 << 20,
            memory_guard_bytes: 2 << 20,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(5),
            pooling: true,
        }
    }
}

/// Where remote-state sessions keep their state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteStore {
    /// This node's own sled (the embedded default).
    Local,
    /// An external Redis server, `redis://host:port[/db]`.
    Redis(String),
    /// Another edge-node's state server, `http://host:port`.
    Peer(String),
}

impl std::str::FromStr for RemoteStore {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" | "" => Ok(RemoteStore::Local),
            _ if s.starts_with("redis://") || s.starts_with("rediss://") => {
                Ok(RemoteStore::Redis(s.to_owned()))
            }
            _ if s.starts_with("http://") || s.starts_with("https://") => {
                Ok(RemoteStore::Peer(s.to_owned()))
            }
            _ => Err(format!(
                "remote store {s:?}: expected `local`, redis://… or http://…"
            )),
        }
    }
}

/// The tokens a node takes and presents, and what is open without one.
/// Its `Debug` does not show the tokens.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// The token clients present.
    pub token: Option<String>,
    /// The token nodes of one cluster present to each other.
    pub cluster_token: Option<String>,
    /// GET routes describing functions, sessions and the node need no token.
    pub open_reads: bool,
    /// Invocation needs no token.
    pub open_invoke: bool,
    /// The routes nodes use among themselves also need a client certificate
    /// the server verified (mutual TLS, `--tls-client-ca`): a leaked cluster
    /// token alone does not let anyone pose as a node.
    pub peer_certificates: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |t: &Option<String>| t.as_ref().map(|_| "<set>");
        f.debug_struct("AuthConfig")
            .field("token", &shown(&self.token))
            .field("cluster_token", &shown(&self.cluster_token))
            .field("open_reads", &self.open_reads)
            .field("open_invoke", &self.open_invoke)
            .field("peer_certificates", &self.peer_certificates)
            .finish()
    }
}

/// A PEM certificate chain and its private key; its `Debug` shows neither.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first (PEM).
    pub cert: Vec<u8>,
    /// Its private key (PEM).
    pub key: Vec<u8>,
}

impl TlsIdentity {
    /// The chain and the key in one PEM buffer.
    pub fn pem(&self) -> Vec<u8> {
        let mut pem = self.cert.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&self.key);
        pem
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(<certificate and key>)")
    }
}

impl AuthConfig {
    /// True when any token is configured.
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.cluster_token.is_some()
    }

    /// The token this node presents to its peers.
    pub fn outgoing(&self) -> Option<&str> {
        self.cluster_token.as_deref().or(self.token.as_deref())
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where functions, artifacts and state live.
    pub data_dir: PathBuf,
    /// Engine and pool sizing.
    pub engine: EngineConfig,
    /// Wall-clock limit of one invocation.
    pub invoke_deadline: Duration,
    /// Largest component a client may upload.
    pub max_upload_bytes: usize,
    /// Largest invocation body.
    pub max_invoke_bytes: usize,
    /// How uploads are compiled: concurrency, isolation and limits.
    pub compile: crate::compile::CompileConfig,
    /// Invocations admitted at once (running, or waiting for an instance
    /// or their session); beyond it a call is shed with 503 at once
    /// instead of queueing without bound.
    pub max_pending_invocations: usize,
    /// Guest-visible state limits.
    pub state_limits: StateLimits,
    /// sled's page cache.
    pub sled_cache_bytes: u64,
    /// State records kept in memory in front of sled (0: none): a local
    /// session's reads are served from memory.
    pub state_cache_bytes: u64,
    /// Bytes of guest stdout/stderr logged per invocation; the rest is dropped.
    pub guest_log_bytes: usize,
    /// Where remote-state sessions keep their state.
    pub remote_store: RemoteStore,
    /// Sessions in local-state mode at once; beyond it, sessions asking for
    /// local-state are served remote-state (reason `capacity`).
    pub max_local_sessions: usize,
    /// A pinned instance idle this long is dropped (its state stays).
    pub pin_ttl: Duration,
    /// A local session idle this long gives its place to a session that
    /// asks for local-state mode when every place is taken.
    pub demote_idle: Duration,
    /// With a directory, local sessions changed since the last snapshot are
    /// copied to the remote store this often (zero: never).
    pub snapshot: Duration,
    /// A remote session called at least this often (per second) is made
    /// local by the node; 0: never.
    pub promote_calls_per_sec: f64,
    /// How often the orchestrator plans which sessions are local, from
    /// measured call rates and service times (zero: it is off).
    pub orchestrate: Duration,
    /// A call that finds every instance slot held drops the idle pinned
    /// instance idle the longest; off, it waits for a slot (a local
    /// session's instance is then its own, like a dedicated container).
    pub pressure_evict: bool,
    /// The URL other nodes reach this one at (shown as a session's owner).
    pub public_url: Option<String>,
    /// Other nodes, by name, for workflows: `(name, url)`.
    pub peers: Vec<(String, String)>,
    /// Tokens and what is open without one.
    pub auth: AuthConfig,
    /// When long and misbehaving calls move to background priority.
    pub sched: crate::sched::SchedConfig,
    /// Certificate authorities (PEM) trusted for `https://` nodes besides
    /// the system's: a cluster's own CA.
    pub tls_roots: Option<Vec<u8>>,
    /// What the node presents when another node or a `rediss://` Redis asks
    /// it for a client certificate (mutual TLS): its own `--tls-cert` and
    /// `--tls-key`.
    pub tls_identity: Option<TlsIdentity>,
}

impl NodeConfig {
    /// The URL other nodes reach this node at: `public_url`, or the default
    /// listen address.
    pub fn url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:7878".into())
    }

    /// Defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            engine: EngineConfig::default(),
            invoke_deadline: Duration::from_secs(5),
            max_upload_bytes: 64 << 20,
            max_invoke_bytes: 8 << 20,
            compile: crate::compile::CompileConfig::default(),
            max_pending_invocations: 512,
            state_limits: StateLimits::default(),
            sled_cache_bytes: 32 << 20,
            state_cache_bytes: 16 << 20,
            guest_log_bytes: 16 << 10,
            remote_store: RemoteStore::Local,
            max_local_sessions: 64,
            pin_ttl: Duration::from_secs(300),
            demote_idle: Duration::from_secs(60),
            snapshot: Duration::from_secs(5),
            promote_calls_per_sec: 0.0,
            orchestrate: Duration::ZERO,
            pressure_evict: true,
            public_url: None,
            peers: Vec::new(),
            auth: AuthConfig::default(),
            sched: crate::sched::SchedConfig::default(),
            tls_roots: None,
            tls_identity: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_secret() {
        let auth = AuthConfig {
            token: Some("client-secret".into()),
            cluster_token: Some("cluster-secret".into()),
            ..AuthConfig::default()
        };
        let identity = TlsIdentity {
            cert: b"-----BEGIN CERTIFICATE-----\ncert".to_vec(),
            key: b"-----BEGIN PRIVATE KEY-----\nkey-secret".to_vec(),
        };
        let config = NodeConfig {
            auth,
            tls_identity: Some(identity),
            ..NodeConfig::new("/tmp/unused")
        };
        let shown = format!("{config:?}");
        for secret in ["client-secret", "cluster-secret", "key-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("cluster_token: Some(\"<set>\")"), "{shown}");
    }
}
