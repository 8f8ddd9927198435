//! PureFaaS: the entry node plays the client and calls every ready task —
//! independent ones in parallel — with its inputs and the states it uses
//! embedded, taking back the output and the states; and the other side,
//! serving such a call on the task's node.

use super::embedded::EmbeddedStore;
use super::entry::{Final, Run, StateValues, WorkflowError};
use super::hop::task_inputs;
use super::lock;
use super::send::Message;
use super::wire::{Cost, Envelope, Kind, response_head_bytes};
use super::{Carry, ExecCtx, unix_ms};
use crate::node::Node;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// The header of a PureFaaS task call.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunTask {
    /// The execution.
    pub ctx: ExecCtx,
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

/// What a PureFaaS task call gives back.
struct TaskAnswer {
    output: Bytes,
    states: StateValues,
    start_unix_ms: u64,
    duration_us: u64,
}

impl Node {
    /// PureFaaS: call every ready task (independent ones in parallel), with
    /// its inputs and the states it uses embedded, and take back its output
    /// and states.
    pub(super) async fn wf_pure_faas(
        self: &Arc<Self>,
        run: &Arc<Run>,
        initial: BTreeMap<String, Option<Bytes>>,
    ) {
        let ctx = run.ctx.clone();
        let plan = &ctx.plan;
        let n = plan.len();
        let mut outputs: Vec<Option<Bytes>> = vec![None; n];
        let mut states = initial;
        let mut state_done: HashMap<(String, usize), bool> = HashMap::new();
        let mut started = vec![false; n];
        let mut finished = 0;
        let mut running = tokio::task::JoinSet::new();
        let input = Bytes::from(plan.spec.input.clone().into_bytes());
        while finished < n {
            let waiting: Vec<usize> = (0..n).filter(|&t| !started[t]).collect();
            for t in waiting {
                let data_ready = plan.preds[t].iter().all(|&p| outputs[p].is_some());
                let states_ready = plan.uses[t].iter().all(|u| {
                    u.prev
                        .is_none_or(|p| state_done.contains_key(&(u.state.clone(), p)))
                });
                if !(data_ready && states_ready) {
                    continue;
                }
                started[t] = true;
                let mut inputs = HashMap::new();
                if plan.preds[t].is_empty() {
                    inputs.insert(None, input.clone());
                }
                for &p in &plan.preds[t] {
                    if let Some(o) = &outputs[p] {
                        inputs.insert(Some(p), o.clone());
                    }
                }
                let task_states: StateValues = plan.uses[t]
                    .iter()
                    .map(|u| (u.state.clone(), states.get(&u.state).cloned().flatten()))
                    .collect();
                let (node, ctx) = (self.clone(), ctx.clone());
                running.spawn(async move {
                    let r = node.wf_call_task(&ctx, t, inputs, task_states).await;
                    (t, r)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (t, result) = match joined {
                Ok(x) => x,
                Err(e) => {
                    self.wf_fail_run(run, None, &self.workflows.me, format!("task panicked: {e}"));
                    return;
                }
            };
            match result {
                Ok(TaskAnswer {
                    output,
                    states: new_states,
                    start_unix_ms,
                    duration_us,
                }) => {
                    outputs[t] = Some(output.clone());
                    for (name, v) in new_states {
                        state_done.insert((name.clone(), t), true);
                        states.insert(name, v);
                    }
                    let mut s = lock(&run.state);
                    s.done
                        .insert(t, (ctx.nodes[t].clone(), start_unix_ms, duration_us));
                    if plan.succs[t].is_empty() {
                        s.outputs.insert(t, output);
                    }
                    finished += 1;
                }
                Err((node, e)) => {
                    self.wf_fail_run(run, Some(t), &node, e);
                    return;
                }
            }
        }
        let mut s = lock(&run.state);
        for (name, v) in states {
            s.finals.insert(name, Final::Value(v));
        }
        drop(s);
        run.notify.notify_waiters();
    }

    fn wf_fail_run(&self, run: &Run, task: Option<usize>, node: &str, error: String) {
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
    async fn wf_call_task(
        self: &Arc<Self>,
        ctx: &ExecCtx,
        task: usize,
        inputs: HashMap<Option<usize>, Bytes>,
        states: StateValues,
    ) -> Result<TaskAnswer, (String, String)> {
        let target = ctx.nodes[task].clone();
        let mut env = Envelope::new(RunTask {
            ctx: ctx.clone(),
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
        let (body, cost) = env
            .encode()
            .map_err(|e| (self.workflows.me.clone(), e.to_string()))?;
        let started = unix_ms();
        let answer = if target == self.workflows.me {
            self.workflows.traffic.count(&ctx.exec, &cost);
            let (raw, _) = self
                .wf_serve_task(env)
                .await
                .map_err(|e| (target.clone(), e))?;
            raw
        } else {
            self.wf_post(
                &ctx.exec,
                ctx.remaining(),
                &target,
                Message::Run,
                body,
                cost,
            )
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
    pub async fn wf_serve_task(&self, env: Envelope<RunTask>) -> Result<(Bytes, Cost), String> {
        let RunTask {
            ctx,
            task,
            inputs,
            states,
        } = &env.header;
        let (ctx, task) = (ctx, *task);
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
        if ctx.entry != self.workflows.me {
            cost.wire = raw.len() as u64 + response_head_bytes(raw.len());
        }
        self.workflows.traffic.count(&ctx.exec, &cost);
        Ok((raw, cost))
    }
}
