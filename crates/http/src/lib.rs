//! The HTTP face of an edge-node: the public API and the cluster routes
//! behind one token check, JSON errors, and the server loop with its limits.
//! It calls into `edge-core` and `edge-workflow`, never the reverse.
//!
//! ```no_run
//! use edge_core::{Node, NodeConfig};
//! use std::sync::Arc;
//!
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! let node = Arc::new(Node::open(NodeConfig::new("./edge-data")).await?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! edge_http::serve(listener, node, Default::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

mod api;
mod auth;
mod config;
mod error;
mod extract;
mod proxy;
mod server;
mod sessions;
mod tls;
mod workflows;

pub use api::{AppState, router};
pub use auth::is_cluster_route;
pub use edge_proto::routes::{
    DURATION_HEADER, MODE_HEADER, MODE_REASON_HEADER, OWNER_HEADER, SESSION_HEADER, START_HEADER,
};
pub use error::ApiError;
pub use server::{ServerConfig, serve};
pub use tls::{ClientCertified, Tls, TlsError};
