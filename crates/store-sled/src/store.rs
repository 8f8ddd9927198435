//! [`StateStore`] on this node's sled database.

use crate::writer::SledWriter;
use async_trait::async_trait;
use edge_host_api::{Commit, StateStore, StoreError, Versioned, valid_session_id};

/// Session state in a sled tree, durable (flushed) before a commit returns.
///
/// Layout: key = `session ++ 0x00 ++ key`, value = `version (8 bytes, BE) ++ bytes`.
/// Session ids never contain NUL ([`valid_session_id`]), so one session's
/// prefix never covers another's keys.
///
/// Writes go through the node's [`SledWriter`] (one thread, one flush per
/// batch of commits); reads run on tokio's blocking pool, never on an async
/// worker.
#[derive(Clone)]
pub struct SledStore {
    writer: SledWriter,
    tree: sled::Tree,
}

const TREE: &str = "state";

fn prefix(session: &str) -> Result<Vec<u8>, StoreError> {
    if !valid_session_id(session) {
        return Err(StoreError::InvalidSession);
    }
    let mut p = Vec::with_capacity(session.len() + 1);
    p.extend_from_slice(session.as_bytes());
    p.push(0);
    Ok(p)
}

fn full_key(session: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut k = prefix(session)?;
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

fn decode(raw: &[u8]) -> Result<Versioned, StoreError> {
    let (version, value) = raw
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Backend("corrupt state record".into()))?;
    Ok(Versioned {
        value: value.to_vec(),
        version: u64::from_be_bytes(*version),
    })
}

fn version_of(raw: &[u8]) -> Option<u64> {
    raw.first_chunk::<8>().map(|v| u64::from_be_bytes(*v))
}

/// A record at a new version, unique in the database (sled ids start at 0;
/// versions at 1).
fn record(db: &sled::Db, value: &[u8]) -> Result<Vec<u8>, StoreError> {
    let version = db.generate_id().map_err(crate::store_error)? + 1;
    let mut record = Vec::with_capacity(8 + value.len());
    record.extend_from_slice(&version.to_be_bytes());
    record.extend_from_slice(value);
    Ok(record)
}

/// Runs a blocking sled read on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("state read: {e}")))?
}

/// A batch that removes every key of the session with prefix `p`.
fn clear(tree: &sled::Tree, p: &[u8]) -> Result<(sled::Batch, usize), StoreError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for k in tree.scan_prefix(p).keys() {
        batch.remove(k.map_err(crate::store_error)?);
        n += 1;
    }
    Ok((batch, n))
}

impl SledStore {
    /// Uses the `state` tree of `db`, with a writer thread of its own.
    pub fn new(db: sled::Db) -> Result<Self, StoreError> {
        let writer = SledWriter::start(db)
            .map_err(|e| StoreError::Backend(format!("state writer thread: {e}")))?;
        Self::with_writer(writer)
    }

    /// Uses the `state` tree of the writer's database; writes go through it.
    pub fn with_writer(writer: SledWriter) -> Result<Self, StoreError> {
        let tree = writer.db().open_tree(TREE).map_err(crate::store_error)?;
        Ok(Self { writer, tree })
    }

    /// The writer this store commits through.
    pub fn writer(&self) -> &SledWriter {
        &self.writer
    }

    /// Every key of `session` with its value and version.
    pub async fn export(&self, session: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let p = prefix(session)?;
        let tree = self.tree.clone();
        blocking(move || {
            let mut out = Vec::new();
            for item in tree.scan_prefix(&p) {
                let (k, v) = item.map_err(crate::store_error)?;
                out.push((
                    String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                    decode(&v)?,
                ));
            }
            Ok(out)
        })
        .await
    }

    /// Makes `entries` the whole state of `session`, durably. Every value
    /// gets a new version of this database: versions stay unique here even
    /// for a session that arrives from another node.
    pub async fn replace(
        &self,
        session: &str,
        entries: &[(String, Versioned)],
    ) -> Result<(), StoreError> {
        let p = prefix(session)?;
        let entries = entries
            .iter()
            .map(|(key, v)| Ok((full_key(session, key)?, v.value.clone())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let tree = self.tree.clone();
        self.writer
            .write(move |db| {
                let (mut batch, _) = clear(&tree, &p)?;
                for (full, value) in &entries {
                    batch.insert(full.as_slice(), record(db, value)?);
                }
                tree.apply_batch(batch).map_err(crate::store_error)?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl StateStore for SledStore {
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let k = full_key(session, key)?;
        let tree = self.tree.clone();
        blocking(move || {
            tree.get(k)
                .map_err(crate::store_error)?
                .map(|raw| decode(&raw))
                .transpose()
        })
        .await
    }

    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let p = prefix(session)?;
        let tree = self.tree.clone();
        blocking(move || {
            let mut out = Vec::new();
            for item in tree.scan_prefix(&p) {
                let (k, v) = item.map_err(crate::store_error)?;
                let key = String::from_utf8_lossy(&k[p.len()..]).into_owned();
                let version = version_of(&v)
                    .ok_or_else(|| StoreError::Backend("corrupt state record".into()))?;
                out.push((key, version));
            }
            Ok(out)
        })
        .await
    }

    async fn commit(&self, session: &str, commit: &Commit) -> Result<(), StoreError> {
        self.commit_until(session, commit, None, None).await
    }

    async fn commit_by(
        &self,
        session: &str,
        commit: &Commit,
        deadline: std::time::Instant,
    ) -> Result<(), StoreError> {
        self.commit_until(session, commit, Some(deadline), None)
            .await
    }

    async fn delete_session(&self, session: &str) -> Result<usize, StoreError> {
        let p = prefix(session)?;
        let tree = self.tree.clone();
        self.writer
            .write(move |_| {
                let (batch, n) = clear(&tree, &p)?;
                tree.apply_batch(batch).map_err(crate::store_error)?;
                Ok(n)
            })
            .await
    }
}

impl SledStore {
    /// Relaxed durability (opt-in per function): as
    /// [`StateStore::commit_by`], but answered once applied, before it is
    /// on disk; the writer flushes it within `interval`. A crash may lose
    /// the commits of the last `interval`; a clean stop loses none.
    pub async fn commit_relaxed(
        &self,
        session: &str,
        commit: &Commit,
        deadline: std::time::Instant,
        interval: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.commit_until(session, commit, Some(deadline), Some(interval))
            .await
    }

    async fn commit_until(
        &self,
        session: &str,
        commit: &Commit,
        deadline: Option<std::time::Instant>,
        relaxed: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        if commit.is_read_only() {
            return Ok(());
        }
        let reads = commit
            .reads
            .iter()
            .map(|(k, v)| Ok((full_key(session, k)?, k.clone(), *v)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let writes = commit
            .writes
            .iter()
            .map(|(k, v)| Ok((full_key(session, k)?, v.clone())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let tree = self.tree.clone();
        // Checked and applied on the writer thread, the only one that
        // writes: nothing can change between the check and the batch.
        let apply = move |db: &sled::Db| {
            for (full, key, seen) in reads {
                let now = tree
                    .get(&full)
                    .map_err(crate::store_error)?
                    .as_deref()
                    .and_then(version_of);
                if now != seen {
                    return Err(StoreError::Conflict { key });
                }
            }
            // One key is atomic by itself: no batch, which would take
            // sled's exclusive lock and wait for every reader.
            if let [(full, value)] = writes.as_slice() {
                match value {
                    Some(bytes) => tree
                        .insert(full.as_slice(), record(db, bytes)?)
                        .map_err(crate::store_error)?,
                    None => tree.remove(full.as_slice()).map_err(crate::store_error)?,
                };
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            for (full, value) in writes {
                match value {
                    Some(bytes) => batch.insert(full, record(db, &bytes)?),
                    None => batch.remove(full),
                }
            }
            tree.apply_batch(batch).map_err(crate::store_error)?;
            Ok(())
        };
        match relaxed {
            None => self.writer.write_until(deadline, apply).await,
            Some(interval) => self.writer.write_relaxed(deadline, interval, apply).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled_keeps_the_semantics_every_store_must() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = SledStore::new(db).unwrap();
        edge_host_api::conformance::run_all(std::sync::Arc::new(store), "sled").await;
    }
}
