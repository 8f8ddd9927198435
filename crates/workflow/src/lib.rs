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
//! - `send`: the messages, through the node's one peer client;
//! - [`Traffic`]: what this node sent per execution, by category.
//!
//! ```no_run
//! use edge_core::{Node, NodeConfig};
//! use edge_workflow::Workflows;
//! use std::sync::Arc;
//!
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! let node = Arc::new(Node::open(NodeConfig::new("./edge-data")).await?);
//! let workflows = Workflows::new(node);
//! let spec = br#"{"model": "state-prop", "tasks": [{"id": "a", "function": "counter"}]}"#;
//! let result = workflows.run(spec).await?;
//! println!("{:?}", result.outputs_text);
//! # Ok(())
//! # }
//! ```

mod embedded;
mod entry;
pub mod hop;
mod place;
mod plans;
pub mod pure;
mod send;
mod session_state;
pub mod spec;
mod traffic;

pub use entry::{StateView, TaskTiming, TrafficView, WorkflowError, WorkflowResult};
pub use plans::{PlanError, WireCtx, WirePlan};
pub use send::PLAN_UNKNOWN;
pub use spec::{Model, Plan, SpecError, WorkflowSpec};
pub use traffic::Traffic;

use bytes::Bytes;
use edge_core::Node;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One execution as a node knows it. On the wire it is a [`WireCtx`]: the
/// plan once per pair of nodes, its digest afterwards (see `plans`).
#[derive(Debug, Clone)]
pub struct ExecCtx {
    /// The execution id.
    pub exec: String,
    /// The entry node's URL: it plays the client.
    pub entry: String,
    /// The validated workflow (on nodes other than the entry, without the
    /// client's input and the initial state values).
    pub plan: Arc<Plan>,
    /// The node (URL) of every task, resolved once by the entry node.
    pub nodes: Arc<Vec<String>>,
    /// When the execution must be over, Unix milliseconds.
    pub deadline_unix_ms: u64,
    /// The digest of the plan as it travels.
    pub digest: Arc<str>,
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
    /// The node tasks run on.
    node: Arc<Node>,
    pending: Mutex<HashMap<(String, usize), Pending>>,
    owned: Mutex<HashMap<(String, String), Owned>>,
    runs: Mutex<HashMap<String, Arc<entry::Run>>>,
    /// Executions aborted here, until when they are remembered: a delivery
    /// that arrives late for one of them never runs its task.
    aborted: Mutex<HashMap<String, Instant>>,
    /// Plans this node was sent, by execution.
    plans: Mutex<HashMap<String, plans::Known>>,
    /// The nodes this node has sent each execution's plan to, until when.
    plans_sent: Mutex<HashMap<(String, String), Instant>>,
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
    /// The workflow side of `node`, reachable at its public URL, with its
    /// peers; a background task drops what expired every half second.
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        let me = node.url();
        let peers = node.config().peers.clone();
        let workflows = Arc::new(Self {
            node,
            pending: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            aborted: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            plans_sent: Mutex::new(HashMap::new()),
            traffic: Traffic::default(),
            peers,
            me,
        });
        let weak = Arc::downgrade(&workflows);
        tokio::spawn(async move {
            let period = Duration::from_millis(500);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                let Some(w) = weak.upgrade() else { break };
                w.reap();
                w.node
                    .metrics()
                    .workflow_pending
                    .set(w.pending_count() as i64);
            }
        });
        workflows
    }

    /// The node tasks run on.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
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
        lock(&self.plans).remove(exec);
        lock(&self.plans_sent).retain(|(e, _), _| e != exec);
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
        lock(&self.plans).retain(|_, k| !k.expired(now));
        lock(&self.plans_sent).retain(|_, until| *until > now);
    }
}
