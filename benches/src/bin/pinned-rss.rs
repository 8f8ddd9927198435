//! Resident memory of a node with many pinned sessions.
//!
//! `cargo run --release -p edge-benches --bin pinned-rss -- [SESSIONS]`
//! (default 1000): opens a node in a temp dir, deploys `memo`, moves that
//! many sessions to local-state mode and calls each once (each pins a warm
//! instance), then prints RSS before and after, and per session.

use anyhow::{Context, Result, bail};
use edge_benches::{ServedNode, guests, rss_bytes};
use edge_core::InvokeRequest;
use edge_core::session::SessionMode;

#[tokio::main]
async fn main() -> Result<()> {
    let sessions: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let served = ServedNode::start_with(&[("memo", guests::MEMO)], |c| {
        c.engine.max_instances = (sessions + 16) as u32;
        c.engine.max_memory_bytes = 16 << 20;
        c.max_local_sessions = sessions;
    })
    .await?;
    let node = &served.node;
    node.invoke(InvokeRequest::from_client(
        "memo",
        Some("warm-up".into()),
        Vec::new(),
    ))
    .await?;
    let before = rss_bytes().context("reading /proc/self/status")?;
    for i in 0..sessions {
        let id = format!("pinned-{i}");
        let moved = node.set_mode(&id, SessionMode::Local).await?;
        if moved.mode != SessionMode::Local {
            bail!("session {i} was not admitted to local-state mode");
        }
        let out = node
            .invoke(InvokeRequest::from_client("memo", Some(id), Vec::new()))
            .await?;
        if out.output != b"1" {
            bail!("unexpected output from a fresh pinned instance");
        }
    }
    let after = rss_bytes().context("reading /proc/self/status")?;
    let pinned = node.metrics().pinned_instances.get();
    println!("sessions pinned: {pinned}");
    println!("rss before: {:.1} MiB", before as f64 / (1 << 20) as f64);
    println!("rss after:  {:.1} MiB", after as f64 / (1 << 20) as f64);
    println!(
        "per pinned session: {:.1} KiB",
        after.saturating_sub(before) as f64 / 1024.0 / sessions.max(1) as f64
    );
    Ok(())
}
