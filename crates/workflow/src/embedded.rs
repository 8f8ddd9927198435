//! A [`StateStore`] over the state values a workflow task was given, so the
//! guest's `state` calls work unchanged under every execution model.

use super::lock;
use async_trait::async_trait;
use edge_host_api::{Commit, StateStore, StoreError, Versioned};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The states one task may use, by name; writes to any other key fail.
pub struct EmbeddedStore {
    values: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
    version: Mutex<u64>,
}

impl EmbeddedStore {
    /// A store holding exactly the states in `values` (`None`: declared but
    /// no value yet).
    pub fn new(values: BTreeMap<String, Option<Vec<u8>>>) -> Self {
        Self {
            values: Mutex::new(values),
            version: Mutex::new(1),
        }
    }

    /// The states after the task ran.
    pub fn into_values(self) -> BTreeMap<String, Option<Vec<u8>>> {
        self.values.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn get(&self, _session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let version = *lock(&self.version);
        let values = lock(&self.values);
        Ok(values
            .get(key)
            .cloned()
            .flatten()
            .map(|value| Versioned { value, version }))
    }

    async fn keys(&self, _session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let version = *lock(&self.version);
        let values = lock(&self.values);
        Ok(values
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| (k.clone(), version))
            .collect())
    }

    async fn commit(&self, _session: &str, commit: &Commit) -> Result<(), StoreError> {
        let mut values = lock(&self.values);
        if let Some((k, _)) = commit.writes.iter().find(|(k, _)| !values.contains_key(k)) {
            return Err(StoreError::Backend(format!(
                "state {k:?} is not declared for this task in the workflow"
            )));
        }
        for (k, v) in &commit.writes {
            values.insert(k.clone(), v.clone());
        }
        *lock(&self.version) += 1;
        Ok(())
    }

    async fn delete_session(&self, _session: &str) -> Result<usize, StoreError> {
        Err(StoreError::Backend(
            "a workflow task cannot delete its session".into(),
        ))
    }
}
