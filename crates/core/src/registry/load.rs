//! Loading recorded functions at start (and a version a rollback brings
//! back): the artifact this node wrote if it is intact and fits the
//! engine, else a recompile from the verified source.

use super::files::{deserialize_verified, sha256_hex};
use super::{Function, FunctionInfo, Registry, RegistryError};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Component;

impl Registry {
    pub(super) async fn load_all(&self) -> Result<(), RegistryError> {
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
        for item in self.meta.iter() {
            let (_, raw) = item?;
            let Ok(info) = serde_json::from_slice::<FunctionInfo>(&raw) else {
                tracing::warn!("skipping an unreadable function record");
                continue;
            };
            match self.load(info).await {
                Ok(f) => {
                    referenced.insert(format!("{}.wasm", f.info.digest));
                    referenced.insert(f.info.artifact.clone());
                    self.insert_loaded(f);
                }
                Err((name, e)) => {
                    tracing::error!(function = %name, error = %e, "cannot load function")
                }
            }
        }
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
        self.metrics.functions.set(self.len() as i64);
        Ok(())
    }

    /// Loads one recorded function: its artifact if intact and compatible,
    /// else recompiled from its verified source (and the record updated).
    pub(super) async fn load(
        &self,
        mut info: FunctionInfo,
    ) -> Result<Arc<Function>, (String, RegistryError)> {
        let name = info.name.clone();
        let artifact_path = self.artifacts.join(&info.artifact);
        let expected = format!("{}-{}.cwasm", info.digest, self.engine_key);
        if info.artifact == expected {
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
