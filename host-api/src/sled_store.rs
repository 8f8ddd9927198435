//! [`StateStore`] on this node's sled database.

use crate::store::{Commit, StateStore, StoreError, Versioned};
use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// Session state in a sled tree, durable (flushed) before a commit returns.
///
/// Layout: key = `session ++ 0x00 ++ key`, value = `version (8 bytes, BE) ++ bytes`.
/// Session ids never contain NUL ([`valid_session_id`]), so one session's
/// prefix never covers another's keys.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

const TREE: &str = "state";

/// True when `id` can name a session: 1 to 128 bytes of `[A-Za-z0-9._-]`.
pub fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

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

impl SledStore {
    /// Use the `state` tree of an open sled database.
    pub fn new(db: sled::Db) -> Result<Self, StoreError> {
        let tree = db.open_tree(TREE)?;
        Ok(Self { db, tree })
    }

    /// Every key of `session` with its value and version.
    pub fn export(&self, session: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let p = prefix(session)?;
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&p) {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                decode(&v)?,
            ));
        }
        Ok(out)
    }

    /// Makes `entries` the whole state of `session`, keeping their versions
    /// (a migrated session arrives with the versions it had), durably.
    pub async fn replace(
        &self,
        session: &str,
        entries: &[(String, Versioned)],
    ) -> Result<(), StoreError> {
        let p = prefix(session)?;
        let mut batch = sled::Batch::default();
        for k in self.tree.scan_prefix(&p).keys() {
            batch.remove(k?);
        }
        for (key, v) in entries {
            let mut record = Vec::with_capacity(8 + v.value.len());
            record.extend_from_slice(&v.version.to_be_bytes());
            record.extend_from_slice(&v.value);
            batch.insert(full_key(session, key)?, record);
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }
}

#[async_trait]
impl StateStore for SledStore {
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let k = full_key(session, key)?;
        self.tree.get(k)?.map(|raw| decode(&raw)).transpose()
    }

    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let p = prefix(session)?;
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&p) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            let version =
                version_of(&v).ok_or_else(|| StoreError::Backend("corrupt state record".into()))?;
            out.push((key, version));
        }
        Ok(out)
    }

    async fn commit(&self, session: &str, commit: &Commit) -> Result<(), StoreError> {
        if commit.is_read_only() {
            return Ok(());
        }
        let reads = commit
            .reads
            .iter()
            .map(|(k, v)| Ok((full_key(session, k)?, k, *v)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let writes = commit
            .writes
            .iter()
            .map(|(k, v)| Ok((full_key(session, k)?, v)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let result = self.tree.transaction(|tx| {
            for (full, key, seen) in &reads {
                let now = tx.get(full)?.as_deref().and_then(version_of);
                if now != *seen {
                    return Err(ConflictableTransactionError::Abort((*key).clone()));
                }
            }
            for (full, value) in &writes {
                match value {
                    Some(bytes) => {
                        // sled ids start at 0; versions start at 1.
                        let version = tx.generate_id()? + 1;
                        let mut record = Vec::with_capacity(8 + bytes.len());
                        record.extend_from_slice(&version.to_be_bytes());
                        record.extend_from_slice(bytes);
                        tx.insert(full.as_slice(), record)?;
                    }
                    None => {
                        tx.remove(full.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(key)) => return Err(StoreError::Conflict { key }),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
        // Durable before the caller acknowledges anything. Concurrent commits
        // share one flush: sled writes out everything pending at once.
        //
        // If the flush fails (a full disk), sled 0.34 keeps the writes in
        // memory and refuses every later write until it is reopened: the
        // caller answers 507 and the node stops serving state until a
        // restart (see `edge_runtime::storage`).
        self.db.flush_async().await?;
        Ok(())
    }

    async fn delete_session(&self, session: &str) -> Result<usize, StoreError> {
        let p = prefix(session)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.tree.scan_prefix(&p).keys() {
            batch.remove(item?);
            n += 1;
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, SledStore::new(db).unwrap())
    }

    fn write(key: &str, value: &[u8]) -> Commit {
        Commit {
            reads: vec![],
            writes: vec![(key.into(), Some(value.to_vec()))],
        }
    }

    #[tokio::test]
    async fn sessions_do_not_see_each_other() {
        let (_d, s) = store();
        s.commit("a", &write("k", b"1")).await.unwrap();
        s.commit("ab", &write("k", b"2")).await.unwrap();
        assert_eq!(s.get("a", "k").await.unwrap().unwrap().value, b"1");
        assert_eq!(s.keys("a").await.unwrap().len(), 1);
        assert!(s.get("a", "\0k").await.unwrap().is_none());
        assert!(matches!(
            s.get("a\0b", "k").await,
            Err(StoreError::InvalidSession)
        ));
        assert_eq!(s.delete_session("a").await.unwrap(), 1);
        assert_eq!(s.get("ab", "k").await.unwrap().unwrap().value, b"2");
    }

    #[tokio::test]
    async fn stale_read_conflicts_and_changes_nothing() {
        let (_d, s) = store();
        s.commit("s", &write("k", b"1")).await.unwrap();
        let v1 = s.get("s", "k").await.unwrap().unwrap().version;
        s.commit("s", &write("k", b"2")).await.unwrap();
        let stale = Commit {
            reads: vec![("k".into(), Some(v1))],
            writes: vec![
                ("k".into(), Some(b"3".to_vec())),
                ("other".into(), Some(b"x".to_vec())),
            ],
        };
        assert!(matches!(
            s.commit("s", &stale).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(s.get("s", "k").await.unwrap().unwrap().value, b"2");
        assert!(s.get("s", "other").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn versions_never_repeat_after_delete() {
        let (_d, s) = store();
        s.commit("s", &write("k", b"1")).await.unwrap();
        let v1 = s.get("s", "k").await.unwrap().unwrap().version;
        let del = Commit {
            reads: vec![],
            writes: vec![("k".into(), None)],
        };
        s.commit("s", &del).await.unwrap();
        s.commit("s", &write("k", b"1")).await.unwrap();
        assert!(s.get("s", "k").await.unwrap().unwrap().version > v1);
    }
}
