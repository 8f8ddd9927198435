//! The registry's records: one small JSON file per function and table,
//! written atomically and durably, under `functions/`:
//! - `records/<name>.json`: the current version ([`super::FunctionInfo`]);
//! - `previous/<name>.json`: the version its last deploy replaced;
//! - `config/<name>.json`: its `wasi:config` variables.
//!
//! Plain files rather than trees of the node's database, so that a starting
//! node knows its functions without waiting for the database to open: it
//! answers a first call that keeps no state meanwhile. Function names
//! (`[a-z0-9][a-z0-9._-]{0,63}`, never `..`) are safe file names.
//!
//! Nodes before these files kept the records in sled trees; the first start
//! on such a data dir copies them here (see [`migrate`]).

use super::RegistryError;
use super::files::write_atomic;
use std::path::{Path, PathBuf};

/// One table: a directory of `<name>.json` files.
#[derive(Debug, Clone)]
pub(super) struct Table {
    dir: PathBuf,
}

const SUFFIX: &str = ".json";

impl Table {
    /// The table in `dir` (made if missing); temp files a crash left
    /// mid-write are removed.
    fn at(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SUFFIX}"))
    }

    /// Every record, by name (temp files of an interrupted write skipped).
    pub(super) fn entries(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(SUFFIX) else {
                continue;
            };
            if !super::valid_name(name) {
                continue;
            }
            out.push((name.to_owned(), std::fs::read(entry.path())?));
        }
        Ok(out)
    }

    /// Writes (or, with `None`, removes) `name`'s record, durably; returns
    /// the record it replaced. Blocking: callers hold the registry's record
    /// lock and run it on a blocking thread.
    pub(super) fn put(
        &self,
        name: &str,
        record: Option<&[u8]>,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let path = self.path(name);
        let before = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        match record {
            Some(bytes) => write_atomic(&path, bytes)?,
            None if before.is_some() => {
                std::fs::remove_file(&path)?;
                std::fs::File::open(&self.dir)?.sync_all()?;
            }
            None => {}
        }
        Ok(before)
    }
}

/// The three tables.
#[derive(Debug, Clone)]
pub(super) struct Tables {
    pub(super) current: Table,
    pub(super) previous: Table,
    pub(super) config: Table,
}

/// The legacy sled trees of each table, in [`Tables`]' order.
const LEGACY_TREES: [&str; 3] = ["functions", "previous_versions", "function_config"];

impl Tables {
    /// Opens the tables under `functions`, copying the records of a data dir
    /// written by an older node from its database first (the only case in
    /// which opening waits for the database).
    pub(super) async fn open(
        functions: &Path,
        data_dir: &Path,
        writer: &edge_store_sled::SledWriter,
    ) -> Result<Self, RegistryError> {
        let current = functions.join("records");
        if !current.exists() && data_dir.join("db").exists() {
            migrate(functions, writer).await?;
        }
        Ok(Self {
            current: Table::at(current)?,
            previous: Table::at(functions.join("previous"))?,
            config: Table::at(functions.join("config"))?,
        })
    }
}

/// Copies the records of the legacy trees into files: `previous/` and
/// `config/` first, then `records/` under a temporary name renamed into
/// place last, so an interrupted copy is redone at the next start (the
/// copy overwrites). The trees are emptied afterwards.
async fn migrate(
    functions: &Path,
    writer: &edge_store_sled::SledWriter,
) -> Result<(), RegistryError> {
    let db = writer.db().await?;
    let staging = functions.join("records.migrating");
    let dirs = [
        staging.clone(),
        functions.join("previous"),
        functions.join("config"),
    ];
    let copied = {
        let (db, dirs) = (db.clone(), dirs.clone());
        tokio::task::spawn_blocking(move || -> Result<usize, RegistryError> {
            let mut copied = 0;
            for (tree, dir) in LEGACY_TREES.iter().zip(&dirs) {
                let table = Table::at(dir.clone())?;
                for item in db.open_tree(tree)?.iter() {
                    let (name, raw) = item?;
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if super::valid_name(&name) {
                        table.put(&name, Some(&raw))?;
                        copied += 1;
                    }
                }
            }
            Ok(copied)
        })
        .await
        .map_err(|e| RegistryError::Storage(e.to_string()))??
    };
    std::fs::rename(&staging, functions.join("records"))?;
    std::fs::File::open(functions)?.sync_all()?;
    tracing::info!(
        records = copied,
        "function records moved from the database to files"
    );
    writer
        .write(|db| {
            for tree in LEGACY_TREES {
                db.drop_tree(tree).map_err(edge_store_sled::store_error)?;
            }
            Ok(())
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_keeps_replaces_and_removes_records() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::at(dir.path().join("t")).unwrap();
        assert_eq!(table.put("a", Some(b"1")).unwrap(), None);
        assert_eq!(table.put("a", Some(b"2")).unwrap(), Some(b"1".to_vec()));
        table.put("b", Some(b"3")).unwrap();
        // A temp file of a write cut short is not a record.
        std::fs::write(dir.path().join("t").join(".tmp-00"), b"x").unwrap();
        let mut all = table.entries().unwrap();
        all.sort();
        assert_eq!(
            all,
            [
                ("a".to_owned(), b"2".to_vec()),
                ("b".to_owned(), b"3".to_vec())
            ]
        );
        assert_eq!(table.put("a", None).unwrap(), Some(b"2".to_vec()));
        assert_eq!(table.put("a", None).unwrap(), None);
        assert_eq!(table.entries().unwrap().len(), 1);
        // Opened again, the temp file is gone; the record stays.
        let table = Table::at(dir.path().join("t")).unwrap();
        assert!(!dir.path().join("t").join(".tmp-00").exists());
        assert_eq!(table.entries().unwrap().len(), 1);
    }
}
