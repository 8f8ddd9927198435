//! The host's view of one invocation: its session and its state transaction.

use crate::bindings::edge::function::{session, state, types::Mode};
use crate::store::{Commit, StateStore, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Limits on what a guest may store.
#[derive(Debug, Clone, Copy)]
pub struct StateLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: u32,
    /// Largest value, in bytes.
    pub max_value_bytes: u32,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 1 << 20,
        }
    }
}

/// The state and session of one invocation, as the guest sees them.
///
/// Reads go to the store once per key and are remembered (with the version
/// seen), writes are buffered; [`StateCtx::into_commit`] turns both into one
/// atomic [`Commit`] that applies only if nothing read has changed since.
pub struct StateCtx {
    store: Arc<dyn StateStore>,
    session: String,
    mode: Mode,
    limits: StateLimits,
    /// What the store returned for each key read (value, version).
    reads: BTreeMap<String, Option<(Vec<u8>, u64)>>,
    /// Keys listed by `list-keys` with their versions, if it was called.
    listed: Option<BTreeMap<String, u64>>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    requested_mode: Option<Mode>,
    /// A full disk met by a state call: the invocation fails with it
    /// whatever the guest made of the error.
    disk_full: Option<StoreError>,
}

impl StateCtx {
    /// A fresh context for one invocation of `session`, served in `mode`.
    pub fn new(
        store: Arc<dyn StateStore>,
        session: String,
        mode: Mode,
        limits: StateLimits,
    ) -> Self {
        Self {
            store,
            session,
            mode,
            limits,
            reads: BTreeMap::new(),
            listed: None,
            writes: BTreeMap::new(),
            requested_mode: None,
            disk_full: None,
        }
    }

    /// The full-disk error a state call of this invocation met, if any. The
    /// guest saw it as `unavailable`; the host must not take its answer for
    /// a success or a guest error: storage has stopped.
    pub fn take_disk_full(&mut self) -> Option<StoreError> {
        self.disk_full.take()
    }

    fn unavailable(&mut self, e: StoreError) -> state::StateError {
        if matches!(e, StoreError::Full(_)) && self.disk_full.is_none() {
            self.disk_full = Some(e.clone());
        }
        state::StateError::Unavailable(e.to_string())
    }

    /// The session this invocation belongs to.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The mode the guest asked for with `session.request-mode`, if any.
    pub fn requested_mode(&self) -> Option<Mode> {
        self.requested_mode
    }

    /// The commit that makes this invocation's writes durable: every key it
    /// read (at the version seen) and every key it wrote.
    pub fn into_commit(mut self) -> Commit {
        self.take_commit()
    }

    /// Lets go of the store: later state calls fail, and the caller that
    /// owns the store is its only holder again (an instance may be freed
    /// after its call has been answered).
    pub fn release_store(&mut self) {
        self.store = Arc::new(Released);
    }

    /// As [`StateCtx::into_commit`], leaving the context empty (for an
    /// instance that lives on to the next call).
    pub fn take_commit(&mut self) -> Commit {
        let mut reads: BTreeMap<String, Option<u64>> = self
            .listed
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        reads.extend(
            std::mem::take(&mut self.reads)
                .into_iter()
                .map(|(k, v)| (k, v.map(|(_, version)| version))),
        );
        Commit {
            reads: reads.into_iter().collect(),
            writes: std::mem::take(&mut self.writes).into_iter().collect(),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), state::StateError> {
        if key.is_empty() || key.len() > self.limits.max_key_bytes as usize {
            return Err(state::StateError::InvalidKey(self.limits.max_key_bytes));
        }
        Ok(())
    }
}

impl state::Host for StateCtx {
    #[tracing::instrument(level = "trace", skip(self), fields(session = %self.session))]
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, state::StateError> {
        self.check_key(&key)?;
        if let Some(pending) = self.writes.get(&key) {
            return Ok(pending.clone());
        }
        if let Some(seen) = self.reads.get(&key) {
            return Ok(seen.as_ref().map(|(v, _)| v.clone()));
        }
        let found = match self.store.get(&self.session, &key).await {
            Ok(found) => found,
            Err(e) => return Err(self.unavailable(e)),
        };
        let value = found.as_ref().map(|v| v.value.clone());
        self.reads.insert(key, found.map(|v| (v.value, v.version)));
        Ok(value)
    }

    #[tracing::instrument(level = "trace", skip(self, value), fields(session = %self.session, len = value.len()))]
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        self.check_key(&key)?;
        if value.len() > self.limits.max_value_bytes as usize {
            return Err(state::StateError::ValueTooLarge(
                self.limits.max_value_bytes,
            ));
        }
        self.writes.insert(key, Some(value));
        Ok(())
    }

    #[tracing::instrument(level = "trace", skip(self), fields(session = %self.session))]
    async fn delete(&mut self, key: String) -> Result<(), state::StateError> {
        self.check_key(&key)?;
        self.writes.insert(key, None);
        Ok(())
    }

    #[tracing::instrument(level = "trace", skip(self), fields(session = %self.session))]
    async fn list_keys(&mut self) -> Result<Vec<String>, state::StateError> {
        if self.listed.is_none() {
            let keys = match self.store.keys(&self.session).await {
                Ok(keys) => keys,
                Err(e) => return Err(self.unavailable(e)),
            };
            self.listed = Some(keys.into_iter().collect());
        }
        let mut keys: BTreeMap<&str, bool> = self
            .listed
            .iter()
            .flatten()
            .map(|(k, _)| (k.as_str(), true))
            .collect();
        for (k, v) in &self.reads {
            keys.insert(k, v.is_some());
        }
        for (k, v) in &self.writes {
            keys.insert(k, v.is_some());
        }
        Ok(keys
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(k, _)| k.to_owned())
            .collect())
    }
}

impl session::Host for StateCtx {
    async fn id(&mut self) -> String {
        self.session.clone()
    }

    async fn current_mode(&mut self) -> Mode {
        self.mode
    }

    async fn request_mode(&mut self, mode: Mode) {
        self.requested_mode = Some(mode);
    }
}

impl crate::bindings::edge::function::types::Host for StateCtx {}

/// The store of a context whose call is over.
struct Released;

#[async_trait::async_trait]
impl StateStore for Released {
    async fn get(&self, _: &str, _: &str) -> Result<Option<crate::Versioned>, StoreError> {
        Err(released())
    }

    async fn keys(&self, _: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Err(released())
    }

    async fn commit(&self, _: &str, _: &Commit) -> Result<(), StoreError> {
        Err(released())
    }

    async fn delete_session(&self, _: &str) -> Result<usize, StoreError> {
        Err(released())
    }
}

fn released() -> StoreError {
    StoreError::Backend("the invocation is over".into())
}
