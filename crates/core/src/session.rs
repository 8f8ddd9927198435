//! Sessions: which mode each is served in, the instances pinned to local
//! sessions, and the moves of a session's state between modes and nodes.
//!
//! Each session has a gate (an async read/write lock, fair in arrival order):
//! remote-state calls share it, local-state calls and transitions hold it
//! alone. So local calls run one at a time in arrival order, and no call
//! ever sees a half-moved state: calls that arrive during a transition wait.
//!
//! The mode is recorded in the sled tree `sessions` (absent = remote), and
//! every transition writes the destination first, then flips the record,
//! then clears the source: a crash at any point leaves the record naming a
//! store that holds the whole state.

use crate::engine::HostState;
use crate::metrics::Metrics;
use edge_host_api::bindings::Function as Bindings;
use edge_host_api::{Commit, Mode, StateStore, StoreError, Versioned, valid_session_id};
use edge_store_sled::{SledStore, SledWriter};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, RwLock};
use wasmtime::Store;

mod error;
mod lease;
mod migrate;
mod orchestrator;
mod owner;
mod plan;
mod room;
mod snapshot;
mod transition;

pub use error::SessionError;
pub use lease::{LEASE, Lease};
pub use migrate::MigrationReport;
pub use orchestrator::{Load, View as OrchestratorView};
pub(crate) use owner::Held;
pub use owner::{Directory, TakeOver};
pub use plan::{Inputs as PlanInputs, Plan, choose as plan_local, mean_latency};

/// Where a session's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// On this node, with warm instances pinned to the session.
    Local,
    /// In the remote store, with a fresh instance per call.
    #[default]
    Remote,
}

impl SessionMode {
    /// The WIT mode the guest sees.
    pub fn wit(self) -> Mode {
        match self {
            SessionMode::Local => Mode::Local,
            SessionMode::Remote => Mode::Remote,
        }
    }

    /// From the WIT mode a guest asked for.
    pub fn from_wit(m: Mode) -> Self {
        match m {
            Mode::Local => SessionMode::Local,
            Mode::Remote => SessionMode::Remote,
        }
    }

    /// `local` or `remote`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMode::Local => "local",
            SessionMode::Remote => "remote",
        }
    }
}

/// Who asked for a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A client, over HTTP.
    Client,
    /// The guest, through `session.request-mode`.
    Guest,
    /// The node's capacity policy.
    Policy,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Client => "client",
            Trigger::Guest => "guest",
            Trigger::Policy => "policy",
        }
    }
}

/// The persisted part of a session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The mode it is served in.
    pub mode: SessionMode,
    /// The mode last asked for (differs from `mode` while capacity refuses it).
    pub desired: SessionMode,
    /// Set once the session migrated: the node that now owns it.
    pub moved_to: Option<String>,
    /// Its local copy was taken or received under the cluster's directory:
    /// it is served only while the directory names this node, and is stale
    /// once it names another node or none (see `owner`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directed: bool,
}

/// A warm instance pinned to a local session.
pub struct Pinned {
    /// Digest of the component it runs (a redeploy makes it stale).
    pub digest: String,
    /// Its store.
    pub store: Store<HostState>,
    /// Its exports.
    pub instance: Bindings,
    /// Last call on it.
    pub last_used: Instant,
    /// The pool slot it holds.
    pub _slot: OwnedSemaphorePermit,
    /// Counts it in `edge_pinned_instances` for as long as it lives.
    pub _counted: crate::metrics::LiveInstance,
}

/// What the gate protects.
pub struct Inner {
    /// The persisted state of the session.
    pub record: Record,
    /// Instances pinned to it, by function name. A wasmtime store is `Send`
    /// but not `Sync`; the mutex makes the gate shareable, and is never
    /// contended: pinned instances are touched only under the exclusive gate.
    pub(crate) pinned: HashMap<String, Mutex<Pinned>>,
}

/// One session.
pub struct Session {
    /// Its id.
    pub id: String,
    /// The gate: shared by remote calls, exclusive for local calls and moves.
    /// Only [`Session::read_by`] and [`Session::write_by`] take it, each
    /// bounded by a deadline.
    gate: RwLock<Inner>,
    invocations: AtomicU64,
    last_used_ms: AtomicU64,
    /// The lease generation under which the directory last named this node
    /// its owner (0: not since this process started; see `owner`).
    confirmed: AtomicU64,
    /// The call rate: calls in the current window, when it started (ms
    /// since the node's epoch), and the last full window's rate × 1000.
    window_calls: AtomicU64,
    window_start_ms: AtomicU64,
    rate_milli: AtomicU64,
    /// Its id was made by this node for this call: no other node can know
    /// it, so nobody else owns it.
    minted: bool,
    /// Its local state changed since the last snapshot (see `snapshot`).
    dirty: std::sync::atomic::AtomicBool,
    /// The functions called on it (here, or before it migrated here): a
    /// migration target must have them all.
    functions: std::sync::RwLock<BTreeSet<String>>,
    /// Its record as last saved, for readers that must not wait for the
    /// gate (the orchestrator): see [`Shown`].
    shown: std::sync::atomic::AtomicU8,
}

/// A session's record at a glance, kept beside the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shown {
    /// Served local-state here.
    pub local: bool,
    /// Its client or guest asked for local-state.
    pub wish: bool,
    /// It moved to another node.
    pub moved: bool,
}

impl Shown {
    fn of(r: &Record) -> Shown {
        Shown {
            local: r.mode == SessionMode::Local,
            wish: r.desired == SessionMode::Local,
            moved: r.moved_to.is_some(),
        }
    }

    fn bits(self) -> u8 {
        u8::from(self.local) | u8::from(self.wish) << 1 | u8::from(self.moved) << 2
    }

    fn from_bits(b: u8) -> Shown {
        Shown {
            local: b & 1 != 0,
            wish: b & 2 != 0,
            moved: b & 4 != 0,
        }
    }
}

/// `wait` for the gate, at most until `deadline`.
async fn by<T>(deadline: Instant, wait: impl Future<Output = T>) -> Result<T, SessionError> {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, wait)
        .await
        .map_err(|_| SessionError::Busy(left))
}

impl Session {
    /// Shares the gate, waiting at most until `deadline`.
    pub async fn read_by(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::RwLockReadGuard<'_, Inner>, SessionError> {
        by(deadline, self.gate.read()).await
    }

    /// Holds the gate alone, waiting at most until `deadline`.
    pub async fn write_by(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::RwLockWriteGuard<'_, Inner>, SessionError> {
        by(deadline, self.gate.write()).await
    }

    /// Counts one call, and measures the call rate over windows of at
    /// least a second.
    pub fn touch(&self, epoch: Instant) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let now = epoch.elapsed().as_millis() as u64;
        self.last_used_ms.store(now, Ordering::Relaxed);
        let calls = self.window_calls.fetch_add(1, Ordering::Relaxed) + 1;
        let start = self.window_start_ms.load(Ordering::Relaxed);
        let span = now.saturating_sub(start);
        if span >= 1000
            && self
                .window_start_ms
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.rate_milli
                .store(calls * 1_000_000 / span, Ordering::Relaxed);
            self.window_calls.store(0, Ordering::Relaxed);
        }
    }

    /// Notes that `functions` are called on this session.
    /// Concurrent calls share a read lock in the usual case (a function
    /// already noted); only the first call of a function writes.
    pub fn uses<'a>(&self, functions: impl IntoIterator<Item = &'a str>) {
        for f in functions {
            let known = self
                .functions
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(f);
            if !known {
                self.functions
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(f.to_owned());
            }
        }
    }

    /// The functions called on this session, sorted.
    pub fn functions(&self) -> Vec<String> {
        let set = self.functions.read().unwrap_or_else(|p| p.into_inner());
        set.iter().cloned().collect()
    }

    /// Its record as last saved, without waiting for the gate.
    pub(crate) fn shown(&self) -> Shown {
        Shown::from_bits(self.shown.load(Ordering::Acquire))
    }

    fn show(&self, record: &Record) {
        self.shown
            .store(Shown::of(record).bits(), Ordering::Release);
    }

    /// Calls per second over the last full window (0 before one).
    pub fn call_rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Calls served since this node opened the session.
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }
}

/// The result of asking for a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModeOutcome {
    /// The mode the session is served in now.
    pub mode: SessionMode,
    /// Why it is not the mode asked for (`capacity`), if it is not.
    pub reason: Option<&'static str>,
    /// How long the move took, in microseconds (0 if nothing moved).
    pub duration_us: u64,
}

/// How a node keeps its sessions.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Sessions in local-state mode at once.
    pub max_local: usize,
    /// A pinned instance idle this long is dropped.
    pub ttl: Duration,
    /// A local session idle this long may give its place to one that asks.
    pub demote_idle: Duration,
    /// A remote session called at least this often (per second) is made
    /// local by the node; 0: never.
    pub promote_rate: f64,
    /// How long a session operation waits for the session's gate.
    pub wait: Duration,
    /// With a directory: how often changed local sessions are copied to the
    /// remote store (zero: never).
    pub snapshot: Duration,
    /// How often the orchestrator plans which sessions are local (zero:
    /// never; then only wishes, idle demotion and `promote_rate` decide).
    pub orchestrate: Duration,
    /// Instance slots on the node (the orchestrator's capacity).
    pub slots: usize,
}

/// Every session this node knows, and the stores their state lives in.
pub struct Sessions {
    /// This node's sled: local-state sessions (and the state server).
    pub local: Arc<SledStore>,
    /// The remote store of remote-state sessions.
    pub remote: Arc<dyn StateStore>,
    remote_is_local: bool,
    /// The `sessions` tree, once the database is open.
    records: tokio::sync::OnceCell<sled::Tree>,
    /// Set once every recorded session is in the table (see `ready`).
    loaded: tokio::sync::OnceCell<()>,
    writer: SledWriter,
    table: Mutex<HashMap<String, Arc<Session>>>,
    local_sessions: AtomicUsize,
    max_local: usize,
    ttl: Duration,
    /// A local session idle this long may lose its place to one that asks.
    demote_idle: Duration,
    /// Calls per second that make a remote session local (0: never).
    promote_rate: f64,
    /// How long a session operation waits for the session's gate.
    wait: Duration,
    epoch: Instant,
    metrics: Arc<Metrics>,
    /// With a shared Redis: who owns each local-state session.
    directory: Option<Directory>,
    /// What calls measured, for the orchestrator.
    pub load: Load,
    /// The orchestrator's memory between rounds (`None`: it is off).
    orchestrator: Option<Mutex<orchestrator::Orchestrator>>,
}

impl Sessions {
    /// The session records of the writer's database; `remote` is `None`
    /// when remote state lives in this node's sled too. Returns at once: the
    /// records are loaded in the background, and whatever names a session
    /// waits for them ([`Sessions::ready`]); a call that names none does not.
    pub fn open(
        writer: SledWriter,
        local: Arc<SledStore>,
        remote: Option<Arc<dyn StateStore>>,
        policy: Policy,
        directory: Option<Directory>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, SessionError> {
        let Policy {
            max_local,
            ttl,
            demote_idle,
            wait,
            promote_rate,
            snapshot,
            orchestrate,
            slots,
        } = policy;
        let remote_is_local = remote.is_none();
        let remote = remote.unwrap_or_else(|| local.clone() as Arc<dyn StateStore>);
        let load = Load::default();
        let remote = load.timed(remote);
        let sessions = Arc::new(Self {
            local,
            remote,
            remote_is_local,
            records: tokio::sync::OnceCell::new(),
            loaded: tokio::sync::OnceCell::new(),
            writer,
            table: Mutex::new(HashMap::new()),
            local_sessions: AtomicUsize::new(0),
            max_local,
            ttl,
            demote_idle,
            promote_rate,
            wait,
            epoch: Instant::now(),
            metrics,
            directory,
            load,
            orchestrator: (!orchestrate.is_zero()).then(Default::default),
        });
        let loading = Arc::downgrade(&sessions);
        tokio::spawn(async move {
            if let Some(s) = loading.upgrade()
                && let Err(e) = s.ready().await
            {
                tracing::error!(error = %e, "the session records could not be loaded");
            }
        });
        spawn_reaper(Arc::downgrade(&sessions), ttl);
        if sessions.has_directory() && !snapshot.is_zero() {
            snapshot::spawn(Arc::downgrade(&sessions), snapshot);
        }
        if !orchestrate.is_zero() {
            orchestrator::spawn(Arc::downgrade(&sessions), orchestrate, slots);
        }
        Ok(sessions)
    }

    /// When an operation starting now stops waiting for a session.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.wait
    }

    /// The instant call times are measured from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Waits until every recorded session is in the table (loaded once, as
    /// soon as the database is open), so that looking one up never reads
    /// sled on an async worker.
    pub async fn ready(&self) -> Result<(), SessionError> {
        self.loaded.get_or_try_init(|| self.load()).await?;
        Ok(())
    }

    async fn load(&self) -> Result<(), SessionError> {
        let records = self.records().await?;
        let recorded = tokio::task::spawn_blocking(move || {
            let mut recorded = Vec::new();
            for item in records.iter() {
                let (id, raw) = item?;
                let (Ok(id), Ok(record)) = (
                    String::from_utf8(id.to_vec()),
                    serde_json::from_slice::<Record>(&raw),
                ) else {
                    tracing::warn!("skipping an unreadable session record");
                    continue;
                };
                recorded.push((id, record));
            }
            Ok::<_, SessionError>(recorded)
        })
        .await
        .map_err(|e| SessionError::Storage(e.to_string()))??;
        let local = recorded
            .iter()
            .filter(|(_, r)| r.mode == SessionMode::Local && r.moved_to.is_none())
            .count();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for (id, record) in recorded {
            // Only sessions minted meanwhile (fresh ids) can be there.
            let session = self.new_session(id.clone(), record);
            table.entry(id).or_insert(session);
        }
        drop(table);
        let now = self.local_sessions.fetch_add(local, Ordering::AcqRel) + local;
        self.metrics.local_sessions.set(now as i64);
        Ok(())
    }

    /// The `sessions` tree, once the database is open.
    async fn records(&self) -> Result<sled::Tree, SessionError> {
        Ok(self
            .records
            .get_or_try_init(|| self.writer.tree("sessions"))
            .await?
            .clone())
    }

    /// The session `id`, loaded from its record or new (remote-state).
    pub async fn get(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        if !valid_session_id(id) {
            return Err(SessionError::InvalidId);
        }
        self.ready().await?;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = table.get(id) {
            return Ok(s.clone());
        }
        // Every recorded session was loaded at open and stays tabled while
        // it has a record: one not in the table has none.
        let session = self.new_session(id.to_owned(), Record::default());
        table.insert(id.to_owned(), session.clone());
        Ok(session)
    }

    /// A session for a call that named none: a fresh id cannot have a record,
    /// so nothing is read, and it is not tabled unless it outlives its call
    /// (see [`Sessions::keep_if_used`]). Stateless calls at full speed leave
    /// nothing behind.
    pub fn ephemeral(&self, id: String) -> Arc<Session> {
        let mut session = self.new_session(id, Record::default());
        if let Some(s) = Arc::get_mut(&mut session) {
            s.minted = true;
        }
        session
    }

    /// Tables an ephemeral session whose call left something to come back
    /// to: a mode change asked for by its guest, or a pinned instance.
    pub async fn keep_if_used(&self, session: &Arc<Session>) {
        let inner = session.gate.read().await;
        session.show(&inner.record);
        if inner.record != Record::default() || !inner.pinned.is_empty() {
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table
                .entry(session.id.clone())
                .or_insert_with(|| session.clone());
        }
    }

    fn new_session(&self, id: String, record: Record) -> Arc<Session> {
        let shown = Shown::of(&record).bits();
        Arc::new(Session {
            id,
            gate: RwLock::new(Inner {
                record,
                pinned: HashMap::new(),
            }),
            invocations: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            confirmed: AtomicU64::new(0),
            window_calls: AtomicU64::new(0),
            window_start_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            rate_milli: AtomicU64::new(0),
            minted: false,
            dirty: std::sync::atomic::AtomicBool::new(false),
            functions: std::sync::RwLock::default(),
            shown: std::sync::atomic::AtomicU8::new(shown),
        })
    }

    /// The store a session in `mode` reads and writes.
    pub fn store_for(&self, mode: SessionMode) -> Arc<dyn StateStore> {
        match mode {
            SessionMode::Local => self.local.clone(),
            SessionMode::Remote => self.remote.clone(),
        }
    }

    async fn save(&self, id: &str, record: &Record) -> Result<(), SessionError> {
        let raw = if *record == Record::default() {
            None
        } else {
            Some(serde_json::to_vec(record).map_err(|e| SessionError::Storage(e.to_string()))?)
        };
        let tabled = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        let (records, id) = (self.records().await?, id.to_owned());
        self.writer
            .write(move |_| {
                match raw {
                    None => records.remove(id).map_err(edge_store_sled::store_error)?,
                    Some(raw) => records
                        .insert(id, raw)
                        .map_err(edge_store_sled::store_error)?,
                };
                Ok(())
            })
            .await?;
        if let Some(s) = tabled {
            s.show(record);
        }
        Ok(())
    }

    /// Every key of a session with its value and version, from the store its
    /// mode names. The caller holds the gate.
    pub async fn entries(
        &self,
        inner: &Inner,
        id: &str,
    ) -> Result<Vec<(String, Versioned)>, SessionError> {
        Ok(export(self.store_for(inner.record.mode).as_ref(), id).await?)
    }

    /// Forgets a session: its instances, its state in both stores, its record.
    pub async fn delete(&self, id: &str) -> Result<usize, SessionError> {
        let session = self.get(id).await?;
        let mut inner = session.write_by(self.deadline()).await?;
        // A session that moved, or that another node owns, is deleted
        // there: deleting a stale copy here would split it in two.
        if let Some(url) = &inner.record.moved_to {
            return Err(SessionError::Moved(url.clone()));
        }
        let local_here = inner.record.mode == SessionMode::Local;
        if !local_here && let Some(owner) = self.owner_elsewhere(id).await? {
            return Err(SessionError::Moved(owner));
        }
        if local_here {
            match self.confirm_local(&session, &mut inner).await? {
                Held::Here => {}
                Held::Elsewhere(owner) => return Err(SessionError::Moved(owner)),
                // The copy here was stale, and is gone: the session is the
                // remote store's, unless another node holds it.
                Held::Dropped => {
                    if let Some(owner) = self.owner_elsewhere(id).await? {
                        return Err(SessionError::Moved(owner));
                    }
                }
            }
        }
        let local_here = inner.record.mode == SessionMode::Local;
        let mut deleted = self.local.delete_session(id).await?;
        if !self.remote_is_local {
            deleted += self.remote.delete_session(id).await?;
        }
        if inner.record.mode == SessionMode::Local && inner.record.moved_to.is_none() {
            self.release_local();
        }
        self.drop_pinned(&mut inner);
        inner.record = Record::default();
        self.save(id, &inner.record).await?;
        if local_here {
            self.give_up(id).await;
        }
        Ok(deleted)
    }

    /// Drops pinned instances idle past the TTL (their sessions stay local;
    /// the next call is cold) and forgets idle remote sessions with no record.
    fn reap(&self) {
        let now = Instant::now();
        let sessions: Vec<Arc<Session>> = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut forget = Vec::new();
        for s in sessions {
            let Ok(mut inner) = s.gate.try_write() else {
                continue;
            };
            let before = inner.pinned.len();
            inner.pinned.retain(|_, p| {
                let p = p.get_mut().unwrap_or_else(|e| e.into_inner());
                now.duration_since(p.last_used) < self.ttl
            });
            let evicted = before - inner.pinned.len();
            if evicted > 0 {
                self.metrics.evictions.inc_by(evicted as u64);
            }
            let last_used = Duration::from_millis(s.last_used_ms.load(Ordering::Relaxed));
            let idle = self.epoch.elapsed().saturating_sub(last_used);
            if inner.pinned.is_empty() && inner.record == Record::default() && idle >= self.ttl {
                forget.push(s.id.clone());
            }
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for id in forget {
            // Only if nobody else holds it: a caller may be about to use it.
            if table.get(&id).is_some_and(|s| Arc::strong_count(s) == 1) {
                table.remove(&id);
            }
        }
    }
}

/// Every key of `id` in `store`, with value and version.
async fn export(store: &dyn StateStore, id: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
    let mut out = Vec::new();
    for (key, _) in store.keys(id).await? {
        if let Some(v) = store.get(id, &key).await? {
            out.push((key, v));
        }
    }
    Ok(out)
}

/// A blind commit that writes every entry.
fn replace_all(entries: &[(String, Versioned)]) -> Commit {
    Commit {
        reads: Vec::new(),
        writes: entries
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.value.clone())))
            .collect(),
    }
}

fn spawn_reaper(sessions: Weak<Sessions>, ttl: Duration) {
    let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    tokio::spawn(async move {
        // The first tick waits a period too: an immediate one would hold the
        // sessions (and their database) while a just-dropped node reopens.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            let Some(s) = sessions.upgrade() else { break };
            s.reap();
        }
    });
}
