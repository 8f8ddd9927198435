//! What the node does when its disk fills up.
//!
//! Every acknowledged write was flushed first, so a full disk never loses
//! one: the write that hits it is answered 507 `disk_full`. But sled 0.34
//! keeps such a write in memory and refuses every later write until it is
//! reopened (its error is sticky), so after the first one the node would
//! serve a state it never made durable and could not write again. Instead
//! it stops: every `/v1` request gets 507 and `/healthz` 503, and a watcher
//! probes the data dir every second; once a probe file can be written and
//! synced again, [`StorageGuard::recovered`] completes and the binary exits
//! non-zero so its supervisor (systemd's `Restart=on-failure`) starts it
//! again, reopening the database at the last acknowledged write.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The node's storage state: ok, or stopped after a full disk.
pub struct StorageGuard {
    data_dir: PathBuf,
    failed: AtomicBool,
    recovered: AtomicBool,
    why: Mutex<String>,
    notify: Notify,
}

impl StorageGuard {
    /// A guard for the data dir at `data_dir`.
    pub fn new(data_dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            data_dir,
            failed: AtomicBool::new(false),
            recovered: AtomicBool::new(false),
            why: Mutex::new(String::new()),
            notify: Notify::new(),
        })
    }

    /// Why storage stopped, when it has.
    pub fn failed(&self) -> Option<String> {
        self.failed
            .load(Ordering::Acquire)
            .then(|| self.why.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Stops storage after a full disk (once) and starts watching for space.
    pub fn stop(self: &Arc<Self>, why: &str) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why.to_owned();
        tracing::error!(
            error = why,
            "disk full: storage stopped; restarting once space returns"
        );
        let guard = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let dir = guard.data_dir.clone();
                let ok = tokio::task::spawn_blocking(move || probe(&dir))
                    .await
                    .unwrap_or(false);
                if ok {
                    tracing::warn!("space is back: exiting so the supervisor restarts the node");
                    guard.recovered.store(true, Ordering::Release);
                    guard.notify.notify_waiters();
                    return;
                }
            }
        });
    }

    /// Completes once space has returned after a stop.
    pub async fn recovered(&self) {
        loop {
            let notified = self.notify.notified();
            if self.recovered.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// True once space has returned after a stop.
    pub fn is_recovered(&self) -> bool {
        self.recovered.load(Ordering::Acquire)
    }
}

/// Writes and syncs 1 MiB in the data dir, then removes it.
fn probe(dir: &std::path::Path) -> bool {
    let path = dir.join(".space-probe");
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; 1 << 20])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written.is_ok()
}
