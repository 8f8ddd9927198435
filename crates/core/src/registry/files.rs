//! The registry's files: artifacts checked against their hash before they
//! are loaded, and written atomically and durably.

use super::RegistryError;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The SHA-256 of `bytes`, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the artifact at `path`, checks it against its recorded SHA-256
/// and deserializes it.
pub(super) fn deserialize_verified(
    engine: &Engine,
    path: &Path,
    sha: &str,
) -> Result<Component, RegistryError> {
    let bytes = std::fs::read(path)?;
    if sha256_hex(&bytes) != sha {
        return Err(RegistryError::Storage(
            "artifact does not match its recorded hash".into(),
        ));
    }
    // SAFETY: `Component::deserialize` trusts its input to be wasmtime
    // output. These bytes are an artifact this node's own compiler wrote
    // (`Component::serialize` in `compile`, or `precompile_component` in
    // its worker process, the same executable), written only to its own data
    // dir, and their SHA-256 was just checked against the hash recorded
    // when it was written. Client-sent bytes never reach this call.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &bytes) };
    component.map_err(|e| RegistryError::Invalid(format!("{e:#}")))
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (tmp, mut file) = tempfile_in(dir)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // A full disk must not also keep the partial file.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
    let path = dir.join(format!(".tmp-{}", hex::encode(suffix)));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

impl super::Registry {
    /// The component `name` was deployed from (its current version), as
    /// uploaded, with its record: what a node joining the cluster fetches.
    pub async fn source(
        &self,
        name: &str,
    ) -> Result<(super::FunctionInfo, Vec<u8>), RegistryError> {
        let info = self.info(name)?;
        let path = self.sources.join(format!("{}.wasm", info.digest));
        let bytes = tokio::fs::read(&path).await?;
        Ok((info, bytes))
    }
}
