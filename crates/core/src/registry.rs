//! The function registry: uploaded components, compiled once, kept on disk
//! by content digest and loaded back on restart without recompiling.
//!
//! Layout under the data dir:
//! - `functions/sources/<sha256>.wasm`: the bytes a client uploaded;
//! - `functions/artifacts/<sha256>-<engine>.cwasm`: what this node compiled
//!   from them for this engine's settings;
//! - `functions/records/<name>.json`: its [`FunctionInfo`], written last,
//!   so a crash mid-upload leaves no half-registered function (see
//!   `records`: the previous versions and `wasi:config` variables beside it).
//!
//! Only artifacts this node wrote, and whose SHA-256 still matches the one
//! recorded when it wrote them, are ever deserialized.
//!
//! A starting node reads the records only: a function is loaded by its
//! first call, or by the node in the background (see `load`), so start-up
//! does not grow with the functions deployed.

mod check;
mod config;
mod files;
mod kind;
mod load;
mod records;
mod versions;
use crate::EngineConfig;
use crate::compile::{self, CompileConfig, WorkerError};
use crate::engine::HostState;
use crate::metrics::Metrics;
use check::{check_imports, check_preamble, validate};
pub use check::{precheck, valid_name};
pub use config::{FunctionConfig, MAX_CONFIG_KEY_BYTES, MAX_CONFIG_KEYS, MAX_CONFIG_VALUE_BYTES};
use edge_host_api::bindings::FunctionPre;
use edge_store_sled::SledWriter;
pub(crate) use files::sha256_hex;
use files::write_atomic;
pub use kind::{FunctionKind, Pre};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// What the registry knows of a function; served by `GET /v1/functions/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionInfo {
    /// The name it was uploaded under.
    pub name: String,
    /// SHA-256 of the component's bytes, hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// How long compiling it took, in milliseconds.
    pub compile_ms: f64,
    /// When it was uploaded, seconds since the Unix epoch.
    pub uploaded_at: u64,
    /// File name of the compiled artifact.
    pub artifact: String,
    /// SHA-256 of the artifact's bytes, hex, as this node wrote them.
    pub artifact_sha256: String,
    /// Relaxed durability, opted into at deploy: local-state commits are
    /// answered before they are on disk and flushed within this many
    /// milliseconds (a crash may lose that much). `None`: every commit is
    /// flushed before its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
    /// The world its component serves (found when it is linked).
    #[serde(default)]
    pub kind: FunctionKind,
    /// Hosts its outgoing HTTP requests may go to (`host` or `host:port`;
    /// `*`: any), set at deploy. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
}

/// How a function is deployed.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Relaxed durability (see [`FunctionInfo::flush_interval_ms`]).
    pub flush_interval_ms: Option<u64>,
    /// See [`FunctionInfo::allow_hosts`].
    pub allow_hosts: Vec<String>,
}

/// The longest flush interval a function may choose, milliseconds.
pub const MAX_FLUSH_INTERVAL_MS: u64 = 10_000;

/// A deployed function, ready to instantiate.
pub struct Function {
    /// Its name, shared with stores and logs.
    pub name: Arc<str>,
    /// Its metadata.
    pub info: FunctionInfo,
    /// Pre-linked for instantiation.
    pub pre: Pre,
    /// Whether its calls run in a session: every `edge:function` function,
    /// and a `wasi:http` one that imports `wasi:keyvalue`.
    pub keeps_state: bool,
    /// [`FunctionInfo::allow_hosts`], shared by its instances.
    pub allow_hosts: Arc<[String]>,
    /// Until when its calls start at background priority.
    pub penalty: crate::sched::Penalty,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name does not match `[a-z0-9][a-z0-9._-]{0,63}`.
    #[error("invalid function name {0:?}: expected [a-z0-9][a-z0-9._-]{{0,63}} without '..'")]
    InvalidName(String),
    /// No function has this name.
    #[error("no function named {0:?}")]
    NotFound(String),
    /// The upload is not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(&'static str),
    /// The component failed validation or compilation.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component imports something this node does not provide.
    #[error("cannot link component: {0}")]
    Link(String),
    /// Compiling the component went past the node's time or memory limit.
    #[error("component too costly to compile: {0}")]
    TooCostly(String),
    /// Compilation panicked or could not be scheduled.
    #[error("compilation failed: {0}")]
    Compile(String),
    /// The disk under the data dir is full: the upload was not stored.
    #[error("disk full: the function was not stored ({0})")]
    Full(String),
    /// The data dir or its database failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A deploy option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A rollback of a function with no previous version.
    #[error("function {0:?} has no previous version")]
    NoPrevious(String),
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        if edge_host_api::is_disk_full(&e) {
            RegistryError::Full(e.to_string())
        } else {
            RegistryError::Storage(e.to_string())
        }
    }
}

impl From<sled::Error> for RegistryError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => io.into(),
            e => RegistryError::Storage(e.to_string()),
        }
    }
}

impl From<edge_host_api::StoreError> for RegistryError {
    fn from(e: edge_host_api::StoreError) -> Self {
        match e {
            edge_host_api::StoreError::Full(m) => RegistryError::Full(m),
            e => RegistryError::Storage(e.to_string()),
        }
    }
}

/// The registry of deployed functions.
pub struct Registry {
    engine: Engine,
    linker: Linker<HostState>,
    engine_key: String,
    sources: PathBuf,
    artifacts: PathBuf,
    /// Current and previous versions' records, and configurations.
    tables: records::Tables,
    /// Held while a record is read and replaced.
    record_lock: tokio::sync::Mutex<()>,
    /// The version each function's last deploy replaced.
    previous_infos: RwLock<HashMap<String, FunctionInfo>>,
    loaded: RwLock<HashMap<String, Arc<Function>>>,
    /// Recorded functions not loaded yet (see `load`).
    unloaded: RwLock<HashMap<String, load::Unloaded>>,
    compile_slots: Semaphore,
    compile: CompileConfig,
    engine_config: EngineConfig,
    metrics: Arc<Metrics>,
    /// Signalled when the set of functions changes.
    changes: Arc<tokio::sync::Notify>,
    /// Each function's `wasi:config` variables.
    configs: config::Configs,
}

impl Registry {
    /// Opens the registry in `data_dir` and reads the record of every
    /// function there; each is loaded (from its artifact when it is intact,
    /// else by recompiling) by its first call ([`Registry::function`]).
    /// `writer`'s database is waited for only on a data dir whose records
    /// an older node kept in it (they are moved to files).
    pub async fn open(
        engine: Engine,
        linker: Linker<HostState>,
        data_dir: &Path,
        writer: SledWriter,
        compile: CompileConfig,
        engine_config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RegistryError> {
        let sources = data_dir.join("functions").join("sources");
        let artifacts = data_dir.join("functions").join("artifacts");
        std::fs::create_dir_all(&sources)?;
        std::fs::create_dir_all(&artifacts)?;
        let tables = records::Tables::open(&data_dir.join("functions"), data_dir, &writer).await?;
        let configs = config::Configs::open(&tables.config)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let registry = Self {
            engine,
            linker,
            engine_key: format!("{:016x}", hasher.finish()),
            sources,
            artifacts,
            tables,
            record_lock: tokio::sync::Mutex::new(()),
            previous_infos: RwLock::new(HashMap::new()),
            changes: Arc::default(),
            configs,
            loaded: RwLock::new(HashMap::new()),
            unloaded: RwLock::new(HashMap::new()),
            compile_slots: Semaphore::new(compile.concurrency.max(1)),
            compile,
            engine_config,
            metrics,
        };
        registry.read_records()?;
        Ok(registry)
    }

    /// Links `component` (its world decides its kind, set in the info).
    fn link(
        &self,
        mut info: FunctionInfo,
        component: &Component,
    ) -> Result<Arc<Function>, RegistryError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| RegistryError::Link(format!("{e:#}")))?;
        let mut keeps_state = true;
        let pre = match FunctionPre::new(pre.clone()) {
            Ok(edge) => Pre::Edge(edge),
            Err(not_edge) => {
                let http = ProxyPre::new(pre).map_err(|_| {
                    RegistryError::Link(format!(
                        "the component exports neither edge:function/handler nor wasi:http/incoming-handler ({not_edge:#})"
                    ))
                })?;
                keeps_state = check::http_keeps_state(component, &self.engine)?;
                // Served under /{name}/: a name a node route takes is never reached.
                if matches!(info.name.as_str(), "v1" | "healthz" | "metrics") {
                    return Err(RegistryError::Link(format!(
                        "a wasi:http function cannot be named {:?}: /{0}/ is the node's",
                        info.name
                    )));
                }
                Pre::Http(http)
            }
        };
        info.kind = match pre {
            Pre::Edge(_) => FunctionKind::Edge,
            Pre::Http(_) => FunctionKind::Http,
        };
        Ok(Arc::new(Function {
            allow_hosts: info.allow_hosts.clone().into(),
            name: info.name.as_str().into(),
            info,
            pre,
            keeps_state,
            penalty: Default::default(),
        }))
    }

    /// Compiles `source` (in the worker process when there is one, else on
    /// a blocking thread; at most `concurrency` at once), writes source and
    /// artifact, and returns the component.
    async fn compile(&self, source: Vec<u8>) -> Result<Compiled, RegistryError> {
        let _slot = self
            .compile_slots
            .acquire()
            .await
            .map_err(|e| RegistryError::Compile(e.to_string()))?;
        let started = Instant::now();
        let (source, component, artifact) = match &self.compile.worker {
            Some(worker) => {
                // Malformed bytes are refused here, in linear time, without
                // a process; the worker gets only structurally valid input
                // (every feature allowed: the compiler has the last word).
                let source =
                    tokio::task::spawn_blocking(move || validate(&source).map(|()| source))
                        .await
                        .map_err(|e| RegistryError::Compile(e.to_string()))??;
                let out = compile::in_worker(&self.compile, worker, &self.engine_config, &source)
                    .await
                    .map_err(|e| match e {
                        WorkerError::Invalid(m) => RegistryError::Invalid(m),
                        WorkerError::Limit(m) => {
                            self.metrics.compile_refusals.inc();
                            RegistryError::TooCostly(m)
                        }
                        WorkerError::Failed(m) => RegistryError::Compile(m),
                    })?;
                if let Some(rss) = out.peak_rss_bytes {
                    self.metrics.compile_peak_rss.observe(rss as f64);
                }
                (source, None, out.artifact)
            }
            None => self.compile_in_process(source).await?,
        };
        let elapsed = started.elapsed();
        self.metrics.compilations.inc();
        self.metrics.compile_seconds.observe(elapsed.as_secs_f64());

        let digest = sha256_hex(&source);
        let artifact_name = format!("{digest}-{}.cwasm", self.engine_key);
        let artifact_sha256 = sha256_hex(&artifact);
        let (sources, artifacts) = (self.sources.clone(), self.artifacts.clone());
        let name = artifact_name.clone();
        let artifact_path = artifacts.join(&name);
        tokio::task::spawn_blocking(move || {
            write_atomic(&sources.join(format!("{digest}.wasm")), &source)?;
            write_atomic(&artifacts.join(name), &artifact)
        })
        .await
        .map_err(|e| RegistryError::Storage(e.to_string()))??;
        let component = match component {
            Some(c) => c,
            // The worker's artifact, loaded through the same verified path
            // as every artifact on disk.
            None => {
                self.deserialize_verified(&artifact_path, &artifact_sha256)
                    .await?
            }
        };
        Ok(Compiled {
            component,
            artifact: artifact_name,
            artifact_sha256,
            compile_ms: elapsed.as_secs_f64() * 1e3,
        })
    }

    async fn compile_in_process(
        &self,
        source: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<Component>, Vec<u8>), RegistryError> {
        let engine = self.engine.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let component = Component::new(&engine, &source)
                .map_err(|e| RegistryError::Invalid(format!("{e:#}")))?;
            let artifact = component
                .serialize()
                .map_err(|e| RegistryError::Compile(format!("{e:#}")))?;
            Ok::<_, RegistryError>((source, Some(component), artifact))
        })
        .await;
        match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(RegistryError::Compile("the compiler panicked".into())),
            Err(e) => Err(RegistryError::Compile(e.to_string())),
        }
    }

    /// Validates, compiles and registers `bytes` under `name`, replacing any
    /// function of that name.
    pub async fn deploy(&self, name: &str, bytes: Vec<u8>) -> Result<FunctionInfo, RegistryError> {
        self.deploy_with(name, bytes, DeployOptions::default())
            .await
    }

    /// As [`Registry::deploy`], with `options`.
    #[tracing::instrument(skip(self, bytes), fields(size = bytes.len()))]
    pub async fn deploy_with(
        &self,
        name: &str,
        bytes: Vec<u8>,
        options: DeployOptions,
    ) -> Result<FunctionInfo, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_owned()));
        }
        if let Some(ms) = options.flush_interval_ms
            && !(1..=MAX_FLUSH_INTERVAL_MS).contains(&ms)
        {
            return Err(RegistryError::InvalidOption(format!(
                "flush_interval_ms must be 1 to {MAX_FLUSH_INTERVAL_MS}, got {ms}"
            )));
        }
        if let Some(bad) = options.allow_hosts.iter().find(|h| !check::valid_host(h)) {
            return Err(RegistryError::InvalidOption(format!(
                "allow_hosts: {bad:?} is not a host, host:port or *"
            )));
        }
        check_preamble(&bytes)?;
        let bytes = tokio::task::spawn_blocking(move || check_imports(&bytes).map(|()| bytes))
            .await
            .map_err(|e| RegistryError::Compile(e.to_string()))??;
        let size = bytes.len() as u64;
        let digest = sha256_hex(&bytes);
        let compiled = match self.with_digest(&digest).await {
            // The same component is deployed already (under this name or
            // another): its compiled artifact serves, nothing is compiled.
            Some(same) => {
                self.metrics.compile_reuses.inc();
                Compiled {
                    component: same.pre.component().clone(),
                    artifact: same.info.artifact.clone(),
                    artifact_sha256: same.info.artifact_sha256.clone(),
                    compile_ms: 0.0,
                }
            }
            None => self.compile(bytes).await?,
        };
        let info = FunctionInfo {
            name: name.to_owned(),
            digest,
            size,
            compile_ms: compiled.compile_ms,
            uploaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            artifact: compiled.artifact,
            artifact_sha256: compiled.artifact_sha256,
            flush_interval_ms: options.flush_interval_ms,
            kind: FunctionKind::Edge,
            allow_hosts: options.allow_hosts,
        };
        // A refused upload leaves nothing behind: the files it wrote go
        // unless a deployed function uses the same component.
        let stored = async {
            let function = self.link(info.clone(), &compiled.component)?;
            let record = serde_json::to_vec(&function.info)
                .map_err(|e| RegistryError::Storage(e.to_string()))?;
            let previous = self.put_record(name, Some(record)).await?;
            Ok::<_, RegistryError>((function, previous))
        }
        .await;
        let (function, previous) = match stored {
            Ok(done) => done,
            Err(e) => {
                self.remove_files_if_unused(&info);
                return Err(e);
            }
        };
        let info = function.info.clone();
        self.insert_loaded(function);
        // The version replaced becomes the previous one (a redeploy of the
        // same component keeps the previous one there is).
        let replaced = previous.and_then(|raw| serde_json::from_slice::<FunctionInfo>(&raw).ok());
        if let Some(prev) = replaced.filter(|p| p.digest != info.digest) {
            self.set_previous(name, Some(prev)).await?;
        }
        self.metrics.functions.set(self.len() as i64);
        tracing::info!(digest = %info.digest, compile_ms = info.compile_ms, "deployed");
        Ok(info)
    }

    /// Writes (or removes) the record of `name` durably, through the
    /// writer thread; returns the record it replaced.
    async fn put_record(
        &self,
        name: &str,
        record: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        self.put_in(&self.tables.current, name, record).await
    }

    /// Writes (or removes) `name`'s entry in `table` durably; returns the
    /// entry it replaced.
    async fn put_in(
        &self,
        table: &records::Table,
        name: &str,
        record: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let _one_at_a_time = self.record_lock.lock().await;
        let (table, name) = (table.clone(), name.to_owned());
        let previous = tokio::task::spawn_blocking(move || table.put(&name, record.as_deref()))
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))??;
        Ok(previous)
    }

    /// Makes `f` the function of its name (a record not loaded yet of that
    /// name is done with).
    fn insert_loaded(&self, f: Arc<Function>) {
        // Lock order: `unloaded`, then `loaded` (see `load`).
        let mut unloaded = self.unloaded.write().unwrap_or_else(|p| p.into_inner());
        unloaded.remove(&f.info.name);
        let mut map = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        map.insert(f.info.name.clone(), f);
        drop((map, unloaded));
        self.changes.notify_one();
    }

    /// Signalled (one waiter, the permit kept until it waits) whenever a
    /// function is deployed, replaced, rolled back or deleted.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    /// The function named `name` if it is loaded.
    fn get(&self, name: &str) -> Option<Arc<Function>> {
        let map = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).cloned()
    }

    /// What is known of the function named `name`, loaded or not.
    pub fn info(&self, name: &str) -> Result<FunctionInfo, RegistryError> {
        match self.lookup(name) {
            Some(load::Entry::Loaded(f)) => Ok(f.info.clone()),
            Some(load::Entry::Recorded(info, _)) => Ok(info),
            None => Err(RegistryError::NotFound(name.to_owned())),
        }
    }

    /// Every function, loaded or not, sorted by name.
    pub fn list(&self) -> Vec<FunctionInfo> {
        // Lock order: `unloaded`, then `loaded` (see `load`): a function
        // being loaded is in one of the two.
        let unloaded = self.unloaded.read().unwrap_or_else(|p| p.into_inner());
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = loaded.values().map(|f| f.info.clone()).collect();
        out.extend(unloaded.values().map(|u| u.info.clone()));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn len(&self) -> usize {
        self.list().len()
    }

    /// Removes `name`; calls already running finish on the old component.
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, name: &str) -> Result<FunctionInfo, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_owned()));
        }
        let was_loaded = self
            .loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .map(|f| f.info.clone());
        let was_unloaded = self
            .unloaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .map(|u| u.info);
        let removed = was_loaded
            .or(was_unloaded)
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        self.put_record(name, None).await?;
        self.set_previous(name, None).await?;
        self.drop_config(name).await?;
        self.remove_files_if_unused(&removed);
        self.metrics.functions.set(self.len() as i64);
        self.changes.notify_one();
        Ok(removed)
    }

    /// A deployed function whose component has `digest` (loaded now if
    /// it was not yet).
    async fn with_digest(&self, digest: &str) -> Option<Arc<Function>> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|f| f.info.digest == digest)
            .cloned();
        if loaded.is_some() {
            return loaded;
        }
        let name = self
            .unloaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|u| u.info.digest == digest)
            .map(|u| u.info.name.clone())?;
        self.function(&name).await.ok()
    }

    /// Deletes a function's files unless another name uses the same component.
    fn remove_files_if_unused(&self, info: &FunctionInfo) {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|f| f.info.digest == info.digest);
        // A statement of its own: never hold `loaded` while taking
        // `unloaded` (see `load`).
        let recorded = self
            .unloaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|u| u.info.digest == info.digest);
        let kept = self
            .previous_infos
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|p| p.digest == info.digest);
        let still_used = loaded || recorded || kept;
        if !still_used {
            let _ = std::fs::remove_file(self.sources.join(format!("{}.wasm", info.digest)));
            let _ = std::fs::remove_file(self.artifacts.join(&info.artifact));
        }
    }
}

struct Compiled {
    component: Component,
    artifact: String,
    artifact_sha256: String,
    compile_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "echo", "0", "a.b_c-d", &"a".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "_a",
            "a/b",
            "a..b",
            "../x",
            "a\0",
            "é",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn preambles() {
        assert!(check_preamble(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(
            check_preamble(b""),
            Err(RegistryError::NotAComponent("empty body"))
        ));
        assert!(check_preamble(b"\0asm\x01\0\0\0").is_err());
        assert!(check_preamble(b"\0asm").is_err());
        assert!(check_preamble(b"MZ\x90\0\0\0\0\0").is_err());
    }
}
