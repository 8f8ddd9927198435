//! The session a workflow may name: its keys are the states' initial
//! values, read at the start with their versions, and the final values are
//! written back with compare-and-swap against those versions.

use super::entry::{Run, WorkflowError};
use super::lock;
use crate::Workflows;
use bytes::Bytes;
use edge_host_api::{Commit, StoreError};
use std::collections::BTreeMap;

impl Workflows {
    /// The states' values before the execution: from the session, if any.
    pub(super) async fn initial_states(
        &self,
        run: &Run,
    ) -> Result<BTreeMap<String, Option<Bytes>>, WorkflowError> {
        let spec = &run.ctx.plan.spec;
        let mut out: BTreeMap<String, Option<Bytes>> = spec
            .states
            .keys()
            .map(|s| {
                (
                    s.clone(),
                    spec.initial
                        .get(s)
                        .map(|v| Bytes::from(v.clone().into_bytes())),
                )
            })
            .collect();
        let Some(id) = &spec.session else {
            return Ok(out);
        };
        let session = self.node.sessions().get(id).await.map_err(session_error)?;
        let inner = session
            .read_by(self.node.sessions().deadline())
            .await
            .map_err(session_error)?;
        if let Some(url) = &inner.record.moved_to {
            return Err(WorkflowError::Session(format!("session moved to {url}")));
        }
        let store = self.node.sessions().store_for(inner.record.mode);
        let mut reads = Vec::with_capacity(out.len());
        for (s, value) in out.iter_mut() {
            let found = store.get(id, s).await.map_err(session_error)?;
            reads.push((s.clone(), found.as_ref().map(|v| v.version)));
            if let Some(v) = found {
                *value = Some(Bytes::from(v.value));
            }
        }
        lock(&run.state).session_reads = reads;
        Ok(out)
    }

    /// Writes the final states back to session `id` if none of the keys the
    /// run read (`reads`) changed meanwhile.
    pub(super) async fn write_session(
        &self,
        id: &str,
        reads: Vec<(String, Option<u64>)>,
        values: &BTreeMap<String, Option<Bytes>>,
    ) -> Result<(), WorkflowError> {
        let session = self.node.sessions().get(id).await.map_err(session_error)?;
        let inner = session
            .write_by(self.node.sessions().deadline())
            .await
            .map_err(session_error)?;
        // A session that migrated meanwhile is written where it lives now,
        // never into a copy this node no longer owns.
        if let Some(url) = &inner.record.moved_to {
            return Err(WorkflowError::Session(format!(
                "session moved to {url} during the workflow; its states were not written back"
            )));
        }
        let store = self.node.sessions().store_for(inner.record.mode);
        // Compare-and-swap against what the execution started from: a call
        // that changed one of these keys meanwhile is never overwritten.
        let commit = Commit {
            reads,
            writes: values
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|b| b.to_vec())))
                .collect(),
        };
        store.commit(id, &commit).await.map_err(|e| match e {
            StoreError::Conflict { key } => WorkflowError::Session(format!(
                "state {key:?} of session {id} changed during the workflow; \
                 its final states were not written back"
            )),
            e => WorkflowError::Session(e.to_string()),
        })?;
        Ok(())
    }
}

/// A session or store failure, as the workflow's error.
fn session_error(e: impl std::fmt::Display) -> WorkflowError {
    WorkflowError::Session(e.to_string())
}
