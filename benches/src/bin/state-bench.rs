//! Local-state calls against stateless warm calls, in one run with one load
//! generator: `counter` (a read and a durable write per call) on 32 pinned
//! sessions against `hello` (no state) on 32 pinned sessions, `wrk -t1
//! -c32`, each pair measured `--runs` times; then a soak of `counter` with
//! `/healthz` asked every 100 ms. Prints the median ratio with its range.
//!
//! `cargo build --release -p edge-node --bin edge-node && cargo run
//! --release -p edge-benches --bin state-bench`

use anyhow::{Context, Result, bail};
use clap::Parser;
use edge_benches::guests;
use edge_benches::load::{self, Load, Sample};
use edge_benches::procs::{Request, Server, find_program, free_addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "local-state counter vs stateless warm hello, and a soak with /healthz")]
struct Args {
    /// The edge-node binary (a release build).
    #[arg(long, default_value = "target/release/edge-node")]
    edge_node: PathBuf,
    /// Seconds of load per point.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Pairs of points (the figure is their median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of the counter soak (0: none).
    #[arg(long, default_value_t = 60)]
    soak: u64,
    /// Sessions, and connections.
    #[arg(long, default_value_t = 32)]
    sessions: u32,
    /// Deploy `counter` with relaxed durability: commits flushed within
    /// this many ms instead of before each answer.
    #[arg(long)]
    flush_interval_ms: Option<u64>,
    /// One more argument for `edge-node serve` (repeatable), e.g.
    /// `--node-arg=--state-cache-mib=0`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

fn invoke(name: &str) -> Request {
    Request::new("POST", format!("/v1/functions/{name}/invoke"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let wrk = find_program("wrk").context("wrk: `apt-get install wrk`")?;
    if !args.edge_node.is_file() {
        bail!(
            "{}: `cargo build --release -p edge-node --bin edge-node`",
            args.edge_node.display()
        );
    }
    let scratch = tempfile::tempdir()?;
    let addr = free_addr()?;
    let mut cmd = Command::new(&args.edge_node);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(scratch.path().join("node"))
        .args(["--max-local-sessions", "1000"])
        .args(&args.node_args)
        .env("EDGE_LOG", "warn");
    let mut node = Server::spawn(cmd, addr)?;
    node.wait_listening(Duration::from_secs(30))?;
    let counter_route = match args.flush_interval_ms {
        Some(ms) => format!("/v1/functions/counter?flush_interval_ms={ms}"),
        None => "/v1/functions/counter".to_owned(),
    };
    for (route, path) in [
        ("/v1/functions/hello".to_owned(), guests::HELLO),
        (counter_route, guests::COUNTER),
    ] {
        Request::new("PUT", route)
            .body(std::fs::read(path)?)
            .expect_ok(addr)?;
    }
    if let Some(ms) = args.flush_interval_ms {
        println!("counter deployed with relaxed durability: flushed within {ms} ms\n");
    }
    let ids = |prefix: &str| -> Vec<String> {
        (0..args.sessions)
            .map(|i| format!("{prefix}-{i}"))
            .collect()
    };
    for (function, prefix) in [("hello", "warm"), ("counter", "state")] {
        for id in ids(prefix) {
            Request::new("PUT", format!("/v1/sessions/{id}/mode"))
                .header("content-type", "application/json")
                .body(br#"{"mode":"local"}"#.to_vec())
                .expect_ok(addr)?;
            invoke(function)
                .header("edge-session", &id)
                .expect_ok(addr)?;
        }
    }
    let point = |function: &str, prefix: &str, secs: u64| -> Result<Sample> {
        load::run(
            &wrk,
            scratch.path(),
            &Load {
                url: format!("http://{addr}/v1/functions/{function}/invoke"),
                method: "POST",
                sessions: ids(prefix),
                connections: args.sessions,
                duration: Duration::from_secs(secs),
            },
        )
    };
    point("hello", "warm", 1)?;
    point("counter", "state", 1)?;
    let c = args.sessions;
    println!(
        "| run | hello warm pinned c={c} req/s | counter local c={c} req/s | counter p99 µs | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for run in 1..=args.runs {
        let hello = point("hello", "warm", args.duration)?;
        let counter = point("counter", "state", args.duration)?;
        if hello.errors + counter.errors > 0 {
            bail!(
                "errors under load: hello {}, counter {}",
                hello.errors,
                counter.errors
            );
        }
        let ratio = counter.rate() / hello.rate();
        ratios.push(ratio);
        println!(
            "| {run} | {:.0} | {:.0} | {:.0} | {ratio:.2}× |",
            hello.rate(),
            counter.rate(),
            counter.p99_us
        );
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    println!(
        "\ncounter ÷ hello at c={c}: median {:.2}× (range {lo:.2}–{hi:.2}, {} runs of {} s)",
        median(ratios),
        args.runs,
        args.duration
    );
    if args.soak > 0 {
        let soak = std::thread::spawn({
            let wrk = wrk.clone();
            let scratch = scratch.path().to_owned();
            let sessions = ids("state");
            let secs = args.soak;
            move || {
                load::run(
                    &wrk,
                    &scratch,
                    &Load {
                        url: format!("http://{addr}/v1/functions/counter/invoke"),
                        method: "POST",
                        sessions,
                        connections: c,
                        duration: Duration::from_secs(secs),
                    },
                )
            }
        });
        let started = Instant::now();
        let (mut checks, mut slowest) = (0u32, Duration::ZERO);
        while !soak.is_finished() {
            let t = Instant::now();
            let (status, _) = Request::new("GET", "/healthz")
                .send(addr)
                .context("healthz during the soak")?;
            if status != 200 {
                bail!("healthz answered {status} after {:?}", started.elapsed());
            }
            slowest = slowest.max(t.elapsed());
            checks += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        let sample = soak
            .join()
            .map_err(|_| anyhow::anyhow!("the soak panicked"))??;
        println!(
            "soak: counter c={c} for {} s: {:.0} req/s, {} errors, p99 {:.0} µs; \
             /healthz {checks} checks, slowest {:.1} ms",
            args.soak,
            sample.rate(),
            sample.errors,
            sample.p99_us,
            slowest.as_secs_f64() * 1e3
        );
        if sample.errors > 0 {
            bail!("{} errors during the soak", sample.errors);
        }
    }
    node.stop()?;
    Ok(())
}
