//! Host side of the `edge:function` WIT contract (`wit/` at the repository root).
//!
//! - [`bindings`]: the `bindgen!` output for the world `function`; the runtime
//!   instantiates [`bindings::FunctionPre`] and calls the handler through it.
//! - [`StateStore`]: where session state lives, with its backends
//!   ([`SledStore`] on this node).
//! - [`StateCtx`]: one invocation's view of its session and state (reads see
//!   its own writes, writes are buffered and committed atomically on `ok`).
//! - [`add_to_linker`]: wires `state` and `session` into a component linker.
//!
//! ```
//! use edge_host_api::{SledStore, StateCtx, StateLimits, StateStore, Mode};
//! use edge_host_api::bindings::edge::function::state::Host as _;
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let store: Arc<dyn StateStore> = Arc::new(SledStore::new(sled::open(dir.path())?)?);
//!
//! // What a guest's `state.set("count", "1")` does inside one invocation:
//! let mut ctx = StateCtx::new(store.clone(), "s1".into(), Mode::Remote, StateLimits::default());
//! ctx.set("count".into(), b"1".to_vec()).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
//! assert!(store.get("s1", "count").await?.is_none()); // buffered, not yet committed
//!
//! // The guest returned `ok`: commit.
//! store.commit("s1", &ctx.into_commit()).await?;
//! assert_eq!(store.get("s1", "count").await?.unwrap().value, b"1");
//! # Ok(())
//! # }
//! ```

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod ctx;
mod peer_store;
mod redis_store;
mod sled_store;
mod sled_writer;
mod store;

/// Bindings generated from `wit/` for the world `edge:function/function`.
pub mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "function",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use bindings::edge::function::types::{Input, Mode, Source};
pub use ctx::{StateCtx, StateLimits};
pub use peer_store::{KeyVersion, PeerStore, WireCommit, WireEntry};
pub use redis_store::RedisStore;
pub use sled_store::{SledStore, valid_session_id};
pub use sled_writer::SledWriter;
pub use store::{Commit, StateStore, StoreError, Versioned, is_disk_full};

use wasmtime::component::{HasSelf, Linker};

/// Adds the `state`, `session` and `types` imports to `linker`; `get` finds the
/// invocation's [`StateCtx`] in the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut StateCtx,
) -> wasmtime::Result<()> {
    bindings::edge::function::state::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    bindings::edge::function::session::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    bindings::edge::function::types::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    Ok(())
}
