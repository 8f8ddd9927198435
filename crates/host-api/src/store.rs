//! The state store trait every backend implements.

use async_trait::async_trait;

/// A value with the version it was stored at.
///
/// Versions are unique and increase across the whole store, so a key that is
/// deleted and written again never reuses a version a reader may have seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The version the value was written at.
    pub version: u64,
}

/// An atomic change to one session's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Keys read and the version seen (`None`: the key was absent). The commit
    /// applies only if each still holds.
    pub reads: Vec<(String, Option<u64>)>,
    /// Keys written: `Some(bytes)` to set, `None` to delete.
    pub writes: Vec<(String, Option<Vec<u8>>)>,
}

impl Commit {
    /// True when the commit writes nothing.
    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A key read by the commit changed since it was read.
    #[error("state key {key:?} changed concurrently")]
    Conflict {
        /// The key whose version no longer matched.
        key: String,
    },
    /// The session id cannot name a state namespace.
    #[error("invalid session id")]
    InvalidSession,
    /// The disk under the store is full: nothing was written.
    #[error("state store: disk full, nothing was written ({0})")]
    Full(String),
    /// The deadline passed before the write was started: nothing was written.
    #[error("state store: the deadline passed before the write could start; nothing was written")]
    Timeout,
    /// The backend failed (I/O, an unreachable server).
    #[error("state store: {0}")]
    Backend(String),
    /// The session is in local-state mode on another node (named), which
    /// holds its state: nothing was written here.
    #[error("the session is owned by {0}, which holds its state")]
    Owned(String),
}

/// True for the error a full disk gives (ENOSPC, or EDQUOT: over quota).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

/// Where sessions keep their state: sled on this node, Redis, or a peer.
///
/// All operations are scoped to one session; no call can reach another
/// session's keys.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The value of `key` in `session`, with its version.
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Every key of `session` with its version, sorted by key.
    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError>;

    /// Apply `commit` atomically and durably, or fail with
    /// [`StoreError::Conflict`] and change nothing.
    async fn commit(&self, session: &str, commit: &Commit) -> Result<(), StoreError>;

    /// As [`StateStore::commit`], giving up by `deadline` where the backend
    /// can tell that nothing was written ([`StoreError::Timeout`]); a
    /// backend that cannot tell waits (the default).
    async fn commit_by(
        &self,
        session: &str,
        commit: &Commit,
        deadline: std::time::Instant,
    ) -> Result<(), StoreError> {
        let _ = deadline;
        self.commit(session, commit).await
    }

    /// Remove every key of `session`; returns how many there were.
    async fn delete_session(&self, session: &str) -> Result<usize, StoreError>;
}

/// True when `id` can name a session: 1 to 128 bytes of `[A-Za-z0-9._-]`.
pub fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
