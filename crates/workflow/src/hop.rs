//! What every node does in a StateProp or StateLocal execution: take a
//! delivery, yield until the task's inputs and states are all here, run the
//! task, send its output to its successors' nodes and each state to the
//! node of its next user (or, at the end, to the entry node).

use super::embedded::EmbeddedStore;
use super::lock;
use super::spec::Model;
use super::{Carry, ExecCtx, Held, LINGER, OWNED_TTL, Owned, Pending, PlanError, WireCtx, unix_ms};
use crate::Workflows;
use bytes::Bytes;
use edge_host_api::{Input, Source};
use edge_proto::envelope::{Cost, Envelope, Kind, request_head_bytes};
use edge_proto::{PeerRequest, Retry, routes};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A delivery to a task: inputs from predecessors (or the client) and states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliver {
    /// The execution.
    pub ctx: WireCtx,
    /// The task it is for.
    pub task: usize,
    /// Inputs: the task that produced it (`None`: the client), and its blob.
    pub inputs: Vec<(Option<usize>, usize)>,
    /// States: name and how it travels.
    pub states: Vec<(String, Carry)>,
}

/// What a node tells the entry node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// A sink's output (blob).
    Output {
        /// The sink.
        task: usize,
        /// Its output.
        blob: usize,
    },
    /// A state after its last user.
    Final {
        /// The state.
        state: String,
        /// Its value, or where it is.
        carry: Carry,
    },
    /// A task ran.
    Done {
        /// The task.
        task: usize,
        /// Where.
        node: String,
        /// When it started, ms after the execution started at the entry.
        start_unix_ms: u64,
        /// How long it ran, µs.
        duration_us: u64,
    },
    /// A task or a delivery failed.
    Failed {
        /// The task, if one.
        task: Option<usize>,
        /// The node that failed or could not be reached.
        node: String,
        /// What happened.
        error: String,
    },
}

/// Reports of one execution, to the entry node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reports {
    /// The execution.
    pub exec: String,
    /// The reports.
    pub reports: Vec<Report>,
}

/// What a task's run sends on: deliveries by task, and reports (with their
/// blobs) to the entry node.
struct Routed {
    outgoing: BTreeMap<usize, Outgoing>,
    reports: Vec<Report>,
    blobs: Vec<(Kind, Bytes)>,
}

/// An outgoing message, grouped by destination task.
#[derive(Default)]
pub(super) struct Outgoing {
    pub(super) inputs: Vec<(Option<usize>, Bytes)>,
    pub(super) states: Vec<(String, Held)>,
}

impl Workflows {
    /// Takes a delivery from another node: its execution's plan comes with
    /// it or is known here (else [`PlanError::Unknown`]; nothing is kept).
    pub fn accept_delivery(self: Arc<Self>, env: Envelope<Deliver>) -> Result<(), PlanError> {
        let ctx = self.resolve(&env.header.ctx)?;
        self.deliver(ctx, env);
        Ok(())
    }

    /// Takes a delivery: stores what it brings and runs the task once
    /// everything it needs is here (otherwise the call just returns: yield).
    /// A delivery repeated (same execution, task and source) changes nothing.
    pub(crate) fn deliver(self: Arc<Self>, ctx: ExecCtx, env: Envelope<Deliver>) {
        let Deliver {
            task,
            inputs,
            states,
            ..
        } = env.header.clone();
        if task >= ctx.plan.len() || self.is_aborted(&ctx.exec) {
            return;
        }
        let key = (ctx.exec.clone(), task);
        let ready = {
            let mut pending = lock(&self.pending);
            let entry = pending.entry(key.clone()).or_insert_with(|| Pending {
                ctx: ctx.clone(),
                inputs: HashMap::new(),
                states: HashMap::new(),
                started: false,
                expires: Instant::now() + ctx.remaining() + LINGER,
            });
            if entry.started {
                return;
            }
            for (from, blob) in inputs {
                if let Ok(data) = env.blob(blob) {
                    entry.inputs.entry(from).or_insert(data);
                }
            }
            for (name, carry) in states {
                let held = match carry {
                    Carry::Value { blob } => Held::Value(env.blob(blob).ok()),
                    Carry::Absent => Held::Value(None),
                    Carry::Ref { owner, version } => Held::Ref { owner, version },
                };
                entry.states.entry(name).or_insert(held);
            }
            if is_ready(entry, task) {
                // The entry stays, marked started, until it expires: a
                // delivery repeated after this point is ignored as well.
                entry.started = true;
                Some((
                    entry.ctx.clone(),
                    std::mem::take(&mut entry.inputs),
                    std::mem::take(&mut entry.states),
                ))
            } else {
                None
            }
        };
        if let Some((ctx, inputs, states)) = ready {
            let node = self.clone();
            tokio::spawn(async move { node.run_hop(ctx, task, inputs, states).await });
        }
    }

    /// Runs a ready task and sends everything it produced on.
    async fn run_hop(
        self: Arc<Self>,
        ctx: ExecCtx,
        task: usize,
        inputs: HashMap<Option<usize>, Bytes>,
        mut states: HashMap<String, Held>,
    ) {
        if let Err((node, e)) = self.fetch_states(&ctx, &mut states).await {
            return self.fail(&ctx, Some(task), &node, e).await;
        }
        // Aborted while it waited for its states: it never runs.
        if self.is_aborted(&ctx.exec) {
            return;
        }
        let started_ms = unix_ms();
        let t0 = Instant::now();
        let output = match self.call_here(&ctx, task, &inputs, &mut states).await {
            Ok(o) => o,
            Err(e) => return self.fail(&ctx, Some(task), &self.me, e).await,
        };
        let duration_us = t0.elapsed().as_micros() as u64;
        let Routed {
            outgoing,
            reports,
            blobs,
        } = self.route(&ctx, task, &output, states);
        if !reports.is_empty() {
            self.report(&ctx, reports, blobs).await;
        }
        let done = Report::Done {
            task,
            node: self.me.clone(),
            start_unix_ms: started_ms,
            duration_us,
        };
        self.report(&ctx, vec![done], Vec::new()).await;
        // Reported done first, then sent to every successor at once: one
        // that hangs holds up none of the others, and a failure (or the
        // run's deadline) names the node that did not take it, not this one.
        let sends = outgoing.into_iter().map(|(t, out)| {
            let node = self.clone();
            let ctx = &ctx;
            async move { (t, node.send(ctx, t, out).await) }
        });
        let failed = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .find_map(|(t, r)| r.err().map(|e| (t, e)));
        if let Some((t, e)) = failed {
            let node = ctx.nodes[t].clone();
            let error = format!("delivering to task {:?} on {node}: {e}", ctx.plan.id(t));
            self.fail(&ctx, Some(t), &node, error).await;
        }
    }

    /// StateLocal: fetches each referenced state from its last owner; an
    /// error names that owner.
    async fn fetch_states(
        &self,
        ctx: &ExecCtx,
        states: &mut HashMap<String, Held>,
    ) -> Result<(), (String, String)> {
        for (name, held) in states.iter_mut() {
            if let Held::Ref { owner, version } = held.clone() {
                let v = self
                    .fetch(&ctx.exec, ctx.remaining(), &owner, name, version)
                    .await
                    .map_err(|e| (owner.clone(), format!("fetching state {name:?}: {e}")))?;
                *held = Held::Value(v);
            }
        }
        Ok(())
    }

    /// Runs `task` here against the states it uses; returns its output and
    /// leaves the states as it changed them in `states`.
    async fn call_here(
        &self,
        ctx: &ExecCtx,
        task: usize,
        inputs: &HashMap<Option<usize>, Bytes>,
        states: &mut HashMap<String, Held>,
    ) -> Result<Bytes, String> {
        let spec_task = &ctx.plan.spec.tasks[task];
        let visible: BTreeMap<String, Option<Vec<u8>>> = ctx.plan.uses[task]
            .iter()
            .map(|u| {
                let v = match states.get(&u.state) {
                    Some(Held::Value(v)) => v.as_ref().map(|b| b.to_vec()),
                    _ => None,
                };
                (u.state.clone(), v)
            })
            .collect();
        let store = Arc::new(EmbeddedStore::new(visible));
        let output = self
            .node
            .invoke_with_store(
                &spec_task.function,
                &ctx.exec,
                task_inputs(ctx, task, inputs),
                store.clone(),
                ctx.remaining(),
            )
            .await
            .map_err(|e| format!("task {:?}: {e}", spec_task.id))?;
        let updated = Arc::try_unwrap(store)
            .map_err(|_| "state store still in use".to_string())?
            .into_values();
        for (name, value) in updated {
            states.insert(name, Held::Value(value.map(Bytes::from)));
        }
        Ok(Bytes::from(output))
    }

    /// Where everything goes after `task` ran: successors get its output;
    /// each state goes to its next user, or to the entry node (a report)
    /// after its last one.
    fn route(
        &self,
        ctx: &ExecCtx,
        task: usize,
        output: &Bytes,
        mut states: HashMap<String, Held>,
    ) -> Routed {
        let plan = &ctx.plan;
        let mut outgoing: BTreeMap<usize, Outgoing> = BTreeMap::new();
        for &s in &plan.succs[task] {
            outgoing
                .entry(s)
                .or_default()
                .inputs
                .push((Some(task), output.clone()));
        }
        let mut reports = Vec::new();
        let mut blobs: Vec<(Kind, Bytes)> = Vec::new();
        for (name, next) in state_routes(plan, task) {
            let value = match states.remove(&name) {
                Some(Held::Value(v)) => v,
                _ => None,
            };
            let held = if plan.spec.model == Model::StateLocal {
                let version = self.own(&ctx.exec, &name, value);
                Held::Ref {
                    owner: self.me.clone(),
                    version,
                }
            } else {
                Held::Value(value)
            };
            match next {
                Some(t) => outgoing.entry(t).or_default().states.push((name, held)),
                None => {
                    let carry = match held {
                        Held::Value(Some(v)) => {
                            blobs.push((Kind::State, v));
                            Carry::Value {
                                blob: blobs.len() - 1,
                            }
                        }
                        Held::Value(None) => Carry::Absent,
                        Held::Ref { owner, version } => Carry::Ref { owner, version },
                    };
                    reports.push(Report::Final { state: name, carry });
                }
            }
        }
        if plan.succs[task].is_empty() {
            blobs.push((Kind::Arg, output.clone()));
            reports.push(Report::Output {
                task,
                blob: blobs.len() - 1,
            });
        }
        Routed {
            outgoing,
            reports,
            blobs,
        }
    }

    /// Keeps a state on this node (StateLocal) and returns its version.
    pub(super) fn own(&self, exec: &str, name: &str, value: Option<Bytes>) -> u64 {
        let mut owned = lock(&self.owned);
        let key = (exec.to_owned(), name.to_owned());
        let version = owned.get(&key).map_or(1, |o| o.version + 1);
        owned.insert(
            key,
            Owned {
                value,
                version,
                expires: Instant::now() + OWNED_TTL,
            },
        );
        version
    }

    /// Hands a state over to a new owner: returns it once, at `version`,
    /// and forgets it. A second take, or another version, is refused.
    pub fn take(&self, exec: &str, name: &str, version: u64) -> Result<Option<Bytes>, String> {
        let mut owned = lock(&self.owned);
        let key = (exec.to_owned(), name.to_owned());
        match owned.get(&key) {
            Some(o) if o.version == version => Ok(owned.remove(&key).and_then(|o| o.value)),
            Some(o) => Err(format!(
                "state {name:?} is at version {}, not {version}",
                o.version
            )),
            None => Err(format!(
                "state {name:?} is not held here (taken already, or expired)"
            )),
        }
    }

    /// Fetches a state from its owner (this node: no transfer at all).
    pub(crate) async fn fetch(
        &self,
        exec: &str,
        remaining: Duration,
        owner: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<Bytes>, String> {
        if owner == self.me {
            return self.take(exec, name, version);
        }
        let mut url = routes::wf(owner, &[exec, "states", name]).map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("version", &version.to_string());
        let head = request_head_bytes(url.as_str(), 0);
        self.traffic.count(
            exec,
            &Cost {
                control: head,
                wire: head,
                ..Cost::default()
            },
        );
        // Taking a state hands it over: never sent twice.
        let request = PeerRequest::get(url)
            .timeout(remaining.max(Duration::from_secs(30)))
            .retry(Retry::Never);
        let answer = self
            .node
            .peer()
            .send(request)
            .await
            .and_then(|a| a.success())
            .map_err(|e| e.to_string())?;
        let present = answer
            .header(routes::STATE_PRESENT_HEADER)
            .is_none_or(|v| v != "0");
        Ok(present.then_some(answer.body))
    }
}

/// Each state `task` hands on, with its next user (`None`: the entry
/// node). StateProp on a chain carries every state along with the output.
fn state_routes(plan: &super::Plan, task: usize) -> Vec<(String, Option<usize>)> {
    if plan.spec.model == Model::StateProp && plan.is_chain {
        let next = plan.succs[task].first().copied();
        plan.spec.states.keys().map(|n| (n.clone(), next)).collect()
    } else {
        plan.uses[task]
            .iter()
            .map(|u| (u.state.clone(), u.next))
            .collect()
    }
}

/// The inputs a task is called with: the client's input (sources), its own
/// `args`, then its predecessors' outputs in edge order, each tagged.
pub(crate) fn task_inputs(
    ctx: &ExecCtx,
    task: usize,
    inputs: &HashMap<Option<usize>, Bytes>,
) -> Vec<Input> {
    let plan = &ctx.plan;
    let mut out = Vec::new();
    if let Some(data) = inputs.get(&None) {
        out.push(Input {
            source: Source::Client,
            data: data.to_vec(),
        });
    }
    if let Some(args) = &plan.spec.tasks[task].args {
        out.push(Input {
            source: Source::Client,
            data: args.as_bytes().to_vec(),
        });
    }
    for &p in &plan.preds[task] {
        if let Some(data) = inputs.get(&Some(p)) {
            out.push(Input {
                source: Source::Task(plan.id(p).to_owned()),
                data: data.to_vec(),
            });
        }
    }
    out
}

/// True when a pending task has every input and state it waits for.
fn is_ready(p: &Pending, task: usize) -> bool {
    let plan = &p.ctx.plan;
    let inputs_ok = if plan.preds[task].is_empty() {
        p.inputs.contains_key(&None)
    } else {
        plan.preds[task]
            .iter()
            .all(|&q| p.inputs.contains_key(&Some(q)))
    };
    let states_ok = if plan.spec.model == Model::StateProp && plan.is_chain {
        plan.spec.states.keys().all(|s| p.states.contains_key(s))
    } else {
        plan.uses[task]
            .iter()
            .all(|u| p.states.contains_key(&u.state))
    };
    inputs_ok && states_ok
}
