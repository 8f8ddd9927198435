//! Moving a local-state session between nodes: handing it out (the gate
//! held, the entries sent, the record flipped to `moved_to`, the local copy
//! dropped) and taking one in.

use super::{Held, ModeOutcome, Record, Session, SessionError, SessionMode, Sessions};
use edge_host_api::{StateStore, Versioned};
use serde::Serialize;
use std::time::Instant;

impl Sessions {
    /// Hands a local session to another node: `send` delivers its entries
    /// there; then this node forgets the state and forwards later calls.
    pub async fn migrate_out<F, Fut>(
        &self,
        session: &Session,
        to: &str,
        send: F,
    ) -> Result<MigrationReport, SessionError>
    where
        F: FnOnce(Vec<(String, Versioned)>) -> Fut,
        Fut: Future<Output = Result<(), SessionError>>,
    {
        let waited = Instant::now();
        let deadline = self.deadline();
        let mut inner = session.write_by(deadline).await?;
        let started = Instant::now();
        if let Some(url) = &inner.record.moved_to {
            return Err(SessionError::Moved(url.clone()));
        }
        if inner.record.mode != SessionMode::Local {
            return Err(SessionError::NotLocal);
        }
        match self.confirm_local(session, &mut inner).await? {
            Held::Here => {}
            Held::Elsewhere(owner) => return Err(SessionError::Moved(owner)),
            Held::Dropped => return Err(SessionError::NotLocal),
        }
        let entries = self.local.export(&session.id).await?;
        let keys = entries.len();
        let wait = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(wait, send(entries))
            .await
            .map_err(|_| SessionError::Busy(wait))??;
        // The commit point: from here the target owns it. Before it, a lost
        // answer leaves this node the owner, and the target's copy unserved.
        self.hand_over(session, to).await?;
        inner.record = Record {
            mode: SessionMode::Remote,
            desired: SessionMode::Remote,
            moved_to: Some(to.to_owned()),
            directed: false,
        };
        self.save(&session.id, &inner.record).await?;
        self.drop_pinned(&mut inner);
        self.release_local();
        if let Err(e) = self.local.delete_session(&session.id).await {
            tracing::warn!(session = %session.id, error = %e, "could not clear migrated state");
        }
        Ok(MigrationReport {
            keys,
            blocked_us: started.elapsed().as_micros() as u64,
            lock_wait_us: (started - waited).as_micros() as u64,
        })
    }

    /// Takes in a session another node hands over: its entries (with their
    /// versions) become this node's local state and the session local here.
    pub async fn migrate_in(
        &self,
        id: &str,
        entries: &[(String, Versioned)],
    ) -> Result<ModeOutcome, SessionError> {
        let session = self.get(id).await?;
        let mut inner = session.write_by(self.deadline()).await?;
        // Served only once the directory names this node (see `owner`).
        session
            .confirmed
            .store(0, std::sync::atomic::Ordering::Release);
        let was_local = inner.record.mode == SessionMode::Local && inner.record.moved_to.is_none();
        if !was_local && !self.admit_local() {
            return Ok(ModeOutcome {
                mode: SessionMode::Remote,
                reason: Some("capacity"),
                duration_us: 0,
            });
        }
        let started = Instant::now();
        let stored = async {
            self.local.replace(id, entries).await?;
            inner.record = Record {
                mode: SessionMode::Local,
                desired: SessionMode::Local,
                moved_to: None,
                directed: self.has_directory(),
            };
            self.save(id, &inner.record).await
        }
        .await;
        if let Err(e) = stored {
            if !was_local {
                self.release_local();
            }
            return Err(e);
        }
        self.drop_pinned(&mut inner);
        session.mark_changed();
        Ok(ModeOutcome {
            mode: SessionMode::Local,
            reason: None,
            duration_us: started.elapsed().as_micros() as u64,
        })
    }
}

/// What a migration cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MigrationReport {
    /// Keys moved.
    pub keys: usize,
    /// How long calls to the session were held back, in microseconds.
    pub blocked_us: u64,
    /// How long the migration waited for calls in flight, in microseconds.
    pub lock_wait_us: u64,
}
