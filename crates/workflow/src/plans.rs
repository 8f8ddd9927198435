//! The plan travels once: a node's first message of an execution to another
//! node carries the plan (the spec without the client's `input` and the
//! states' `initial` values, which travel as blobs to the tasks that need
//! them, plus the node of every task); later messages carry its digest. The
//! receiver validates a plan it is sent and keeps it for the execution;
//! a digest it does not know (it restarted, or the first message is still on
//! its way) is answered `409 plan_unknown`, and the sender sends the plan.

use super::spec::{MAX_DEADLINE_MS, Plan, SpecError, WorkflowSpec};
use super::{ExecCtx, LINGER, Workflows, lock, unix_ms};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a workflow message says about its execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireCtx {
    /// The execution id.
    pub exec: String,
    /// The entry node's URL.
    pub entry: String,
    /// When the execution must be over, Unix milliseconds.
    pub deadline_unix_ms: u64,
    /// The digest of the plan.
    pub digest: String,
    /// The plan itself, in a node's first message to another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<WirePlan>,
}

/// The plan as it travels: what a node needs to run its tasks and pass
/// their outputs on — never the client's input or initial state values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WirePlan {
    /// The spec, with `input` and `initial` emptied.
    pub spec: WorkflowSpec,
    /// The node (URL) of every task.
    pub nodes: Vec<String>,
}

/// Why a message's plan could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// A digest this node was never sent a plan for (or forgot).
    #[error("plan {digest} of execution {exec} is not known here")]
    Unknown {
        /// The execution.
        exec: String,
        /// The digest.
        digest: String,
    },
    /// The plan sent does not validate, or does not match its digest.
    #[error("invalid plan: {0}")]
    Invalid(String),
}

/// What an execution's messages share: its plan.
#[derive(Clone)]
struct Shared {
    digest: Arc<str>,
    plan: Arc<Plan>,
    nodes: Arc<Vec<String>>,
}

/// A plan this node was sent, until its execution is over.
pub(crate) struct Known {
    shared: Shared,
    expires: Instant,
}

impl Known {
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires <= now
    }
}

/// The plan of `spec` as it travels, and its digest.
pub(crate) fn wire_plan(spec: &WorkflowSpec, nodes: &[String]) -> (WirePlan, String) {
    let mut spec = spec.clone();
    spec.input.clear();
    spec.initial.clear();
    let wire = WirePlan {
        spec,
        nodes: nodes.to_vec(),
    };
    let digest = digest(&wire);
    (wire, digest)
}

fn digest(plan: &WirePlan) -> String {
    // Serialising a spec cannot fail (strings, numbers and maps with string
    // keys); an empty digest would only make every receiver ask again.
    let json = serde_json::to_vec(plan).unwrap_or_default();
    let hash = Sha256::digest(&json);
    hex::encode(&hash[..16])
}

impl ExecCtx {
    /// A new execution's context (on the entry node).
    pub fn new(exec: String, entry: String, plan: Plan, nodes: Vec<String>, deadline: u64) -> Self {
        let (_, digest) = wire_plan(&plan.spec, &nodes);
        Self {
            exec,
            entry,
            plan: Arc::new(plan),
            nodes: Arc::new(nodes),
            deadline_unix_ms: deadline,
            digest: digest.into(),
        }
    }

    /// What a message says about this execution: with the plan, or only
    /// its digest.
    pub fn wire(&self, with_plan: bool) -> WireCtx {
        WireCtx {
            exec: self.exec.clone(),
            entry: self.entry.clone(),
            deadline_unix_ms: self.deadline_unix_ms,
            digest: self.digest.to_string(),
            plan: with_plan.then(|| wire_plan(&self.plan.spec, &self.nodes).0),
        }
    }
}

impl Workflows {
    /// The execution a message belongs to: from the plan it carries (checked
    /// and kept), or from the plan kept for its digest.
    pub fn resolve(&self, w: &WireCtx) -> Result<ExecCtx, PlanError> {
        let Shared {
            digest,
            plan,
            nodes,
        } = match &w.plan {
            Some(plan) => self.learn(w, plan)?,
            None => self.known(w).ok_or_else(|| PlanError::Unknown {
                exec: w.exec.clone(),
                digest: w.digest.clone(),
            })?,
        };
        Ok(ExecCtx {
            exec: w.exec.clone(),
            entry: w.entry.clone(),
            plan,
            nodes,
            deadline_unix_ms: w.deadline_unix_ms,
            digest,
        })
    }

    /// The plan kept for `w`'s execution, if it has `w`'s digest.
    fn known(&self, w: &WireCtx) -> Option<Shared> {
        lock(&self.plans)
            .get(&w.exec)
            .filter(|k| *k.shared.digest == *w.digest)
            .map(|k| k.shared.clone())
    }

    /// Checks `plan` (sent with `w`) and keeps it for the execution.
    fn learn(&self, w: &WireCtx, plan: &WirePlan) -> Result<Shared, PlanError> {
        if let Some(shared) = self.known(w) {
            return Ok(shared);
        }
        if digest(plan) != w.digest {
            return Err(PlanError::Invalid(
                "the plan does not match its digest".into(),
            ));
        }
        let validated = Plan::new(plan.spec.clone())
            .map_err(|e: SpecError| PlanError::Invalid(e.to_string()))?;
        if plan.nodes.len() != validated.len() {
            return Err(PlanError::Invalid(format!(
                "{} nodes for {} tasks",
                plan.nodes.len(),
                validated.len()
            )));
        }
        let remaining = Duration::from_millis(
            w.deadline_unix_ms
                .saturating_sub(unix_ms())
                .min(MAX_DEADLINE_MS),
        );
        let shared = Shared {
            digest: w.digest.as_str().into(),
            plan: Arc::new(validated),
            nodes: Arc::new(plan.nodes.clone()),
        };
        let known = Known {
            shared: shared.clone(),
            expires: Instant::now() + remaining + LINGER,
        };
        lock(&self.plans).insert(w.exec.clone(), known);
        Ok(shared)
    }

    /// Whether `target` has been sent this execution's plan by this node.
    pub(crate) fn plan_sent(&self, ctx: &ExecCtx, target: &str) -> bool {
        lock(&self.plans_sent).contains_key(&(ctx.exec.clone(), target.to_owned()))
    }

    /// Remembers that `target` has this execution's plan.
    pub(crate) fn mark_plan_sent(&self, ctx: &ExecCtx, target: &str) {
        let until = Instant::now() + ctx.remaining() + LINGER;
        lock(&self.plans_sent).insert((ctx.exec.clone(), target.to_owned()), until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkflowSpec {
        serde_json::from_value(serde_json::json!({
            "tasks": [{ "id": "a", "function": "f", "args": "x=1" }, { "id": "b", "function": "f" }],
            "edges": [["a", "b"]],
            "states": { "S": ["a", "b"] },
            "initial": { "S": "secret initial value" },
            "input": "the client's input",
            "model": "state-prop",
        }))
        .unwrap()
    }

    #[test]
    fn the_wire_plan_never_carries_input_or_initial_values() {
        let ctx = ExecCtx::new(
            "e".into(),
            "http://a".into(),
            Plan::new(spec()).unwrap(),
            vec!["http://a".into(), "http://b".into()],
            unix_ms() + 1000,
        );
        let json = serde_json::to_string(&ctx.wire(true)).unwrap();
        assert!(!json.contains("secret initial value") && !json.contains("the client's input"));
        assert!(json.contains("x=1"), "task args are part of the plan");
        let digest_only = serde_json::to_string(&ctx.wire(false)).unwrap();
        assert!(!digest_only.contains("\"plan\"") && digest_only.contains(&*ctx.digest));
        // The same plan with another input has the same digest.
        let mut other = spec();
        other.input = "different".into();
        assert_eq!(wire_plan(&other, &ctx.nodes).1, *ctx.digest);
        other.tasks[0].args = None;
        assert_ne!(wire_plan(&other, &ctx.nodes).1, *ctx.digest);
    }
}
