//! What a node says of itself to the cluster (membership, through the
//! shared Redis): where it is, what it runs, and how busy it is.

use serde::{Deserialize, Serialize};

/// One live node of the cluster, as it last reported itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// The URL other nodes reach it at.
    pub url: String,
    /// The functions deployed on it.
    pub functions: Vec<String>,
    /// Calls admitted and not finished.
    pub in_flight: u64,
    /// Calls it admits at once.
    pub max_in_flight: u64,
    /// Sessions in local-state mode.
    pub local_sessions: u64,
    /// Sessions it may keep in local-state mode.
    pub max_local_sessions: u64,
    /// Instance slots.
    pub max_instances: u64,
}

impl Member {
    /// Its load: calls in flight over what it admits (0 idle, 1 full).
    pub fn load(&self) -> f64 {
        self.in_flight as f64 / self.max_in_flight.max(1) as f64
    }
}

/// A function deployed to the whole cluster (`edge-node deploy --all`): a
/// node that joins later, or was away, deploys it from a member at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterFunction {
    /// Its name.
    pub name: String,
    /// SHA-256 of the component's bytes, hex.
    pub digest: String,
    /// Relaxed durability it was deployed with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
    /// Hosts its outgoing HTTP requests may go to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
}

/// The member hosting `function` with the least load (ties: by URL).
pub fn least_loaded<'a>(members: &'a [Member], function: &str) -> Option<&'a Member> {
    members
        .iter()
        .filter(|m| m.functions.iter().any(|f| f == function))
        .min_by(|a, b| {
            a.load()
                .total_cmp(&b.load())
                .then_with(|| a.url.cmp(&b.url))
        })
}
