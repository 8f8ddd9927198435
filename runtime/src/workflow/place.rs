//! Placement: which node runs each task of a plan, resolved once by the
//! entry node from the tasks' pins, this node's functions and what its
//! peers host.

use super::entry::WorkflowError;
use super::spec::{Plan, SpecError};
use crate::node::Node;
use std::collections::HashMap;
use std::time::Duration;

/// Longest wait for a peer's function list while placing tasks.
pub(super) const PLACEMENT_LOOKUP: Duration = Duration::from_secs(3);

impl Node {
    /// Resolves every task to a node: its pin, else this node if it hosts
    /// the function, else the first peer (by name) that does.
    ///
    /// Only the peers the plan may need are asked (those tasks are pinned
    /// to, and all of them only for a function this node lacks), all at
    /// once, each for at most [`PLACEMENT_LOOKUP`] and never past `budget`.
    pub(super) async fn wf_place(
        &self,
        plan: &Plan,
        budget: Duration,
    ) -> Result<Vec<String>, WorkflowError> {
        let peers = &self.workflows.peers;
        let needs_any = plan
            .spec
            .tasks
            .iter()
            .any(|t| t.node.is_none() && self.registry.get(&t.function).is_err());
        let wait = budget.min(PLACEMENT_LOOKUP);
        let lookups = peers
            .iter()
            .filter(|(name, _)| {
                needs_any
                    || plan
                        .spec
                        .tasks
                        .iter()
                        .any(|t| t.node.as_deref() == Some(name))
            })
            .map(|(name, url)| async move {
                let listed = async {
                    let r = self
                        .peer
                        .http()
                        .get(format!("{url}/v1/functions"))
                        .timeout(wait)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    r.json::<Vec<crate::registry::FunctionInfo>>()
                        .await
                        .map_err(|e| e.to_string())
                };
                let listed = tokio::time::timeout(wait, listed)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {wait:?}")));
                (name.clone(), listed)
            });
        let mut hosted: HashMap<String, Vec<String>> = HashMap::new();
        let mut unreachable: HashMap<String, String> = HashMap::new();
        for (name, listed) in futures_util::future::join_all(lookups).await {
            match listed {
                Ok(l) => {
                    hosted.insert(name, l.into_iter().map(|f| f.name).collect());
                }
                Err(e) => {
                    unreachable.insert(name, e);
                }
            }
        }
        for t in &plan.spec.tasks {
            if let Some(e) = t.node.as_deref().and_then(|n| unreachable.get(n)) {
                let url = peers
                    .iter()
                    .find(|(n, _)| Some(n.as_str()) == t.node.as_deref())
                    .map(|(_, u)| u.clone());
                return Err(WorkflowError::Task {
                    task: t.id.clone(),
                    node: url.unwrap_or_default(),
                    error: format!("the node did not answer: {e}"),
                });
            }
        }
        let mut nodes = Vec::with_capacity(plan.len());
        let mut unknown = Vec::new();
        for t in &plan.spec.tasks {
            let here = self.registry.get(&t.function).is_ok();
            let url = match t.node.as_deref() {
                Some("self") => Some(self.workflows.me.clone()),
                Some(name) => match peers.iter().find(|(n, _)| n == name) {
                    Some((n, url)) => {
                        if !hosted.get(n).is_some_and(|fs| fs.contains(&t.function)) {
                            unknown.push(format!("{} (on {n})", t.function));
                        }
                        Some(url.clone())
                    }
                    None => {
                        return Err(SpecError::UnknownNode {
                            task: t.id.clone(),
                            node: name.to_owned(),
                        }
                        .into());
                    }
                },
                None if here => Some(self.workflows.me.clone()),
                None => peers
                    .iter()
                    .find(|(n, _)| hosted.get(n).is_some_and(|fs| fs.contains(&t.function)))
                    .map(|(_, u)| u.clone()),
            };
            if t.node.as_deref() == Some("self") && !here {
                unknown.push(format!("{} (on self)", t.function));
            }
            match url {
                Some(u) => nodes.push(u),
                None => unknown.push(t.function.clone()),
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            return Err(SpecError::UnknownFunctions(unknown).into());
        }
        Ok(nodes)
    }
}
