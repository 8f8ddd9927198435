//! Placement: which node runs each task of a plan, resolved once by the
//! entry node from the tasks' pins, this node's functions, what its peers
//! host, and — with a shared Redis — the cluster's other members (the
//! least loaded that hosts the function).

use super::entry::WorkflowError;
use super::spec::{Plan, SpecError};
use crate::Workflows;
use edge_proto::{Member, PeerRequest, routes};
use std::collections::HashMap;
use std::time::Duration;

/// Longest wait for a peer's function list while placing tasks.
pub(super) const PLACEMENT_LOOKUP: Duration = Duration::from_secs(3);

impl Workflows {
    /// Resolves every task to a node: its pin, else this node if it hosts
    /// the function, else the first peer (by name) that does.
    ///
    /// Only the peers the plan may need are asked (those tasks are pinned
    /// to, and all of them only for a function this node lacks), all at
    /// once, each for at most [`PLACEMENT_LOOKUP`] and never past `budget`.
    pub(super) async fn place(
        &self,
        plan: &Plan,
        budget: Duration,
    ) -> Result<Vec<String>, WorkflowError> {
        let wait = budget.min(PLACEMENT_LOOKUP);
        let (hosted, members) = tokio::join!(self.ask_peers(plan, wait), self.members(wait));
        let hosted = hosted?;
        let mut nodes = Vec::with_capacity(plan.len());
        let mut unknown = Vec::new();
        for t in &plan.spec.tasks {
            let here = self.node.registry().info(&t.function).is_ok();
            let hosts = |n: &str| hosted.get(n).is_some_and(|fs| fs.contains(&t.function));
            let url = match t.node.as_deref() {
                Some("self") => {
                    if !here {
                        unknown.push(format!("{} (on self)", t.function));
                    }
                    Some(self.me.clone())
                }
                Some(name) => {
                    let (n, url) = self.peers.iter().find(|(n, _)| n == name).ok_or_else(|| {
                        SpecError::UnknownNode {
                            task: t.id.clone(),
                            node: name.to_owned(),
                        }
                    })?;
                    if !hosts(n) {
                        unknown.push(format!("{} (on {n})", t.function));
                    }
                    Some(url.clone())
                }
                None if here => Some(self.me.clone()),
                None => self
                    .peers
                    .iter()
                    .find(|(n, _)| hosts(n))
                    .map(|(_, u)| u.clone())
                    .or_else(|| least_loaded(&members, &t.function)),
            };
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

    /// The cluster's other live members that are not `--peer`s (their
    /// functions come with them: nobody is asked), within `wait`.
    async fn members(&self, wait: Duration) -> Vec<Member> {
        let all = tokio::time::timeout(wait, self.node.members())
            .await
            .unwrap_or_default();
        let known: Vec<Option<String>> = self
            .peers
            .iter()
            .map(|(_, u)| routes::normalise(u))
            .chain([routes::normalise(&self.me)])
            .collect();
        all.into_iter()
            .filter(|m| !known.contains(&routes::normalise(&m.url)))
            .collect()
    }

    /// What the peers `plan` may need host, by peer name: those its tasks
    /// are pinned to, and all of them if this node lacks a function of an
    /// unpinned task; all at once, each for at most `wait`. A pinned peer
    /// that does not answer fails the run, naming it.
    async fn ask_peers(
        &self,
        plan: &Plan,
        wait: Duration,
    ) -> Result<HashMap<String, Vec<String>>, WorkflowError> {
        let tasks = &plan.spec.tasks;
        let needs_any = tasks
            .iter()
            .any(|t| t.node.is_none() && self.node.registry().info(&t.function).is_err());
        let asked = self
            .peers
            .iter()
            .filter(|(name, _)| needs_any || tasks.iter().any(|t| t.node.as_deref() == Some(name)))
            .map(|(name, url)| async move {
                let listed = async {
                    let request = PeerRequest::get(routes::functions(url)?).timeout(wait);
                    let answer = self.node.peer().send(request).await?.success()?;
                    answer.json::<Vec<edge_core::registry::FunctionInfo>>()
                }
                .await;
                (name, url, listed)
            });
        let mut hosted = HashMap::new();
        let mut silent = HashMap::new();
        for (name, url, listed) in futures_util::future::join_all(asked).await {
            match listed {
                Ok(l) => {
                    hosted.insert(name.clone(), l.into_iter().map(|f| f.name).collect());
                }
                Err(e) => {
                    silent.insert(name.as_str(), (url, e));
                }
            }
        }
        let pinned_to_silent = tasks
            .iter()
            .find_map(|t| Some((t, silent.get(t.node.as_deref()?)?)));
        if let Some((t, (url, e))) = pinned_to_silent {
            return Err(WorkflowError::Task {
                task: t.id.clone(),
                node: (*url).clone(),
                error: format!("the node did not answer: {e}"),
            });
        }
        Ok(hosted)
    }
}

/// The member hosting `function` with the least load.
fn least_loaded(members: &[Member], function: &str) -> Option<String> {
    edge_proto::member::least_loaded(members, function).map(|m| m.url.clone())
}
