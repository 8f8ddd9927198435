//! Messages between the nodes of an execution: deliveries to a task's node,
//! reports to the entry node, each bounded by the execution's deadline and
//! counted against it.

use super::hop::{Deliver, Outgoing, Report, Reports};
use super::{Carry, ExecCtx, Held};
use crate::WireCtx;
use crate::Workflows;
use bytes::Bytes;
use edge_proto::envelope::{Cost, Envelope, Kind, request_head_bytes};
use edge_proto::{PeerError, PeerRequest, Retry, routes};
use serde::{Serialize, de::DeserializeOwned};
use std::sync::Arc;
use std::time::Duration;

/// How long past an execution's deadline a message may still take.
const SEND_GRACE: Duration = Duration::from_millis(250);

/// The messages of an execution, each to its route on the target node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// A delivery to a task (`/v1/wf/deliver`): idempotent, a repeated one
    /// is ignored.
    Deliver,
    /// A PureFaaS task call (`/v1/wf/run`): runs the task, so never repeated.
    Run,
    /// Reports to the entry node (`/v1/wf/report`).
    Report,
}

impl Message {
    /// Its route under `/v1/wf/`.
    fn route(self) -> &'static str {
        match self {
            Message::Deliver => "deliver",
            Message::Run => "run",
            Message::Report => "report",
        }
    }

    /// A message that may be sent twice without effect.
    fn idempotent(self) -> bool {
        self == Message::Deliver
    }
}

impl Workflows {
    /// Sends `body` as `message` to the node at `target` (POST), counting
    /// its cost against `exec`.
    /// The request may take until the execution's deadline (`remaining`),
    /// and a moment more: on a slow edge link a large message may need all
    /// of it, and past it the run has failed anyway.
    pub(crate) async fn post(
        &self,
        exec: &str,
        remaining: Duration,
        target: &str,
        message: Message,
        body: Bytes,
        mut cost: Cost,
    ) -> Result<Bytes, PeerError> {
        let url = routes::wf(target, &[message.route()])?;
        cost.wire = body.len() as u64 + request_head_bytes(url.as_str(), body.len());
        self.traffic.count(exec, &cost);
        // Bounded by the execution's deadline (plus a moment, so that the
        // entry node's own deadline, which names the stuck task, fires
        // first): past it the run has failed anyway, and a hung peer must
        // not hold this node's send longer. An idempotent message that got
        // no answer (a connection the peer closed as it was reused, say) is
        // sent once more within that time.
        let retry = if message.idempotent() {
            Retry::Idempotent
        } else {
            Retry::Never
        };
        let request = PeerRequest::post(url, body, "application/octet-stream")
            .timeout(remaining + SEND_GRACE)
            .retry(retry);
        let answer = self.node.peer().send(request).await?.success()?;
        Ok(answer.body)
    }

    /// Sends reports to the entry node (or records them, if this is it).
    pub(crate) async fn report(
        self: &Arc<Self>,
        ctx: &ExecCtx,
        reports: Vec<Report>,
        blobs: Vec<(Kind, Bytes)>,
    ) {
        let mut env = Envelope::new(Reports {
            exec: ctx.exec.clone(),
            reports,
        });
        env.blobs = blobs;
        let Ok((body, cost)) = env.encode() else {
            return;
        };
        if ctx.entry == self.me {
            self.traffic.count(&ctx.exec, &cost);
            self.accept_reports(env);
            return;
        }
        if let Err(e) = self
            .post(
                &ctx.exec,
                ctx.remaining(),
                &ctx.entry,
                Message::Report,
                body,
                cost,
            )
            .await
        {
            tracing::warn!(exec = %ctx.exec, entry = %ctx.entry, error = %e, "cannot report to the entry node");
        }
    }

    pub(super) async fn fail(
        self: &Arc<Self>,
        ctx: &ExecCtx,
        task: Option<usize>,
        node: &str,
        error: String,
    ) {
        tracing::warn!(exec = %ctx.exec, ?task, node, %error, "workflow step failed");
        let report = Report::Failed {
            task,
            node: node.to_owned(),
            error,
        };
        self.report(ctx, vec![report], Vec::new()).await;
    }

    /// Sends a delivery to the node of `task` (in-process when it is this node).
    pub(super) async fn send(
        self: &Arc<Self>,
        ctx: &ExecCtx,
        task: usize,
        out: Outgoing,
    ) -> Result<(), String> {
        let mut env = Envelope::new(Deliver {
            ctx: ctx.wire(false),
            task,
            inputs: Vec::new(),
            states: Vec::new(),
        });
        for (from, data) in out.inputs {
            let blob = env.push(Kind::Arg, data);
            env.header.inputs.push((from, blob));
        }
        for (name, held) in out.states {
            let carry = match held {
                Held::Value(Some(v)) => Carry::Value {
                    blob: env.push(Kind::State, v),
                },
                Held::Value(None) => Carry::Absent,
                Held::Ref { owner, version } => Carry::Ref { owner, version },
            };
            env.header.states.push((name, carry));
        }
        self.dispatch(ctx, task, env).await
    }

    /// Hands `env` to the node of `task`: in-process when it is this node,
    /// else over HTTP.
    pub(super) async fn dispatch(
        self: &Arc<Self>,
        ctx: &ExecCtx,
        task: usize,
        env: Envelope<Deliver>,
    ) -> Result<(), String> {
        let target = &ctx.nodes[task];
        if *target == self.me {
            let (_, cost) = env.encode().map_err(|e| e.to_string())?;
            self.traffic.count(&ctx.exec, &cost);
            self.clone().deliver(ctx.clone(), env);
            return Ok(());
        }
        self.post_ctx(ctx, target, Message::Deliver, env)
            .await
            .map(|_| ())
    }

    /// Sends `env` as `message` to `target`. Its header carries the plan if
    /// this node has not yet given `target` this execution's plan, or if
    /// `target` answers that it does not know it; else only its digest.
    pub(super) async fn post_ctx<H: WithCtx>(
        &self,
        ctx: &ExecCtx,
        target: &str,
        message: Message,
        mut env: Envelope<H>,
    ) -> Result<Bytes, String> {
        let mut with_plan = !self.plan_sent(ctx, target);
        loop {
            env.header.set_ctx(ctx.wire(with_plan));
            let (body, cost) = env.encode().map_err(|e| e.to_string())?;
            match self
                .post(&ctx.exec, ctx.remaining(), target, message, body, cost)
                .await
            {
                Ok(answer) => {
                    if with_plan {
                        self.mark_plan_sent(ctx, target);
                    }
                    return Ok(answer);
                }
                // It did not act on the message: it is sent again, with the plan.
                Err(e) if !with_plan && is_plan_unknown(&e) => with_plan = true,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A message header that names its execution.
pub(crate) trait WithCtx: Serialize + DeserializeOwned {
    /// Sets what it says about the execution.
    fn set_ctx(&mut self, ctx: WireCtx);
}

impl WithCtx for Deliver {
    fn set_ctx(&mut self, ctx: WireCtx) {
        self.ctx = ctx;
    }
}

/// The answer of a node that was sent a digest it does not know.
fn is_plan_unknown(e: &PeerError) -> bool {
    matches!(e, PeerError::Status { status: 409, body, .. } if body.contains(PLAN_UNKNOWN))
}

/// The error code a node answers a digest it does not know with.
pub const PLAN_UNKNOWN: &str = "plan_unknown";
