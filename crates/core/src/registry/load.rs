//! Loading recorded functions: the artifact this node wrote if it is
//! intact and fits the engine, else a recompile from the verified source.
//!
//! A starting node only reads the records (so it serves at once however
//! many functions it holds), and a function is loaded — into memory — by
//! the first call that needs it: functions nobody calls cost no memory.
//! Those whose artifact does not fit this engine (an upgrade) or is gone
//! are recompiled in the background after start
//! ([`crate::Node::load_functions`]), not by a caller. Callers that need
//! one function meanwhile share its one load.

use super::files::{deserialize_verified, sha256_hex};
use super::{Function, FunctionInfo, Registry, RegistryError};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::OnceCell;
use wasmtime::component::Component;

/// A recorded function not loaded yet, and the load its callers share.
pub(super) struct Unloaded {
    pub(super) info: FunctionInfo,
    load: Arc<OnceCell<Arc<Function>>>,
}

/// What the registry holds under a name.
pub(super) enum Entry {
    Loaded(Arc<Function>),
    Recorded(FunctionInfo, Arc<OnceCell<Arc<Function>>>),
}

impl Registry {
    /// Reads every function's record (and the previous versions'), and
    /// removes the files no record names.
    pub(super) fn read_records(&self) -> Result<(), RegistryError> {
        let mut referenced = std::collections::HashSet::new();
        // Previous versions are not loaded (a rollback loads one), but
        // their files stay.
        let previous = self.read_previous()?;
        for info in previous.values() {
            referenced.insert(format!("{}.wasm", info.digest));
            referenced.insert(info.artifact.clone());
        }
        *self
            .previous_infos
            .write()
            .unwrap_or_else(|p| p.into_inner()) = previous;
        let mut unloaded = self.unloaded.write().unwrap_or_else(|p| p.into_inner());
        for (_, raw) in self.tables.current.entries()? {
            let Ok(info) = serde_json::from_slice::<FunctionInfo>(&raw) else {
                tracing::warn!("skipping an unreadable function record");
                continue;
            };
            referenced.insert(format!("{}.wasm", info.digest));
            referenced.insert(info.artifact.clone());
            let load = Arc::new(OnceCell::new());
            unloaded.insert(info.name.clone(), Unloaded { info, load });
        }
        let recorded = unloaded.len();
        drop(unloaded);
        // Files no record names are left from an interrupted upload or delete.
        for dir in [&self.sources, &self.artifacts] {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    tracing::info!(file = %name, "removing unreferenced file");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        self.metrics.functions.set(recorded as i64);
        Ok(())
    }

    /// What is under `name`. Lock order: `unloaded`, then `loaded`
    /// (nothing takes them the other way round): a function on its way from
    /// one to the other is seen in one of them.
    pub(super) fn lookup(&self, name: &str) -> Option<Entry> {
        let unloaded = self.unloaded.read().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = unloaded.get(name) {
            return Some(Entry::Recorded(u.info.clone(), u.load.clone()));
        }
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        loaded.get(name).cloned().map(Entry::Loaded)
    }

    /// The function named `name`, loaded now if it was not yet.
    pub async fn function(&self, name: &str) -> Result<Arc<Function>, RegistryError> {
        if let Some(f) = self.get(name) {
            return Ok(f);
        }
        let (info, load) = match self.lookup(name) {
            Some(Entry::Loaded(f)) => return Ok(f),
            Some(Entry::Recorded(info, load)) => (info, load),
            None => return Err(RegistryError::NotFound(name.to_owned())),
        };
        let f = load
            .get_or_try_init(|| async {
                let f = self.load(info).await.map_err(|(_, e)| e);
                if let Err(e) = &f {
                    tracing::error!(function = name, error = %e, "cannot load function");
                }
                f
            })
            .await?
            .clone();
        // Published unless a deploy or a delete of the name came meanwhile
        // (then this call runs on what it loaded; the next finds the new).
        // Both locks held (in their order): no deploy slips in between.
        let mut unloaded = self.unloaded.write().unwrap_or_else(|p| p.into_inner());
        if unloaded
            .get(name)
            .is_some_and(|u| Arc::ptr_eq(&u.load, &load))
        {
            unloaded.remove(name);
            self.loaded
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_owned(), f.clone());
        }
        Ok(f)
    }

    /// The recorded functions not loaded yet whose artifact is not there
    /// for this engine: their first load recompiles (a node does it in the
    /// background after start, with [`Registry::function`]; one that
    /// cannot be loaded is logged and fails its calls with the reason).
    pub fn stale(&self) -> Vec<String> {
        let unloaded = self.unloaded.read().unwrap_or_else(|p| p.into_inner());
        unloaded
            .values()
            .filter(|u| {
                u.info.artifact != self.artifact_name(&u.info)
                    || !self.artifacts.join(&u.info.artifact).is_file()
            })
            .map(|u| u.info.name.clone())
            .collect()
    }

    /// The name of the artifact this engine makes of `info`'s component.
    fn artifact_name(&self, info: &FunctionInfo) -> String {
        format!("{}-{}.cwasm", info.digest, self.engine_key)
    }

    /// Loads one recorded function: its artifact if intact and compatible,
    /// else recompiled from its verified source (and the record updated).
    pub(super) async fn load(
        &self,
        mut info: FunctionInfo,
    ) -> Result<Arc<Function>, (String, RegistryError)> {
        let name = info.name.clone();
        let artifact_path = self.artifacts.join(&info.artifact);
        if info.artifact == self.artifact_name(&info) {
            match self
                .deserialize_verified(&artifact_path, &info.artifact_sha256)
                .await
            {
                Ok(component) => {
                    self.metrics.artifact_loads.inc();
                    return self.link(info, &component).map_err(|e| (name, e));
                }
                Err(e) => {
                    tracing::warn!(function = %name, error = %e, "artifact unusable; recompiling")
                }
            }
        }
        let result = async {
            let source = std::fs::read(self.sources.join(format!("{}.wasm", info.digest)))?;
            if sha256_hex(&source) != info.digest {
                return Err(RegistryError::Storage(
                    "source file does not match its digest".into(),
                ));
            }
            let compiled = self.compile(source).await?;
            info.artifact = compiled.artifact;
            info.artifact_sha256 = compiled.artifact_sha256;
            info.compile_ms = compiled.compile_ms;
            let record =
                serde_json::to_vec(&info).map_err(|e| RegistryError::Storage(e.to_string()))?;
            self.put_record(&name, Some(record)).await?;
            self.link(info, &compiled.component)
        };
        result.await.map_err(|e| (name, e))
    }

    /// Reads, verifies and deserializes an artifact on the blocking pool:
    /// a large one takes a while (reading, hashing, mapping), and an async
    /// worker owes that time to other requests.
    pub(super) async fn deserialize_verified(
        &self,
        path: &Path,
        sha: &str,
    ) -> Result<Component, RegistryError> {
        let (engine, path, sha) = (self.engine.clone(), path.to_owned(), sha.to_owned());
        tokio::task::spawn_blocking(move || deserialize_verified(&engine, &path, &sha))
            .await
            .map_err(|e| RegistryError::Storage(format!("loading an artifact: {e}")))?
    }
}
