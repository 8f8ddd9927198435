//! PureFaaS: the entry node plays the client and calls every ready task —
//! independent ones in parallel — with its inputs and the states it uses
//! embedded, taking back the output and the states; and the other side,
//! serving such a call on the task's node.

use super::embedded::EmbeddedStore;
use super::entry::{Final, Run, StateValues, WorkflowError};
use super::hop::task_inputs;
use super::lock;
use super::send::Message;
use super::{Carry, ExecCtx, Plan, WireCtx, unix_ms};
use crate::Workflows;
use bytes::Bytes;
use edge_proto::envelope::{Cost, Envelope, Kind, response_head_bytes};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// The header of a PureFaaS task call.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunTask {
    /// The execution.
    pub ctx: WireCtx,
    /// The task.
    pub task: usize,
    /// Inputs (source, blob).
    pub inputs: Vec<(Option<usize>, usize)>,
    /// States embedded (name, carry).
    pub states: Vec<(String, Carry)>,
}

/// The header of a PureFaaS task's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunAnswer {
    /// The output blob.
    pub output: usize,
    /// States after the task (name, carry).
    pub states: Vec<(String, Carry)>,
    /// How long it ran, µs.
    pub duration_us: u64,
}

/// What the entry node knows while it drives a PureFaaS run.
struct Progress {
    outputs: Vec<Option<Bytes>>,
    states: BTreeMap<String, Option<Bytes>>,
    /// (state, task): the task has returned the state.
    state_done: HashSet<(String, usize)>,
    started: Vec<bool>,
}

impl Progress {
    fn new(n: usize, initial: BTreeMap<String, Option<Bytes>>) -> Self {
        Self {
            outputs: vec![None; n],
            states: initial,
            state_done: HashSet::new(),
            started: vec![false; n],
        }
    }

    /// Tasks not started yet whose inputs are all here and whose states'
    /// previous users have returned them; marked started.
    fn ready(&mut self, plan: &Plan) -> Vec<usize> {
        let ready: Vec<usize> = (0..plan.len())
            .filter(|&t| !self.started[t])
            .filter(|&t| plan.preds[t].iter().all(|&p| self.outputs[p].is_some()))
            .filter(|&t| {
                plan.uses[t].iter().all(|u| {
                    u.prev
                        .is_none_or(|p| self.state_done.contains(&(u.state.clone(), p)))
                })
            })
            .collect();
        for &t in &ready {
            self.started[t] = true;
        }
        ready
    }

    /// The inputs (the client's `input` for a source) and states task `t`
    /// is called with.
    fn call_of(
        &self,
        plan: &Plan,
        t: usize,
        input: &Bytes,
    ) -> (HashMap<Option<usize>, Bytes>, StateValues) {
        let mut inputs = HashMap::new();
        if plan.preds[t].is_empty() {
            inputs.insert(None, input.clone());
        }
        for &p in &plan.preds[t] {
            if let Some(o) = &self.outputs[p] {
                inputs.insert(Some(p), o.clone());
            }
        }
        let states = plan.uses[t]
            .iter()
            .map(|u| {
                (
                    u.state.clone(),
                    self.states.get(&u.state).cloned().flatten(),
                )
            })
            .collect();
        (inputs, states)
    }

    /// Task `t` returned `output` and `states`.
    fn record(&mut self, t: usize, output: &Bytes, states: StateValues) {
        self.outputs[t] = Some(output.clone());
        for (name, v) in states {
            self.state_done.insert((name.clone(), t));
            self.states.insert(name, v);
        }
    }
}

/// What a PureFaaS task call gives back.
struct TaskAnswer {
    output: Bytes,
    states: StateValues,
    start_unix_ms: u64,
    duration_us: u64,
}

impl Workflows {
    /// PureFaaS: call every ready task (independent ones in parallel), with
    /// its inputs and the states it uses embedded, and take back its output
    /// and states.
    pub(super) async fn pure_faas(
        self: &Arc<Self>,
        run: &Arc<Run>,
        initial: BTreeMap<String, Option<Bytes>>,
    ) {
        let ctx = run.ctx.clone();
        let plan = &ctx.plan;
        let mut progress = Progress::new(plan.len(), initial);
        let mut finished = 0;
        let mut running = tokio::task::JoinSet::new();
        let input = Bytes::from(plan.spec.input.clone().into_bytes());
        while finished < plan.len() {
            for t in progress.ready(plan) {
                let (inputs, task_states) = progress.call_of(plan, t, &input);
                let (node, ctx) = (self.clone(), ctx.clone());
                running.spawn(async move {
                    let r = node.call_task(&ctx, t, inputs, task_states).await;
                    (t, r)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (t, answer) = match joined {
                Ok((t, Ok(answer))) => (t, answer),
                Ok((t, Err((node, e)))) => return self.fail_run(run, Some(t), &node, e),
                Err(e) => {
                    return self.fail_run(run, None, &self.me, format!("task panicked: {e}"));
                }
            };
            progress.record(t, &answer.output, answer.states);
            let mut s = lock(&run.state);
            s.done.insert(
                t,
                (
                    ctx.nodes[t].clone(),
                    answer.start_unix_ms,
                    answer.duration_us,
                ),
            );
            if plan.succs[t].is_empty() {
                s.outputs.insert(t, answer.output);
            }
            finished += 1;
        }
        let mut s = lock(&run.state);
        for (name, v) in progress.states {
            s.finals.insert(name, Final::Value(v));
        }
        drop(s);
        run.notify.notify_waiters();
    }

    fn fail_run(&self, run: &Run, task: Option<usize>, node: &str, error: String) {
        let mut s = lock(&run.state);
        s.failed.get_or_insert(WorkflowError::Task {
            task: task
                .map(|t| run.ctx.plan.id(t).to_owned())
                .unwrap_or_default(),
            node: node.to_owned(),
            error,
        });
        drop(s);
        run.notify.notify_waiters();
    }

    /// One PureFaaS call: to this node in-process, or to a peer over HTTP.
    /// An error names the node.
    async fn call_task(
        self: &Arc<Self>,
        ctx: &ExecCtx,
        task: usize,
        inputs: HashMap<Option<usize>, Bytes>,
        states: StateValues,
    ) -> Result<TaskAnswer, (String, String)> {
        let target = ctx.nodes[task].clone();
        let mut env = Envelope::new(RunTask {
            ctx: ctx.wire(false),
            task,
            inputs: Vec::new(),
            states: Vec::new(),
        });
        for (from, data) in &inputs {
            let blob = env.push(Kind::Arg, data.clone());
            env.header.inputs.push((*from, blob));
        }
        for (name, v) in &states {
            let carry = match v {
                Some(v) => Carry::Value {
                    blob: env.push(Kind::State, v.clone()),
                },
                None => Carry::Absent,
            };
            env.header.states.push((name.clone(), carry));
        }
        let started = unix_ms();
        let answer = if target == self.me {
            let (_, cost) = env.encode().map_err(|e| (self.me.clone(), e.to_string()))?;
            self.traffic.count(&ctx.exec, &cost);
            let (raw, _) = self
                .serve_task(ctx, env)
                .await
                .map_err(|e| (target.clone(), e))?;
            raw
        } else {
            self.post_ctx(ctx, &target, Message::Run, env)
                .await
                .map_err(|e| (target.clone(), e))?
        };
        let answer =
            Envelope::<RunAnswer>::decode(answer).map_err(|e| (target.clone(), e.to_string()))?;
        let output = answer
            .blob(answer.header.output)
            .map_err(|e| (target.clone(), e.to_string()))?;
        let mut out_states = Vec::new();
        for (name, carry) in &answer.header.states {
            let v = match carry {
                Carry::Value { blob } => Some(
                    answer
                        .blob(*blob)
                        .map_err(|e| (target.clone(), e.to_string()))?,
                ),
                _ => None,
            };
            out_states.push((name.clone(), v));
        }
        Ok(TaskAnswer {
            output,
            states: out_states,
            start_unix_ms: started,
            duration_us: answer.header.duration_us,
        })
    }

    /// Serves a PureFaaS task call: runs the task against the embedded
    /// states and answers with its output and states (cost counted here,
    /// by the node that sends the answer).
    /// `ctx` is the execution `env` names ([`Workflows::resolve`]).
    pub async fn serve_task(
        &self,
        ctx: &ExecCtx,
        env: Envelope<RunTask>,
    ) -> Result<(Bytes, Cost), String> {
        let RunTask {
            task,
            inputs,
            states,
            ..
        } = &env.header;
        let task = *task;
        if task >= ctx.plan.len() {
            return Err("no such task".into());
        }
        let mut given = HashMap::new();
        for (from, blob) in inputs {
            given.insert(*from, env.blob(*blob).map_err(|e| e.to_string())?);
        }
        let mut visible = BTreeMap::new();
        for (name, carry) in states {
            let v = match carry {
                Carry::Value { blob } => Some(env.blob(*blob).map_err(|e| e.to_string())?.to_vec()),
                _ => None,
            };
            visible.insert(name.clone(), v);
        }
        let store = Arc::new(EmbeddedStore::new(visible));
        let call_inputs = task_inputs(ctx, task, &given);
        let t0 = Instant::now();
        let function = &ctx.plan.spec.tasks[task].function;
        let output = self
            .node
            .invoke_with_store(
                function,
                &ctx.exec,
                call_inputs,
                store.clone(),
                ctx.remaining(),
            )
            .await
            .map_err(|e| format!("task {:?}: {e}", ctx.plan.id(task)))?;
        let duration_us = t0.elapsed().as_micros() as u64;
        let values = Arc::try_unwrap(store)
            .map_err(|_| "state store still in use".to_string())?
            .into_values();
        let mut answer = Envelope::new(RunAnswer {
            output: 0,
            states: Vec::new(),
            duration_us,
        });
        answer.header.output = answer.push(Kind::Arg, Bytes::from(output));
        for (name, v) in values {
            let carry = match v {
                Some(v) => Carry::Value {
                    blob: answer.push(Kind::State, Bytes::from(v)),
                },
                None => Carry::Absent,
            };
            answer.header.states.push((name, carry));
        }
        let (raw, mut cost) = answer.encode().map_err(|e| e.to_string())?;
        if ctx.entry != self.me {
            cost.wire = raw.len() as u64 + response_head_bytes(raw.len());
        }
        self.traffic.count(&ctx.exec, &cost);
        Ok((raw, cost))
    }
}

impl super::send::WithCtx for RunTask {
    fn set_ctx(&mut self, ctx: WireCtx) {
        self.ctx = ctx;
    }
}
