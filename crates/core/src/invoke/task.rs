//! A workflow task's call: one fresh instance against the store its states
//! came in (the executor in `edge-workflow` drives it).

use super::InvokeError;
use crate::node::Node;
use edge_host_api::{Input, StateStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Node {
    /// Runs `function` once on a fresh instance against `store` (a task's
    /// embedded states), within `budget`.
    pub async fn invoke_with_store(
        &self,
        function: &str,
        label: &str,
        inputs: Vec<Input>,
        store: Arc<dyn StateStore>,
        budget: Duration,
    ) -> Result<Vec<u8>, InvokeError> {
        let f = self.registry.function(function).await?;
        let deadline = Instant::now() + budget.min(self.config.invoke_deadline);
        let session = task_session(label);
        let (output, _) = self
            .run_remote_on(&f, &session, &inputs.into(), deadline, store)
            .await?;
        Ok(output)
    }
}

/// The session a workflow task runs in, from its label (which may come
/// from a peer): only the characters that can name a session, at most 100.
fn task_session(label: &str) -> String {
    let label: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    format!("wf-{label}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_label_gives_a_valid_session() {
        for label in ["exec-1/t", &"é".repeat(80), &"x".repeat(500), "", "a\0b"] {
            let s = task_session(label);
            assert!(edge_host_api::valid_session_id(&s), "{label:?} gave {s:?}");
        }
        assert_eq!(task_session("e1.t-2"), "wf-e1.t-2");
    }
}
