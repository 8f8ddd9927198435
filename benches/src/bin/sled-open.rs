//! How long opening sled takes in a fresh process: the part of a node's
//! start → first reply that is sled's (README, the cold-start ladder).
//!
//! `cargo run --release -p edge-benches --bin sled-open -- [RUNS]` (default
//! 20): writes a small database in a temp dir (a few records, flushed, like
//! a node's with a handful of functions), then opens it RUNS times, each in
//! a new process (sled starts its IO thread pool once per process), and
//! prints the median, smallest and largest open time.

use anyhow::{Context, Result, bail};
use std::time::Instant;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--once") => {
            let dir = args.next().context("--once DIR")?;
            let started = Instant::now();
            let db = sled::Config::new()
                .path(&dir)
                .cache_capacity(8 << 20)
                .open()?;
            let took = started.elapsed();
            // Read something, so the open is not all that is measured away.
            let functions = db.open_tree("functions")?.len();
            println!("{} {functions}", took.as_micros());
            Ok(())
        }
        runs => {
            let runs: usize = runs.map(str::parse).transpose()?.unwrap_or(20);
            if runs == 0 {
                bail!("RUNS must be at least 1");
            }
            let dir = tempfile::tempdir()?;
            let db_dir = dir.path().join("db");
            {
                let db = sled::open(&db_dir)?;
                let functions = db.open_tree("functions")?;
                for i in 0..5 {
                    functions.insert(format!("hello-{i}"), vec![7u8; 300])?;
                }
                db.flush()?;
            }
            let me = std::env::current_exe()?;
            let mut us = Vec::with_capacity(runs);
            for _ in 0..runs {
                let out = std::process::Command::new(&me)
                    .arg("--once")
                    .arg(&db_dir)
                    .output()?;
                if !out.status.success() {
                    bail!("{}", String::from_utf8_lossy(&out.stderr));
                }
                let text = String::from_utf8(out.stdout)?;
                let (open, functions) = text.trim().split_once(' ').context("unexpected output")?;
                if functions != "5" {
                    bail!("read {functions} records, wrote 5");
                }
                us.push(open.parse::<u64>()?);
            }
            us.sort_unstable();
            let ms = |v: u64| v as f64 / 1000.0;
            println!(
                "sled open in a fresh process, {runs} runs: median {:.1} ms (smallest {:.1}, largest {:.1})",
                ms(us[us.len() / 2]),
                ms(us[0]),
                ms(us[us.len() - 1])
            );
            Ok(())
        }
    }
}
