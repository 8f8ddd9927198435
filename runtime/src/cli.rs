//! The command line: `serve` runs a node; the other commands are clients of one.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use edge_runtime::http::{
    DURATION_HEADER, MODE_HEADER, SESSION_HEADER, START_HEADER, ServerConfig,
};
use edge_runtime::{EngineConfig, Node, NodeConfig};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "edge-node",
    version,
    about = "A WebAssembly runtime for stateful functions at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Upload a component to a node under NAME.
    Deploy {
        /// The function's name.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Invoke a function and print its output.
    Invoke {
        /// The function's name.
        name: String,
        /// Continue this session (otherwise the node opens one).
        #[arg(long)]
        session: Option<String>,
        /// The input, as a string.
        #[arg(long, conflicts_with = "data_file")]
        data: Option<String>,
        /// The input, read from a file.
        #[arg(long)]
        data_file: Option<PathBuf>,
        /// Print the session, start kind, mode and duration to stderr.
        #[arg(short, long)]
        verbose: bool,
        #[command(flatten)]
        node: NodeArg,
    },
    /// List the functions deployed on a node.
    Functions {
        #[command(flatten)]
        node: NodeArg,
    },
    /// Run or check a workflow (a chain or DAG of tasks across nodes).
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Inspect and move sessions.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
        #[command(flatten)]
        node: NodeArg,
    },
}

#[derive(Subcommand)]
enum WorkflowCommand {
    /// Run SPEC.json on the node and print outputs, timings and traffic.
    Run {
        /// The spec.
        spec: PathBuf,
        /// Override the spec's model: pure-faas, state-prop or state-local.
        #[arg(long)]
        model: Option<String>,
    },
    /// Check SPEC.json (graph, functions, nodes) without running it.
    Validate {
        /// The spec.
        spec: PathBuf,
    },
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Show a session: mode, owner, pinned instances, keys, invocations.
    Show {
        /// The session id.
        id: String,
    },
    /// Serve a session in local-state or remote-state mode.
    Mode {
        /// The session id.
        id: String,
        /// `local` or `remote`.
        mode: String,
    },
    /// Move a local-state session to another node.
    Migrate {
        /// The session id.
        id: String,
        /// The node to move it to.
        #[arg(long)]
        to: String,
    },
    /// Drop a session: its instances and its state.
    Delete {
        /// The session id.
        id: String,
    },
}

#[derive(Args)]
struct NodeArg {
    /// The node's URL.
    #[arg(
        long = "node",
        global = true,
        env = "EDGE_NODE_URL",
        default_value = "http://127.0.0.1:7878"
    )]
    url: String,
}

#[derive(Args)]
struct ServeArgs {
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
    remote_store: edge_runtime::RemoteStore,
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
}

fn parse_peer(s: &str) -> Result<(String, String), String> {
    let (name, url) = s.split_once('=').ok_or("expected NAME=URL")?;
    if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("expected NAME=http://host:port, got {s:?}"));
    }
    Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
}

/// Runs the command line and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Deploy { name, file, node } => deploy(&node.url, &name, &file).await,
        Command::Invoke {
            name,
            session,
            data,
            data_file,
            verbose,
            node,
        } => {
            let input = match (data, data_file) {
                (Some(s), _) => s.into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?
                }
                (None, None) => Vec::new(),
            };
            invoke(&node.url, &name, session.as_deref(), input, verbose).await
        }
        Command::Functions { node } => functions(&node.url).await,
        Command::Session { command, node } => session(&node.url, command).await,
        Command::Workflow { command, node } => workflow(&node.url, command).await,
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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

async fn serve(args: ServeArgs) -> Result<()> {
    init_logging(args.log_json);
    let mut config = NodeConfig::new(&args.data_dir);
    config.invoke_deadline = Duration::from_millis(args.deadline_ms);
    config.max_upload_bytes = args.max_upload_bytes;
    config.max_invoke_bytes = args.max_invoke_bytes;
    config.compile_concurrency = args.compile_concurrency;
    config.sled_cache_bytes = args.sled_cache_mib << 20;
    config.engine = EngineConfig {
        max_instances: args.max_instances,
        max_memory_bytes: args.max_memory_mib << 20,
        pooling: !args.no_pooling,
        ..EngineConfig::default()
    };
    config.remote_store = args.remote_store.clone();
    config.max_local_sessions = args.max_local_sessions;
    config.pin_ttl = Duration::from_secs(args.pin_ttl_secs);
    config.peers = args.peers.clone();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    config.public_url = Some(
        args.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
    );
    let node = Node::open(config)
        .await
        .with_context(|| format!("opening the node in {}", args.data_dir.display()))?;
    // The one line on stdout: scripts and tests read the bound address here.
    println!("edge-node listening on http://{addr}");
    tracing::info!(%addr, data_dir = %args.data_dir.display(), functions = node.registry().list().len(), "serving");
    let server = ServerConfig {
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        ..ServerConfig::default()
    };
    edge_runtime::http::serve(listener, Arc::new(node), server, shutdown_signal()).await?;
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

fn endpoint(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Turns a non-2xx response into an error carrying the node's message.
async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    bail!("{status}: {message}")
}

async fn deploy(base: &str, name: &str, file: &PathBuf) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let total = bytes.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = bar.clone();
    let chunks: Vec<bytes::Bytes> = bytes::Bytes::from(bytes)
        .chunks(64 << 10)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let stream = futures_util::stream::iter(chunks).map(move |chunk| {
        progress.inc(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    });
    let response = reqwest::Client::new()
        .put(endpoint(base, &format!("/v1/functions/{name}")))
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .with_context(|| format!("uploading to {base}"))?;
    bar.finish_and_clear();
    let info: serde_json::Value = check(response).await?.json().await?;
    println!(
        "deployed {name}: {} bytes, sha256 {}, compiled in {:.1} ms",
        info["size"],
        info["digest"].as_str().unwrap_or("?"),
        info["compile_ms"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

async fn invoke(
    base: &str,
    name: &str,
    session: Option<&str>,
    input: Vec<u8>,
    verbose: bool,
) -> Result<()> {
    let mut request = reqwest::Client::new()
        .post(endpoint(base, &format!("/v1/functions/{name}/invoke")))
        .body(input);
    if let Some(s) = session {
        request = request.header(SESSION_HEADER, s);
    }
    let response = check(
        request
            .send()
            .await
            .with_context(|| format!("calling {base}"))?,
    )
    .await?;
    let header = |h: &str| {
        response
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let (sess, start, mode, micros) = (
        header(SESSION_HEADER),
        header(START_HEADER),
        header(MODE_HEADER),
        header(DURATION_HEADER),
    );
    let reason = header(edge_runtime::http::MODE_REASON_HEADER);
    let body = response.bytes().await?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&body)?;
    if !body.ends_with(b"\n") {
        writeln!(out)?;
    }
    if verbose {
        eprintln!(
            "session: {sess}\nstart: {start}\nmode: {mode} (reason: {reason})\nduration: {micros} µs"
        );
    }
    Ok(())
}

async fn functions(base: &str) -> Result<()> {
    let response = reqwest::get(endpoint(base, "/v1/functions"))
        .await
        .with_context(|| format!("calling {base}"))?;
    let list: Vec<edge_runtime::registry::FunctionInfo> = check(response).await?.json().await?;
    println!("{:<24} {:>10} {:>12}  DIGEST", "NAME", "SIZE", "COMPILE_MS");
    for f in list {
        println!(
            "{:<24} {:>10} {:>12.1}  {}",
            f.name,
            f.size,
            f.compile_ms,
            &f.digest[..16.min(f.digest.len())]
        );
    }
    Ok(())
}

async fn session(base: &str, command: SessionCommand) -> Result<()> {
    let client = reqwest::Client::new();
    let response = match &command {
        SessionCommand::Show { id } => client
            .get(endpoint(base, &format!("/v1/sessions/{id}")))
            .send(),
        SessionCommand::Mode { id, mode } => client
            .put(endpoint(base, &format!("/v1/sessions/{id}/mode")))
            .json(&serde_json::json!({ "mode": mode }))
            .send(),
        SessionCommand::Migrate { id, to } => client
            .post(endpoint(base, &format!("/v1/sessions/{id}/migrate")))
            .json(&serde_json::json!({ "to": to }))
            .send(),
        SessionCommand::Delete { id } => client
            .delete(endpoint(base, &format!("/v1/sessions/{id}")))
            .send(),
    }
    .await
    .with_context(|| format!("calling {base}"))?;
    let value: serde_json::Value = check(response).await?.json().await?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

async fn workflow(base: &str, command: WorkflowCommand) -> Result<()> {
    let (path, model, validate) = match &command {
        WorkflowCommand::Run { spec, model } => (spec, model.clone(), false),
        WorkflowCommand::Validate { spec } => (spec, None, true),
    };
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut spec: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if let Some(m) = model {
        spec["model"] = serde_json::Value::String(m);
    }
    let route = if validate {
        "/v1/workflows/validate"
    } else {
        "/v1/workflows"
    };
    let response = reqwest::Client::new()
        .post(endpoint(base, route))
        .json(&spec)
        .send()
        .await
        .with_context(|| format!("calling {base}"))?;
    let result: serde_json::Value = check(response).await?.json().await?;
    if validate {
        println!(
            "valid: {} tasks, order {}",
            result["tasks"], result["order"]
        );
        return Ok(());
    }
    println!(
        "execution {} ({}) in {:.1} ms",
        result["execution"].as_str().unwrap_or("?"),
        result["model"].as_str().unwrap_or("?"),
        result["duration_ms"].as_f64().unwrap_or(0.0)
    );
    for (task, b64) in result["outputs"].as_object().into_iter().flatten() {
        let text = result["outputs_text"][task].as_str().map(str::to_owned);
        println!(
            "output {task}: {}",
            text.unwrap_or_else(|| format!("<{} base64 chars>", b64.as_str().map_or(0, str::len)))
        );
    }
    for (name, v) in result["states"].as_object().into_iter().flatten() {
        match (v["text"].as_str(), v["owner"].as_str()) {
            (Some(t), _) => println!("state {name}: {t}"),
            (None, Some(owner)) => println!("state {name}: at {owner} (version {})", v["version"]),
            _ => println!("state {name}: <binary or absent>"),
        }
    }
    println!(
        "{:<16} {:<28} {:>9} {:>11}",
        "TASK", "NODE", "START_MS", "DURATION_MS"
    );
    for t in result["timings"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:<28} {:>9} {:>11.2}",
            t["task"].as_str().unwrap_or("?"),
            t["node"].as_str().unwrap_or("?"),
            t["start_ms"].as_u64().unwrap_or(0),
            t["duration_ms"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10}",
        "NODE", "ARGS", "STATES", "CONTROL", "WIRE"
    );
    let rows = result["traffic"]["nodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (node, c) in rows.iter().chain(std::iter::once((
        &"total".to_string(),
        &result["traffic"]["total"],
    ))) {
        println!(
            "{:<28} {:>10} {:>10} {:>10} {:>10}",
            node,
            c["args"].as_u64().unwrap_or(0),
            c["states"].as_u64().unwrap_or(0),
            c["control"].as_u64().unwrap_or(0),
            c["wire"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
}
