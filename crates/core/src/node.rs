//! A node: one engine, one registry, one state store, one metrics registry.

use crate::config::{NodeConfig, RemoteStore};
use crate::engine::{EngineError, build_engine, build_linker, start_epoch_ticker};
use crate::metrics::{Metrics, MetricsError};
use crate::registry::{Registry, RegistryError};
use crate::session::{ModeOutcome, SessionError, SessionMode, Sessions, TakeOver, Trigger};
use edge_host_api::{StateStore, StoreError, Versioned};
use edge_proto::{KeyVersion, PeerClient, routes};
use edge_store_peer::PeerStore;
use edge_store_redis::RedisStore;
use edge_store_sled::{SledStore, SledWriter};
use std::sync::Arc;
use tokio::sync::Semaphore;
use wasmtime::Engine;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The engine could not be configured.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The registry could not be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The database could not be opened.
    #[error("database: {0}")]
    Storage(String),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The remote store could not be reached or the sessions loaded.
    #[error("sessions: {0}")]
    Sessions(#[from] SessionError),
    /// The background runtime could not be started.
    #[error(transparent)]
    Sched(#[from] crate::sched::SchedError),
    /// The teardown thread could not be started.
    #[error("teardown thread: {0}")]
    Teardown(std::io::Error),
    /// The CA file for guests' `https://` requests is unusable.
    #[error("TLS for guests' requests: {0}")]
    GuestTls(String),
    /// The client for other nodes could not be set up (a bad CA file).
    #[error("node-to-node client: {0}")]
    Peer(#[from] edge_proto::PeerError),
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        NodeError::Storage(e.to_string())
    }
}

/// A running edge node, independent of any transport.
pub struct Node {
    pub(crate) config: NodeConfig,
    pub(crate) engine: Engine,
    pub(crate) registry: Registry,
    pub(crate) sessions: Arc<Sessions>,
    /// The one thread that writes (and flushes) the database.
    pub(crate) writer: SledWriter,
    /// Held while the node lives: one node per data dir.
    _lock: std::fs::File,
    pub(crate) metrics: Arc<Metrics>,
    /// One permit per pooled instance: calls beyond the pool wait here;
    /// pinned instances hold theirs while they live.
    pub(crate) instance_slots: Arc<Semaphore>,
    /// Stopped after a full disk?
    pub(crate) storage: Arc<crate::storage::StorageGuard>,
    /// One permit per admitted invocation (load shedding beyond).
    pub(crate) admission: Arc<Semaphore>,
    pub(crate) peer: PeerClient,
    /// The cluster's members, with a shared Redis.
    pub(crate) membership: Option<edge_store_redis::RedisMembership>,
    /// The functions deployed to the whole cluster, with a shared Redis.
    pub(crate) cluster_functions: Option<edge_store_redis::RedisFunctions>,
    /// The `--peer`s as last heard (without a shared Redis).
    pub(crate) peer_view: crate::cluster::PeerView,
    /// Moves long and misbehaving calls to background priority.
    pub(crate) sched: crate::sched::Scheduler,
    /// Where finished instances are dropped.
    pub(crate) teardown: crate::teardown::Teardown,
    /// Guests' `https://` requests trust the node's own CAs too.
    pub(crate) guest_tls: Option<crate::outbound::GuestTls>,
}

impl Node {
    /// Opens the data dir (refused if another node holds it), builds the
    /// engine and reads every deployed function's record. The database opens
    /// in the background ([`Node::database`]): what needs it waits for it.
    pub async fn open(config: NodeConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::Storage(format!("{}: {e}", config.data_dir.display())))?;
        let lock = lock_data_dir(&config.data_dir)?;
        // The writer thread opens sled (log recovery, fsyncs; on 2 cores its
        // start is the longest step) while the engine is built and after:
        // nothing below waits for it, so a call that keeps no state is
        // answered before the database is open. What needs it waits.
        let writer = SledWriter::open(
            sled::Config::new()
                .path(config.data_dir.join("db"))
                .cache_capacity(config.sled_cache_bytes),
        )
        .map_err(|e| NodeError::Storage(format!("state writer thread: {e}")))?;
        let engine = build_engine(&config.engine)?;
        start_epoch_ticker(&engine, config.engine.epoch_tick);
        let linker = build_linker(&engine)?;
        let metrics = Arc::new(Metrics::new()?);
        let registry = Registry::open(
            engine.clone(),
            linker,
            &config.data_dir,
            writer.clone(),
            config.compile.clone(),
            config.engine.clone(),
            metrics.clone(),
        )
        .await?;
        let local = Arc::new(SledStore::with_cache(
            writer.clone(),
            usize::try_from(config.state_cache_bytes).unwrap_or(usize::MAX),
        )?);
        metrics.watch_state_cache(local.clone())?;
        let identity = config.tls_identity.as_ref();
        let peer = if config.tls_roots.is_some() || identity.is_some() {
            PeerClient::with_tls(
                config.auth.outgoing(),
                config.tls_roots.as_deref(),
                identity.map(|i| i.pem()).as_deref(),
            )?
        } else {
            PeerClient::new(config.auth.outgoing())
        };
        // A node of a cluster talks to other nodes soon: its client is made
        // meanwhile. A lone node never waits for the system's roots.
        if !config.peers.is_empty() || !matches!(config.remote_store, RemoteStore::Local) {
            peer.prepare();
        }
        let me = config.url();
        // With a shared Redis: one connection for the store, the session
        // directory, the membership and the cluster's functions.
        let (remote, directory, membership, cluster_functions): (
            Option<Arc<dyn StateStore>>,
            _,
            _,
            _,
        ) = match &config.remote_store {
            RemoteStore::Local => (None, None, None, None),
            RemoteStore::Peer(url) => (
                Some(Arc::new(PeerStore::new(url, peer.clone())?)),
                None,
                None,
                None,
            ),
            RemoteStore::Redis(url) => {
                let conn = edge_store_redis::connect(
                    url,
                    config.tls_roots.as_deref(),
                    identity.map(|i| (i.cert.as_slice(), i.key.as_slice())),
                )
                .await?;
                let directory = crate::session::Directory::new(
                    edge_store_redis::RedisDirectory::new(conn.clone()),
                    me.clone(),
                );
                (
                    Some(Arc::new(RedisStore::new(conn.clone()).as_node(&me))),
                    Some(directory),
                    Some(edge_store_redis::RedisMembership::new(conn.clone())),
                    Some(edge_store_redis::RedisFunctions::new(conn)),
                )
            }
        };
        let sessions = Sessions::open(
            writer.clone(),
            local,
            remote,
            crate::session::Policy {
                max_local: config.max_local_sessions,
                ttl: config.pin_ttl,
                demote_idle: config.demote_idle,
                promote_rate: config.promote_calls_per_sec,
                wait: config.invoke_deadline,
                snapshot: config.snapshot,
                orchestrate: config.orchestrate,
                slots: config.engine.max_instances as usize,
            },
            directory,
            metrics.clone(),
        )?;
        let instance_slots = Arc::new(Semaphore::new(config.engine.max_instances as usize));
        let admission = Arc::new(Semaphore::new(config.max_pending_invocations.max(1)));
        let storage = crate::storage::StorageGuard::new(config.data_dir.clone());
        let sched =
            crate::sched::Scheduler::new(config.sched.clone(), metrics.background_calls.clone())?;
        let teardown = crate::teardown::Teardown::start().map_err(NodeError::Teardown)?;
        let guest_tls = match &config.tls_roots {
            Some(pem) => Some(crate::outbound::client_config(pem).map_err(NodeError::GuestTls)?),
            None => None,
        };
        Ok(Self {
            _lock: lock,
            config,
            engine,
            registry,
            sessions,
            writer,
            metrics,
            instance_slots,
            admission,
            storage,
            peer,
            membership,
            cluster_functions,
            peer_view: Default::default(),
            sched,
            teardown,
            guest_tls,
        })
    }

    /// Answers once the database is open, or with why it could not be
    /// (the node then cannot serve state: its process should stop).
    pub async fn database(&self) -> Result<(), NodeError> {
        self.writer.db().await?;
        Ok(())
    }

    /// The function registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Recompiles, one after another in the background (at idle priority
    /// when the node has a background runtime), the recorded functions
    /// whose artifact does not fit this engine (an upgrade) or is gone: not
    /// by their first caller. The others load on their first call.
    pub fn load_functions(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        let names = self.registry.stale();
        self.sched.spawn_idle(async move {
            for name in names {
                // A node being dropped is not kept alive for this.
                let Some(node) = node.upgrade() else { return };
                let _ = node.registry.function(&name).await;
            }
        });
    }

    /// Whether storage stopped after a full disk, and when space is back.
    pub fn storage(&self) -> &Arc<crate::storage::StorageGuard> {
        &self.storage
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node's sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Writes everything pending to disk (called on shutdown).
    pub async fn flush(&self) -> Result<(), NodeError> {
        self.writer.flush().await?;
        Ok(())
    }
}

/// What `GET /v1/sessions/{id}` shows.
#[derive(Debug, serde::Serialize)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// The mode it is served in.
    pub mode: SessionMode,
    /// The mode last asked for.
    pub desired: SessionMode,
    /// The node that owns it: this one, or where it migrated.
    pub owner: String,
    /// Functions with an instance pinned to it.
    pub pinned: Vec<String>,
    /// Functions called on it (a migration target must have them).
    pub functions: Vec<String>,
    /// Its keys with their versions.
    pub keys: Vec<KeyVersion>,
    /// Calls served by this node since it opened the session.
    pub invocations: u64,
}

/// What a migration reports.
#[derive(Debug, serde::Serialize)]
pub struct MigrateOutcome {
    /// The node that owns the session now.
    pub to: String,
    /// Keys moved.
    pub keys: usize,
    /// How long calls were held back (the downtime), microseconds.
    pub downtime_us: u64,
    /// How long the migration waited for calls in flight, microseconds.
    pub lock_wait_us: u64,
}

impl Node {
    /// Asks for `mode` on session `id` (a client's request).
    #[tracing::instrument(skip(self))]
    pub async fn set_mode(&self, id: &str, mode: SessionMode) -> Result<ModeOutcome, SessionError> {
        let session = self.sessions.get(id).await?;
        let mut inner = session.write_by(self.sessions.deadline()).await?;
        // Local on another node (a member took it): asked there.
        if inner.record.mode == SessionMode::Remote
            && let Some(owner) = self.sessions.owner_of(&session).await?
        {
            return Err(SessionError::Moved(owner));
        }
        self.sessions
            .transition(&session, &mut inner, mode, Trigger::Client)
            .await
    }

    /// Describes session `id`.
    pub async fn session_info(&self, id: &str) -> Result<SessionInfo, SessionError> {
        let session = self.sessions.get(id).await?;
        let inner = session.read_by(self.sessions.deadline()).await?;
        if let Some(url) = &inner.record.moved_to {
            return Err(SessionError::Moved(url.clone()));
        }
        let store = self.sessions.store_for(inner.record.mode);
        let keys = store
            .keys(id)
            .await?
            .into_iter()
            .map(|(key, version)| KeyVersion { key, version })
            .collect();
        let mut pinned: Vec<String> = inner.pinned.keys().cloned().collect();
        pinned.sort();
        Ok(SessionInfo {
            id: id.to_owned(),
            mode: inner.record.mode,
            desired: inner.record.desired,
            owner: self
                .config
                .public_url
                .clone()
                .unwrap_or_else(|| "self".into()),
            pinned,
            functions: session.functions(),
            keys,
            invocations: session.invocations(),
        })
    }

    /// Drops session `id`: its instances, its state, its record.
    pub async fn delete_session(&self, id: &str) -> Result<usize, SessionError> {
        self.sessions.delete(id).await
    }

    /// Takes session `id` over from an owner that is gone (not a live
    /// member): it goes on in remote-state mode from its last snapshot,
    /// without what the owner wrote after it (see [`Sessions::take_over`]).
    #[tracing::instrument(skip(self))]
    pub async fn take_over(&self, id: &str) -> Result<TakeOver, SessionError> {
        self.sessions.take_over(id).await
    }

    /// Moves local-state session `id` to the node at `to`. Calls that arrive
    /// meanwhile wait, then are forwarded there.
    #[tracing::instrument(skip(self))]
    pub async fn migrate(&self, id: &str, to: &str) -> Result<MigrateOutcome, SessionError> {
        let to = self.migration_target(to).await?;
        let to = to.as_str();
        let session = self.sessions.get(id).await?;
        let peer = self.peer.clone();
        let functions = session.functions();
        let report = self
            .sessions
            .migrate_out(&session, to, |entries| async move {
                peer.import(to, id, &entries, functions)
                    .await
                    .map_err(|e| refused_import(to, e))
            })
            .await?;
        tracing::info!(
            session = id,
            to,
            keys = report.keys,
            downtime_us = report.blocked_us,
            "migrated"
        );
        Ok(MigrateOutcome {
            to: to.to_owned(),
            keys: report.keys,
            downtime_us: report.blocked_us,
            lock_wait_us: report.lock_wait_us,
        })
    }

    /// A write to session `id`'s state in this node's sled from outside a
    /// call (the state server: a peer's remote store, or a tool). It holds
    /// the session's gate like a local call, so it never lands between a
    /// local call's read and its commit; a pinned instance that read what
    /// it overwrote conflicts on its next commit and runs again fresh.
    pub async fn state_commit(
        &self,
        id: &str,
        commit: &edge_host_api::Commit,
    ) -> Result<(), SessionError> {
        let session = self.sessions.get(id).await?;
        let deadline = self.sessions.deadline();
        let inner = session.write_by(deadline).await?;
        if let Some(url) = &inner.record.moved_to {
            return Err(SessionError::Moved(url.clone()));
        }
        Ok(self.sessions.local.commit_by(id, commit, deadline).await?)
    }

    /// Clears session `id`'s state in this node's sled (the state server),
    /// under the session's gate.
    pub async fn state_clear(&self, id: &str) -> Result<usize, SessionError> {
        let session = self.sessions.get(id).await?;
        let _inner = session.write_by(self.sessions.deadline()).await?;
        Ok(self.sessions.local.delete_session(id).await?)
    }

    /// Checks that `to` may receive a session: a peer this node was told of
    /// (`--peer`) or a live member of its cluster, never itself. The node presents the cluster token to the
    /// target, and later forwards callers' requests there: a client must not
    /// be able to choose that address.
    async fn migration_target(&self, to: &str) -> Result<String, SessionError> {
        let to = routes::normalise(to)
            .ok_or_else(|| SessionError::InvalidTarget(format!("not an http(s) URL: {to:?}")))?;
        if self
            .config
            .public_url
            .as_deref()
            .and_then(routes::normalise)
            == Some(to.clone())
        {
            return Err(SessionError::InvalidTarget(format!(
                "{to} is this node: a session cannot migrate to where it is"
            )));
        }
        let known = self
            .config
            .peers
            .iter()
            .any(|(_, url)| routes::normalise(url).as_deref() == Some(to.as_str()));
        if !known && !self.is_member(&to).await {
            return Err(SessionError::InvalidTarget(format!(
                "{to} is neither a peer of this node (--peer NAME={to}) nor a live member of its cluster"
            )));
        }
        Ok(to)
    }

    /// Takes in session `id` from another node, unless this node lacks one
    /// of the `functions` the session uses (then nothing is written).
    pub async fn import_session(
        &self,
        id: &str,
        entries: Vec<(String, Versioned)>,
        functions: &[String],
    ) -> Result<ModeOutcome, SessionError> {
        let missing: Vec<&str> = functions
            .iter()
            .filter(|f| self.registry.info(f).is_err())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(SessionError::MissingFunctions(format!(
                "{} does not have {}, which session {id} uses: deploy there first \
                 (edge-node deploy --all NAME FILE)",
                self.url(),
                missing.join(", ")
            )));
        }
        let outcome = self.sessions.migrate_in(id, &entries).await?;
        self.sessions
            .get(id)
            .await?
            .uses(functions.iter().map(String::as_str));
        Ok(outcome)
    }

    /// The client for other nodes.
    pub fn peer(&self) -> &PeerClient {
        &self.peer
    }
}

/// A new session id: 128 random bits, hex.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS RNG failing is unrecoverable for a server handing out
        // unguessable ids; never fall back to a guessable one.
        tracing::error!("the OS random number generator failed");
        std::process::abort();
    }
    hex::encode(bytes)
}

/// Why handing a session to `to` failed: the target's refusal for a missing
/// function kept as such (409 again), anything else as a storage error.
fn refused_import(to: &str, e: edge_proto::PeerError) -> SessionError {
    if let edge_proto::PeerError::Status {
        status: 409, body, ..
    } = &e
        && let Ok(answer) = serde_json::from_str::<serde_json::Value>(body)
        && answer["kind"] == "function_missing"
    {
        let why = answer["error"].as_str().unwrap_or(body);
        return SessionError::MissingFunctions(why.to_owned());
    }
    SessionError::Storage(format!("migrating to {to}: {e}"))
}

/// Takes `data_dir/lock` for this node: a second node on the same data dir
/// is refused at once (before it could serve from files the first one is
/// writing), not once its database fails to open.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, NodeError> {
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| NodeError::Storage(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(NodeError::Storage(format!(
            "{} is in use by another node (its lock file is held)",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(NodeError::Storage(format!("{}: {e}", path.display())))
        }
    }
}
