//! Moving a session between local-state and remote-state mode on this node:
//! its state from one store to the other, its record, its place among the
//! local sessions and its entry in the directory.

use super::{
    Held, Inner, ModeOutcome, Record, Session, SessionError, SessionMode, Sessions, Trigger,
};
use super::{export, replace_all};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Sessions {
    /// Moves `session` (whose gate the caller holds exclusively, as `inner`)
    /// to `to`. A move to local beyond the cap is refused: the session stays
    /// remote and remembers it asked.
    pub async fn transition(
        &self,
        session: &Session,
        inner: &mut Inner,
        to: SessionMode,
        trigger: Trigger,
    ) -> Result<ModeOutcome, SessionError> {
        // The count of local sessions is right once the records are in.
        self.ready().await?;
        if let Some(url) = &inner.record.moved_to {
            return Err(SessionError::Moved(url.clone()));
        }
        let from = inner.record.mode;
        if from == SessionMode::Local && from != to {
            match self.confirm_local(session, inner).await? {
                Held::Here => {}
                Held::Elsewhere(owner) => return Err(SessionError::Moved(owner)),
                Held::Dropped => {
                    return Ok(ModeOutcome {
                        mode: SessionMode::Remote,
                        reason: Some("stale_copy"),
                        duration_us: 0,
                    });
                }
            }
        }
        if from == to {
            if inner.record.desired != to {
                inner.record.desired = to;
                self.save(&session.id, &inner.record).await?;
            }
            return Ok(ModeOutcome {
                mode: to,
                reason: None,
                duration_us: 0,
            });
        }
        if to == SessionMode::Local
            && !self.admit_local()
            && !(self.make_room(&session.id).await && self.admit_local())
        {
            if inner.record.desired != SessionMode::Local {
                inner.record.desired = SessionMode::Local;
                self.save(&session.id, &inner.record).await?;
            }
            return Ok(ModeOutcome {
                mode: SessionMode::Remote,
                reason: Some("capacity"),
                duration_us: 0,
            });
        }
        if to == SessionMode::Local
            && let Err(e) = self.take(session).await
        {
            self.release_local();
            return Err(e);
        }
        let started = Instant::now();
        let moved = self.move_state(session, inner, from, to).await;
        if let Err(e) = moved {
            if to == SessionMode::Local {
                self.release_local();
                self.give_up(&session.id).await;
            }
            return Err(e);
        }
        if to == SessionMode::Remote {
            self.drop_pinned(inner);
            self.release_local();
            self.give_up(&session.id).await;
        }
        let took = started.elapsed();
        self.metrics
            .transitions
            .with_label_values(&[from.as_str(), to.as_str(), trigger.as_str()])
            .inc();
        self.metrics.transition_seconds.observe(took.as_secs_f64());
        tracing::info!(session = %session.id, from = from.as_str(), to = to.as_str(), trigger = trigger.as_str(), us = took.as_micros() as u64, "transition");
        Ok(ModeOutcome {
            mode: to,
            reason: None,
            duration_us: took.as_micros() as u64,
        })
    }

    pub(super) fn admit_local(&self) -> bool {
        let admitted = self
            .local_sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_local).then_some(n + 1)
            })
            .is_ok();
        self.metrics
            .local_sessions
            .set(self.local_sessions.load(Ordering::Acquire) as i64);
        admitted
    }

    pub(super) fn release_local(&self) {
        let _ = self
            .local_sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.metrics
            .local_sessions
            .set(self.local_sessions.load(Ordering::Acquire) as i64);
    }

    /// Drops every instance pinned to a session.
    pub fn drop_pinned(&self, inner: &mut Inner) {
        inner.pinned.clear();
    }

    /// Copies the session's state from `from`'s store to `to`'s, flips its
    /// record, then clears the old copy (but for a cluster's remote
    /// snapshot): after a crash the record names a store that holds the
    /// whole state.
    async fn move_state(
        &self,
        session: &Session,
        inner: &mut Inner,
        from: SessionMode,
        to: SessionMode,
    ) -> Result<(), SessionError> {
        let (source, dest) = (self.store_for(from), self.store_for(to));
        if !self.remote_is_local {
            let entries = export(source.as_ref(), &session.id).await?;
            dest.delete_session(&session.id).await?;
            dest.commit(&session.id, &replace_all(&entries)).await?;
        }
        inner.record = Record {
            mode: to,
            desired: to,
            moved_to: None,
            directed: to == SessionMode::Local && self.has_directory(),
        };
        self.save(&session.id, &inner.record).await?;
        // In a cluster the remote copy stays as the session's snapshot: a
        // node taking the session over from an owner that died goes on from
        // it (the fence keeps every other node from writing it meanwhile).
        let snapshot = to == SessionMode::Local && self.has_directory();
        if !self.remote_is_local
            && !snapshot
            && let Err(e) = source.delete_session(&session.id).await
        {
            tracing::warn!(session = %session.id, error = %e, "could not clear the old copy; it is stale and will be overwritten");
        }
        Ok(())
    }
}
