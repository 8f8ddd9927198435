//! [`StateStore`] on this node's sled database.

use crate::cache::{Cache, Lookup};
use crate::writer::SledWriter;
use async_trait::async_trait;
use edge_host_api::{Commit, StateStore, StoreError, Versioned, valid_session_id};
use std::sync::Arc;

/// Session state in a sled tree, durable (flushed) before a commit returns.
///
/// Layout: key = `session ++ 0x00 ++ key`, value = `version (8 bytes, BE) ++ bytes`.
/// Session ids never contain NUL ([`valid_session_id`]), so one session's
/// prefix never covers another's keys.
///
/// Writes go through the node's [`SledWriter`] (one thread, one flush per
/// batch of commits). Reads are served from an in-memory write-through
/// cache when they can (see [`SledStore::with_cache`]), else from sled on
/// tokio's blocking pool, never on an async worker.
///
/// Every write to a database's state must go through one `SledStore` (and
/// its clones): the cache is coherent only then.
#[derive(Clone)]
pub struct SledStore {
    writer: SledWriter,
    /// Opened on first use: the database may still be opening.
    tree: Arc<tokio::sync::OnceCell<sled::Tree>>,
    cache: Arc<Cache>,
}

/// The cache's budget when none is given.
const DEFAULT_CACHE_BYTES: usize = 16 << 20;

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
/// versions at 1), and that version.
fn record(db: &sled::Db, value: &[u8]) -> Result<(Vec<u8>, u64), StoreError> {
    let version = db.generate_id().map_err(crate::store_error)? + 1;
    let mut record = Vec::with_capacity(8 + value.len());
    record.extend_from_slice(&version.to_be_bytes());
    record.extend_from_slice(value);
    Ok((record, version))
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
        Self::with_cache(writer, DEFAULT_CACHE_BYTES)
    }

    /// As [`SledStore::with_writer`], caching about `bytes` of state in
    /// memory (0: no cache; every read goes to sled).
    pub fn with_cache(writer: SledWriter, bytes: usize) -> Result<Self, StoreError> {
        Ok(Self {
            writer,
            tree: Arc::default(),
            cache: Arc::new(Cache::new(bytes)),
        })
    }

    /// The `state` tree, once the database is open.
    async fn tree(&self) -> Result<sled::Tree, StoreError> {
        self.tree
            .get_or_try_init(|| self.writer.tree(TREE))
            .await
            .cloned()
    }

    /// What the state cache has done so far (all zero without a cache).
    pub fn cache_stats(&self) -> crate::CacheStats {
        self.cache.stats()
    }

    /// The writer this store commits through.
    pub fn writer(&self) -> &SledWriter {
        &self.writer
    }

    /// Every key of `session` with its value and version.
    pub async fn export(&self, session: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let p = prefix(session)?;
        let tree = self.tree().await?;
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
        let (tree, cache) = (self.tree().await?, self.cache.clone());
        self.writer
            .write(move |db| {
                let (mut batch, _) = clear(&tree, &p)?;
                for (full, value) in &entries {
                    batch.insert(full.as_slice(), record(db, value)?.0);
                }
                tree.apply_batch(batch).map_err(crate::store_error)?;
                cache.forget_prefix(&p);
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl StateStore for SledStore {
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let k = full_key(session, key)?;
        let generation = match self.cache.get(&k) {
            Lookup::Hit(found) => return Ok(found),
            Lookup::Miss(generation) => generation,
        };
        let (tree, cache) = (self.tree().await?, self.cache.clone());
        blocking(move || {
            let found = tree
                .get(&k)
                .map_err(crate::store_error)?
                .map(|raw| decode(&raw))
                .transpose()?;
            cache.fill(&k, found.clone(), generation);
            Ok(found)
        })
        .await
    }

    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let p = prefix(session)?;
        let tree = self.tree().await?;
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
        let (tree, cache) = (self.tree().await?, self.cache.clone());
        self.writer
            .write(move |_| {
                let (batch, n) = clear(&tree, &p)?;
                tree.apply_batch(batch).map_err(crate::store_error)?;
                cache.forget_prefix(&p);
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
        let (tree, cache) = (self.tree().await?, self.cache.clone());
        // Checked and applied on the writer thread, the only one that
        // writes: nothing can change between the check and the batch. The
        // cache learns each write once sled has applied it.
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
            let mut applied = Vec::with_capacity(writes.len());
            for (full, value) in writes {
                let now = match value {
                    Some(bytes) => {
                        let (raw, version) = record(db, &bytes)?;
                        let value = Versioned {
                            value: bytes,
                            version,
                        };
                        Some((raw, value))
                    }
                    None => None,
                };
                applied.push((full, now));
            }
            if let [(full, now)] = applied.as_slice() {
                // One key is atomic by itself: no batch, which would take
                // sled's exclusive lock and wait for every reader.
                match now {
                    Some((raw, _)) => tree.insert(full.as_slice(), raw.as_slice()),
                    None => tree.remove(full.as_slice()),
                }
                .map_err(crate::store_error)?;
            } else {
                let mut batch = sled::Batch::default();
                for (full, now) in &applied {
                    match now {
                        Some((raw, _)) => batch.insert(full.as_slice(), raw.as_slice()),
                        None => batch.remove(full.as_slice()),
                    }
                }
                tree.apply_batch(batch).map_err(crate::store_error)?;
            }
            for (full, now) in applied {
                cache.put(&full, now.map(|(_, value)| value));
            }
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
        edge_host_api::conformance::run_all(Arc::new(store), "sled").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled_without_a_cache_keeps_them_too() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let store = SledStore::with_cache(SledWriter::start(db).unwrap(), 0).unwrap();
        edge_host_api::conformance::run_all(Arc::new(store), "sled-uncached").await;
    }

    /// Read-modify-write increments racing on a few keys, with a cache far
    /// smaller than the keys (so fills, writes and evictions interleave):
    /// a stale cached read would show as a lost increment or as a commit
    /// that conflicts for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn cached_reads_never_go_stale_under_racing_writers() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let writer = SledWriter::start(db).unwrap();
        let store = SledStore::with_cache(writer, 64 * 160).unwrap();
        let (tasks, each, keys) = (16u64, 400u64, 3u64);
        let mut joins = Vec::new();
        for t in 0..tasks {
            let store = store.clone();
            joins.push(tokio::spawn(async move {
                for i in 0..each {
                    let key = format!("k{}", (t + i) % keys);
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        assert!(tries < 10_000, "{key} conflicts for ever: a stale read");
                        // Reads of other keys push the hot ones out now
                        // and then: they are read from sled and filled again.
                        for c in 0..4 {
                            let _ = store
                                .get("s", &format!("cold{}", (t * 7 + i + c) % 256))
                                .await;
                        }
                        let seen = store.get("s", &key).await.unwrap();
                        let n: u64 = seen.as_ref().map_or(0, |v| {
                            std::str::from_utf8(&v.value).unwrap().parse().unwrap()
                        });
                        let commit = Commit {
                            reads: [(key.clone(), seen.map(|v| v.version))].into(),
                            writes: [(key.clone(), Some((n + 1).to_string().into_bytes()))].into(),
                        };
                        match store.commit("s", &commit).await {
                            Ok(()) => {
                                // Counts only grow: a read after a commit
                                // that returned sees at least what it wrote.
                                let after = store.get("s", &key).await.unwrap().unwrap();
                                let now: u64 =
                                    std::str::from_utf8(&after.value).unwrap().parse().unwrap();
                                assert!(now > n, "{key}: read {now} after writing {}", n + 1);
                                break;
                            }
                            Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
        let mut total = 0;
        for k in 0..keys {
            let v = store.get("s", &format!("k{k}")).await.unwrap().unwrap();
            total += std::str::from_utf8(&v.value)
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
        assert_eq!(total, tasks * each);
    }
}
