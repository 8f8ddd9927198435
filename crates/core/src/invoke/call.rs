//! One guest call as a future that owns what it uses, so the scheduler may
//! move it between runtimes; and how its instance is freed and its errors
//! named.

use super::{InvokeError, TrapKind};
use crate::engine::{DeadlineExceeded, HostState};
use crate::metrics::LiveInstance;
use crate::registry::Function;
use crate::session::Pinned;
use crate::teardown::Teardown;
use edge_host_api::{Commit, Input, Mode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Store, Trap};

/// A pinned call's instance: one that exists, or a store to make it in.
pub(super) enum PinnedCall {
    Warm(Pinned),
    Cold {
        store: Store<HostState>,
        slot: OwnedSemaphorePermit,
        /// The gauge the instance counts in once it is made.
        gauge: prometheus::IntGauge,
    },
}

impl PinnedCall {
    pub(super) fn store_mut(&mut self) -> &mut Store<HostState> {
        match self {
            PinnedCall::Warm(p) => &mut p.store,
            PinnedCall::Cold { store, .. } => store,
        }
    }
}

/// A fresh instance's store with its pool slot and gauge, dropped together.
pub(super) struct Instance {
    pub(super) store: Store<HostState>,
    pub(super) _slot: OwnedSemaphorePermit,
    pub(super) _live: LiveInstance,
}

/// Instantiates `function` and calls its handler once, as a future that
/// owns what it uses (the scheduler may move it to another thread). Returns
/// the output, the mode the guest asked for and the state to commit; the
/// instance is freed by [`release`].
pub(super) async fn fresh_call(
    function: Arc<Function>,
    mut instance: Instance,
    inputs: Arc<[Input]>,
    errors: Classifier,
    teardown: Option<Teardown>,
) -> (Result<Vec<u8>, InvokeError>, Option<Mode>, Commit) {
    let store = &mut instance.store;
    let called = async {
        let bindings = function.pre.edge()?.instantiate_async(&mut *store).await?;
        bindings
            .edge_function_handler()
            .call_handle(&mut *store, &inputs)
            .await
    }
    .await;
    let mut output = match called {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(message)) => Err(InvokeError::Guest(message)),
        Err(e) => Err(errors.classify(store, e)),
    };
    let state = &mut store.data_mut().state;
    if let Some(full) = state.take_disk_full() {
        output = Err(InvokeError::State(full));
    }
    let (requested, commit) = (state.requested_mode(), state.take_commit());
    state.release_store();
    let background = store.data().clock.placement.in_background();
    release(instance, background, &teardown);
    (output, requested, commit)
}

/// Frees a finished instance. A call that ran in the background frees it
/// there, in a task of its own after the reply. Otherwise, while calls run
/// in the background (`teardown` is given) the teardown thread frees it, so
/// that the reply does not wait for the memory-map lock they may hold; with
/// nothing in the background it is freed at once, which costs least.
fn release<T: Send + 'static>(instance: T, in_background: bool, teardown: &Option<Teardown>) {
    match (tokio::runtime::Handle::try_current(), teardown) {
        // In the background the call is polled by the background runtime.
        (Ok(here), _) if in_background => {
            here.spawn(async move { drop(instance) });
        }
        (_, Some(teardown)) => teardown.drop_later(instance),
        (_, None) => drop(instance),
    }
}

/// Calls the handler of a pinned instance (made first when cold), as a
/// future that owns what it uses. The instance comes back unless it trapped
/// (then it is dropped where it ran).
pub(super) async fn pinned_call(
    function: Arc<Function>,
    instance: PinnedCall,
    inputs: Arc<[Input]>,
    errors: Classifier,
    teardown: Option<Teardown>,
) -> (Option<Pinned>, Result<Vec<u8>, InvokeError>) {
    let mut pinned = match instance {
        PinnedCall::Warm(p) => p,
        PinnedCall::Cold {
            mut store,
            slot,
            gauge,
        } => match async { function.pre.edge()?.instantiate_async(&mut store).await }.await {
            Err(e) => {
                let e = errors.classify(&store, e);
                let background = store.data().clock.placement.in_background();
                release((store, slot), background, &teardown);
                return (None, Err(e));
            }
            Ok(instance) => Pinned {
                digest: function.info.digest.clone(),
                store,
                instance,
                last_used: Instant::now(),
                _slot: slot,
                _counted: LiveInstance::new(&gauge),
            },
        },
    };
    let called = pinned
        .instance
        .edge_function_handler()
        .call_handle(&mut pinned.store, &inputs)
        .await;
    // A full disk met by a state call fails the call, whatever the guest
    // made of the error: storage has stopped.
    let full = pinned.store.data_mut().state.take_disk_full();
    match (called, full) {
        (Err(e), full) => {
            let e = errors.classify(&pinned.store, e);
            let background = pinned.store.data().clock.placement.in_background();
            release(pinned, background, &teardown);
            (None, Err(full.map_or(e, InvokeError::State)))
        }
        (Ok(_), Some(full)) => (Some(pinned), Err(InvokeError::State(full))),
        (Ok(Ok(output)), None) => (Some(pinned), Ok(output)),
        (Ok(Err(message)), None) => (Some(pinned), Err(InvokeError::Guest(message))),
    }
}

/// Turns a wasmtime error into the call's error.
#[derive(Debug, Clone, Copy)]
pub(super) struct Classifier {
    pub(super) deadline: Duration,
    pub(super) max_memory_bytes: usize,
}

impl Classifier {
    pub(super) fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> InvokeError {
        if e.downcast_ref::<DeadlineExceeded>().is_some() {
            return InvokeError::Deadline(self.deadline);
        }
        // The client gets the cause; the backtrace goes to the log.
        tracing::debug!(error = ?e, "guest failed");
        let message = truncate(e.root_cause().to_string(), 1024);
        if message.contains("pooling allocator") || message.contains("maximum concurrent") {
            return InvokeError::Capacity(message);
        }
        let kind = if store.data().limits.denied {
            TrapKind::MemoryLimit
        } else {
            match e.downcast_ref::<Trap>() {
                Some(Trap::StackOverflow) => TrapKind::StackOverflow,
                Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
                _ => TrapKind::Other,
            }
        };
        let message = match kind {
            TrapKind::MemoryLimit => format!(
                "memory limit of {} bytes exceeded ({message})",
                self.max_memory_bytes
            ),
            _ => message,
        };
        InvokeError::Trap { kind, message }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
