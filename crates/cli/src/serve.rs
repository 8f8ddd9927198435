//! `edge-node serve`: the settings (`settings`) resolved into the node's
//! configuration, and the running server.
//!
//! Precedence, highest first: a flag or its environment variable, the
//! config file (`--config`), the profile (`--profile`), the built-in default.

use crate::settings::{Layer, Settings};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use edge_core::compile::CompileConfig;
use edge_core::sched::SchedConfig;
use edge_core::{AuthConfig, EngineConfig, Node, NodeConfig, TlsIdentity};
use edge_http::ServerConfig;
use serde::Deserialize;
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

/// `edge-node serve`: the config file, and every setting as a flag.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below, in kebab-case (flags
    /// override it; see `deploy/edge-node.toml`).
    #[arg(long, env = "EDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Layer,
}

/// Lays the flags over the config file over the profile, then the defaults.
pub fn resolve(args: ServeArgs) -> Result<Settings> {
    let file: Layer = match &args.config {
        None => Layer::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?
        }
    };
    let profile = args
        .flags
        .profile
        .or(file.profile)
        .unwrap_or(Profile::Default);
    let settings = args.flags.over(file).over(profile.preset()).resolve();
    if settings.max_instances == 0 || settings.max_memory_mib == 0 {
        bail!("max-instances and max-memory-mib must be at least 1");
    }
    if !settings.mqtt_triggers.is_empty() && settings.mqtt_broker.is_none() {
        bail!("--mqtt-trigger needs --mqtt-broker mqtt://host[:port]");
    }
    match (&settings.mqtt_client_cert, &settings.mqtt_client_key) {
        (None, None) => {}
        (Some(_), Some(_)) => {
            if !settings.mqtt_broker.as_ref().is_some_and(|b| b.tls) {
                bail!("--mqtt-client-cert is for an mqtts:// broker");
            }
            if settings.tls_ca.is_none() {
                bail!(
                    "--mqtt-client-cert needs --tls-ca: the authority of the broker's certificate"
                );
            }
        }
        _ => bail!("--mqtt-client-cert and --mqtt-client-key go together"),
    }
    Ok(settings)
}

/// The node's configuration from the settings.
fn node_config(s: &Settings) -> Result<NodeConfig> {
    let mut config = NodeConfig::new(&s.data_dir);
    config.invoke_deadline = Duration::from_millis(s.deadline_ms);
    config.max_upload_bytes = s.max_upload_bytes;
    config.max_invoke_bytes = s.max_invoke_bytes;
    let worker = if s.compile_in_process {
        None
    } else {
        let exe = std::env::current_exe().context("locating this executable for the compiler")?;
        Some(exe)
    };
    config.compile = CompileConfig {
        concurrency: s.compile_concurrency,
        worker,
        timeout: Duration::from_secs(s.compile_timeout_secs.max(1)),
        memory_bytes: s.compile_memory_mib << 20,
    };
    config.sled_cache_bytes = s.sled_cache_mib << 20;
    config.state_cache_bytes = s.state_cache_mib << 20;
    config.engine = EngineConfig {
        max_instances: s.max_instances,
        max_memory_bytes: s.max_memory_mib << 20,
        pooling: !s.no_pooling,
        ..EngineConfig::default()
    };
    config.remote_store = s.remote_store.clone();
    config.max_local_sessions = s.max_local_sessions;
    config.max_pending_invocations = s.max_pending_invocations;
    config.pin_ttl = Duration::from_secs(s.pin_ttl_secs);
    config.demote_idle = Duration::from_millis(s.demote_idle_ms);
    config.snapshot = Duration::from_millis(s.snapshot_ms);
    config.promote_calls_per_sec = s.promote_calls_per_sec.max(0.0);
    config.orchestrate = Duration::from_millis(s.orchestrate_ms);
    config.pressure_evict = !s.no_pressure_evict;
    config.peers = s.peers.clone();
    config.auth = AuthConfig {
        token: s.token.clone(),
        cluster_token: s.cluster_token.clone(),
        open_reads: s.open_reads,
        open_invoke: s.open_invoke,
        peer_certificates: s.tls_client_ca.is_some(),
    };
    config.sched = SchedConfig {
        slice: (s.background_after_ticks > 0).then_some(s.background_after_ticks),
        threads: s.background_threads,
        ..SchedConfig::default()
    };
    if let Some(ca) = &s.tls_ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        config.tls_roots = Some(pem);
    }
    // A node with a certificate presents it to nodes (and a Redis) that ask
    // for one.
    if let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) {
        config.tls_identity = Some(TlsIdentity {
            cert: std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
            key: std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
        });
    }
    Ok(config)
}

/// The server's TLS, when both --tls-cert and --tls-key are set.
fn server_tls(s: &Settings) -> Result<Option<edge_http::Tls>> {
    match (&s.tls_cert, &s.tls_key) {
        (None, None) if s.tls_client_ca.is_none() => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(edge_http::Tls::from_pem_files(
            cert,
            key,
            s.tls_client_ca.as_deref(),
        )?)),
        (None, None) => bail!(
            "--tls-client-ca needs --tls-cert and --tls-key: client certificates are asked for \
             in the TLS handshake"
        ),
        _ => bail!("--tls-cert and --tls-key go together"),
    }
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
pub async fn serve(args: Settings) -> Result<()> {
    init_logging(args.log_json);
    let mut config = node_config(&args)?;
    let tls = server_tls(&args)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    config.public_url = Some(
        args.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}")),
    );
    let reserved = config.engine.reserved_address_space();
    let open_to_all = !config.auth.enabled() && !addr.ip().is_loopback();
    let in_clear = tls.is_none() && !addr.ip().is_loopback();
    let node = Node::open(config)
        .await
        .with_context(|| format!("opening the node in {}", args.data_dir.display()))?;
    // The one line on stdout: scripts and tests read the bound address here.
    println!("edge-node listening on {scheme}://{addr}");
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
    if in_clear {
        tracing::warn!(
            %addr,
            "no --tls-cert: tokens, code and state cross the network in clear text"
        );
    }
    let server = ServerConfig {
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        tls,
        ..ServerConfig::default()
    };
    // After a full disk, storage stays stopped until space returns; then
    // the node exits non-zero so its supervisor restarts it and the database
    // reopens at the last acknowledged write (see `edge_core::storage`).
    let storage = node.storage().clone();
    let node = Arc::new(node);
    // The database opens in the background (calls that keep no state are
    // answered meanwhile); a node whose database cannot open stops, as it
    // did when it opened before serving.
    let unopened = std::sync::Mutex::new(None);
    let opening = node.clone();
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => {}
            () = storage.recovered() => {}
            Err(e) = opening.database() => {
                tracing::error!(error = %e, "the database could not be opened: stopping");
                *unopened.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
    };
    start_triggers(&node, &args)?;
    node.load_functions();
    edge_http::serve(listener, node, server, stop).await?;
    if let Some(e) = unopened.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(anyhow::Error::new(e))
            .with_context(|| format!("opening the node in {}", args.data_dir.display()));
    }
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

/// The certificate chain and key the node presents to the MQTT broker.
fn mqtt_identity(s: &Settings) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    match (&s.mqtt_client_cert, &s.mqtt_client_key) {
        (Some(cert), Some(key)) => Ok(Some((read(cert)?, read(key)?))),
        _ => Ok(None),
    }
}

/// Subscribes the MQTT triggers and starts the timers.
fn start_triggers(node: &Arc<Node>, s: &Settings) -> Result<()> {
    if let Some(broker) = s
        .mqtt_broker
        .as_ref()
        .filter(|_| !s.mqtt_triggers.is_empty())
    {
        let id = edge_triggers::mqtt::client_id(&s.data_dir);
        tracing::info!(client_id = %id, triggers = s.mqtt_triggers.len(), "MQTT triggers");
        let identity = mqtt_identity(s)?;
        let subscription = edge_triggers::mqtt::Subscription {
            broker: broker.clone(),
            triggers: s.mqtt_triggers.clone(),
            client_id: id,
            identity,
        };
        edge_triggers::mqtt::spawn(node.clone(), subscription);
    }
    for t in &s.timer_triggers {
        edge_triggers::timer::spawn(node.clone(), t.clone());
    }
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
