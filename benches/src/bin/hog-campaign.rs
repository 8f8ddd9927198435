//! Hostile guests at scale: each `hog` mode × N calls (4 at a time) against
//! a release edge-node, while a neighbour calls `echo` the whole time. Says
//! whether every call got its documented status by deadline + 1 s, whether
//! the node stayed up, and the neighbour's p99 against its quiet p99.
//!
//! `cargo run --release -p edge-benches --bin hog-campaign -- [--calls 1000]`

use anyhow::{Context, Result, bail};
use clap::Parser;
use edge_benches::guests;
use edge_benches::procs::{Request, Server, free_addr};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The edge-node binary (a release build).
    #[arg(long, default_value = "target/release/edge-node")]
    edge_node: PathBuf,
    /// Calls per hog mode.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Hog calls in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The node's deadline per call, ms.
    #[arg(long, default_value_t = 200)]
    deadline_ms: u64,
    /// Only these modes (comma-separated: loop, grow, trap, deep).
    #[arg(long, value_delimiter = ',', default_value = "loop,grow,trap,deep")]
    modes: Vec<String>,
    /// One more argument for `edge-node serve` (repeatable), e.g.
    /// `--node-arg=--background-after-ticks=0` to run every call where it started.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// The neighbour calls in one session (a warm pinned instance) instead
    /// of a fresh instance per call.
    #[arg(long)]
    warm_neighbour: bool,
    /// Where the Markdown table goes (also printed).
    #[arg(long, default_value = "bench-results/hogs.md")]
    out: PathBuf,
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One neighbour call: latency at the client and time spent in the node.
#[derive(Clone, Copy)]
struct Sample {
    client: Duration,
    node: Duration,
}

/// Calls echo in a loop until `stop`; returns each call's times.
async fn neighbour(
    http: reqwest::Client,
    url: String,
    session: Option<&'static str>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Sample>> {
    let mut lat = Vec::new();
    while !stop.load(Ordering::Relaxed) && lat.len() < 1_000_000 {
        let t0 = Instant::now();
        let mut req = http.post(&url).body("n");
        if let Some(s) = session {
            req = req.header("edge-session", s);
        }
        let r = req.send().await?;
        if r.status() != 200 {
            bail!("the neighbour's call failed: {}", r.status());
        }
        let node_us = r
            .headers()
            .get("edge-duration-us")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        r.bytes().await?;
        lat.push(Sample {
            client: t0.elapsed(),
            node: Duration::from_micros(node_us),
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(lat)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let data = tempfile::tempdir()?;
    let addr = free_addr()?;
    let mut cmd = Command::new(&args.edge_node);
    cmd.arg("serve")
        .args(["--listen", &addr.to_string(), "--data-dir"])
        .arg(data.path())
        .args(["--deadline-ms", &args.deadline_ms.to_string()])
        .args(["--max-memory-mib", "64"])
        .args(&args.node_args)
        .env("EDGE_LOG", "error");
    let mut node = Server::spawn(cmd, addr)?;
    node.wait_listening(Duration::from_secs(30))?;
    for (name, path) in [("hog", guests::HOG), ("echo", guests::ECHO)] {
        Request::new("PUT", format!("/v1/functions/{name}"))
            .body(std::fs::read(path)?)
            .expect_ok(addr)
            .with_context(|| format!("deploying {name}"))?;
    }
    let http = reqwest::Client::new();
    let echo = format!("http://{addr}/v1/functions/echo/invoke");
    let hog = format!("http://{addr}/v1/functions/hog/invoke");

    let session = args.warm_neighbour.then_some("neighbour");
    // The neighbour alone, for 3 s.
    let stop = Arc::new(AtomicBool::new(false));
    let quiet = tokio::spawn(neighbour(http.clone(), echo.clone(), session, stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let quiet = quiet.await??;
    let mut quiet_client: Vec<Duration> = quiet.iter().map(|s| s.client).collect();
    let quiet_p99 = percentile(&mut quiet_client, 0.99);
    let quiet_p50 = percentile(&mut quiet_client, 0.50);
    let quiet_node_p99 = percentile(&mut quiet.iter().map(|s| s.node).collect::<Vec<_>>(), 0.99);

    let limit = Duration::from_millis(args.deadline_ms + 1000);
    let deadline = Duration::from_millis(args.deadline_ms);
    let mut md = format!(
        "# Hog campaign\n\n{} calls per mode, {} at a time, deadline {} ms{}; neighbour: echo every 2 ms{}, \
         quiet p50 {:.0} µs, p99 {:.0} µs ({} calls; p99 inside the node {:.0} µs).\n\n\
         | mode | expected | calls | 504 at the deadline instead | wrong status | past deadline + 1 s | slowest | neighbour calls | neighbour p99 | ÷ quiet p99 | inside the node p99 | node up |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        args.calls,
        args.concurrency,
        args.deadline_ms,
        if args.node_args.is_empty() {
            String::new()
        } else {
            format!(", node flags `{}`", args.node_args.join(" "))
        },
        if args.warm_neighbour {
            " in one session"
        } else {
            " (a fresh instance each)"
        },
        quiet_p50.as_secs_f64() * 1e6,
        quiet_p99.as_secs_f64() * 1e6,
        quiet.len(),
        quiet_node_p99.as_secs_f64() * 1e6,
    );
    let mut all_good = true;
    for (mode, status) in [
        ("loop", 504u16),
        ("grow", 500),
        ("trap", 500),
        ("deep", 500),
    ] {
        if !args.modes.iter().any(|m| m == mode) {
            continue;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let side = tokio::spawn(neighbour(http.clone(), echo.clone(), session, stop.clone()));
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..args.concurrency {
            let (http, hog) = (http.clone(), hog.clone());
            let n = (w..args.calls).step_by(args.concurrency).count();
            workers.push(tokio::spawn(async move {
                let (mut wrong, mut late, mut slowest) = (0u32, 0u32, Duration::ZERO);
                let mut out_of_time = 0u32;
                for _ in 0..n {
                    let t0 = Instant::now();
                    let got = http.post(&hog).body(mode).send().await;
                    let took = t0.elapsed();
                    match got {
                        Ok(r) if r.status().as_u16() == status => {
                            let _ = r.bytes().await;
                        }
                        // A call that ran out of time before it got to its
                        // own end: the documented 504, once the deadline
                        // has passed.
                        Ok(r) if r.status() == 504 && took >= deadline => {
                            let body = r.text().await.unwrap_or_default();
                            if body.contains("\"deadline\"") {
                                out_of_time += 1;
                            } else {
                                wrong += 1;
                            }
                        }
                        _ => wrong += 1,
                    }
                    if took > limit {
                        late += 1;
                    }
                    slowest = slowest.max(took);
                }
                (wrong, late, slowest, out_of_time)
            }));
        }
        let (mut wrong, mut late, mut slowest, mut out_of_time) = (0, 0, Duration::ZERO, 0);
        for w in workers {
            let (a, b, c, d) = w.await?;
            wrong += a;
            late += b;
            slowest = slowest.max(c);
            out_of_time += d;
        }
        stop.store(true, Ordering::Relaxed);
        let lat = side.await??;
        let p99 = percentile(&mut lat.iter().map(|s| s.client).collect::<Vec<_>>(), 0.99);
        let node_p99 = percentile(&mut lat.iter().map(|s| s.node).collect::<Vec<_>>(), 0.99);
        let up =
            node.cpu_seconds().is_ok() && Request::new("GET", "/healthz").expect_ok(addr).is_ok();
        all_good &= wrong == 0 && late == 0 && up;
        let _ = writeln!(
            md,
            "| {mode} | {status} | {} | {out_of_time} | {wrong} | {late} | {:.0} ms | {} | {:.0} µs | {:.1}× | {:.0} µs | {} |",
            args.calls,
            slowest.as_secs_f64() * 1e3,
            lat.len(),
            p99.as_secs_f64() * 1e6,
            p99.as_secs_f64() / quiet_p99.as_secs_f64().max(1e-9),
            node_p99.as_secs_f64() * 1e6,
            if up { "yes" } else { "NO" }
        );
        eprintln!("{mode}: done in {:.1} s", started.elapsed().as_secs_f64());
    }
    node.wait_listening(Duration::from_secs(1))?;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md)?;
    println!("{md}");
    if !all_good {
        bail!("some calls got the wrong status, were late, or the node went down");
    }
    Ok(())
}
