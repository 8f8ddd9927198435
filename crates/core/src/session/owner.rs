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
//! - A node serves and commits a local session only under its lease (see
//!   `lease`), and only after the directory named it under the lease's
//!   current generation: after an import, a restart, or a lapse it asks.
//! - A copy taken or received under the directory (`Record::directed`)
//!   that the directory no longer names is stale — its migration's reply
//!   was lost and the session moved on, or the session was taken over from
//!   this node while it was gone — and is dropped when found. (A copy made
//!   before the node joined a cluster is taken as before.)
//! - An owner that is not a live member can be taken over
//!   ([`Sessions::take_over`]): its entry is dropped, atomically with
//!   checking it has not beaten since, and the session goes on in
//!   remote-state mode from its last snapshot in the remote store (see
//!   `snapshot`) — without what the owner wrote after it, which was on that
//!   node's disk only.

use super::{Inner, Record, Session, SessionError, SessionMode, Sessions};
use super::{LEASE, Lease};
use edge_host_api::StateStore;
use edge_store_redis::{RedisDirectory, Revoked};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The directory, and this node's URL in it.
pub struct Directory {
    /// The shared directory.
    pub redis: RedisDirectory,
    /// This node, as other nodes reach it.
    pub me: String,
    /// Held while this node's membership is renewed.
    pub lease: Lease,
}

impl Directory {
    /// The shared directory, for node `me`; the lease is not held until
    /// its first beat.
    pub fn new(redis: RedisDirectory, me: String) -> Self {
        Self {
            redis,
            me,
            lease: Lease::default(),
        }
    }

    fn generation(&self) -> Result<u64, SessionError> {
        self.lease
            .current()
            .ok_or_else(|| SessionError::NoLease(self.lease.lapsed_for()))
    }
}

/// Whether this node may serve a session it holds in local-state mode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Yes: the directory names this node.
    Here,
    /// No: another node owns it.
    Elsewhere(String),
    /// No: the copy here was stale and is dropped; the session is in
    /// remote-state mode here now.
    Dropped,
}

/// What taking a session over did.
#[derive(Debug, Clone, Serialize)]
pub struct TakeOver {
    /// The session.
    pub session: String,
    /// The owner it was taken from (`None`: it had none).
    pub previous_owner: Option<String>,
    /// Where its state is now.
    pub mode: SessionMode,
}

impl Sessions {
    /// Takes `session` for this node (it becomes local here). Another owner
    /// is [`SessionError::Moved`] to it.
    pub(super) async fn take(&self, session: &Session) -> Result<(), SessionError> {
        let Some(d) = &self.directory else {
            return Ok(());
        };
        let generation = d.generation()?;
        let owner = d.redis.claim(&session.id, &d.me).await?;
        if owner.url != d.me {
            return Err(SessionError::Moved(owner.url));
        }
        session.confirmed.store(generation, Ordering::Release);
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
                session.confirmed.store(0, Ordering::Release);
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

    /// Before serving, committing or moving local session `session` (gate
    /// held as `inner`, mode local): whether this node may. Asks the
    /// directory once per session and lease generation; takes a session
    /// nobody owns only if its copy predates the directory; drops a stale
    /// copy (see the module's doc).
    pub(crate) async fn confirm_local(
        &self,
        session: &Session,
        inner: &mut Inner,
    ) -> Result<Held, SessionError> {
        let Some(d) = &self.directory else {
            return Ok(Held::Here);
        };
        let generation = d.generation()?;
        if session.confirmed.load(Ordering::Acquire) == generation {
            return Ok(Held::Here);
        }
        match d.redis.owner(&session.id).await? {
            Some(o) if o.url == d.me => {
                session.confirmed.store(generation, Ordering::Release);
                Ok(Held::Here)
            }
            Some(o) if inner.record.directed => {
                self.drop_stale(session, inner, Some(&o.url)).await?;
                Ok(Held::Elsewhere(o.url))
            }
            Some(o) => Ok(Held::Elsewhere(o.url)),
            None if inner.record.directed => {
                self.drop_stale(session, inner, None).await?;
                Ok(Held::Dropped)
            }
            None => match self.take(session).await {
                Ok(()) => {
                    inner.record.directed = true;
                    self.save(&session.id, &inner.record).await?;
                    Ok(Held::Here)
                }
                Err(SessionError::Moved(owner)) => Ok(Held::Elsewhere(owner)),
                Err(e) => Err(e),
            },
        }
    }

    /// Checks, right before a local session's commit, that this node still
    /// holds it under an unlapsed lease (confirmed by [`Self::confirm_local`]
    /// under the current generation).
    pub(crate) fn still_held(&self, session: &Session) -> Result<(), SessionError> {
        let Some(d) = &self.directory else {
            return Ok(());
        };
        let generation = d.generation()?;
        if session.confirmed.load(Ordering::Acquire) != generation {
            return Err(SessionError::NoLease(d.lease.lapsed_for()));
        }
        Ok(())
    }

    /// Drops a local copy the directory no longer names: the session is in
    /// remote-state mode here (its calls go to `owner`, or to the remote
    /// store when nobody owns it).
    async fn drop_stale(
        &self,
        session: &Session,
        inner: &mut Inner,
        owner: Option<&str>,
    ) -> Result<(), SessionError> {
        let keys = self.local.delete_session(&session.id).await?;
        tracing::warn!(session = %session.id, keys, owner, "dropped a stale local copy: the directory names another owner or none");
        self.metrics.stale_copies.inc();
        self.drop_pinned(inner);
        self.release_local();
        inner.record = Record::default();
        self.save(&session.id, &inner.record).await
    }

    /// Takes session `id` over from an owner that is not a live member any
    /// more: its directory entry is dropped (refused while the owner beats)
    /// and the session goes on in remote-state mode from its last snapshot
    /// in the remote store. What the owner wrote after that snapshot was on
    /// its disk only, and is dropped if the node comes back.
    pub async fn take_over(&self, id: &str) -> Result<TakeOver, SessionError> {
        let Some(d) = &self.directory else {
            return Err(SessionError::NoDirectory);
        };
        let done = |previous_owner| TakeOver {
            session: id.to_owned(),
            previous_owner,
            mode: SessionMode::Remote,
        };
        let mut owner = d.redis.owner(id).await?;
        for _ in 0..4 {
            let Some(o) = owner else {
                return Ok(done(None));
            };
            if o.url == d.me {
                return Err(SessionError::OwnerAlive(o.url));
            }
            match d.redis.revoke(id, &o).await? {
                Revoked::Revoked => {
                    tracing::warn!(session = id, from = %o.url, epoch = o.epoch, "took the session over from an owner that is gone");
                    self.metrics.takeovers.inc();
                    return Ok(done(Some(o.url)));
                }
                Revoked::Alive => return Err(SessionError::OwnerAlive(o.url)),
                Revoked::Changed(now) => owner = now,
            }
        }
        Err(SessionError::Busy(LEASE))
    }

    /// Its heartbeat, sent at `sent`, was taken: the lease holds on.
    pub fn renew_lease(&self, sent: Instant) {
        if let Some(d) = &self.directory {
            d.lease.renew(sent);
        }
    }

    /// True when this node keeps its sessions' owners in a directory.
    pub fn has_directory(&self) -> bool {
        self.directory.is_some()
    }
}
