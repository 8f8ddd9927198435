//! Per-function configuration, served to guests through the standard
//! `wasi:config/store` (0.2.0-rc.1): variables set through the API, kept
//! durably, unchanged by redeploys and rollbacks, removed with the function.
//! The API never shows values back (they may be secrets), only the names.

use super::{Registry, RegistryError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use wasmtime_wasi_config::WasiConfigVariables;

/// Most variables per function.
pub const MAX_CONFIG_KEYS: usize = 256;
/// Longest variable name, bytes.
pub const MAX_CONFIG_KEY_BYTES: usize = 256;
/// Largest value, bytes.
pub const MAX_CONFIG_VALUE_BYTES: usize = 64 << 10;

/// One function's variables, as its instances read them.
#[derive(Default)]
pub struct FunctionConfig {
    keys: Vec<String>,
    vars: WasiConfigVariables,
}

impl FunctionConfig {
    fn new(vars: &BTreeMap<String, String>) -> Self {
        Self {
            keys: vars.keys().cloned().collect(),
            vars: vars.iter().collect(),
        }
    }

    /// The variables, for `wasi:config/store`.
    pub fn vars(&self) -> &WasiConfigVariables {
        &self.vars
    }

    /// Their names, sorted.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

/// Every function's configuration: on disk (`functions/config/<name>.json`)
/// and in memory.
pub(super) struct Configs {
    loaded: RwLock<HashMap<String, Arc<FunctionConfig>>>,
    none: Arc<FunctionConfig>,
}

impl Configs {
    /// Loads every function's configuration from `table`.
    pub(super) fn open(table: &super::records::Table) -> Result<Self, RegistryError> {
        let mut loaded = HashMap::new();
        for (name, raw) in table.entries()? {
            let vars: BTreeMap<String, String> = serde_json::from_slice(&raw)
                .map_err(|e| RegistryError::Storage(format!("configuration record: {e}")))?;
            loaded.insert(name, Arc::new(FunctionConfig::new(&vars)));
        }
        Ok(Self {
            loaded: RwLock::new(loaded),
            none: Arc::default(),
        })
    }
}

/// Refuses variables past the limits.
fn check(vars: &BTreeMap<String, String>) -> Result<(), RegistryError> {
    let refuse = |why: String| Err(RegistryError::InvalidOption(format!("config: {why}")));
    if vars.len() > MAX_CONFIG_KEYS {
        return refuse(format!(
            "{} variables; at most {MAX_CONFIG_KEYS}",
            vars.len()
        ));
    }
    for (key, value) in vars {
        if key.is_empty() || key.len() > MAX_CONFIG_KEY_BYTES {
            return refuse(format!(
                "variable names are 1 to {MAX_CONFIG_KEY_BYTES} bytes"
            ));
        }
        if value.len() > MAX_CONFIG_VALUE_BYTES {
            return refuse(format!(
                "the value of {key:?} is over {MAX_CONFIG_VALUE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

impl Registry {
    /// The configuration function `name`'s instances read (empty if none).
    pub fn config_of(&self, name: &str) -> Arc<FunctionConfig> {
        let loaded = self
            .configs
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner());
        loaded
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.configs.none.clone())
    }

    /// Replaces function `name`'s variables (durably, before answering);
    /// calls that start afterwards read the new ones. Returns their names.
    #[tracing::instrument(skip(self, vars), fields(count = vars.len()))]
    pub async fn set_config(
        &self,
        name: &str,
        vars: BTreeMap<String, String>,
    ) -> Result<Vec<String>, RegistryError> {
        self.info(name)?;
        check(&vars)?;
        let record = match vars.is_empty() {
            true => None,
            false => {
                Some(serde_json::to_vec(&vars).map_err(|e| RegistryError::Storage(e.to_string()))?)
            }
        };
        self.write_config(name, record).await?;
        let config = Arc::new(FunctionConfig::new(&vars));
        let keys = config.keys.clone();
        self.configs
            .loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), config);
        tracing::info!(function = name, "configuration set");
        Ok(keys)
    }

    /// Removes function `name`'s variables (with the function).
    pub(super) async fn drop_config(&self, name: &str) -> Result<(), RegistryError> {
        self.write_config(name, None).await?;
        self.configs
            .loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    async fn write_config(&self, name: &str, record: Option<Vec<u8>>) -> Result<(), RegistryError> {
        self.put_in(&self.tables.config, name, record).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(check(&one("api_url", "https://x")).is_ok());
        assert!(check(&one("", "x")).is_err());
        assert!(check(&one(&"k".repeat(257), "x")).is_err());
        assert!(check(&one("k", &"v".repeat(MAX_CONFIG_VALUE_BYTES + 1))).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_CONFIG_KEYS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check(&many).is_err());
    }
}
