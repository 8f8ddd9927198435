//! Load from `wrk` (one thread, N keep-alive connections, bounded
//! duration), the same generator for every server: throughput, latency
//! percentiles and errors, read from a Lua `done` hook.

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// Full URL.
    pub url: String,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Session ids to send as `edge-session`, one per request in turn
    /// (empty: no header).
    pub sessions: Vec<String>,
    /// Open connections (each with one request in flight).
    pub connections: u32,
    /// How long to send.
    pub duration: Duration,
}

/// What `wrk` measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Completed requests.
    pub requests: u64,
    /// Seconds the run lasted.
    pub seconds: f64,
    /// Connect/read/write errors, timeouts and non-2xx/3xx answers.
    pub errors: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
}

impl Sample {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs `wrk` (at `wrk`) with `load`; `scratch` holds its Lua script.
pub fn run(wrk: &Path, scratch: &Path, load: &Load) -> Result<Sample> {
    let script = scratch.join("load.lua");
    std::fs::write(&script, lua(load)).context("writing the wrk script")?;
    let secs = load.duration.as_secs().max(1);
    let output = Command::new(wrk)
        .args([
            "-t1",
            &format!("-c{}", load.connections),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&script)
        .arg(&load.url)
        .output()
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("reading wrk's output: {stdout}"))
}

fn lua(load: &Load) -> String {
    let mut s = format!("wrk.method = \"{}\"\n", load.method);
    if !load.sessions.is_empty() {
        s.push_str("local sessions = {");
        for id in &load.sessions {
            let _ = write!(s, "\"{id}\",");
        }
        // Each session's request is made once, in `init`: made per request
        // (`wrk.format` in `request`), the Lua work made wrk -t1 the
        // bottleneck at ~30k req/s, below what the server could take.
        s.push_str(
            "}\nlocal prepared = {}\n\
             init = function(args)\n\
             for i, id in ipairs(sessions) do\n\
             prepared[i] = wrk.format(nil, nil, { [\"edge-session\"] = id })\n\
             end\n\
             end\n\
             local n = 0\n\
             request = function()\n\
             n = n % #prepared + 1\n\
             return prepared[n]\n\
             end\n",
        );
    }
    s.push_str(
        "done = function(summary, latency, requests)\n\
         local e = summary.errors\n\
         io.write(string.format(\"EDGE-BENCH %d %d %d %d %d\\n\", summary.requests, \
         summary.duration, e.connect + e.read + e.write + e.status + e.timeout, \
         latency:percentile(50), latency:percentile(99)))\n\
         end\n",
    );
    s
}

fn parse(stdout: &str) -> Result<Sample> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("EDGE-BENCH "))
        .context("no summary line")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|f| f.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let [requests, duration_us, errors, p50, p99] = v[..] else {
        bail!("expected 5 numbers, got {}", v.len());
    };
    Ok(Sample {
        requests: requests as u64,
        seconds: duration_us / 1e6,
        errors: errors as u64,
        p50_us: p50,
        p99_us: p99,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let s = parse("Running 1s test\nEDGE-BENCH 1000 2000000 3 150 900\n").unwrap();
        assert_eq!(s.requests, 1000);
        assert_eq!(s.errors, 3);
        assert!((s.rate() - 500.0).abs() < 1e-9);
        assert_eq!((s.p50_us, s.p99_us), (150.0, 900.0));
        assert!(parse("no summary").is_err());
    }

    #[test]
    fn rotates_sessions_only_when_asked() {
        let mut load = Load {
            url: "http://127.0.0.1:1/".into(),
            method: "GET",
            sessions: vec![],
            connections: 1,
            duration: Duration::from_secs(1),
        };
        assert!(!lua(&load).contains("request ="));
        load.sessions = vec!["a".into(), "b".into()];
        let script = lua(&load);
        assert!(script.contains("\"a\",\"b\","));
        assert!(script.contains("edge-session"));
    }
}
