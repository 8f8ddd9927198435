//! edge-node: a WebAssembly runtime for stateful functions at the edge.
//!
//! A [`Node`] owns one wasmtime engine (pooling allocator, epoch deadlines),
//! a [`registry::Registry`] of uploaded components compiled once and cached
//! on disk, and a state store for sessions. [`http::serve`] puts the HTTP API
//! in front of it; the `edge-node` binary wires both to a command line.
//!
//! ```no_run
//! use edge_runtime::{Node, NodeConfig, InvokeRequest};
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
//!
//! // Or serve the HTTP API.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! edge_runtime::http::serve(listener, node, Default::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

pub mod compile;
pub mod config;
pub mod engine;
mod guest_log;
pub mod http;
pub mod imports;
pub mod invoke;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod registry;
pub mod sched;
pub mod session;
pub mod storage;
pub mod teardown;
pub mod workflow;

pub use config::{EngineConfig, NodeConfig, RemoteStore};

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
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
        let pin = format!("wasmtime = {{ version = \"={}\"", super::WASMTIME_VERSION);
        assert!(
            manifest.contains(&pin),
            "update WASMTIME_VERSION and VERSION_LINE to the pin"
        );
        assert!(super::VERSION_LINE.contains(super::WASMTIME_VERSION));
    }
}
