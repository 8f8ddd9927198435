//! One owner per local-state session across the nodes that share a Redis
//! (`edge_store_redis::RedisDirectory`): a session is local on at most one
//! node — the one the directory names — and every other node forwards its
//! calls there. Without a shared Redis the node owns what it holds.
//!
//! - Becoming local takes the session in the directory (compare-and-set): a
//!   session another node owns is not taken, the caller is sent there.
//! - Leaving local (to remote-state, or deleted) gives it up.
//! - A migration hands it over in the directory only after the target has
//!   the whole state, while the source still holds the session's gate; the
//!   target serves it only once the directory names it. A reply lost on the
//!   way leaves the directory naming the source, which keeps serving; the
//!   target's copy is never served.
//! - A node serves a local session it did not take itself (imported, or
//!   held across a restart) only after the directory confirmed it (once).

use super::{Session, SessionError, Sessions};
use edge_store_redis::RedisDirectory;
use std::sync::atomic::Ordering;

/// The directory, and this node's URL in it.
pub struct Directory {
    /// The shared directory.
    pub redis: RedisDirectory,
    /// This node, as other nodes reach it.
    pub me: String,
}

impl Sessions {
    /// Takes `session` for this node (it becomes local here). Another owner
    /// is [`SessionError::Moved`] to it.
    pub(super) async fn take(&self, session: &Session) -> Result<(), SessionError> {
        let Some(d) = &self.directory else {
            return Ok(());
        };
        let owner = d.redis.claim(&session.id, &d.me).await?;
        if owner.url != d.me {
            return Err(SessionError::Moved(owner.url));
        }
        session.confirmed.store(true, Ordering::Release);
        Ok(())
    }

    /// Gives `id` up in the directory (it left local-state mode here).
    pub(super) async fn give_up(&self, id: &str) {
        if let Some(d) = &self.directory
            && let Err(e) = d.redis.release(id, &d.me).await
        {
            tracing::warn!(session = id, error = %e, "could not give the session up in the directory");
        }
    }

    /// Hands `session` to `to` in the directory (the migration's commit
    /// point). Fails unless this node owned it.
    pub(super) async fn hand_over(&self, session: &Session, to: &str) -> Result<(), SessionError> {
        let Some(d) = &self.directory else {
            return Ok(());
        };
        match d.redis.transfer(&session.id, &d.me, to).await? {
            Some(owner) if owner.url == to => {
                session.confirmed.store(false, Ordering::Release);
                Ok(())
            }
            other => Err(SessionError::Storage(format!(
                "the directory does not name this node as the session's owner ({:?})",
                other.map(|o| o.url)
            ))),
        }
    }

    /// For a session this node does not serve locally: the node that owns
    /// it, if another one does. A session whose id this node just made is
    /// nobody else's: no lookup.
    pub async fn owner_of(&self, session: &Session) -> Result<Option<String>, SessionError> {
        if session.minted {
            return Ok(None);
        }
        self.owner_elsewhere(&session.id).await
    }

    /// The node the directory names as session `id`'s owner, if another
    /// one: a look only, for a node that does not serve the call itself
    /// (it changes nothing, whatever the entry says).
    pub async fn named_owner_elsewhere(&self, id: &str) -> Result<Option<String>, SessionError> {
        let Some(d) = &self.directory else {
            return Ok(None);
        };
        Ok(d.redis
            .owner(id)
            .await?
            .map(|o| o.url)
            .filter(|url| *url != d.me))
    }

    /// For a session that is not local here: the node that owns session
    /// `id`, if another one does.
    pub async fn owner_elsewhere(&self, id: &str) -> Result<Option<String>, SessionError> {
        let Some(d) = &self.directory else {
            return Ok(None);
        };
        match d.redis.owner(id).await? {
            Some(o) if o.url != d.me => Ok(Some(o.url)),
            // This node took it and then failed before recording the move:
            // its state is still in the remote store.
            Some(_) => {
                self.give_up(id).await;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Before serving local session `session` (gate held, mode local): the
    /// node that owns it if not this one. Asks the directory once per
    /// session and process; takes the session if nobody owns it.
    pub async fn confirm_local(&self, session: &Session) -> Result<Option<String>, SessionError> {
        if self.directory.is_none() || session.confirmed.load(Ordering::Acquire) {
            return Ok(None);
        }
        match self.take(session).await {
            Ok(()) => Ok(None),
            Err(SessionError::Moved(owner)) => Ok(Some(owner)),
            Err(e) => Err(e),
        }
    }

    /// True when this node keeps its sessions' owners in a directory.
    pub fn has_directory(&self) -> bool {
        self.directory.is_some()
    }
}

impl Session {
    /// True while this node is known to own it (local-state mode here).
    pub fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Acquire)
    }
}
