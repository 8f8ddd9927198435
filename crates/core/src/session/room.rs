//! Making room, the node's first platform decisions (the orchestrator's
//! node-local part): local-state places and instance slots are an LRU
//! cache over the sessions that want them.
//!
//! - A session that asks for local-state mode when every place is taken
//!   gets the place of the local session idle the longest, if that one has
//!   been idle at least `--demote-idle-ms`: its state moves to the remote
//!   store (trigger `policy`), and it keeps its wish, so its next call asks
//!   again and takes the place of whichever is idle then.
//! - A call that needs an instance when every slot is held drops the pinned
//!   instance idle the longest (its session stays local; its next call
//!   starts cold) instead of waiting for a slot until it is refused.
//!
//! - With `--promote-calls-per-sec R`, a remote-state session called at
//!   least R times a second (over a window of a second or more) is made
//!   local by the node after a call (trigger `policy`,
//!   `edge_promotions_total`), taking a free or idle place as above.
//!
//! Only sessions whose gate is free are touched: never one in a call.

use super::{Session, SessionMode, Sessions, Trigger};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Sessions {
    /// Demotes the local session idle the longest (not `asking`), if it has
    /// been idle at least the demotion threshold. True when a place was freed.
    pub(super) async fn make_room(&self, asking: &str) -> bool {
        let now = self.epoch.elapsed();
        let mut candidates: Vec<(Duration, Arc<Session>)> = self
            .all()
            .into_iter()
            .filter(|s| s.id != asking)
            .map(|s| {
                let last = Duration::from_millis(s.last_used_ms.load(Ordering::Relaxed));
                (now.saturating_sub(last), s)
            })
            .filter(|(idle, _)| *idle >= self.demote_idle)
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (idle, s) in candidates {
            let Ok(mut inner) = s.gate.try_write() else {
                continue;
            };
            if inner.record.mode != SessionMode::Local || inner.record.moved_to.is_some() {
                continue;
            }
            // Boxed: `transition` may call this, and this calls it.
            let demoted =
                Box::pin(self.transition(&s, &mut inner, SessionMode::Remote, Trigger::Policy))
                    .await;
            if let Err(e) = demoted {
                tracing::warn!(session = %s.id, error = %e, "could not demote an idle session");
                continue;
            }
            // It keeps its wish: its next call asks for a place again.
            inner.record.desired = SessionMode::Local;
            if let Err(e) = self.save(&s.id, &inner.record).await {
                tracing::warn!(session = %s.id, error = %e, "could not record a demoted session's wish");
            }
            self.metrics.demotions.inc();
            tracing::info!(session = %s.id, for_session = asking, idle_ms = idle.as_millis() as u64, "demoted an idle local session to make room");
            return true;
        }
        false
    }

    /// Drops the pinned instance idle the longest, of any session not in a
    /// call; its pool slot is free when this returns true.
    pub fn evict_for_slot(&self) -> bool {
        let mut oldest: Option<(std::time::Instant, Arc<Session>, String)> = None;
        for s in self.all() {
            let Ok(inner) = s.gate.try_read() else {
                continue;
            };
            for (name, p) in &inner.pinned {
                let used = p.lock().unwrap_or_else(|e| e.into_inner()).last_used;
                if oldest.as_ref().is_none_or(|(t, _, _)| used < *t) {
                    oldest = Some((used, s.clone(), name.clone()));
                }
            }
        }
        let Some((_, s, name)) = oldest else {
            return false;
        };
        let Ok(mut inner) = s.gate.try_write() else {
            return false;
        };
        let Some(pinned) = inner.pinned.remove(&name) else {
            return false;
        };
        drop(pinned);
        self.metrics.pressure_evictions.inc();
        tracing::info!(session = %s.id, function = %name, "dropped an idle pinned instance: every slot was held");
        true
    }

    /// True when `session` (remote-state) is called often enough that the
    /// node makes it local. (With the orchestrator on, it decides instead.)
    pub fn is_hot(&self, session: &Session) -> bool {
        self.orchestrator.is_none()
            && self.promote_rate > 0.0
            && session.call_rate() >= self.promote_rate
    }

    /// Whether a wish for local-state that capacity refused is tried again
    /// after each call; with the orchestrator on, its rounds grant wishes.
    pub fn retries_wishes(&self) -> bool {
        self.orchestrator.is_none()
    }

    /// Every session in the table.
    pub(super) fn all(&self) -> Vec<Arc<Session>> {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
