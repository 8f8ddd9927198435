//! The workflow spec (JSON) and its validation into a [`Plan`].
//!
//! The augmented task-state graph — data edges plus, for each state, a
//! virtual edge between consecutive users in its declared order — must be
//! acyclic; a cycle is reported with its tasks named.

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How a workflow runs (the chains/DAGs paper, sections 4–5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// The entry node calls every ready task, states embedded both ways.
    PureFaas,
    /// Hop by hop: outputs to successors, states to their next user.
    StateProp,
    /// As StateProp, but only references to states travel.
    StateLocal,
}

impl Model {
    /// The name used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::PureFaas => "pure-faas",
            Model::StateProp => "state-prop",
            Model::StateLocal => "state-local",
        }
    }
}

/// One task of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique within the workflow.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub id: String,
    /// The function it runs.
    pub function: String,
    /// Pin it to this node (a peer name, or `self`); otherwise placed.
    #[serde(default)]
    pub node: Option<String>,
    /// Extra input for the task, tagged as coming from the client.
    #[serde(default)]
    pub args: Option<String>,
}

/// A workflow, as a client submits it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(title = "edge-node workflow spec")]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The tasks.
    #[schemars(length(min = 1, max = 4096))]
    pub tasks: Vec<TaskSpec>,
    /// Data edges `[from, to]`: `to` needs `from`'s output.
    #[serde(default)]
    pub edges: Vec<(String, String)>,
    /// State name → the tasks that use it, in the order they must run.
    #[serde(default)]
    pub states: BTreeMap<String, Vec<String>>,
    /// The execution model.
    pub model: Model,
    /// The session whose keys hold the states (initial values read from
    /// it, final values written back). Without one, states start empty.
    #[serde(default)]
    pub session: Option<String>,
    /// Initial values of states (text), for states the session does not
    /// hold (or when there is no session).
    #[serde(default)]
    pub initial: BTreeMap<String, String>,
    /// The input given to every source task.
    #[serde(default)]
    pub input: String,
    /// Deadline of the whole execution, milliseconds.
    #[serde(default)]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub deadline_ms: Option<u64>,
}

/// Most tasks a workflow may have.
pub const MAX_TASKS: usize = 4096;
/// Most data edges plus state uses a workflow may have.
pub const MAX_LINKS: usize = 65_536;
/// Longest deadline a workflow may ask for, milliseconds (one hour).
pub const MAX_DEADLINE_MS: u64 = 3_600_000;

/// Why a spec was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// The JSON does not parse.
    #[error("invalid workflow spec: {0}")]
    Json(String),
    /// No tasks.
    #[error("a workflow needs at least one task")]
    Empty,
    /// More tasks, edges or state uses than a node takes.
    #[error("workflow too large: {0}")]
    TooLarge(String),
    /// A deadline of zero or past the longest allowed.
    #[error("deadline_ms must be 1 to {MAX_DEADLINE_MS} ms, got {0}")]
    InvalidDeadline(u64),
    /// Two tasks share an id.
    #[error("duplicate task id {0:?}")]
    DuplicateTask(String),
    /// A task id is empty or too long.
    #[error("invalid task id {0:?}: 1-64 characters of [A-Za-z0-9._-]")]
    InvalidTaskId(String),
    /// An edge or a state names a task that does not exist.
    #[error("unknown task {task:?} in {place}")]
    UnknownTask {
        /// The name given.
        task: String,
        /// Where it was named.
        place: String,
    },
    /// A state's order names a task twice.
    #[error("state {state:?} lists task {task:?} more than once")]
    RepeatedUser {
        /// The state.
        state: String,
        /// The task.
        task: String,
    },
    /// The augmented task-state graph has a cycle.
    #[error("the augmented task-state graph has a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// An initial value for a state the spec does not declare.
    #[error("initial value for undeclared state {0:?}")]
    UnknownState(String),
    /// Functions no node hosts.
    #[error("unknown functions: {}", .0.join(", "))]
    UnknownFunctions(Vec<String>),
    /// A task pinned to a node this node does not know.
    #[error("task {task:?} is pinned to unknown node {node:?}")]
    UnknownNode {
        /// The task.
        task: String,
        /// The node named.
        node: String,
    },
}

/// A validated workflow: tasks by index, with everything the executors need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The spec it came from.
    pub spec: WorkflowSpec,
    /// Data predecessors of each task, in edge order.
    pub preds: Vec<Vec<usize>>,
    /// Data successors of each task.
    pub succs: Vec<Vec<usize>>,
    /// For each task, the states it uses, each with its previous and next
    /// user (`None`: the client, i.e. the entry node).
    pub uses: Vec<Vec<StateUse>>,
    /// Tasks in an order that respects data and virtual edges.
    pub topo: Vec<usize>,
    /// True when the workflow is a chain (one source, one sink, no
    /// branches): StateProp then carries every state along the chain.
    pub is_chain: bool,
}

/// A task's use of a state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateUse {
    /// The state.
    pub state: String,
    /// The user before this task, if any.
    pub prev: Option<usize>,
    /// The user after this task, if any.
    pub next: Option<usize>,
}

fn valid_task_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Plan {
    /// Parses and validates a spec.
    pub fn parse(json: &[u8]) -> Result<Plan, SpecError> {
        let spec: WorkflowSpec =
            serde_json::from_slice(json).map_err(|e| SpecError::Json(e.to_string()))?;
        Plan::new(spec)
    }

    /// Validates `spec`: ids, references, and an acyclic augmented graph.
    pub fn new(spec: WorkflowSpec) -> Result<Plan, SpecError> {
        check_limits(&spec)?;
        let index = index_tasks(&spec)?;
        let n = spec.tasks.len();
        let find = |task: &str, place: String| {
            index
                .get(task)
                .copied()
                .ok_or_else(|| SpecError::UnknownTask {
                    task: task.to_owned(),
                    place,
                })
        };
        let mut preds = vec![Vec::new(); n];
        let mut succs = vec![Vec::new(); n];
        // Duplicates are dropped through a set: linear in the spec's size.
        let mut edges = HashSet::new();
        for (from, to) in &spec.edges {
            let f = find(from, format!("edge {from} -> {to}"))?;
            let t = find(to, format!("edge {from} -> {to}"))?;
            if edges.insert((f, t)) {
                succs[f].push(t);
                preds[t].push(f);
            }
        }
        let (uses, virtual_edges) = state_uses(&spec, find)?;
        if let Some(s) = spec.initial.keys().find(|s| !spec.states.contains_key(*s)) {
            return Err(SpecError::UnknownState(s.clone()));
        }
        let topo = topological(n, &succs, &virtual_edges).map_err(|cycle| {
            SpecError::Cycle(
                cycle
                    .into_iter()
                    .map(|i| spec.tasks[i].id.clone())
                    .collect(),
            )
        })?;
        let sources = preds.iter().filter(|p| p.is_empty()).count();
        let is_chain = sources == 1
            && preds.iter().all(|p| p.len() <= 1)
            && succs.iter().all(|s| s.len() <= 1);
        Ok(Plan {
            spec,
            preds,
            succs,
            uses,
            topo,
            is_chain,
        })
    }
    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.spec.tasks.len()
    }

    /// True when there are no tasks (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.spec.tasks.is_empty()
    }

    /// Task `i`'s id.
    pub fn id(&self, i: usize) -> &str {
        &self.spec.tasks[i].id
    }

    /// Tasks with no data predecessor.
    pub fn sources(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| self.preds[i].is_empty())
    }

    /// Tasks with no data successor.
    pub fn sinks(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| self.succs[i].is_empty())
    }

    /// The index of task `id`.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.spec.tasks.iter().position(|t| t.id == id)
    }

    /// The first user of each state.
    pub fn first_users(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (i, uses) in self.uses.iter().enumerate() {
            for u in uses {
                if u.prev.is_none() {
                    out.push((u.state.clone(), i));
                }
            }
        }
        out
    }
}

/// The spec's size and deadline are within what a node takes.
fn check_limits(spec: &WorkflowSpec) -> Result<(), SpecError> {
    if spec.tasks.is_empty() {
        return Err(SpecError::Empty);
    }
    if spec.tasks.len() > MAX_TASKS {
        return Err(SpecError::TooLarge(format!(
            "{} tasks (at most {MAX_TASKS})",
            spec.tasks.len()
        )));
    }
    let links = spec.edges.len() + spec.states.values().map(Vec::len).sum::<usize>();
    if links > MAX_LINKS {
        return Err(SpecError::TooLarge(format!(
            "{links} edges and state uses (at most {MAX_LINKS})"
        )));
    }
    if let Some(ms) = spec.deadline_ms
        && !(1..=MAX_DEADLINE_MS).contains(&ms)
    {
        return Err(SpecError::InvalidDeadline(ms));
    }
    Ok(())
}

/// Task index by id; ids valid and unique.
fn index_tasks(spec: &WorkflowSpec) -> Result<HashMap<String, usize>, SpecError> {
    let mut index = HashMap::new();
    for (i, t) in spec.tasks.iter().enumerate() {
        if !valid_task_id(&t.id) {
            return Err(SpecError::InvalidTaskId(t.id.clone()));
        }
        if index.insert(t.id.clone(), i).is_some() {
            return Err(SpecError::DuplicateTask(t.id.clone()));
        }
    }
    Ok(index)
}

/// Each task's state uses, and the virtual edges between consecutive users.
type StateUses = (Vec<Vec<StateUse>>, Vec<(usize, usize)>);

/// Each task's state uses, and the virtual edges between consecutive users
/// of each state.
fn state_uses(
    spec: &WorkflowSpec,
    find: impl Fn(&str, String) -> Result<usize, SpecError>,
) -> Result<StateUses, SpecError> {
    let n = spec.tasks.len();
    let mut uses = vec![Vec::new(); n];
    let mut virtual_edges = Vec::new();
    for (state, order) in &spec.states {
        let mut seen = HashSet::new();
        let users = order
            .iter()
            .map(|t| {
                if !seen.insert(t) {
                    return Err(SpecError::RepeatedUser {
                        state: state.clone(),
                        task: t.clone(),
                    });
                }
                find(t, format!("state {state:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (k, &u) in users.iter().enumerate() {
            uses[u].push(StateUse {
                state: state.clone(),
                prev: k.checked_sub(1).map(|p| users[p]),
                next: users.get(k + 1).copied(),
            });
            if k > 0 {
                virtual_edges.push((users[k - 1], u));
            }
        }
    }
    Ok((uses, virtual_edges))
}

/// Tasks in an order that respects `succs` and the `extra` (virtual)
/// edges, or a cycle of task indices (first = last) if there is none.
fn topological(
    n: usize,
    succs: &[Vec<usize>],
    extra: &[(usize, usize)],
) -> Result<Vec<usize>, Vec<usize>> {
    let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(n, extra.len());
    let nodes: Vec<NodeIndex> = (0..n).map(|_| graph.add_node(())).collect();
    let mut seen = HashSet::new();
    let data = succs
        .iter()
        .enumerate()
        .flat_map(|(a, outs)| outs.iter().map(move |&b| (a, b)));
    for (a, b) in data.chain(extra.iter().copied()) {
        if seen.insert((a, b)) {
            graph.add_edge(nodes[a], nodes[b], ());
        }
    }
    match toposort(&graph, None) {
        Ok(order) => Ok(order.into_iter().map(NodeIndex::index).collect()),
        Err(_) => Err(find_cycle(&graph)),
    }
}

/// One cycle of `graph` (which has one), as node indices with the first
/// repeated last: inside a strongly connected component with more than one
/// task (or a self-loop), the shortest way from its first task back to it.
fn find_cycle(graph: &DiGraph<(), ()>) -> Vec<usize> {
    let cyclic = tarjan_scc(graph)
        .into_iter()
        .find(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]));
    let Some(component) = cyclic else {
        return Vec::new();
    };
    let inside: HashSet<NodeIndex> = component.iter().copied().collect();
    let start = component[0];
    // Breadth-first from `start` within the component until an edge
    // leads back to it.
    let mut came_from: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for next in graph.neighbors(at) {
            if next == start {
                let mut path = vec![start.index()];
                let mut k = at;
                while k != start {
                    path.push(k.index());
                    // Every task reached but `start` has its predecessor recorded.
                    k = came_from[&k];
                }
                path.push(start.index());
                path.reverse();
                return path;
            }
            if inside.contains(&next) && !came_from.contains_key(&next) {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    vec![start.index(), start.index()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(edges: &[(&str, &str)], states: &[(&str, &[&str])]) -> WorkflowSpec {
        let mut ids: Vec<&str> = edges.iter().flat_map(|(a, b)| [*a, *b]).collect();
        ids.extend(states.iter().flat_map(|(_, t)| t.iter().copied()));
        ids.sort();
        ids.dedup();
        WorkflowSpec {
            tasks: ids
                .iter()
                .map(|id| TaskSpec {
                    id: id.to_string(),
                    function: "f".into(),
                    node: None,
                    args: None,
                })
                .collect(),
            edges: edges
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            states: states
                .iter()
                .map(|(s, t)| (s.to_string(), t.iter().map(|x| x.to_string()).collect()))
                .collect(),
            model: Model::StateProp,
            session: None,
            initial: BTreeMap::new(),
            input: String::new(),
            deadline_ms: None,
        }
    }

    #[test]
    fn virtual_edges_order_a_shared_state() {
        // Fig. 10: l2 and l3 share S, l2 first.
        let p = Plan::new(spec(
            &[("l1", "l2"), ("l1", "l3"), ("l2", "l4"), ("l3", "l4")],
            &[("S", &["l2", "l3"])],
        ))
        .unwrap();
        let pos = |id: &str| p.topo.iter().position(|&i| p.id(i) == id).unwrap();
        assert!(pos("l2") < pos("l3"));
        assert!(!p.is_chain);
        let l3 = p.index("l3").unwrap();
        assert_eq!(p.uses[l3][0].prev, p.index("l2"));
        assert_eq!(p.uses[l3][0].next, None);
    }

    #[test]
    fn a_causal_cycle_is_named() {
        // Fig. 11: S used by l4 before l2, but l2 -> l3 -> l4.
        let e = Plan::new(spec(
            &[("l1", "l2"), ("l2", "l3"), ("l3", "l4")],
            &[("S", &["l4", "l2"])],
        ))
        .unwrap_err();
        match e {
            SpecError::Cycle(c) => {
                assert_eq!(c.first(), c.last());
                for t in ["l2", "l3", "l4"] {
                    assert!(c.iter().any(|x| x == t), "{c:?}");
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_references_are_named() {
        let mut s = spec(&[("a", "b")], &[]);
        s.edges.push(("a".into(), "zz".into()));
        assert!(
            matches!(Plan::new(s).unwrap_err(), SpecError::UnknownTask { task, .. } if task == "zz")
        );
        let mut s = spec(&[("a", "b")], &[]);
        s.states
            .insert("S".into(), vec!["a".into(), "ghost".into()]);
        assert!(
            matches!(Plan::new(s).unwrap_err(), SpecError::UnknownTask { task, .. } if task == "ghost")
        );
        let mut s = spec(&[("a", "b")], &[]);
        s.tasks.push(s.tasks[0].clone());
        assert_eq!(
            Plan::new(s).unwrap_err(),
            SpecError::DuplicateTask("a".into())
        );
        assert!(matches!(
            Plan::parse(b"{\"tasks\": 3}"),
            Err(SpecError::Json(_))
        ));
        let cyclic = spec(&[("a", "b"), ("b", "a")], &[]);
        assert!(matches!(Plan::new(cyclic), Err(SpecError::Cycle(_))));
    }

    #[test]
    fn a_chain_is_recognised() {
        let p = Plan::new(spec(&[("a", "b"), ("b", "c")], &[("S", &["a", "c"])])).unwrap();
        assert!(p.is_chain);
        assert_eq!(p.sources().collect::<Vec<_>>(), vec![0]);
        assert_eq!(p.sinks().collect::<Vec<_>>(), vec![2]);
    }
}
