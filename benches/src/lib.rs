//! Shared helpers for edge-node's benchmarks: a node in a temp dir, served
//! over HTTP on 127.0.0.1:0, with the example guests deployed; an in-process
//! fixture; server processes, `wrk` load and the reports of the bench runner.

use anyhow::{Context, Result};
use edge_core::{Node, NodeConfig};
use std::net::SocketAddr;
use std::sync::Arc;

pub use edge_guest_artifacts as guests;

pub mod fixture;
pub mod load;
pub mod procs;
pub mod report;

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
        Self::start_with(functions, |_| {}).await
    }

    /// As [`ServedNode::start`], with the configuration adjusted by `tune`.
    pub async fn start_with(
        functions: &[(&str, &str)],
        tune: impl FnOnce(&mut NodeConfig),
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = NodeConfig::new(dir.path());
        tune(&mut config);
        let node = Arc::new(Node::open(config).await?);
        for (name, path) in functions {
            let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            node.registry().deploy(name, bytes).await?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(edge_http::serve(
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

/// A `redis-server` on a free loopback port, stopped when dropped.
pub struct Redis {
    child: std::process::Child,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl Redis {
    /// Starts one, or `None` when `redis-server` is not installed.
    pub fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's resident set size, in bytes (Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
