//! Snapshots of local-state sessions in a cluster: every `--snapshot-ms`,
//! each local session whose state changed since is copied to the remote
//! store (Redis), where a node taking the session over from an owner that
//! died goes on from it. Local calls still commit to this node's sled only:
//! the copy is behind by at most the interval, and costs one Redis round
//! trip per changed session per interval, off the calls' path.
//!
//! A snapshot holds the session's gate (shared) while it reads the state and
//! writes it, so it never lands after a transition or a migration moved the
//! session on; it is written only under this node's lease, and the Redis
//! commit script's fence refuses it once another node owns the session.

use super::{Session, Sessions, export};
use edge_host_api::Commit;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

impl Session {
    /// Its local state changed: the next snapshot copies it.
    pub(crate) fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

impl Sessions {
    /// Copies every local session changed since the last snapshot to the
    /// remote store; returns how many were copied.
    pub async fn snapshot_changed(&self) -> usize {
        let changed: Vec<Arc<Session>> = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.dirty.load(Ordering::Acquire))
            .cloned()
            .collect();
        let mut copied = 0;
        for session in changed {
            match self.snapshot(&session).await {
                Ok(true) => copied += 1,
                Ok(false) => {}
                Err(e) => {
                    session.mark_changed();
                    tracing::warn!(session = %session.id, error = %e, "snapshot failed; tried again at the next one");
                }
            }
        }
        copied
    }

    /// Copies one session's local state to the remote store, whole: its keys
    /// there become exactly the local ones. False when there is nothing to
    /// copy (not local here, or not held under the lease now).
    async fn snapshot(&self, session: &Session) -> Result<bool, super::SessionError> {
        let inner = session.read_by(self.deadline()).await?;
        if inner.record.mode != super::SessionMode::Local || inner.record.moved_to.is_some() {
            session.dirty.store(false, Ordering::Release);
            return Ok(false);
        }
        self.still_held(session)?;
        session.dirty.store(false, Ordering::Release);
        let entries = export(self.local.as_ref(), &session.id).await?;
        let kept: BTreeSet<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        let mut writes: Vec<(String, Option<Vec<u8>>)> = self
            .remote
            .keys(&session.id)
            .await?
            .into_iter()
            .filter(|(k, _)| !kept.contains(k.as_str()))
            .map(|(k, _)| (k, None))
            .collect();
        writes.extend(entries.into_iter().map(|(k, v)| (k, Some(v.value))));
        // One commit: atomic, and fenced (refused once another node owns it).
        self.remote
            .commit(
                &session.id,
                &Commit {
                    reads: Vec::new(),
                    writes,
                },
            )
            .await?;
        self.metrics.snapshots.inc();
        drop(inner);
        Ok(true)
    }
}

/// Snapshots `sessions`' changed local sessions every `every` while they live.
pub(super) fn spawn(sessions: Weak<Sessions>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = sessions.upgrade() else { break };
            s.snapshot_changed().await;
        }
    });
}
