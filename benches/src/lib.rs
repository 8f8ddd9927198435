//! Shared helpers for edge-node's benchmarks: a node in a temp dir, served
//! over HTTP on 127.0.0.1:0, with the example guests deployed.

use anyhow::{Context, Result};
use edge_runtime::{Node, NodeConfig};
use std::net::SocketAddr;
use std::sync::Arc;

pub use edge_guest_artifacts as guests;

/// A node serving HTTP on loopback until dropped.
pub struct ServedNode {
    /// The node.
    pub node: Arc<Node>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data dir (removed on drop).
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ServedNode {
    /// Opens a node in a fresh temp dir, deploys `functions` (name, path)
    /// and serves it on 127.0.0.1:0 on the current tokio runtime.
    pub async fn start(functions: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let node = Arc::new(Node::open(NodeConfig::new(dir.path())).await?);
        for (name, path) in functions {
            let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            node.registry().deploy(name, bytes).await?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(edge_runtime::http::serve(
            listener,
            node.clone(),
            Default::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            node,
            addr,
            dir,
            stop: Some(stop),
        })
    }

    /// The URL of `path` on this node.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for ServedNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
