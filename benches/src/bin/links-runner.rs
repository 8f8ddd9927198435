//! The chains/DAGs paper's workloads against a running cluster, for the
//! emulated-link experiments (`scripts/edge-links.sh` builds the network,
//! starts the nodes and calls this once per link rate, then to plot).
//!
//! `links-runner run --entry URL --node b=URL --node c=URL --rate MBPS --csv FILE`
//! `links-runner plot --csv FILE --out DIR`

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use edge_benches::report::{self, Series};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "The chains/DAGs paper's workloads on an emulated edge network")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the workloads under every model at one link rate; append to the CSV.
    Run {
        /// The entry node (it knows the others as peers `b` and `c`).
        #[arg(long)]
        entry: String,
        /// The other nodes, NAME=URL (to deploy `stage` on them).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// The link rate these runs see, Mb/s (recorded in the CSV).
        #[arg(long)]
        rate: f64,
        /// Timed executions per workload and model (after one warm-up).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Workloads (default: all ten): chain{3,6}-s{3,6}-a{10,100}k, dag19-a{10,100}k;
        /// also dag19-a2000k when named.
        #[arg(long = "workload")]
        workloads: Vec<String>,
        /// The `stage` component to deploy.
        #[arg(long)]
        stage: PathBuf,
        /// Where rows are appended.
        #[arg(long)]
        csv: PathBuf,
    },
    /// Plot a CSV: delay vs rate per workload (log-log), traffic per model.
    Plot {
        /// The CSV `run` wrote.
        #[arg(long)]
        csv: PathBuf,
        /// Where the SVGs and summary.md go.
        #[arg(long)]
        out: PathBuf,
    },
}

const MODELS: [&str; 3] = ["pure-faas", "state-prop", "state-local"];
const NODES: [&str; 3] = ["self", "b", "c"];

/// A workload: its spec (without model, session, input) and state sizes.
struct Workload {
    name: String,
    spec: Value,
    arg: usize,
    states: BTreeMap<String, usize>,
}

/// Chain of `len` functions over the three nodes, `nstates` states of
/// (i+1)×10 kB; state i is used by functions i and i+2 (mod len), so each
/// state has to travel along the chain.
fn chain(len: usize, nstates: usize, arg: usize) -> Workload {
    let tasks: Vec<Value> = (0..len)
        .map(|i| json!({ "id": format!("f{i}"), "function": "stage", "node": NODES[i % 3] }))
        .collect();
    let edges: Vec<Value> = (1..len)
        .map(|i| json!([format!("f{}", i - 1), format!("f{i}")]))
        .collect();
    let mut states = serde_json::Map::new();
    let mut sizes = BTreeMap::new();
    for s in 0..nstates {
        let (a, b) = (s % len, (s + 2) % len);
        let users = [a.min(b), a.max(b)].map(|i| format!("f{i}"));
        states.insert(format!("s{s}"), json!(users));
        sizes.insert(format!("s{s}"), (s + 1) * 10_000);
    }
    Workload {
        name: format!("chain{len}-s{nstates}-a{}k", arg / 1000),
        spec: json!({ "tasks": tasks, "edges": edges, "states": states }),
        arg,
        states: sizes,
    }
}

/// The 19-function DAG: 4 stateful collectors with 5-branch fan-outs
/// between them.
fn dag19(arg: usize) -> Workload {
    let mut tasks = Vec::new();
    let mut edges = Vec::new();
    for k in 0..4 {
        tasks.push(json!({ "id": format!("c{k}"), "function": "stage", "node": NODES[k % 3] }));
        if k < 3 {
            for j in 0..5 {
                let id = format!("b{k}{j}");
                tasks.push(json!({ "id": id, "function": "stage", "node": NODES[(k + j) % 3] }));
                edges.push(json!([format!("c{k}"), id]));
                edges.push(json!([id, format!("c{}", k + 1)]));
            }
        }
    }
    let states = json!({ "s0": ["c0", "c2"], "s1": ["c1", "c3"], "s2": ["c0", "c1", "c2", "c3"], "s3": ["c3"] });
    Workload {
        name: format!("dag19-a{}k", arg / 1000),
        spec: json!({ "tasks": tasks, "edges": edges, "states": states }),
        arg,
        states: (0..4)
            .map(|s| (format!("s{s}"), (s + 1) * 10_000))
            .collect(),
    }
}

fn all_workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    for len in [3, 6] {
        for nstates in [3, 6] {
            for arg in [10_000, 100_000] {
                all.push(chain(len, nstates, arg));
            }
        }
    }
    all.push(dag19(10_000));
    all.push(dag19(100_000));
    // Not in the default set: the 2 MB client input of the control-bytes
    // measurement (`scripts/control-bytes.sh`).
    all
}

/// Workloads run only when named.
fn extra_workloads() -> Vec<Workload> {
    vec![dag19(2_000_000)]
}

async fn deploy(http: &reqwest::Client, url: &str, stage: &[u8]) -> Result<()> {
    let r = http
        .put(format!("{url}/v1/functions/stage"))
        .body(stage.to_vec())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("deploying stage on {url}: {}", r.text().await?);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    entry: &str,
    nodes: &[String],
    rate: f64,
    runs: u32,
    names: &[String],
    stage: &Path,
    csv: &Path,
) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let stage = std::fs::read(stage).with_context(|| format!("reading {}", stage.display()))?;
    deploy(&http, entry, &stage).await?;
    for n in nodes {
        let (_, url) = n.split_once('=').context("expected --node NAME=URL")?;
        deploy(&http, url, &stage).await?;
    }
    let new_file = !csv.exists();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(csv)?;
    if new_file {
        writeln!(
            out,
            "rate_mbps,workload,model,runs,median_ms,min_ms,max_ms,args_bytes,states_bytes,control_bytes,wire_bytes"
        )?;
    }
    let chosen = all_workloads()
        .into_iter()
        .filter(|w| names.is_empty() || names.contains(&w.name))
        .chain(
            extra_workloads()
                .into_iter()
                .filter(|w| names.contains(&w.name)),
        );
    for w in chosen {
        let tasks = w.spec["tasks"].as_array().map_or(1, Vec::len).max(1);
        for model in MODELS {
            let session = format!("{}-{model}", w.name);
            for (key, size) in &w.states {
                let r = http
                    .put(format!("{entry}/v1/sessions/{session}/state/{key}"))
                    .body(vec![7u8; *size])
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("writing state {key}: {}", r.status());
                }
            }
            let mut spec = w.spec.clone();
            spec["model"] = json!(model);
            spec["session"] = json!(session);
            spec["input"] = json!("i".repeat(w.arg));
            spec["deadline_ms"] = json!(600_000);
            let mut times = Vec::new();
            let mut last = Value::Null;
            for i in 0..=runs {
                let t0 = Instant::now();
                let r = http
                    .post(format!("{entry}/v1/workflows"))
                    .json(&spec)
                    .send()
                    .await?;
                let status = r.status();
                let body: Value = r.json().await?;
                if !status.is_success() {
                    bail!("{} {model}: {status} {body}", w.name);
                }
                if i > 0 {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                last = body;
            }
            let total = &last["traffic"]["total"];
            times.sort_by(f64::total_cmp);
            let median = median_of(&times);
            let (min, max) = (times[0], times[times.len() - 1]);
            let control = total["control"].as_u64().unwrap_or(0);
            eprintln!(
                "{rate:>5} Mb/s  {:<18} {model:<12} median {median:>9.1} ms ({min:.1}–{max:.1})  args {:>8} states {:>8} control {:>9} ({:>7} per task) wire {:>8}",
                w.name,
                total["args"],
                total["states"],
                control,
                control / tasks as u64,
                total["wire"]
            );
            writeln!(
                out,
                "{rate},{},{model},{runs},{median:.2},{min:.2},{max:.2},{},{},{},{}",
                w.name, total["args"], total["states"], total["control"], total["wire"]
            )?;
        }
    }
    Ok(())
}

/// The median of sorted `times` (not empty).
fn median_of(times: &[f64]) -> f64 {
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

/// One CSV row.
struct Row {
    rate: f64,
    workload: String,
    model: String,
    /// The median of the timed runs (the mean, in files written before
    /// the median was kept).
    ms: f64,
    /// The fastest and slowest timed run (files with the median only).
    spread: Option<(f64, f64)>,
    args: f64,
    states: f64,
    wire: f64,
}

fn read_rows(csv: &Path) -> Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let mut rows = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        // 11 fields: with the median and the spread; 10: older files (mean, min).
        let bytes = match f.len() {
            11 => 7,
            10 => 6,
            _ => bail!("malformed row: {line}"),
        };
        rows.push(Row {
            rate: f[0].parse()?,
            workload: f[1].into(),
            model: f[2].into(),
            ms: f[4].parse()?,
            spread: match f.len() {
                11 => Some((f[5].parse()?, f[6].parse()?)),
                _ => None,
            },
            args: f[bytes].parse()?,
            states: f[bytes + 1].parse()?,
            wire: f[bytes + 3].parse()?,
        });
    }
    Ok(rows)
}

fn plot(csv: &Path, out: &Path) -> Result<()> {
    let rows = read_rows(csv)?;
    std::fs::create_dir_all(out)?;
    let mut workloads: Vec<String> = rows.iter().map(|r| r.workload.clone()).collect();
    workloads.sort();
    workloads.dedup();
    let mut rates: Vec<f64> = rows.iter().map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let find = |w: &str, m: &str, rate: f64| {
        rows.iter()
            .rev()
            .find(|r| r.workload == w && r.model == m && r.rate == rate)
    };
    let mut md = String::from(
        "# Emulated links: end-to-end delay, median of the timed runs (ms)\n\n| workload | model |",
    );
    for r in &rates {
        let _ = write!(md, " {r} Mb/s |");
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---:|".repeat(rates.len()));
    md.push('\n');
    for w in &workloads {
        let series: Vec<Series<'_>> = MODELS
            .iter()
            .map(|m| Series {
                label: m,
                values: rates
                    .iter()
                    .map(|&rate| find(w, m, rate).map_or(f64::NAN, |r| r.ms))
                    .collect(),
            })
            .collect();
        for m in MODELS {
            let _ = write!(md, "| {w} | {m} |");
            for &rate in &rates {
                let _ = match find(w, m, rate) {
                    Some(Row {
                        ms,
                        spread: Some((min, max)),
                        ..
                    }) => write!(md, " {ms:.0} ({min:.0}–{max:.0}) |"),
                    Some(r) => write!(md, " {:.0} |", r.ms),
                    None => write!(md, " – |"),
                };
            }
            md.push('\n');
        }
        report::loglog_chart(
            &out.join(format!("delay-{w}.svg")),
            &format!("{w}: end-to-end delay (median) vs link rate"),
            ("link rate, Mb/s", "delay, ms"),
            &rates,
            &series,
        )?;
    }
    // Traffic per execution at the highest rate measured.
    let top = rates.last().copied().context("no rows")?;
    let _ = writeln!(
        md,
        "\n# Traffic per execution at {top} Mb/s (kB: arguments + states; wire = all HTTP bytes)\n\n| workload | model | args | states | wire |\n|---|---|---:|---:|---:|"
    );
    let mut traffic: Vec<Series<'_>> = Vec::new();
    for m in MODELS {
        let mut values = Vec::new();
        for w in &workloads {
            let r = find(w, m, top);
            values.push(r.map_or(f64::NAN, |r| (r.args + r.states) / 1000.0));
            if let Some(r) = r {
                let _ = writeln!(
                    md,
                    "| {w} | {m} | {:.0} | {:.0} | {:.0} |",
                    r.args / 1000.0,
                    r.states / 1000.0,
                    r.wire / 1000.0
                );
            }
        }
        traffic.push(Series { label: m, values });
    }
    report::bar_chart(
        &out.join("traffic.svg"),
        &format!("arguments + states moved per execution at {top} Mb/s"),
        "kB",
        &workloads,
        &traffic,
    )?;
    std::fs::write(out.join("summary.md"), &md)?;
    println!("{md}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run {
            entry,
            nodes,
            rate,
            runs,
            workloads,
            stage,
            csv,
        } => run(&entry, &nodes, rate, runs, &workloads, &stage, &csv).await,
        Cmd::Plot { csv, out } => plot(&csv, &out),
    }
}
