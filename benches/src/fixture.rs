//! One component ready to instantiate in-process, with the node's engine
//! settings: what the criterion benches and the bench runner's cold-start
//! ladder time (pooled instantiate, warm call).

use anyhow::{Context, Result};
use edge_core::EngineConfig;
use edge_core::engine::{
    HostState, StoreFor, build_engine, build_linker, new_store, start_epoch_ticker,
};
use edge_host_api::bindings::{Function, FunctionPre};
use edge_host_api::{Input, Mode, Source, StateCtx, StateLimits, StateStore};
use edge_store_sled::SledStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

/// An engine, a pre-instantiated component and a state store in a temp dir.
pub struct Fixture {
    /// The engine (pooling or on-demand, as asked).
    pub engine: Engine,
    /// Its settings.
    pub cfg: EngineConfig,
    /// The component, linked and type-checked.
    pub pre: FunctionPre<HostState>,
    state: Arc<dyn StateStore>,
    name: Arc<str>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Compiles the component at `path` for an engine with the default
    /// settings, pooling or not.
    pub fn new(path: &str, pooling: bool) -> Result<Self> {
        let cfg = EngineConfig {
            pooling,
            ..EngineConfig::default()
        };
        let engine = build_engine(&cfg)?;
        start_epoch_ticker(&engine, cfg.epoch_tick);
        let linker = build_linker(&engine)?;
        let component = Component::from_file(&engine, path)
            .map_err(wt)
            .with_context(|| format!("compiling {path}"))?;
        let pre = FunctionPre::new(linker.instantiate_pre(&component).map_err(wt)?).map_err(wt)?;
        let dir = tempfile::tempdir()?;
        let state: Arc<dyn StateStore> = Arc::new(SledStore::new(sled::open(dir.path())?)?);
        Ok(Fixture {
            engine,
            cfg,
            pre,
            state,
            name: "bench".into(),
            _dir: dir,
        })
    }

    /// A store for one instance, as the node makes it (no deadline in sight).
    pub fn store(&self) -> Store<HostState> {
        let ctx = StateCtx::new(
            self.state.clone(),
            "bench".into(),
            Mode::Remote,
            StateLimits::default(),
        );
        new_store(
            &self.engine,
            &self.cfg,
            StoreFor {
                function: self.name.clone(),
                allow_hosts: Arc::from([]),
                config: Arc::default(),
                tls: None,
            },
            4096,
            ctx,
            Instant::now() + Duration::from_secs(3600),
        )
    }

    /// A fresh instance in a fresh store.
    pub async fn instantiate(&self) -> Result<(Store<HostState>, Function)> {
        let mut store = self.store();
        let instance = self.pre.instantiate_async(&mut store).await.map_err(wt)?;
        Ok((store, instance))
    }
}

/// One client input.
pub fn client_input(data: &[u8]) -> Vec<Input> {
    vec![Input {
        source: Source::Client,
        data: data.to_vec(),
    }]
}

/// Calls `handle` on a live instance; a guest error is an error.
pub async fn call(
    store: &mut Store<HostState>,
    instance: &Function,
    inputs: &[Input],
) -> Result<Vec<u8>> {
    instance
        .edge_function_handler()
        .call_handle(store, inputs)
        .await
        .map_err(wt)?
        .map_err(|e| anyhow::anyhow!("guest error: {e}"))
}

/// wasmtime 48's own error type as an `anyhow` error (with its chain).
fn wt(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}
