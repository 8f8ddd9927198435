//! The entry node of an execution: it validates the spec, resolves every
//! task to a node once, plays the client (PureFaaS: it calls every ready
//! task; StateProp/StateLocal: it starts the sources and waits for the
//! sinks' outputs and the final states), and answers with outputs, states,
//! timings and the traffic every node counted.

use super::hop::{Deliver, Report, Reports};
use super::lock;
use super::place::PLACEMENT_LOOKUP;
use super::spec::{Model, Plan, SpecError};
use super::{Carry, ExecCtx, LINGER, unix_ms};
use crate::Workflows;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use edge_core::node::new_session_id;
use edge_proto::envelope::{Cost, Envelope, Kind};
use edge_proto::{PeerRequest, routes};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// States as they are handed to or taken from a task: name and value.
pub(super) type StateValues = Vec<(String, Option<Bytes>)>;

/// Default deadline of an execution.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Why an execution failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A task, a delivery or a node failed.
    #[error("task {task:?} on node {node}: {error}")]
    Task {
        /// The task.
        task: String,
        /// The node.
        node: String,
        /// What happened.
        error: String,
    },
    /// The deadline passed with tasks unfinished.
    #[error("deadline of {deadline_ms} ms passed: task {task:?} on node {node} did not complete (waiting for it: {})", waiting.join(", "))]
    Deadline {
        /// The first unfinished task.
        task: String,
        /// Its node.
        node: String,
        /// The deadline.
        deadline_ms: u64,
        /// Tasks that wait for its output.
        waiting: Vec<String>,
    },
    /// The session's state could not be read or written.
    #[error("session state: {0}")]
    Session(String),
}

/// A final state, as the client sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateView {
    /// The value, base64 (PureFaaS, StateProp, or StateLocal withdrawn into a session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// The value as text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// StateLocal: the node that holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// StateLocal: its version there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// When and where a task ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskTiming {
    /// The task.
    pub task: String,
    /// The node.
    pub node: String,
    /// When it started, ms after the execution started.
    pub start_ms: u64,
    /// How long it ran, ms.
    pub duration_ms: f64,
}

/// Bytes sent per node, and in all.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TrafficView {
    /// Per node URL.
    pub nodes: BTreeMap<String, Cost>,
    /// The sum.
    pub total: Cost,
}

/// The answer to a workflow execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowResult {
    /// The execution id.
    pub execution: String,
    /// The model it ran under.
    pub model: Model,
    /// The sinks' outputs, base64.
    pub outputs: BTreeMap<String, String>,
    /// The sinks' outputs as text, where UTF-8.
    pub outputs_text: BTreeMap<String, String>,
    /// The final states (values, or references under StateLocal).
    pub states: BTreeMap<String, StateView>,
    /// Per task.
    pub timings: Vec<TaskTiming>,
    /// What each node sent.
    pub traffic: TrafficView,
    /// End to end, ms.
    pub duration_ms: f64,
}

/// An execution this node started.
pub struct Run {
    pub(super) ctx: ExecCtx,
    pub(super) state: Mutex<RunState>,
    pub(super) notify: Notify,
    expires: Instant,
}

#[derive(Default)]
pub(super) struct RunState {
    pub(super) outputs: BTreeMap<usize, Bytes>,
    pub(super) finals: BTreeMap<String, Final>,
    pub(super) done: BTreeMap<usize, (String, u64, u64)>,
    pub(super) failed: Option<WorkflowError>,
    /// The session keys the states were read from, with the version seen
    /// (`None`: absent): the write-back applies only if none changed.
    pub(super) session_reads: Vec<(String, Option<u64>)>,
}

#[derive(Debug, Clone)]
pub(super) enum Final {
    Value(Option<Bytes>),
    Ref { owner: String, version: u64 },
}

impl Run {
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires <= now
    }

    fn complete(&self, s: &RunState) -> bool {
        let plan = &self.ctx.plan;
        s.failed.is_some()
            || (s.outputs.len() == plan.sinks().count()
                && s.finals.len() == plan.spec.states.len()
                && s.done.len() == plan.len())
    }
}

impl Workflows {
    /// Checks a spec against this node and its peers without running it.
    pub async fn validate(&self, json: &[u8]) -> Result<Plan, WorkflowError> {
        // (placement errors below are spec errors or unreachable nodes)
        let plan = parse_off_workers(json).await?;
        self.place(&plan, PLACEMENT_LOOKUP).await?;
        Ok(plan)
    }

    /// Runs a workflow to the end and answers with its result.
    #[tracing::instrument(skip(self, json))]
    pub async fn run(self: &Arc<Self>, json: &[u8]) -> Result<WorkflowResult, WorkflowError> {
        let plan = parse_off_workers(json).await?;
        let deadline = plan
            .spec
            .deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_DEADLINE);
        let nodes = self.place(&plan, deadline).await?;
        let ctx = ExecCtx::new(
            new_session_id(),
            self.me.clone(),
            plan,
            nodes,
            unix_ms() + deadline.as_millis() as u64,
        );
        let started = Instant::now();
        let run = Arc::new(Run {
            ctx: ctx.clone(),
            state: Mutex::new(RunState::default()),
            notify: Notify::new(),
            expires: Instant::now() + deadline + LINGER + Duration::from_secs(60),
        });
        lock(&self.runs).insert(ctx.exec.clone(), run.clone());
        let initial = self.initial_states(&run).await?;
        let outcome = tokio::time::timeout(deadline, async {
            match ctx.plan.spec.model {
                Model::PureFaas => self.pure_faas(&run, initial).await,
                Model::StateProp | Model::StateLocal => self.start_hops(&run, initial).await,
            }
            loop {
                let notified = run.notify.notified();
                if run.complete(&lock(&run.state)) {
                    break;
                }
                notified.await;
            }
        })
        .await;
        let failure = {
            let mut s = lock(&run.state);
            match (outcome, s.failed.take()) {
                (_, Some(e)) => Some(e),
                (Err(_), None) => Some(self.deadline_error(&ctx, &s, deadline)),
                (Ok(()), None) => None,
            }
        };
        if let Some(e) = failure {
            // This node forgets the execution at once; the others are told
            // in the background, so a hung one does not delay the answer.
            self.forget(&ctx.exec);
            let (node, ctx) = (self.clone(), ctx.clone());
            tokio::spawn(async move { node.abort(&ctx).await });
            return Err(e);
        }
        self.finish(&run, started).await
    }

    fn deadline_error(&self, ctx: &ExecCtx, s: &RunState, deadline: Duration) -> WorkflowError {
        let stuck = ctx
            .plan
            .topo
            .iter()
            .copied()
            .find(|t| !s.done.contains_key(t))
            .unwrap_or(0);
        WorkflowError::Deadline {
            task: ctx.plan.id(stuck).to_owned(),
            node: ctx.nodes[stuck].clone(),
            deadline_ms: deadline.as_millis() as u64,
            waiting: ctx.plan.succs[stuck]
                .iter()
                .map(|&t| ctx.plan.id(t).to_owned())
                .collect(),
        }
    }

    /// Tells every node of the execution to drop what it holds for it.
    async fn abort(&self, ctx: &ExecCtx) {
        let mut nodes: Vec<&String> = ctx.nodes.iter().collect();
        nodes.sort();
        nodes.dedup();
        self.forget(&ctx.exec);
        // All at once, each bounded: a hung node delays no other's abort.
        let aborts = nodes
            .into_iter()
            .filter(|n| **n != self.me)
            .filter_map(|n| routes::wf(n, &[&ctx.exec]).ok())
            .map(|url| {
                let request = PeerRequest::delete(url).timeout(Duration::from_secs(2));
                self.node.peer().send(request)
            });
        futures_util::future::join_all(aborts).await;
        lock(&self.runs).remove(&ctx.exec);
    }

    /// Records reports sent to this (entry) node.
    pub fn accept_reports(&self, env: Envelope<Reports>) {
        let run = lock(&self.runs).get(&env.header.exec).cloned();
        let Some(run) = run else { return };
        let plan = &run.ctx.plan;
        {
            let mut s = lock(&run.state);
            for r in &env.header.reports {
                match r {
                    Report::Output { task, blob } => {
                        if let Ok(b) = env.blob(*blob) {
                            s.outputs.entry(*task).or_insert(b);
                        }
                    }
                    Report::Final { state, carry } => {
                        let f = match carry {
                            Carry::Value { blob } => Final::Value(env.blob(*blob).ok()),
                            Carry::Absent => Final::Value(None),
                            Carry::Ref { owner, version } => Final::Ref {
                                owner: owner.clone(),
                                version: *version,
                            },
                        };
                        s.finals.entry(state.clone()).or_insert(f);
                    }
                    Report::Done {
                        task,
                        node,
                        start_unix_ms,
                        duration_us,
                    } => {
                        s.done
                            .entry(*task)
                            .or_insert((node.clone(), *start_unix_ms, *duration_us));
                    }
                    Report::Failed { task, node, error } => {
                        if s.failed.is_none() {
                            s.failed = Some(WorkflowError::Task {
                                task: task.map(|t| plan.id(t).to_owned()).unwrap_or_default(),
                                node: node.clone(),
                                error: error.clone(),
                            });
                        }
                    }
                }
            }
        }
        run.notify.notify_waiters();
    }

    /// StateProp/StateLocal: the entry node, as the client, sends the input
    /// to every source and each state to its first user (StateLocal: a
    /// reference to the copy it keeps).
    async fn start_hops(
        self: &Arc<Self>,
        run: &Arc<Run>,
        initial: BTreeMap<String, Option<Bytes>>,
    ) {
        let ctx = &run.ctx;
        let plan = &ctx.plan;
        let input = Bytes::from(plan.spec.input.clone().into_bytes());
        let mut per_task: BTreeMap<usize, (bool, StateValues)> = BTreeMap::new();
        for s in plan.sources() {
            per_task.entry(s).or_default().0 = true;
        }
        let chain_prop = plan.spec.model == Model::StateProp && plan.is_chain;
        let mut finals_now = Vec::new();
        for (name, value) in &initial {
            let first = if chain_prop {
                plan.sources().next()
            } else {
                plan.first_users()
                    .into_iter()
                    .find(|(s, _)| s == name)
                    .map(|(_, t)| t)
            };
            match first {
                Some(t) => per_task
                    .entry(t)
                    .or_default()
                    .1
                    .push((name.clone(), value.clone())),
                // A state no task uses ends as it began.
                None => finals_now.push((name.clone(), Final::Value(value.clone()))),
            }
        }
        if !finals_now.is_empty() {
            let mut s = lock(&run.state);
            for (n, f) in finals_now {
                s.finals.insert(n, f);
            }
        }
        for (task, (gets_input, states)) in per_task {
            let mut env = Envelope::new(Deliver {
                ctx: ctx.wire(false),
                task,
                inputs: Vec::new(),
                states: Vec::new(),
            });
            if gets_input {
                let blob = env.push(Kind::Arg, input.clone());
                env.header.inputs.push((None, blob));
            }
            for (name, value) in states {
                let carry = match (plan.spec.model, value) {
                    (Model::StateLocal, v) => Carry::Ref {
                        owner: self.me.clone(),
                        version: self.own(&ctx.exec, &name, v),
                    },
                    (_, Some(v)) => Carry::Value {
                        blob: env.push(Kind::State, v),
                    },
                    (_, None) => Carry::Absent,
                };
                env.header.states.push((name, carry));
            }
            if let Err(e) = self.dispatch(ctx, task, env).await {
                let mut s = lock(&run.state);
                s.failed.get_or_insert(WorkflowError::Task {
                    task: plan.id(task).to_owned(),
                    node: ctx.nodes[task].clone(),
                    error: format!("delivery failed: {e}"),
                });
                drop(s);
                run.notify.notify_waiters();
                return;
            }
        }
    }

    /// Assembles the result: withdraws StateLocal states into the session if
    /// there is one, writes final states back to it, gathers traffic.
    async fn finish(
        self: &Arc<Self>,
        run: &Arc<Run>,
        started: Instant,
    ) -> Result<WorkflowResult, WorkflowError> {
        let ctx = &run.ctx;
        let plan = &ctx.plan;
        let (outputs, finals, done) = {
            let s = lock(&run.state);
            (s.outputs.clone(), s.finals.clone(), s.done.clone())
        };
        let mut states = BTreeMap::new();
        let mut values: BTreeMap<String, Option<Bytes>> = BTreeMap::new();
        for (name, f) in finals {
            match f {
                Final::Value(v) => {
                    states.insert(name.clone(), view(v.as_ref()));
                    values.insert(name, v);
                }
                Final::Ref { owner, version } if plan.spec.session.is_some() => {
                    let v = self
                        .fetch(&ctx.exec, ctx.remaining(), &owner, &name, version)
                        .await
                        .map_err(|e| WorkflowError::Task {
                            task: String::new(),
                            node: owner.clone(),
                            error: format!("withdrawing state {name:?}: {e}"),
                        })?;
                    states.insert(name.clone(), view(v.as_ref()));
                    values.insert(name, v);
                }
                Final::Ref { owner, version } => {
                    states.insert(
                        name,
                        StateView {
                            base64: None,
                            text: None,
                            owner: Some(owner),
                            version: Some(version),
                        },
                    );
                }
            }
        }
        if let Some(id) = &plan.spec.session {
            let reads = std::mem::take(&mut lock(&run.state).session_reads);
            self.write_session(id, reads, &values).await?;
        }
        let traffic = self.gather_traffic(ctx).await;
        let t0 = ctx.deadline_unix_ms.saturating_sub(
            plan.spec
                .deadline_ms
                .unwrap_or(DEFAULT_DEADLINE.as_millis() as u64),
        );
        let mut timings: Vec<TaskTiming> = done
            .into_iter()
            .map(|(t, (node, start, us))| TaskTiming {
                task: plan.id(t).to_owned(),
                node,
                start_ms: start.saturating_sub(t0),
                duration_ms: us as f64 / 1000.0,
            })
            .collect();
        timings.sort_by_key(|t| t.start_ms);
        lock(&self.runs).remove(&ctx.exec);
        let (outputs, outputs_text) = output_views(plan, outputs);
        Ok(WorkflowResult {
            execution: ctx.exec.clone(),
            model: plan.spec.model,
            outputs,
            outputs_text,
            states,
            timings,
            traffic,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

impl Workflows {
    /// What every node of the execution sent for it (this one counted
    /// here, the others asked; one that does not answer counts nothing).
    async fn gather_traffic(&self, ctx: &ExecCtx) -> TrafficView {
        let mut traffic = TrafficView::default();
        let mut nodes: Vec<&String> = ctx
            .nodes
            .iter()
            .chain(std::iter::once(&ctx.entry))
            .collect();
        nodes.sort();
        nodes.dedup();
        for n in nodes {
            let cost = if *n == self.me {
                self.traffic.of(&ctx.exec)
            } else {
                let asked = async {
                    let url = routes::wf(n, &[&ctx.exec, "traffic"])?;
                    self.node.peer().send(PeerRequest::get(url)).await?.json()
                };
                asked.await.unwrap_or_default()
            };
            traffic.total.add(&cost);
            traffic.nodes.insert(n.clone(), cost);
        }
        traffic
    }
}

/// The sinks' outputs by task id: base64, and as text where UTF-8.
fn output_views(
    plan: &Plan,
    outputs: BTreeMap<usize, Bytes>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut b64 = BTreeMap::new();
    let mut text = BTreeMap::new();
    for (t, b) in outputs {
        b64.insert(plan.id(t).to_owned(), B64.encode(&b));
        if let Ok(s) = std::str::from_utf8(&b) {
            text.insert(plan.id(t).to_owned(), s.to_owned());
        }
    }
    (b64, text)
}

/// Parses and validates a spec on the blocking pool: a large one takes
/// milliseconds that the async workers owe to other requests.
async fn parse_off_workers(json: &[u8]) -> Result<Plan, WorkflowError> {
    let json = json.to_vec();
    tokio::task::spawn_blocking(move || Plan::parse(&json))
        .await
        .map_err(|e| WorkflowError::Session(format!("validating the spec: {e}")))?
        .map_err(WorkflowError::from)
}

fn view(v: Option<&Bytes>) -> StateView {
    StateView {
        base64: v.map(|b| B64.encode(b)),
        text: v.and_then(|b| std::str::from_utf8(b).ok().map(str::to_owned)),
        owner: None,
        version: None,
    }
}
