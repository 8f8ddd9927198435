//! `edge-node serve`: its flags, the TOML config file that can say the same,
//! the machine profiles, and the running server.
//!
//! Precedence, highest first: a flag or its environment variable, the
//! config file (`--config`), the profile (`--profile`), the built-in default.

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use edge_core::compile::CompileConfig;
use edge_core::sched::SchedConfig;
use edge_core::{AuthConfig, EngineConfig, Node, NodeConfig, RemoteStore};
use edge_http::ServerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A preset for the kind of machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Servers and desktops.
    Default,
    /// Raspberry Pi class: 1–4 GB RAM, SD card, 39-bit address space.
    Pi,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long, env = "EDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Preset sizes for the machine: `default`, or `pi` (32 instances of
    /// at most 64 MiB, one compilation at a time, 8 MiB sled cache,
    /// 16 local sessions).
    #[arg(long, value_enum, default_value = "default")]
    profile: Profile,
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, env = "EDGE_LISTEN", default_value = "127.0.0.1:7878")]
    listen: String,
    /// Where functions, artifacts and state are kept.
    #[arg(long, env = "EDGE_DATA_DIR", default_value = "./edge-data")]
    data_dir: PathBuf,
    /// Wall-clock limit of one invocation, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    deadline_ms: u64,
    /// Largest component upload, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_upload_bytes: usize,
    /// Largest invocation body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_invoke_bytes: usize,
    /// Instances alive at once (the pooling allocator's size).
    #[arg(long, default_value_t = 128)]
    max_instances: u32,
    /// Largest linear memory of an instance, in MiB.
    #[arg(long, default_value_t = 128)]
    max_memory_mib: usize,
    /// Components compiled at once.
    #[arg(long, default_value_t = 2)]
    compile_concurrency: usize,
    /// Wall-clock limit of one compilation, in seconds (an upload past it
    /// gets 422).
    #[arg(long, default_value_t = 30)]
    compile_timeout_secs: u64,
    /// Address-space limit of the compiler process, in MiB.
    #[arg(long, default_value_t = 2048)]
    compile_memory_mib: u64,
    /// Compile inside the node process instead of a limited child process.
    #[arg(long)]
    compile_in_process: bool,
    /// Allocate instances on demand instead of from a pool.
    #[arg(long)]
    no_pooling: bool,
    /// sled's page cache, in MiB.
    #[arg(long, default_value_t = 32)]
    sled_cache_mib: u64,
    /// Seconds a client may take to send request headers.
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Where remote-state sessions keep state: `local` (this node's sled),
    /// `redis://host:port`, or `http://peer:port` (another edge-node).
    #[arg(long, env = "EDGE_REMOTE_STORE", default_value = "local")]
    remote_store: RemoteStore,
    /// Invocations admitted at once; beyond it calls get 503 `overloaded`
    /// (with Retry-After) instead of queueing.
    #[arg(long, default_value_t = 512)]
    max_pending_invocations: usize,
    /// Sessions in local-state mode at once (beyond: served remote, reason `capacity`).
    #[arg(long, default_value_t = 64)]
    max_local_sessions: usize,
    /// Seconds a pinned instance may sit idle before it is dropped.
    #[arg(long, default_value_t = 300)]
    pin_ttl_secs: u64,
    /// The URL other nodes reach this one at (default: http://<listen address>).
    #[arg(long, env = "EDGE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Another node, for workflows: NAME=URL (repeatable).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(String, String)>,
    /// Token clients must present (`Authorization: Bearer …`) on /v1 routes.
    #[arg(long, env = "EDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Token the nodes of a cluster present to each other (and accept).
    #[arg(long, env = "EDGE_CLUSTER_TOKEN", hide_env_values = true)]
    cluster_token: Option<String>,
    /// Let GET requests that describe functions, sessions and the node in without a token.
    #[arg(long)]
    open_reads: bool,
    /// Let invocations in without a token.
    #[arg(long)]
    open_invoke: bool,
    /// A call whose guest code has run across this many epoch ticks (5 ms
    /// each) moves to the background threads (`SCHED_IDLE`: every other
    /// thread goes first), and its function starts its calls there for
    /// 10 s; 0 runs every call where it started.
    #[arg(long, default_value_t = 2)]
    background_after_ticks: u32,
    /// Background threads; 0 means one fewer than the cores, at least one
    /// (a core stays free of long guest code).
    #[arg(long, default_value_t = 0)]
    background_threads: usize,
}

/// The config file: every `serve` setting, in kebab-case; `peers` is a table
/// of NAME = "URL".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    profile: Option<Profile>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    deadline_ms: Option<u64>,
    max_upload_bytes: Option<usize>,
    max_invoke_bytes: Option<usize>,
    max_instances: Option<u32>,
    max_memory_mib: Option<usize>,
    compile_concurrency: Option<usize>,
    compile_timeout_secs: Option<u64>,
    compile_memory_mib: Option<u64>,
    compile_in_process: Option<bool>,
    no_pooling: Option<bool>,
    sled_cache_mib: Option<u64>,
    header_timeout_secs: Option<u64>,
    log_json: Option<bool>,
    remote_store: Option<String>,
    max_local_sessions: Option<usize>,
    max_pending_invocations: Option<usize>,
    pin_ttl_secs: Option<u64>,
    public_url: Option<String>,
    peers: Option<BTreeMap<String, String>>,
    token: Option<String>,
    cluster_token: Option<String>,
    open_reads: Option<bool>,
    open_invoke: Option<bool>,
    background_after_ticks: Option<u32>,
    background_threads: Option<usize>,
}

impl Profile {
    /// What the profile changes from the defaults.
    fn preset(self) -> FileConfig {
        match self {
            Profile::Default => FileConfig::default(),
            Profile::Pi => FileConfig {
                max_instances: Some(32),
                max_memory_mib: Some(64),
                compile_concurrency: Some(1),
                compile_memory_mib: Some(768),
                sled_cache_mib: Some(8),
                max_local_sessions: Some(16),
                max_pending_invocations: Some(128),
                ..FileConfig::default()
            },
        }
    }
}

fn parse_peer(s: &str) -> Result<(String, String), String> {
    let (name, url) = s.split_once('=').ok_or("expected NAME=URL")?;
    if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("expected NAME=http://host:port, got {s:?}"));
    }
    Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
}

/// True when the setting `id` came from the command line or the environment.
fn explicit(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Applies the config file and the profile under the flags.
pub fn resolve(mut args: ServeArgs, m: &ArgMatches) -> Result<ServeArgs> {
    let file: FileConfig = match &args.config {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?
        }
    };
    if !explicit(m, "profile")
        && let Some(p) = file.profile
    {
        args.profile = p;
    }
    let preset = args.profile.preset();
    macro_rules! layer {
        ($($field:ident),* $(,)?) => {$(
            if !explicit(m, stringify!($field)) {
                if let Some(v) = file.$field.clone().or(preset.$field.clone()) {
                    args.$field = v;
                }
            }
        )*};
    }
    layer!(
        listen,
        data_dir,
        deadline_ms,
        max_upload_bytes,
        max_invoke_bytes,
        max_instances,
        max_memory_mib,
        compile_concurrency,
        compile_timeout_secs,
        compile_memory_mib,
        compile_in_process,
        no_pooling,
        sled_cache_mib,
        header_timeout_secs,
        log_json,
        max_local_sessions,
        max_pending_invocations,
        pin_ttl_secs,
        open_reads,
        open_invoke,
        background_after_ticks,
        background_threads,
    );
    if !explicit(m, "token") && file.token.is_some() {
        args.token = file.token.clone();
    }
    if !explicit(m, "cluster_token") && file.cluster_token.is_some() {
        args.cluster_token = file.cluster_token.clone();
    }
    if !explicit(m, "remote_store")
        && let Some(s) = &file.remote_store
    {
        args.remote_store = s.parse().map_err(anyhow::Error::msg)?;
    }
    if !explicit(m, "public_url") && file.public_url.is_some() {
        args.public_url = file.public_url.clone();
    }
    if !explicit(m, "peers")
        && let Some(peers) = &file.peers
    {
        args.peers = peers
            .iter()
            .map(|(n, u)| parse_peer(&format!("{n}={u}")))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
    }
    if args.max_instances == 0 || args.max_memory_mib == 0 {
        bail!("max-instances and max-memory-mib must be at least 1");
    }

    Ok(args)
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // No colours unless a person is watching: journald and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<()> {
    init_logging(args.log_json);
    let mut config = NodeConfig::new(&args.data_dir);
    config.invoke_deadline = Duration::from_millis(args.deadline_ms);
    config.max_upload_bytes = args.max_upload_bytes;
    config.max_invoke_bytes = args.max_invoke_bytes;
    config.compile = CompileConfig {
        concurrency: args.compile_concurrency,
        worker: if args.compile_in_process {
            None
        } else {
            Some(
                std::env::current_exe()
                    .context("locating this executable for the compiler worker")?,
            )
        },
        timeout: Duration::from_secs(args.compile_timeout_secs.max(1)),
        memory_bytes: args.compile_memory_mib << 20,
    };
    config.sled_cache_bytes = args.sled_cache_mib << 20;
    config.engine = EngineConfig {
        max_instances: args.max_instances,
        max_memory_bytes: args.max_memory_mib << 20,
        pooling: !args.no_pooling,
        ..EngineConfig::default()
    };
    config.remote_store = args.remote_store.clone();
    config.max_local_sessions = args.max_local_sessions;
    config.max_pending_invocations = args.max_pending_invocations;
    config.pin_ttl = Duration::from_secs(args.pin_ttl_secs);
    config.peers = args.peers.clone();
    config.auth = AuthConfig {
        token: args.token.clone(),
        cluster_token: args.cluster_token.clone(),
        open_reads: args.open_reads,
        open_invoke: args.open_invoke,
    };
    config.sched = SchedConfig {
        slice: (args.background_after_ticks > 0).then_some(args.background_after_ticks),
        threads: args.background_threads,
        ..SchedConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    config.public_url = Some(
        args.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
    );
    let reserved = config.engine.reserved_address_space();
    let open_to_all = !config.auth.enabled() && !addr.ip().is_loopback();
    let node = Node::open(config)
        .await
        .with_context(|| format!("opening the node in {}", args.data_dir.display()))?;
    // The one line on stdout: scripts and tests read the bound address here.
    println!("edge-node listening on http://{addr}");
    tracing::info!(
        %addr,
        profile = ?args.profile,
        data_dir = %args.data_dir.display(),
        functions = node.registry().list().len(),
        reserved_gib = reserved as f64 / f64::from(1u32 << 30),
        "serving"
    );
    if open_to_all {
        tracing::warn!(%addr, "no --token: anyone who reaches this address can deploy and run code");
    }
    let server = ServerConfig {
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        ..ServerConfig::default()
    };
    // After a full disk, storage stays stopped until space returns; then
    // the node exits non-zero so its supervisor restarts it and the database
    // reopens at the last acknowledged write (see `edge_core::storage`).
    let storage = node.storage().clone();
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => {}
            () = storage.recovered() => {}
        }
    };
    edge_http::serve(listener, Arc::new(node), server, stop).await?;
    if let Some(why) = storage.failed() {
        // Leave at once, without destructors: sled's threads may wait for
        // ever on a database whose flush failed, and the process must end
        // for its supervisor to restart it. Every acknowledged write was
        // flushed before it was acknowledged.
        if storage.is_recovered() {
            tracing::error!(
                "space is back after a full disk: exiting so the supervisor restarts this node"
            );
        } else {
            tracing::error!(error = %why, "stopping with storage stopped after a full disk");
        }
        std::process::exit(1);
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received");
}
