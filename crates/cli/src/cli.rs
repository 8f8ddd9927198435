//! The command line: `serve` runs a node; the other commands are clients of one.

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use edge_proto::routes::{DURATION_HEADER, MODE_HEADER, SESSION_HEADER, START_HEADER};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "edge-node",
    version = edge_core::VERSION_LINE,
    about = "A WebAssembly runtime for stateful functions at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<crate::serve::ServeArgs>),
    /// Internal: compile one component from stdin under rlimits (the
    /// node's compiler worker process).
    #[command(name = "__compile", hide = true)]
    Compile(edge_core::compile::WorkerArgs),
    /// Write a new function project NAME (with the SDK inside it) that
    /// builds from any directory.
    New {
        /// The project's (and the function's) name.
        name: String,
        /// The language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::new::Lang,
        /// Where to create the project's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Upload a component to a node under NAME.
    Deploy {
        /// The function's name.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        /// Relaxed durability: answer local-state calls before their commit
        /// is on disk and flush within this many ms (a crash may lose that
        /// much; for sensors that can). Default: flush before answering.
        #[arg(long)]
        flush_interval_ms: Option<u64>,
        /// A host the function's outgoing HTTP requests may reach: `host`,
        /// `host:port`, or `*` for any (repeatable). Default: none.
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// A variable the function reads through `wasi:config/store`
        /// (repeatable). Given any `--config` or `--config-file`, the
        /// function's variables become exactly these; otherwise they stay.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A file of `KEY=VALUE` lines (`#` comments), read before `--config`.
        #[arg(long = "config-file", value_name = "FILE")]
        config_files: Vec<PathBuf>,
        /// Deploy to every live member of the node's cluster (the nodes
        /// sharing its Redis, or its `--peer`s), not only to the node, and
        /// record it as the cluster's: a node that joins the Redis later
        /// deploys it as it starts.
        #[arg(long)]
        all: bool,
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
    /// Bring back the version of NAME its last deploy replaced (a second
    /// rollback undoes the first).
    Rollback {
        /// The function's name.
        name: String,
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
    /// Take a session over from an owner that is gone (no heartbeat in the
    /// cluster): it goes on in remote-state mode from its last snapshot,
    /// without what the owner wrote after it (at most --snapshot-ms).
    Takeover {
        /// The session id.
        id: String,
    },
}

#[derive(Args)]
pub(crate) struct NodeArg {
    /// The node's URL.
    #[arg(
        long = "node",
        global = true,
        env = "EDGE_NODE_URL",
        default_value = "http://127.0.0.1:7878"
    )]
    pub(crate) url: String,
    /// The node's token, if it requires one.
    #[arg(long, global = true, env = "EDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A certificate authority (PEM) to trust for an `https://` node,
    /// besides the system's.
    #[arg(long, global = true, env = "EDGE_CA")]
    ca: Option<PathBuf>,
}

impl NodeArg {
    /// An HTTP client that presents the token, if any.
    pub(crate) fn client(&self) -> Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {t}").parse()?,
            );
        }
        let mut builder = reqwest::Client::builder().default_headers(headers);
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            for root in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("no PEM certificate in {}", ca.display()))?
            {
                builder = builder.add_root_certificate(root);
            }
        }
        Ok(builder.build()?)
    }
}

/// Parses the command line; `serve --help` shows each setting's default
/// (kept only in `settings`: a flag itself has no default value, so that a
/// setting the command line leaves out is the file's or the profile's).
fn parse() -> Cli {
    let command = Cli::command().mut_subcommand("serve", |mut serve| {
        for (id, default) in crate::settings::Layer::defaults() {
            serve = serve.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                let long = arg.get_long_help().map(ToString::to_string);
                let arg = arg.help(format!("{help} [default: {default}]"));
                match long {
                    Some(l) => arg.long_help(format!("{l}\n\n[default: {default}]")),
                    None => arg,
                }
            });
        }
        serve
    });
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Runs the command line and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = parse();
    let cli = match cli.command {
        // The worker needs no async runtime, and sets its limits before
        // anything else runs.
        Command::Compile(args) => return edge_core::compile::worker_main(args),
        command => Cli { command },
    };
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
        Command::Serve(args) => crate::serve::serve(crate::serve::resolve(*args)?).await,
        Command::Compile(_) => bail!("the compiler worker runs without a runtime"),
        Command::New { name, lang, dir } => {
            let root = crate::new::scaffold(&name, lang, &dir)?;
            println!(
                "created {} (see its README.md); in it: {}",
                root.display(),
                crate::new::next_steps(&name, lang)
            );
            Ok(())
        }
        Command::Deploy {
            name,
            file,
            flush_interval_ms,
            allow_hosts,
            config,
            config_files,
            all,
            node,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let plan = crate::deploy::DeployPlan {
                name: &name,
                path: crate::deploy::deploy_path(&name, flush_interval_ms, &allow_hosts),
                config: crate::deploy::config_from(&config, &config_files)?,
                all,
            };
            crate::deploy::deploy(&node, plan, bytes.into()).await
        }
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
            invoke(&node, &name, session.as_deref(), input, verbose).await
        }
        Command::Functions { node } => functions(&node).await,
        Command::Rollback { name, node } => rollback(&node, &name).await,
        Command::Session { command, node } => session(&node, command).await,
        Command::Workflow { command, node } => workflow(&node, command).await,
    }
}

pub(crate) fn endpoint(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Turns a non-2xx response into an error carrying the node's message.
pub(crate) async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
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

async fn invoke(
    node: &NodeArg,
    name: &str,
    session: Option<&str>,
    input: Vec<u8>,
    verbose: bool,
) -> Result<()> {
    let base = node.url.as_str();
    let mut request = node
        .client()?
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
    let reason = header(edge_proto::routes::MODE_REASON_HEADER);
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

async fn functions(node: &NodeArg) -> Result<()> {
    let base = node.url.as_str();
    let response = node
        .client()?
        .get(endpoint(base, "/v1/functions"))
        .send()
        .await
        .with_context(|| format!("calling {base}"))?;
    let list: Vec<edge_core::registry::FunctionInfo> = check(response).await?.json().await?;
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

async fn rollback(node: &NodeArg, name: &str) -> Result<()> {
    let base = node.url.as_str();
    let response = node
        .client()?
        .post(endpoint(base, &format!("/v1/functions/{name}/rollback")))
        .send()
        .await
        .with_context(|| format!("calling {base}"))?;
    let info: edge_core::registry::FunctionInfo = check(response).await?.json().await?;
    println!(
        "{} is back at {} (uploaded at {})",
        info.name,
        &info.digest[..16.min(info.digest.len())],
        info.uploaded_at
    );
    Ok(())
}

async fn session(node: &NodeArg, command: SessionCommand) -> Result<()> {
    let base = node.url.as_str();
    let client = node.client()?;
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
        SessionCommand::Takeover { id } => client
            .post(endpoint(base, &format!("/v1/sessions/{id}/takeover")))
            .send(),
    }
    .await
    .with_context(|| format!("calling {base}"))?;
    let value: serde_json::Value = check(response).await?.json().await?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

async fn workflow(node: &NodeArg, command: WorkflowCommand) -> Result<()> {
    let base = node.url.as_str();
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
    let response = node
        .client()?
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
    print_result(&result);
    Ok(())
}

/// Prints a workflow's result: outputs, states, timings and traffic.
fn print_result(result: &serde_json::Value) {
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
}
