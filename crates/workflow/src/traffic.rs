//! What this node sent for each execution, by category.

use super::lock;
use edge_proto::Cost;
use std::collections::HashMap;
use std::sync::Mutex;

/// Per-execution traffic counters of this node (the most recent executions).
#[derive(Default)]
pub struct Traffic {
    by_exec: Mutex<HashMap<String, Cost>>,
}

/// Executions whose counters are kept.
const KEEP: usize = 1024;

impl Traffic {
    /// Counts `cost` against `exec`.
    pub fn count(&self, exec: &str, cost: &Cost) {
        let mut map = lock(&self.by_exec);
        if map.len() >= KEEP && !map.contains_key(exec) {
            // Forget an arbitrary old execution: counters are for reporting.
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.entry(exec.to_owned()).or_default().add(cost);
    }

    /// What this node sent for `exec`.
    pub fn of(&self, exec: &str) -> Cost {
        let map = lock(&self.by_exec);
        map.get(exec).copied().unwrap_or_default()
    }
}
