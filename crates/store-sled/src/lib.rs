//! The local state store of an edge-node: [`SledStore`] keeps session state
//! in sled on this node's disk; [`SledWriter`] is the one thread that writes
//! and flushes the database (group commit).
//!
//! ```
//! use edge_host_api::{StateCtx, StateLimits, StateStore, Mode};
//! use edge_host_api::bindings::edge::function::state::Host as _;
//! use edge_store_sled::SledStore;
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

mod cache;
mod store;
mod writer;

pub use cache::CacheStats;
pub use store::SledStore;
pub use writer::SledWriter;

use edge_host_api::{StoreError, is_disk_full};

/// A sled error as a store error: a full disk is [`StoreError::Full`].
pub fn store_error(e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io) if is_disk_full(io) => StoreError::Full(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}
