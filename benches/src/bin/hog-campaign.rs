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

/// Calls echo in a loop until `stop`; returns each latency.
async fn neighbour(
    http: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Duration>> {
    let mut lat = Vec::new();
    while !stop.load(Ordering::Relaxed) && lat.len() < 1_000_000 {
        let t0 = Instant::now();
        let r = http.post(&url).body("n").send().await?;
        if r.status() != 200 {
            bail!("the neighbour's call failed: {}", r.status());
        }
        r.bytes().await?;
        lat.push(t0.elapsed());
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

    // The neighbour alone, for 3 s.
    let stop = Arc::new(AtomicBool::new(false));
    let quiet = tokio::spawn(neighbour(http.clone(), echo.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut quiet = quiet.await??;
    let quiet_p99 = percentile(&mut quiet, 0.99);
    let quiet_p50 = percentile(&mut quiet, 0.50);

    let limit = Duration::from_millis(args.deadline_ms + 1000);
    let mut md = format!(
        "# Hog campaign\n\n{} calls per mode, {} at a time, deadline {} ms; neighbour: echo every 2 ms, \
         quiet p50 {:.0} µs, p99 {:.0} µs ({} calls).\n\n\
         | mode | expected | calls | wrong status | past deadline + 1 s | slowest | neighbour calls | neighbour p99 | ÷ quiet p99 | node up |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        args.calls,
        args.concurrency,
        args.deadline_ms,
        quiet_p50.as_secs_f64() * 1e6,
        quiet_p99.as_secs_f64() * 1e6,
        quiet.len()
    );
    let mut all_good = true;
    for (mode, status) in [
        ("loop", 504u16),
        ("grow", 500),
        ("trap", 500),
        ("deep", 500),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let side = tokio::spawn(neighbour(http.clone(), echo.clone(), stop.clone()));
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..args.concurrency {
            let (http, hog) = (http.clone(), hog.clone());
            let n = (w..args.calls).step_by(args.concurrency).count();
            workers.push(tokio::spawn(async move {
                let (mut wrong, mut late, mut slowest) = (0u32, 0u32, Duration::ZERO);
                for _ in 0..n {
                    let t0 = Instant::now();
                    let got = http.post(&hog).body(mode).send().await;
                    let took = t0.elapsed();
                    match got {
                        Ok(r) if r.status().as_u16() == status => {
                            let _ = r.bytes().await;
                        }
                        _ => wrong += 1,
                    }
                    if took > limit {
                        late += 1;
                    }
                    slowest = slowest.max(took);
                }
                (wrong, late, slowest)
            }));
        }
        let (mut wrong, mut late, mut slowest) = (0, 0, Duration::ZERO);
        for w in workers {
            let (a, b, c) = w.await?;
            wrong += a;
            late += b;
            slowest = slowest.max(c);
        }
        stop.store(true, Ordering::Relaxed);
        let mut lat = side.await??;
        let p99 = percentile(&mut lat, 0.99);
        let up =
            node.cpu_seconds().is_ok() && Request::new("GET", "/healthz").expect_ok(addr).is_ok();
        all_good &= wrong == 0 && late == 0 && up;
        let _ = writeln!(
            md,
            "| {mode} | {status} | {} | {wrong} | {late} | {:.0} ms | {} | {:.0} µs | {:.1}× | {} |",
            args.calls,
            slowest.as_secs_f64() * 1e3,
            lat.len(),
            p99.as_secs_f64() * 1e6,
            p99.as_secs_f64() / quiet_p99.as_secs_f64().max(1e-9),
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
