//! The one wasmtime engine per process: pooling allocator, epoch deadlines,
//! memory caps, and the linker every function is instantiated with.

use crate::config::EngineConfig;
use crate::guest_log::GuestLog;
use crate::outbound::Outbound;
use crate::registry::FunctionConfig;
use crate::sched::CallClock;
use edge_host_api::StateCtx;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfig;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The invocation ran past its deadline (raised from the epoch callback).
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("engine setup: {0:#}")]
pub struct EngineError(#[from] wasmtime::Error);

/// Builds the engine from `cfg`.
pub fn build_engine(cfg: &EngineConfig) -> Result<Engine, EngineError> {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(cfg.max_wasm_stack)
        // The async stack must hold the wasm stack plus host frames.
        .async_stack_size(cfg.max_wasm_stack + (512 << 10))
        .memory_reservation(cfg.max_memory_bytes as u64)
        .memory_guard_size(cfg.memory_guard_bytes)
        .memory_reservation_for_growth(0)
        .parallel_compilation(true);
    if cfg.pooling {
        let n = cfg.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_memories(n * cfg.memories_per_instance)
            .max_memories_per_component(cfg.memories_per_instance)
            .max_memories_per_module(1)
            .max_memory_size(cfg.max_memory_bytes)
            .total_core_instances(n * 16)
            .max_core_instances_per_component(64)
            .total_tables(n * 8)
            .max_tables_per_component(16)
            .table_elements(50_000)
            .total_stacks(n)
            .max_unused_warm_slots(n.min(64))
            // Keep the first pages of a freed slot resident: a reused slot
            // then costs no page faults for small guests.
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(16 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Ok(Engine::new(&config)?)
}

/// Advances the engine's epoch every `tick` on a thread of its own, until
/// the engine is dropped everywhere else.
pub fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("edge-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        });
    if let Err(e) = spawned {
        // Without the ticker no deadline fires; refuse to run that way.
        tracing::error!(error = %e, "cannot start the epoch thread");
        std::process::abort();
    }
}

/// The linker every function is instantiated with: WASI p2 (with nothing
/// granted: no files, sockets or environment), `wasi:http` (outgoing
/// requests only to the function's allowed hosts) plus `state` and
/// `session`, `wasi:keyvalue` served from the same session state, and
/// `wasi:config` with the function's variables.
pub fn build_linker(engine: &Engine) -> Result<Linker<HostState>, EngineError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    edge_host_api::add_to_linker(&mut linker, |s: &mut HostState| &mut s.state)?;
    edge_host_api::keyvalue::add_to_linker(&mut linker, |s: &mut HostState| &mut s.state)?;
    wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut HostState| {
        WasiConfig::from(s.config.vars())
    })?;
    Ok(linker)
}

/// Caps what one instance may grow to and remembers when it was refused.
#[derive(Debug)]
pub struct Limits {
    max_memory_bytes: usize,
    max_table_elements: usize,
    /// Set when a memory or table growth was denied.
    pub denied: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_memory_bytes;
        self.denied |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_table_elements;
        self.denied |= !ok;
        Ok(ok)
    }
}

/// What a store carries for one instance.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    /// Where its outgoing HTTP requests may go, and until when.
    pub outbound: Outbound,
    /// The invocation's session and state transaction.
    pub state: StateCtx,
    /// The function's `wasi:config` variables.
    pub config: Arc<FunctionConfig>,
    /// Memory and table caps.
    pub limits: Limits,
    /// When the running call must stop.
    pub deadline: Instant,
    /// The running call's ticks, and whether it was sent to the background.
    pub clock: CallClock,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// What a new store is made for: the function's name, allowed hosts and
/// variables.
pub struct StoreFor {
    /// The function's name.
    pub function: Arc<str>,
    /// Hosts its outgoing requests may reach.
    pub allow_hosts: Arc<[String]>,
    /// Its `wasi:config` variables.
    pub config: Arc<FunctionConfig>,
    /// The node's own CAs for `https://` requests, if it has some.
    pub tls: Option<crate::outbound::GuestTls>,
}

/// A store for one instance of a function: WASI with no grants and its
/// output logged, memory capped, the deadline enforced by the epoch.
pub fn new_store(
    engine: &Engine,
    cfg: &EngineConfig,
    function: StoreFor,
    log_budget: usize,
    state: StateCtx,
    deadline: Instant,
) -> Store<HostState> {
    let StoreFor {
        function,
        allow_hosts,
        config,
        tls,
    } = function;
    let log = GuestLog::new(function, log_budget);
    let wasi = WasiCtxBuilder::new()
        .stdout(log.stream("stdout"))
        .stderr(log.stream("stderr"))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let data = HostState {
        wasi,
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        outbound: Outbound::new(allow_hosts, deadline, tls),
        state,
        config,
        limits: Limits {
            max_memory_bytes: cfg.max_memory_bytes,
            max_table_elements: 50_000,
            denied: false,
        },
        deadline,
        clock: CallClock::default(),
    };
    let mut store = Store::new(engine, data);
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    // Every tick: past the deadline, stop; otherwise yield to the executor so
    // a spinning guest never holds a worker thread for more than one tick
    // (and the scheduler can move it once it has used its slice).
    store.epoch_deadline_callback(|mut ctx| {
        if Instant::now() >= ctx.data().deadline {
            Err(DeadlineExceeded.into())
        } else {
            ctx.data_mut().clock.tick();
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}
