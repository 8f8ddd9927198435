//! Compiling untrusted components without letting them stall the node.
//!
//! Wasmtime's security model leaves denial of service *while compiling* to
//! the embedder. A compile bomb (a huge function, tens of thousands of
//! functions, deep nesting, giant segments) can take minutes and gigabytes
//! in Cranelift, so by default the node compiles in a child process — this
//! same executable, run as `edge-node __compile` — that caps its own address
//! space and CPU time with rlimits before it reads the component; the parent
//! kills it at the wall-clock limit. A crash, an abort on a refused
//! allocation or a panic in the compiler ends the child, never the node.
//! Without a worker (library use, tests in-process) compilation runs on a
//! blocking thread with the panic caught.

use crate::EngineConfig;
use crate::engine::build_engine;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How uploads are compiled.
#[derive(Debug, Clone)]
pub struct CompileConfig {
    /// Components compiled at once; further uploads wait.
    pub concurrency: usize,
    /// The executable to run as `<worker> __compile` (normally `edge-node`
    /// itself); `None` compiles in-process.
    pub worker: Option<PathBuf>,
    /// Wall-clock limit of one compilation (also its CPU-time rlimit).
    pub timeout: Duration,
    /// Address-space limit of the compiling process, in bytes.
    pub memory_bytes: u64,
}

impl Default for CompileConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            worker: None,
            timeout: Duration::from_secs(30),
            memory_bytes: 2 << 30,
        }
    }
}

/// Why a compilation in the worker failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The component is invalid (the compiler said why).
    #[error("{0}")]
    Invalid(String),
    /// The compilation went past a limit and was stopped.
    #[error("{0}")]
    Limit(String),
    /// The worker could not run or failed for another reason.
    #[error("{0}")]
    Failed(String),
}

/// What a successful worker run produced.
#[derive(Debug)]
pub struct WorkerOutput {
    /// The serialized component.
    pub artifact: Vec<u8>,
    /// The worker's peak resident memory, in bytes, when it reported it.
    pub peak_rss_bytes: Option<u64>,
}

/// Exit status of the worker for an invalid component.
const EXIT_INVALID: u8 = 3;
/// Prefix of the worker's last stderr line: its peak RSS in KiB.
const PEAK_RSS: &str = "edge-compile peak-rss-kib=";

/// Compiles `source` in a child process under `cfg`'s limits, with the
/// engine settings of `engine` (so the artifact loads in this node).
pub async fn in_worker(
    cfg: &CompileConfig,
    worker: &std::path::Path,
    engine: &EngineConfig,
    source: &[u8],
) -> Result<WorkerOutput, WorkerError> {
    let cpu_secs = cfg.timeout.as_secs().max(1) + 1;
    let mut child = tokio::process::Command::new(worker)
        .arg("__compile")
        .args(["--memory-bytes", &cfg.memory_bytes.to_string()])
        .args(["--cpu-secs", &cpu_secs.to_string()])
        .args(["--max-memory-bytes", &engine.max_memory_bytes.to_string()])
        .args(["--guard-bytes", &engine.memory_guard_bytes.to_string()])
        .args(["--max-wasm-stack", &engine.max_wasm_stack.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| WorkerError::Failed(format!("cannot start the compiler process: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| WorkerError::Failed("no stdin for the compiler process".into()))?;
    let input = source.to_vec();
    let feed = tokio::spawn(async move {
        // A worker that dies early closes the pipe: its exit says why.
        let _ = stdin.write_all(&input).await;
    });
    let waited = tokio::time::timeout(cfg.timeout, child.wait_with_output()).await;
    feed.abort();
    let out = match waited {
        Err(_) => {
            return Err(WorkerError::Limit(format!(
                "compilation took longer than {:?} and was stopped",
                cfg.timeout
            )));
        }
        Ok(r) => r.map_err(|e| WorkerError::Failed(format!("compiler process: {e}")))?,
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let peak_rss_bytes = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(PEAK_RSS))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let message = stderr
        .lines()
        .filter(|l| !l.starts_with(PEAK_RSS))
        .collect::<Vec<_>>()
        .join("\n");
    match out.status.code() {
        Some(0) => Ok(WorkerOutput {
            artifact: out.stdout,
            peak_rss_bytes,
        }),
        Some(c) if c == i32::from(EXIT_INVALID) => Err(WorkerError::Invalid(message)),
        Some(101) => Err(WorkerError::Failed(format!(
            "the compiler panicked: {}",
            message.lines().next().unwrap_or_default()
        ))),
        Some(c) if message.contains("memory allocation") => Err(WorkerError::Limit(format!(
            "compilation needed more than {} MiB and was stopped (exit {c})",
            cfg.memory_bytes >> 20
        ))),
        // The shell's and the kernel's "could not run it": under qemu-user
        // without binfmt_misc an emulated node cannot start its own binary.
        Some(c @ (126 | 127)) => Err(WorkerError::Failed(format!(
            "the compiler process `{} __compile` could not be run (exit {c}){}; \
             a node that cannot start processes of its own binary (e.g. under \
             emulation) compiles with --compile-in-process",
            worker.display(),
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ))),
        Some(c) => Err(WorkerError::Failed(format!(
            "compiler process exited with {c}: {message}"
        ))),
        None => Err(WorkerError::Limit(format!(
            "compilation went past its limits ({} MiB, {cpu_secs} s of CPU) and was stopped ({})",
            cfg.memory_bytes >> 20,
            out.status
        ))),
    }
}

/// Settings of one worker run, parsed from its command line.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Address-space limit (RLIMIT_AS), bytes.
    #[arg(long)]
    memory_bytes: u64,
    /// CPU-time limit (RLIMIT_CPU), seconds.
    #[arg(long)]
    cpu_secs: u64,
    /// The node's engine: largest linear memory.
    #[arg(long)]
    max_memory_bytes: usize,
    /// The node's engine: guard region.
    #[arg(long)]
    guard_bytes: u64,
    /// The node's engine: wasm stack.
    #[arg(long)]
    max_wasm_stack: usize,
}

/// The worker: limits itself, reads a component on stdin, writes its
/// compiled artifact on stdout. Exit 0 ok, 3 invalid, 1 other failures.
pub fn worker_main(args: WorkerArgs) -> ExitCode {
    let limits = rlimit::setrlimit(rlimit::Resource::AS, args.memory_bytes, args.memory_bytes)
        .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, args.cpu_secs, args.cpu_secs))
        .and_then(|()| rlimit::setrlimit(rlimit::Resource::CORE, 0, 0));
    if let Err(e) = limits {
        eprintln!("cannot set the compiler's limits: {e}");
        return ExitCode::FAILURE;
    }
    let mut source = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut source) {
        eprintln!("reading the component: {e}");
        return ExitCode::FAILURE;
    }
    // The artifact must load in the parent: same compiler settings. The
    // instance allocator is not part of an artifact's compatibility, and
    // a pool would reserve address space the rlimit is meant to cap.
    let engine = match build_engine(&EngineConfig {
        max_memory_bytes: args.max_memory_bytes,
        memory_guard_bytes: args.guard_bytes,
        max_wasm_stack: args.max_wasm_stack,
        pooling: false,
        ..EngineConfig::default()
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("building the engine: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match engine.precompile_component(&source) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("writing the artifact: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(EXIT_INVALID)
        }
    };
    if let Some(kib) = peak_rss_kib() {
        eprintln!("{PEAK_RSS}{kib}");
    }
    code
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod worker_tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_cannot_run_is_named_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let worker = dir.path().join("not-runnable");
        // What qemu-user's child does when it cannot exec the binary.
        std::fs::write(&worker, "#!/bin/sh\nexit 127\n").unwrap();
        let status = std::process::Command::new("chmod")
            .arg("+x")
            .arg(&worker)
            .status()
            .unwrap();
        assert!(status.success());
        let cfg = CompileConfig::default();
        let err = in_worker(&cfg, &worker, &EngineConfig::default(), b"\0asm")
            .await
            .unwrap_err();
        let WorkerError::Failed(message) = err else {
            panic!("{err:?}");
        };
        assert!(message.contains("could not be run (exit 127)"), "{message}");
        assert!(message.contains("--compile-in-process"), "{message}");
        assert!(message.contains("not-runnable"), "{message}");
    }
}
