//! What every node does in a StateProp or StateLocal execution: take a
//! delivery, yield until the task's inputs and states are all here, run the
//! task, send its output to its successors' nodes and each state to the
//! node of its next user (or, at the end, to the entry node).

use super::embedded::EmbeddedStore;
use super::lock;
use super::spec::Model;
use super::wire::{Cost, Envelope, Kind, request_head_bytes};
use super::{Carry, ExecCtx, Held, LINGER, OWNED_TTL, Owned, Pending, unix_ms};
use crate::node::Node;
use bytes::Bytes;
use edge_host_api::{Input, Source, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A delivery to a task: inputs from predecessors (or the client) and states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliver {
    /// The execution.
    pub ctx: ExecCtx,
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

/// An outgoing message, grouped by destination task.
pub(super) struct Outgoing {
    pub(super) inputs: Vec<(Option<usize>, Bytes)>,
    pub(super) states: Vec<(String, Held)>,
}

impl Node {
    /// Takes a delivery: stores what it brings and runs the task once
    /// everything it needs is here (otherwise the call just returns: yield).
    /// A delivery repeated (same execution, task and source) changes nothing.
    pub fn wf_deliver(self: Arc<Self>, env: Envelope<Deliver>) {
        let Deliver {
            ctx,
            task,
            inputs,
            states,
        } = env.header.clone();
        if task >= ctx.plan.len() || self.workflows.is_aborted(&ctx.exec) {
            return;
        }
        let key = (ctx.exec.clone(), task);
        let ready = {
            let mut pending = lock(&self.workflows.pending);
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
            tokio::spawn(async move { node.wf_run_hop(ctx, task, inputs, states).await });
        }
    }

    /// Runs a ready task and sends everything it produced on.
    async fn wf_run_hop(
        self: Arc<Self>,
        ctx: ExecCtx,
        task: usize,
        inputs: HashMap<Option<usize>, Bytes>,
        mut states: HashMap<String, Held>,
    ) {
        let me = self.workflows.me.clone();
        let plan = &ctx.plan;
        let spec_task = &plan.spec.tasks[task];
        // StateLocal: fetch each referenced state from its last owner.
        for (name, held) in states.iter_mut() {
            if let Held::Ref { owner, version } = held.clone() {
                match self
                    .wf_fetch(&ctx.exec, ctx.remaining(), &owner, name, version)
                    .await
                {
                    Ok(v) => *held = Held::Value(v),
                    Err(e) => {
                        return self
                            .wf_fail(
                                &ctx,
                                Some(task),
                                &owner,
                                format!("fetching state {name:?}: {e}"),
                            )
                            .await;
                    }
                }
            }
        }
        let used: Vec<&str> = plan.uses[task].iter().map(|u| u.state.as_str()).collect();
        let visible: BTreeMap<String, Option<Vec<u8>>> = used
            .iter()
            .map(|s| {
                let v = match states.get(*s) {
                    Some(Held::Value(v)) => v.as_ref().map(|b| b.to_vec()),
                    _ => None,
                };
                (s.to_string(), v)
            })
            .collect();
        // Aborted while it waited for its states: it never runs.
        if self.workflows.is_aborted(&ctx.exec) {
            return;
        }
        let started_ms = unix_ms();
        let t0 = Instant::now();
        let store = Arc::new(EmbeddedStore::new(visible));
        let call_inputs = task_inputs(&ctx, task, &inputs);
        let result = self
            .invoke_with_store(
                &spec_task.function,
                &ctx.exec,
                call_inputs,
                store.clone(),
                ctx.remaining(),
            )
            .await;
        let output = match result {
            Ok(o) => Bytes::from(o),
            Err(e) => {
                return self
                    .wf_fail(
                        &ctx,
                        Some(task),
                        &me,
                        format!("task {:?}: {e}", spec_task.id),
                    )
                    .await;
            }
        };
        let duration_us = t0.elapsed().as_micros() as u64;
        let updated = match Arc::try_unwrap(store) {
            Ok(s) => s.into_values(),
            Err(_) => {
                return self
                    .wf_fail(&ctx, Some(task), &me, "state store still in use".into())
                    .await;
            }
        };
        for (name, value) in updated {
            states.insert(name, Held::Value(value.map(Bytes::from)));
        }

        // Where everything goes: successors get the output; each state goes
        // to its next user, or to the entry node after its last one.
        let mut outgoing: BTreeMap<usize, Outgoing> = BTreeMap::new();
        for &s in &plan.succs[task] {
            outgoing
                .entry(s)
                .or_insert_with(|| Outgoing {
                    inputs: Vec::new(),
                    states: Vec::new(),
                })
                .inputs
                .push((Some(task), output.clone()));
        }
        let mut reports = Vec::new();
        let mut report_blobs: Vec<(Kind, Bytes)> = Vec::new();
        let chain_prop = plan.spec.model == Model::StateProp && plan.is_chain;
        let mut routes: Vec<(String, Option<usize>)> = Vec::new();
        if chain_prop {
            // Every state rides along the chain with the output.
            let next = plan.succs[task].first().copied();
            for name in plan.spec.states.keys() {
                routes.push((name.clone(), next));
            }
        } else {
            for u in &plan.uses[task] {
                routes.push((u.state.clone(), u.next));
            }
        }
        for (name, next) in routes {
            let value = match states.remove(&name) {
                Some(Held::Value(v)) => v,
                _ => None,
            };
            let held = if plan.spec.model == Model::StateLocal {
                let version = self.wf_own(&ctx.exec, &name, value);
                Held::Ref {
                    owner: me.clone(),
                    version,
                }
            } else {
                Held::Value(value)
            };
            match next {
                Some(t) => outgoing
                    .entry(t)
                    .or_insert_with(|| Outgoing {
                        inputs: Vec::new(),
                        states: Vec::new(),
                    })
                    .states
                    .push((name, held)),
                None => {
                    let carry = match held {
                        Held::Value(Some(v)) => {
                            report_blobs.push((Kind::State, v));
                            Carry::Value {
                                blob: report_blobs.len() - 1,
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
            report_blobs.push((Kind::Arg, output.clone()));
            reports.push(Report::Output {
                task,
                blob: report_blobs.len() - 1,
            });
        }
        if !reports.is_empty() {
            self.wf_report(&ctx, reports, report_blobs).await;
        }
        let done = Report::Done {
            task,
            node: me,
            start_unix_ms: started_ms,
            duration_us,
        };
        self.wf_report(&ctx, vec![done], Vec::new()).await;
        // Reported done first, then sent to every successor at once: one
        // that hangs holds up none of the others, and a failure (or the
        // run's deadline) names the node that did not take it, not this one.
        let sends = outgoing.into_iter().map(|(t, out)| {
            let node = self.clone();
            let ctx = &ctx;
            async move { (t, node.wf_send(ctx, t, out).await) }
        });
        let failed = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .find_map(|(t, r)| r.err().map(|e| (t, e)));
        if let Some((t, e)) = failed {
            let node = ctx.nodes[t].clone();
            self.wf_fail(
                &ctx,
                Some(t),
                &node,
                format!("delivering to task {:?} on {node}: {e}", plan.id(t)),
            )
            .await;
        }
    }

    /// Keeps a state on this node (StateLocal) and returns its version.
    pub(super) fn wf_own(&self, exec: &str, name: &str, value: Option<Bytes>) -> u64 {
        let mut owned = lock(&self.workflows.owned);
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
    pub fn wf_take(&self, exec: &str, name: &str, version: u64) -> Result<Option<Bytes>, String> {
        let mut owned = lock(&self.workflows.owned);
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
    pub(crate) async fn wf_fetch(
        &self,
        exec: &str,
        remaining: Duration,
        owner: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<Bytes>, String> {
        if owner == self.workflows.me {
            return self.wf_take(exec, name, version);
        }
        let mut url = reqwest::Url::parse(owner).map_err(|e| e.to_string())?;
        url.path_segments_mut()
            .map_err(|_| "owner URL cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["v1", "wf", exec, "states", name]);
        url.query_pairs_mut()
            .append_pair("version", &version.to_string());
        let head = request_head_bytes(url.as_str(), 0);
        self.workflows.traffic.count(
            exec,
            &Cost {
                control: head,
                wire: head,
                ..Cost::default()
            },
        );
        let r = self
            .peer
            .http()
            .get(url)
            .timeout(remaining.max(Duration::from_secs(30)))
            .send()
            .await
            .map_err(|e| chain(&e))?;
        let status = r.status();
        let present = r
            .headers()
            .get("edge-state-present")
            .is_none_or(|v| v != "0");
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(present.then_some(body))
    }

    /// Runs `function` once on a fresh instance against `store` (a task's
    /// embedded states), within `budget`.
    pub(crate) async fn invoke_with_store(
        &self,
        function: &str,
        label: &str,
        inputs: Vec<Input>,
        store: Arc<dyn StateStore>,
        budget: Duration,
    ) -> Result<Vec<u8>, crate::InvokeError> {
        let f = self.registry.get(function)?;
        let deadline = Instant::now() + budget.min(self.config.invoke_deadline);
        let session = task_session(label);
        let (output, _) = self
            .run_remote_on(&f, &session, &inputs.into(), deadline, store)
            .await?;
        Ok(output)
    }
}

/// The session a workflow task runs in, from its label (which may come
/// from a peer): only the characters that can name a session, at most 100.
fn task_session(label: &str) -> String {
    let label: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    format!("wf-{label}")
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

/// An error with its causes, `outer: inner: …` (reqwest's own message
/// leaves out why a send failed).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_label_gives_a_valid_session() {
        for label in ["exec-1/t", &"é".repeat(80), &"x".repeat(500), "", "a\0b"] {
            let s = task_session(label);
            assert!(edge_host_api::valid_session_id(&s), "{label:?} gave {s:?}");
        }
        assert_eq!(task_session("e1.t-2"), "wf-e1.t-2");
    }
}
