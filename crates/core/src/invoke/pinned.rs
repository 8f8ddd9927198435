//! A call on a local-state session: its pinned instance (warm), or a new one
//! kept for the session afterwards (cold); the commit goes to this node's
//! sled, and a commit that conflicts runs the call again on a new instance.

use super::call::{PinnedCall, pinned_call};
use super::{InvokeError, MAX_ATTEMPTS, StartKind};
use crate::node::Node;
use crate::registry::{Function, FunctionConfig};
use crate::session::{Inner, Session, SessionMode};
use edge_host_api::{Commit, Input, Mode, StateCtx, StateStore, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Node {
    /// Local-state: the session's pinned instance (made now if there is none
    /// or the function was redeployed), state in this node's sled.
    pub(super) async fn run_pinned(
        &self,
        function: &Arc<Function>,
        session: &Session,
        inner: &mut Inner,
        inputs: &Arc<[Input]>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, StartKind, Option<Mode>), InvokeError> {
        let local = self.sessions.store_for(SessionMode::Local);
        let new_ctx = || {
            StateCtx::new(
                local.clone(),
                session.id.clone(),
                Mode::Local,
                self.config.state_limits,
            )
        };
        let taken = inner
            .pinned
            .remove(&*function.name)
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()));
        let (mut instance, start) = match taken {
            Some(p) if p.digest == function.info.digest => (PinnedCall::Warm(p), StartKind::Warm),
            _ => {
                let cold = self.cold_pinned(function, new_ctx(), deadline).await?;
                (cold, StartKind::Cold)
            }
        };
        for attempt in 0..MAX_ATTEMPTS {
            let clock = self.sched.clock();
            let placement = clock.placement.clone();
            let config = self.registry.config_of(&function.name);
            rearm(&mut instance, new_ctx(), config, deadline, clock);
            let call = pinned_call(
                function.clone(),
                instance,
                inputs.clone(),
                self.classifier(),
                self.offload(),
            );
            let (kept, output) = match self.scheduled(function, &placement, deadline, call).await {
                Ok((kept, output)) => (kept, self.judged(function, output)),
                Err(e) => (None, Err(e)),
            };
            let Some(mut pinned) = kept else {
                // A trapped or interrupted instance is never used again.
                return Err(output.err().unwrap_or(InvokeError::Contention(attempt)));
            };
            // On an error nothing was committed, but the instance's memory
            // may hold what the call did: it is dropped, and the next call
            // starts fresh from the committed state.
            let output = output?;
            let state = &mut pinned.store.data_mut().state;
            let requested = state.requested_mode();
            let commit = state.take_commit();
            // Not past the lease: another node may have taken it over.
            self.sessions.still_held(session)?;
            match self
                .commit_local(function, &session.id, &commit, deadline)
                .await
            {
                Ok(()) => {
                    if !commit.is_read_only() {
                        session.mark_changed();
                    }
                    pinned.last_used = Instant::now();
                    inner
                        .pinned
                        .insert(function.name.to_string(), std::sync::Mutex::new(pinned));
                    return Ok((output, start, requested));
                }
                Err(StoreError::Conflict { key }) => {
                    // The state changed under the call (the state server
                    // wrote it): its instance's memory saw what is gone, so
                    // the call runs again on a fresh instance.
                    drop(pinned);
                    self.conflicted(&key, attempt, deadline).await?;
                    instance = self.cold_pinned(function, new_ctx(), deadline).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(InvokeError::Contention(MAX_ATTEMPTS))
    }

    /// A new instance for a local-state session, its slot taken.
    async fn cold_pinned(
        &self,
        function: &Function,
        state: StateCtx,
        deadline: Instant,
    ) -> Result<PinnedCall, InvokeError> {
        let slot = self.acquire_slot(deadline).await?;
        let store = self.call_store(function, state, deadline);
        Ok(PinnedCall::Cold {
            store,
            slot,
            gauge: self.metrics.pinned_instances.clone(),
        })
    }

    /// Commits what a local-state call wrote to this node's sled: flushed
    /// before the answer, or within the flush interval the function chose
    /// at deploy (relaxed durability).
    pub(super) async fn commit_local(
        &self,
        function: &Function,
        session: &str,
        commit: &Commit,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let local = &self.sessions.local;
        match function.info.flush_interval_ms {
            None => local.commit_by(session, commit, deadline).await,
            Some(ms) => {
                local
                    .commit_relaxed(session, commit, deadline, Duration::from_millis(ms))
                    .await
            }
        }
    }
}

/// Readies an instance for a call: a new state context, the function's
/// variables as they are now, the call's deadline and clock. Epoch ticks
/// count from now: a kept store's deadline is long past, and would
/// interrupt the call at its first check.
fn rearm(
    instance: &mut PinnedCall,
    state: StateCtx,
    config: Arc<FunctionConfig>,
    deadline: Instant,
    clock: crate::sched::CallClock,
) {
    instance.store_mut().set_epoch_deadline(1);
    let data = instance.store_mut().data_mut();
    data.state = state;
    data.config = config;
    data.deadline = deadline;
    data.outbound.deadline = deadline;
    data.limits.denied = false;
    data.clock = clock;
}
