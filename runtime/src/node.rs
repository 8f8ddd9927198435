//! A node: one engine, one registry, one state store, one metrics registry.

use crate::config::NodeConfig;
use crate::engine::{EngineError, build_engine, build_linker, start_epoch_ticker};
use crate::metrics::{Metrics, MetricsError};
use crate::registry::{Registry, RegistryError};
use edge_host_api::{SledStore, StateStore, StoreError};
use std::sync::Arc;
use tokio::sync::Semaphore;
use wasmtime::Engine;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The engine could not be configured.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The registry could not be opened.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The database could not be opened.
    #[error("database: {0}")]
    Storage(String),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

impl From<sled::Error> for NodeError {
    fn from(e: sled::Error) -> Self {
        NodeError::Storage(e.to_string())
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        NodeError::Storage(e.to_string())
    }
}

/// A running edge node, independent of any transport.
pub struct Node {
    pub(crate) config: NodeConfig,
    pub(crate) engine: Engine,
    pub(crate) registry: Registry,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) db: sled::Db,
    pub(crate) metrics: Arc<Metrics>,
    /// One permit per pooled instance: calls beyond the pool wait here.
    pub(crate) instance_slots: Semaphore,
}

impl Node {
    /// Opens the data dir, builds the engine and loads every deployed function.
    pub async fn open(config: NodeConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::Storage(format!("{}: {e}", config.data_dir.display())))?;
        let db = sled::Config::new()
            .path(config.data_dir.join("db"))
            .cache_capacity(config.sled_cache_bytes)
            .open()?;
        let engine = build_engine(&config.engine)?;
        start_epoch_ticker(&engine, config.engine.epoch_tick);
        let linker = build_linker(&engine)?;
        let metrics = Arc::new(Metrics::new()?);
        let registry = Registry::open(
            engine.clone(),
            linker,
            &config.data_dir,
            db.clone(),
            config.compile_concurrency,
            metrics.clone(),
        )
        .await?;
        let state: Arc<dyn StateStore> = Arc::new(SledStore::new(db.clone())?);
        let instance_slots = Semaphore::new(config.engine.max_instances as usize);
        Ok(Self {
            config,
            engine,
            registry,
            state,
            db,
            metrics,
            instance_slots,
        })
    }

    /// The function registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Writes everything pending to disk (called on shutdown).
    pub async fn flush(&self) -> Result<(), NodeError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// A new session id: 128 random bits, hex.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS RNG failing is unrecoverable for a server handing out
        // unguessable ids; never fall back to a guessable one.
        tracing::error!("the OS random number generator failed");
        std::process::abort();
    }
    hex::encode(bytes)
}
