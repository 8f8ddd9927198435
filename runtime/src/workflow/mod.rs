//! Workflows: chains and DAGs of tasks across nodes, under the three
//! execution models of the chains/DAGs paper (PureFaaS, StateProp,
//! StateLocal), with asynchronous yield/join and causal state order.
//!
//! - [`spec`]: the JSON spec and its validation into a [`Plan`];
//! - `entry`: the node a client submits to — placement, PureFaaS, the wait,
//!   the result;
//! - `pure`: PureFaaS, driven by the entry node;
//! - `hop`: what every node does — deliveries, joins, running a task,
//!   sending its output and states on;
//! - [`wire`]: the messages and their byte accounting.

mod embedded;
mod entry;
pub mod hop;
mod place;
mod pure;
mod send;
mod session_state;
pub mod spec;
pub mod wire;

pub use entry::{StateView, TaskTiming, TrafficView, WorkflowError, WorkflowResult};
pub use spec::{Model, Plan, SpecError, WorkflowSpec};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wire::Traffic;

/// What travels with every message of one execution (control bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecCtx {
    /// The execution id.
    pub exec: String,
    /// The entry node's URL: it plays the client.
    pub entry: String,
    /// The validated workflow.
    pub plan: Plan,
    /// The node (URL) of every task, resolved once by the entry node.
    pub nodes: Vec<String>,
    /// When the execution must be over, Unix milliseconds.
    pub deadline_unix_ms: u64,
}

impl ExecCtx {
    /// Time left until the deadline.
    pub fn remaining(&self) -> Duration {
        // A peer's message may carry any number: never more than the
        // longest deadline a spec may ask for, so `now + remaining` cannot
        // overflow.
        let ms = self.deadline_unix_ms.saturating_sub(unix_ms());
        Duration::from_millis(ms.min(spec::MAX_DEADLINE_MS))
    }
}

/// Locks `m`. A panic while it was held cannot leave these maps and
/// counters half-updated in a way later users would misread, so a poisoned
/// lock is used as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A state as it travels: its value (StateProp, PureFaaS), a reference to
/// its owner (StateLocal), or known to have no value yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Carry {
    /// The value is blob `blob` of the message.
    Value {
        /// Blob index.
        blob: usize,
    },
    /// The state has no value.
    Absent,
    /// StateLocal: the value stays at `owner` under `version`.
    Ref {
        /// The owner's URL.
        owner: String,
        /// The version to fetch.
        version: u64,
    },
}

/// A state value held on this node for StateLocal executions.
struct Owned {
    value: Option<Bytes>,
    version: u64,
    expires: Instant,
}

/// A task waiting on this node for inputs or states (a yield).
struct Pending {
    ctx: ExecCtx,
    inputs: HashMap<Option<usize>, Bytes>,
    states: HashMap<String, Held>,
    started: bool,
    expires: Instant,
}

/// A state delivered to a pending task.
#[derive(Clone)]
enum Held {
    Value(Option<Bytes>),
    Ref { owner: String, version: u64 },
}

/// The workflow side of a node: joins waiting here, states owned here,
/// executions started here, and traffic counters.
pub struct Workflows {
    pending: Mutex<HashMap<(String, usize), Pending>>,
    owned: Mutex<HashMap<(String, String), Owned>>,
    runs: Mutex<HashMap<String, std::sync::Arc<entry::Run>>>,
    /// Executions aborted here, until when they are remembered: a delivery
    /// that arrives late for one of them never runs its task.
    aborted: Mutex<HashMap<String, Instant>>,
    /// What this node sent, per execution.
    pub traffic: Traffic,
    /// Peers by name (`--peer NAME=URL`).
    pub peers: Vec<(String, String)>,
    /// This node's URL.
    pub me: String,
}

/// How long finished or abandoned entries are kept past their deadline.
const LINGER: Duration = Duration::from_secs(2);
/// How long a StateLocal state stays with its owner when nobody takes it.
const OWNED_TTL: Duration = Duration::from_secs(600);

impl Workflows {
    /// The workflow side of a node reachable at `me`, with `peers`.
    pub fn new(me: String, peers: Vec<(String, String)>) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            aborted: Mutex::new(HashMap::new()),
            traffic: Traffic::default(),
            peers,
            me,
        }
    }

    /// Joins waiting on this node (tasks not started yet).
    pub fn pending_count(&self) -> usize {
        lock(&self.pending).values().filter(|p| !p.started).count()
    }

    /// Drops what an aborted execution left here, and remembers it (as
    /// long as any execution may last) so that none of its tasks runs here
    /// afterwards.
    pub fn forget(&self, exec: &str) {
        let until = Instant::now() + Duration::from_millis(spec::MAX_DEADLINE_MS) + LINGER;
        lock(&self.aborted).insert(exec.to_owned(), until);
        lock(&self.pending).retain(|(e, _), _| e != exec);
        lock(&self.owned).retain(|(e, _), _| e != exec);
    }

    /// True when execution `exec` was aborted on this node.
    pub fn is_aborted(&self, exec: &str) -> bool {
        lock(&self.aborted).contains_key(exec)
    }

    /// Drops pending joins past their deadline and unclaimed states past
    /// their time.
    pub fn reap(&self) {
        let now = Instant::now();
        lock(&self.pending).retain(|_, p| p.expires > now);
        lock(&self.owned).retain(|_, o| o.expires > now);
        lock(&self.runs).retain(|_, r| !r.expired(now));
        lock(&self.aborted).retain(|_, until| *until > now);
    }
}
