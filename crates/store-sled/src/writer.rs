//! One thread owns every write to this node's sled database: group commit.
//!
//! sled 0.34 guards its trees with a process-wide, writer-preferring lock
//! that the first `Tree::transaction` or `apply_batch` switches on for good.
//! From then on every read and every flush takes the shared side, batches
//! and transactions the exclusive side, and `flush_async` parks a thread of
//! sled's I/O pool in `make_stable` while it holds the shared side. Many
//! async workers committing and flushing at once wedged the node for good:
//! a transaction waiting for the exclusive side blocked every new reader,
//! including the I/O threads a pending flush was waiting for.
//!
//! So nothing but the writer thread writes or flushes:
//! - callers queue a job (a closure that checks versions and applies the
//!   commit: one insert for one key, one [`sled::Batch`] for several) and
//!   wait for its answer;
//! - the thread takes every job queued, runs them one after another (each
//!   sees the writes of the ones before it), then flushes **once** for the
//!   whole batch and only then answers: a commit is acknowledged after it is
//!   on disk, and concurrent commits share one fsync;
//! - the only thread that ever asks for sled's exclusive lock holds no
//!   shared guard meanwhile, and no thread holding a shared guard waits for
//!   the writer, so the lock has no cycle to close;
//! - a caller whose deadline passes before the writer took its job cancels
//!   it: the write never happens and the caller is told so; once taken, the
//!   caller waits for the flush, so a write is never both done and reported
//!   as failed;
//! - after a failed flush (a full disk) sled refuses every later write until
//!   it is reopened, so the writer answers [`StoreError::Full`] at once.

use edge_host_api::StoreError;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// Where a job stands: waiting in the queue, taken by the writer, or given
/// up by its caller (then it never runs).
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const CANCELLED: u8 = 2;

/// How long past its deadline a started write may take to be confirmed.
const STALL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a write without a deadline may take to be confirmed.
const UNCONFIRMED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Jobs taken into one batch (one flush) at most.
const MAX_BATCH: usize = 512;

/// Answers a job once its batch is flushed (or failed to be).
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What a job did.
enum Outcome {
    /// Nothing written (failed, refused, or its caller had gone).
    Nothing,
    /// Written; answer once the batch is flushed.
    Durable(Done),
    /// Written and already answered; flush within this interval.
    Relaxed(std::time::Duration),
}

/// One queued write, given the database (or the sticky error that refuses
/// every write).
type Job = Box<dyn FnOnce(Result<&sled::Db, StoreError>) -> Outcome + Send>;

/// The database once the writer thread opened it (or why it could not).
type Opened = Option<Result<sled::Db, StoreError>>;

/// The handle to the writer thread; cheap to clone. The thread stops (after
/// a last flush) when every handle is gone.
#[derive(Clone)]
pub struct SledWriter {
    queue: mpsc::Sender<Job>,
    opened: tokio::sync::watch::Receiver<Opened>,
}

impl std::fmt::Debug for SledWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledWriter").finish_non_exhaustive()
    }
}

impl SledWriter {
    /// Starts the writer thread for `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let (_open, opened) = tokio::sync::watch::channel(Some(Ok(db.clone())));
        std::thread::Builder::new()
            .name("edge-sled-writer".into())
            .spawn(move || run(&db, &jobs))?;
        Ok(Self { queue, opened })
    }

    /// Starts the writer thread, which opens the database with `config`
    /// first: the caller goes on at once (a node answers calls that need no
    /// state meanwhile). Writes queued before the database is open wait for
    /// it; [`SledWriter::db`] waits for it too. If it cannot be opened, every
    /// write and [`SledWriter::db`] get the reason.
    pub fn open(config: sled::Config) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let (open, opened) = tokio::sync::watch::channel(None);
        std::thread::Builder::new()
            .name("edge-sled-writer".into())
            .spawn(
                move || match on_one_core(|| open_waiting_for_lock(&config)) {
                    Ok(db) => {
                        open.send_replace(Some(Ok(db.clone())));
                        run(&db, &jobs);
                    }
                    Err(e) => {
                        let e = crate::store_error(e);
                        tracing::error!(error = %e, "the database could not be opened");
                        open.send_replace(Some(Err(e.clone())));
                        for job in jobs.iter() {
                            let _ = job(Err(e.clone()));
                        }
                    }
                },
            )?;
        Ok(Self { queue, opened })
    }

    /// The database, once open (for reads; writes go through
    /// [`SledWriter::write`]), or why it could not be opened.
    pub async fn db(&self) -> Result<sled::Db, StoreError> {
        if let Some(done) = self.opened.borrow().as_ref() {
            return done.clone();
        }
        let mut opened = self.opened.clone();
        let done = opened
            .wait_for(Option::is_some)
            .await
            .map_err(|_| stopped())?;
        done.as_ref().cloned().unwrap_or_else(|| Err(stopped()))
    }

    /// The tree `name`, opened (and created if new) on the writer thread,
    /// once the database is open.
    pub async fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        let name = name.to_owned();
        self.write(move |db| db.open_tree(name).map_err(crate::store_error))
            .await
    }

    /// The database if it is open already.
    pub fn db_now(&self) -> Option<sled::Db> {
        match self.opened.borrow().as_ref() {
            Some(Ok(db)) => Some(db.clone()),
            _ => None,
        }
    }

    /// Runs `f` on the writer thread and answers once what it wrote is on
    /// disk. `f` must not block: it checks versions and applies batches.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&sled::Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_until(None, f).await
    }

    /// As [`SledWriter::write`], giving up at `deadline` if the writer has
    /// not started `f` by then: `f` then never runs and the answer is
    /// [`StoreError::Timeout`]. Once started, the answer is awaited, so a
    /// write is never both done and reported as not done.
    pub async fn write_until<T, F>(
        &self,
        deadline: Option<std::time::Instant>,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&sled::Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(deadline, None, f).await
    }

    /// Relaxed durability: as [`SledWriter::write_until`], but answered as
    /// soon as `f` applied its batch, before it is on disk; the writer
    /// flushes it within `interval`. A crash may lose what was answered in
    /// the last `interval` — only for callers that chose that.
    pub async fn write_relaxed<T, F>(
        &self,
        deadline: Option<std::time::Instant>,
        interval: std::time::Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&sled::Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(deadline, Some(interval), f).await
    }

    async fn submit<T, F>(
        &self,
        deadline: Option<std::time::Instant>,
        relaxed: Option<std::time::Duration>,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&sled::Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, mut rx) = oneshot::channel::<Result<T, StoreError>>();
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let claimed = claim.clone();
        let job: Job = Box::new(move |db| {
            let started =
                claimed.compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire);
            if started.is_err() || tx.is_closed() {
                return Outcome::Nothing;
            }
            match (db.and_then(f), relaxed) {
                (Err(e), _) => {
                    let _ = tx.send(Err(e));
                    Outcome::Nothing
                }
                (Ok(value), Some(interval)) => {
                    let _ = tx.send(Ok(value));
                    Outcome::Relaxed(interval)
                }
                (Ok(value), None) => {
                    Outcome::Durable(Box::new(move |flushed: Result<(), StoreError>| {
                        let _ = tx.send(flushed.map(|()| value));
                    }))
                }
            }
        });
        self.queue.send(job).map_err(|_| stopped())?;
        if let Some(deadline) = deadline {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(wait, &mut rx).await {
                Ok(answer) => return answer.map_err(|_| stopped())?,
                Err(_) => {
                    let gave_up = claim
                        .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if gave_up {
                        return Err(StoreError::Timeout);
                    }
                    // Started before we gave up: its answer is the truth.
                }
            }
        }
        // A flush that never returns (a disk that stopped answering) must
        // not hold the caller for ever either: past this bound the write is
        // reported unconfirmed — neither acknowledged nor known to be lost.
        let bound = deadline
            .map_or(UNCONFIRMED_AFTER, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            })
            .saturating_add(STALL_GRACE);
        match tokio::time::timeout(bound, rx).await {
            Ok(answer) => answer.map_err(|_| stopped())?,
            Err(_) => Err(StoreError::Backend(format!(
                "the disk did not confirm the write within {bound:?}: it is not acknowledged"
            ))),
        }
    }

    /// Answers once everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(|_| Ok(())).await
    }
}

/// How long an open waits for sled's lock on the database.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the database; while sled's lock on it is held, tries again for up
/// to [`LOCK_WAIT`]. The caller makes sure no other process uses the
/// directory (a node takes a lock file of its own first): the holder can
/// only be the writer thread of a node just dropped in this process, which
/// ends after its last flush.
fn open_waiting_for_lock(config: &sled::Config) -> sled::Result<sled::Db> {
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            // sled says so in the message only (`ErrorKind::Other`).
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// Runs `open` with this thread confined to one core, then gives every
/// thread so confined the process's cores back.
///
/// sled 0.34 starts its I/O thread pool while it opens a database, and each
/// new pool thread spins until the last one is started (sled's `Lazy`): on
/// 2 cores those threads took the CPU from the rest of a starting node for
/// several milliseconds. Threads inherit their creator's cores, so here
/// they spin on one core only, and the others keep serving.
#[cfg(target_os = "linux")]
fn on_one_core<T>(open: impl FnOnce() -> T) -> T {
    use rustix::thread::{CpuSet, Pid, sched_getaffinity, sched_setaffinity};
    let Ok(all) = sched_getaffinity(None) else {
        return open();
    };
    let Some(last) = (0..CpuSet::MAX_CPU).rev().find(|&c| all.is_set(c)) else {
        return open();
    };
    if all.count() < 2 {
        return open();
    }
    let mut one = CpuSet::new();
    one.set(last);
    if sched_setaffinity(None, &one).is_err() {
        return open();
    }
    let opened = open();
    // This thread and the ones sled started meanwhile (nothing else of the
    // process runs on exactly that one core).
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    for task in tasks.flatten() {
        let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
        let Some(tid) = tid.and_then(Pid::from_raw) else {
            continue;
        };
        if sched_getaffinity(Some(tid)).is_ok_and(|mask| mask == one) {
            let _ = sched_setaffinity(Some(tid), &all);
        }
    }
    opened
}

#[cfg(not(target_os = "linux"))]
fn on_one_core<T>(open: impl FnOnce() -> T) -> T {
    open()
}

fn stopped() -> StoreError {
    StoreError::Backend("the state writer stopped".into())
}

fn run(db: &sled::Db, jobs: &mpsc::Receiver<Job>) {
    let mut failed: Option<StoreError> = None;
    let mut done: Vec<Done> = Vec::with_capacity(MAX_BATCH);
    // When relaxed writes not yet on disk must be flushed at the latest.
    let mut flush_by: Option<std::time::Instant> = None;
    loop {
        let first = match flush_by {
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
            Some(at) => {
                match jobs.recv_timeout(at.saturating_duration_since(std::time::Instant::now())) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Relaxed writes were answered already; a failure
                        // is logged and refuses every later write.
                        let _ = flush(db, &mut failed, 0);
                        flush_by = None;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            taken += 1;
            // A failed flush is sticky in sled: refuse without writing.
            let given = match &failed {
                Some(e) => Err(e.clone()),
                None => Ok(db),
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| job(given))) {
                Ok(Outcome::Durable(d)) => done.push(d),
                Ok(Outcome::Relaxed(interval)) => {
                    let at = std::time::Instant::now() + interval;
                    flush_by = Some(flush_by.map_or(at, |by| by.min(at)));
                }
                Ok(Outcome::Nothing) => {}
                Err(_) => tracing::error!("a state write panicked"),
            }
            if taken < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        if done.is_empty() {
            continue;
        }
        // Everything applied so far — relaxed writes too — goes to disk now.
        let flushed = flush(db, &mut failed, done.len());
        flush_by = None;
        for d in done.drain(..) {
            d(flushed.clone());
        }
    }
    // Every handle is gone: make what was written durable before the end.
    if failed.is_none() {
        let _ = flush(db, &mut failed, 0);
    }
}

/// One flush of everything applied; after a failure every later write is
/// refused (`failed`).
fn flush(db: &sled::Db, failed: &mut Option<StoreError>, waiting: usize) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let flushed = db.flush().map(|_| ()).map_err(crate::store_error);
    tracing::trace!(
        waiting,
        flush_us = started.elapsed().as_micros() as u64,
        "group commit"
    );
    if let Err(e) = &flushed {
        tracing::error!(error = %e, "flushing the state failed; refusing writes from now on");
        *failed = Some(e.clone());
    }
    flushed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn writes_queued_while_the_database_opens_are_written_once_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // Another handle holds sled's lock: the open waits for it.
        let holder = sled::open(&path).unwrap();
        let writer = SledWriter::open(sled::Config::new().path(&path)).unwrap();
        assert!(writer.db_now().is_none());
        let queued = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .write(|db| db.insert("k", "v").map_err(crate::store_error))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!queued.is_finished(), "written before the database opened");
        drop(holder);
        queued.await.unwrap().unwrap();
        let db = writer.db().await.unwrap();
        assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[tokio::test]
    async fn a_database_that_cannot_open_fails_every_write_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"a file, not a database").unwrap();
        let writer = SledWriter::open(sled::Config::new().path(&path)).unwrap();
        assert!(writer.db().await.is_err());
        let refused = writer.write(|_| Ok(())).await;
        assert!(
            matches!(refused, Err(StoreError::Backend(_))),
            "{refused:?}"
        );
    }
}
