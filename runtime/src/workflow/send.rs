//! Messages between the nodes of an execution: deliveries to a task's node,
//! reports to the entry node, each bounded by the execution's deadline and
//! counted against it.

use super::hop::{Deliver, Outgoing, Report, Reports, chain};
use super::wire::{Cost, Envelope, Kind, request_head_bytes};
use super::{Carry, ExecCtx, Held};
use crate::node::Node;
use bytes::Bytes;
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
    fn path(self) -> &'static str {
        match self {
            Message::Deliver => "/v1/wf/deliver",
            Message::Run => "/v1/wf/run",
            Message::Report => "/v1/wf/report",
        }
    }

    /// A message that may be sent twice without effect.
    fn idempotent(self) -> bool {
        self == Message::Deliver
    }
}

impl Node {
    /// Sends `body` as `message` to the node at `target` (POST), counting
    /// its cost against `exec`.
    /// The request may take until the execution's deadline (`remaining`),
    /// and a moment more: on a slow edge link a large message may need all
    /// of it, and past it the run has failed anyway.
    pub(crate) async fn wf_post(
        &self,
        exec: &str,
        remaining: Duration,
        target: &str,
        message: Message,
        body: Bytes,
        mut cost: Cost,
    ) -> Result<Bytes, String> {
        let url = format!("{}{}", target.trim_end_matches('/'), message.path());
        let url = url.as_str();
        cost.wire = body.len() as u64 + request_head_bytes(url, body.len());
        self.workflows.traffic.count(exec, &cost);
        // Bounded by the execution's deadline (plus a moment, so that the
        // entry node's own deadline, which names the stuck task, fires
        // first): past it the run has failed anyway, and a hung peer must
        // not hold this node's send longer.
        let send = || {
            self.peer
                .http()
                .post(url)
                .timeout(remaining + SEND_GRACE)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(body.clone())
                .send()
        };
        let r = match send().await {
            // An idempotent message that never got an answer — a
            // connection the peer closed as it was reused, say — is sent
            // once more.
            Err(e) if message.idempotent() && !e.is_timeout() => {
                tracing::debug!(error = %chain(&e), url, "delivery failed; retrying once");
                send().await
            }
            r => r,
        }
        .map_err(|e| chain(&e))?;
        let status = r.status();
        let bytes = r.bytes().await.map_err(|e| chain(&e))?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        Ok(bytes)
    }

    /// Sends reports to the entry node (or records them, if this is it).
    pub(crate) async fn wf_report(
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
        if ctx.entry == self.workflows.me {
            self.workflows.traffic.count(&ctx.exec, &cost);
            self.wf_accept_reports(env);
            return;
        }
        if let Err(e) = self
            .wf_post(
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

    pub(super) async fn wf_fail(
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
        self.wf_report(ctx, vec![report], Vec::new()).await;
    }

    /// Sends a delivery to the node of `task` (in-process when it is this node).
    pub(super) async fn wf_send(
        self: &Arc<Self>,
        ctx: &ExecCtx,
        task: usize,
        out: Outgoing,
    ) -> Result<(), String> {
        let mut env = Envelope::new(Deliver {
            ctx: ctx.clone(),
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
        let (body, cost) = env.encode().map_err(|e| e.to_string())?;
        let target = &ctx.nodes[task];
        if *target == self.workflows.me {
            self.workflows.traffic.count(&ctx.exec, &cost);
            self.clone().wf_deliver(env);
            return Ok(());
        }
        self.wf_post(
            &ctx.exec,
            ctx.remaining(),
            target,
            Message::Deliver,
            body,
            cost,
        )
        .await
        .map(|_| ())
    }
}
