//! Why a session operation failed.

use edge_host_api::StoreError;
use std::time::Duration;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The id cannot name a session.
    #[error("invalid session id: expected 1-128 characters of [A-Za-z0-9._-]")]
    InvalidId,
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session lives on another node now.
    #[error("session moved to {0}")]
    Moved(String),
    /// A migration target this node may not hand a session to.
    #[error("invalid migration target: {0}")]
    InvalidTarget(String),
    /// Waiting for the session took past the call's deadline.
    #[error("the session stayed busy past the deadline of {0:?}")]
    Busy(Duration),
    /// The operation needs a local-state session.
    #[error("session is not in local-state mode")]
    NotLocal,
    /// The session database failed.
    #[error("session database: {0}")]
    Storage(String),
    /// This node has not renewed its cluster membership in time: its
    /// local-state sessions wait until it has (another node may take them
    /// over meanwhile).
    #[error(
        "this node's cluster membership lapsed {0:?} ago (Redis not reached): its local-state sessions wait until it is renewed"
    )]
    NoLease(Duration),
    /// The node keeps no directory (no shared Redis): it owns its sessions.
    #[error("this node has no shared directory (no --remote-store redis://): it owns its sessions")]
    NoDirectory,
    /// The session's owner is a live member: it is not taken over.
    #[error("the session's owner {0} is a live member of the cluster: it is not taken over")]
    OwnerAlive(String),
    /// A migration target lacks a function the session uses (nothing moved).
    #[error("{0}")]
    MissingFunctions(String),
}

impl From<sled::Error> for SessionError {
    fn from(e: sled::Error) -> Self {
        SessionError::Storage(e.to_string())
    }
}
