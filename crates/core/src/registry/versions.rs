//! The version a deploy replaced, kept so that it can come back: one
//! previous version per function (its record in `functions/previous/`, its
//! files kept while it is there). A rollback swaps the two.

use super::{FunctionInfo, Registry, RegistryError};
use std::collections::HashMap;

impl Registry {
    /// The previous versions recorded in the database, by name.
    pub(super) fn read_previous(&self) -> Result<HashMap<String, FunctionInfo>, RegistryError> {
        let mut out = HashMap::new();
        for (name, raw) in self.tables.previous.entries()? {
            match serde_json::from_slice::<FunctionInfo>(&raw) {
                Ok(info) => {
                    out.insert(name, info);
                }
                Err(_) => tracing::warn!("skipping an unreadable previous-version record"),
            }
        }
        Ok(out)
    }

    /// The version `name` had before its last deploy, if any.
    pub fn previous(&self, name: &str) -> Option<FunctionInfo> {
        self.previous_infos
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Records `replaced` as `name`'s previous version (none: forgets it);
    /// the files of the version it displaces go unless something uses them.
    pub(super) async fn set_previous(
        &self,
        name: &str,
        replaced: Option<FunctionInfo>,
    ) -> Result<(), RegistryError> {
        let record = match &replaced {
            Some(info) => {
                Some(serde_json::to_vec(info).map_err(|e| RegistryError::Storage(e.to_string()))?)
            }
            None => None,
        };
        self.put_in(&self.tables.previous, name, record).await?;
        let displaced = {
            let mut map = self
                .previous_infos
                .write()
                .unwrap_or_else(|p| p.into_inner());
            match replaced {
                Some(info) => map.insert(name.to_owned(), info),
                None => map.remove(name),
            }
        };
        if let Some(old) = displaced {
            self.remove_files_if_unused(&old);
        }
        Ok(())
    }

    /// Makes `name`'s previous version current again, and the current one
    /// previous (a second rollback undoes the first). Calls in flight finish
    /// on the version they started with; pinned instances of the other
    /// version start fresh on their next call.
    pub async fn rollback(&self, name: &str) -> Result<FunctionInfo, RegistryError> {
        let current = self.info(name)?;
        let previous = self
            .previous(name)
            .ok_or_else(|| RegistryError::NoPrevious(name.to_owned()))?;
        let function = self.load(previous).await.map_err(|(_, e)| e)?;
        let record = serde_json::to_vec(&function.info)
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        self.put_record(name, Some(record)).await?;
        let info = function.info.clone();
        self.insert_loaded(function);
        // Not through `set_previous`: the version it displaces is the one
        // just made current, whose files stay.
        let record =
            serde_json::to_vec(&current).map_err(|e| RegistryError::Storage(e.to_string()))?;
        self.put_in(&self.tables.previous, name, Some(record))
            .await?;
        self.previous_infos
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), current);
        tracing::info!(function = name, digest = %info.digest, "rolled back");
        Ok(info)
    }
}
