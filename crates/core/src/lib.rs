//! edge-node's runtime, without a transport.
//!
//! A [`Node`] owns one wasmtime engine (pooling allocator, epoch deadlines),
//! a [`registry::Registry`] of uploaded components compiled once and cached
//! on disk, and the sessions with their state stores. `edge-workflow` runs
//! DAGs over it, `edge-http` puts the HTTP API in front of it, and the
//! `edge-node` binary wires them to a command line.
//!
//! ```no_run
//! use edge_core::{Node, NodeConfig, InvokeRequest};
//! use std::sync::Arc;
//!
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! let node = Arc::new(Node::open(NodeConfig::new("./edge-data")).await?);
//! node.registry().deploy("counter", std::fs::read("counter.wasm")?).await?;
//! let out = node
//!     .invoke(InvokeRequest::from_client("counter", Some("s1".into()), vec![]))
//!     .await?;
//! println!("{}", String::from_utf8_lossy(&out.output));
//! # Ok(())
//! # }
//! ```

pub mod cluster;
pub mod compile;
pub mod config;
pub mod engine;
mod guest_log;
pub mod imports;
pub mod invoke;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod registry;
pub mod sched;
pub mod session;
pub mod spill;
pub mod storage;
pub mod teardown;

pub use config::{AuthConfig, EngineConfig, NodeConfig, RemoteStore, TlsIdentity};

/// The wasmtime version this runtime is built on (kept equal to the exact
/// pin in the workspace `Cargo.toml`; a test checks it).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// What `edge-node --version` prints after the name.
pub const VERSION_LINE: &str = concat!(env!("CARGO_PKG_VERSION"), " (wasmtime 48.0.8)");

pub use invoke::{InvokeError, InvokeOutcome, InvokeRequest, StartKind};
pub use node::{Node, NodeError};

#[cfg(test)]
mod version_tests {
    #[test]
    fn wasmtime_version_matches_the_pin() {
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
                .unwrap();
        let pin = format!("wasmtime = {{ version = \"={}\"", super::WASMTIME_VERSION);
        assert!(
            manifest.contains(&pin),
            "update WASMTIME_VERSION and VERSION_LINE to the pin"
        );
        assert!(super::VERSION_LINE.contains(super::WASMTIME_VERSION));
    }
}
