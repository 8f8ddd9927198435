//! Host side of the `edge:function` WIT contract (`wit/` at the repository root).
//!
//! - [`bindings`]: the `bindgen!` output for the world `function`; the runtime
//!   instantiates [`bindings::FunctionPre`] and calls the handler through it.
//! - [`StateStore`]: where session state lives. Its backends are crates of
//!   their own (`edge-store-sled`, `edge-store-redis`, `edge-store-peer`),
//!   each checked by the same [`conformance`] suite (feature `testing`).
//! - [`StateCtx`]: one invocation's view of its session and state (reads see
//!   its own writes, writes are buffered and committed atomically on `ok`).
//! - [`add_to_linker`]: wires `state` and `session` into a component linker;
//!   [`keyvalue::add_to_linker`] serves the standard `wasi:keyvalue` from the
//!   same state.
//!
//! ```
//! use edge_host_api::{StateCtx, add_to_linker};
//! use wasmtime::component::Linker;
//!
//! // What a host keeps per invocation: here, only the state context.
//! struct Call {
//!     state: StateCtx,
//! }
//!
//! let mut config = wasmtime::Config::new();
//! config.async_support(true);
//! let engine = wasmtime::Engine::new(&config)?;
//! let mut linker: Linker<Call> = Linker::new(&engine);
//! add_to_linker(&mut linker, |call| &mut call.state)?;
//! # Ok::<(), wasmtime::Error>(())
//! ```

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
mod ctx;
pub mod keyvalue;
mod store;

/// Bindings generated from `wit/` for the world `edge:function/function`.
pub mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "function",
        path: "../../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use bindings::edge::function::types::{Input, Mode, Source};
pub use ctx::{StateCtx, StateLimits};
pub use store::{Commit, StateStore, StoreError, Versioned, is_disk_full, valid_session_id};

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
