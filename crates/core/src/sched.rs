//! Where guest code runs.
//!
//! A call starts on the runtime that serves HTTP, so a short call pays no
//! hand-off. A call whose guest code has run across `slice` epoch ticks
//! (the epoch callback counts them; time spent waiting for I/O or for a
//! core does not count) is asked to move, and at its next yield moves to
//! the *background* runtime. Its threads run under Linux's `SCHED_IDLE`
//! policy: any other thread of the node that wakes up takes their core at
//! once (a higher nice value would only shrink their share: a waking thread
//! could still wait out their scheduler slice, milliseconds). There is one
//! fewer of them than there are cores, so a spinning or memory-hungry guest
//! gets the idle time of all cores but one, and the kernel work its memory
//! causes never occupies every core. A function whose call trapped or ran
//! past its deadline is *penalised* for a while: its calls start in the
//! background at once.
//!
//! Guest code itself never notices: the same future is polled, only by a
//! different thread.

use prometheus::IntCounterVec;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// How calls are moved to the background.
#[derive(Debug, Clone)]
pub struct SchedConfig {
    /// A call whose guest code has run across this many epoch ticks moves
    /// to the background; `None` keeps every call where it started (and
    /// starts no background runtime).
    pub slice: Option<u32>,
    /// Background worker threads; 0 means one fewer than the cores (at least
    /// one). Fewer threads than cores keeps a core free of long guest code
    /// and of the kernel work it causes (faulting in and freeing its
    /// memory, which the kernel does not preempt at once), at the cost of
    /// long calls' throughput.
    pub threads: usize,
    /// How long a function that misbehaved starts its calls in the
    /// background.
    pub penalty: Duration,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            slice: Some(2),
            threads: 0,
            penalty: Duration::from_secs(10),
        }
    }
}

/// The background runtime could not be started.
#[derive(Debug, thiserror::Error)]
#[error("background runtime: {0}")]
pub struct SchedError(#[from] std::io::Error);

/// The background runtime shut down before the call ended.
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct Cancelled;

/// Where one call runs, shared by its store's epoch callback (which asks
/// for a move) and the scheduler (which makes it). Kept in the store, so
/// that the instance is freed on the side it ran on.
#[derive(Debug, Clone, Default)]
pub struct Placement(Arc<AtomicU8>);

const ASKED: u8 = 1;
const MOVED: u8 = 2;

impl Placement {
    fn send_to_background(&self) {
        self.0.fetch_or(MOVED, Ordering::Relaxed);
    }

    /// Called by the epoch callback when the call has run its slice.
    pub fn ask_to_move(&self) {
        self.0.fetch_or(ASKED, Ordering::Relaxed);
    }

    fn asked(&self) -> bool {
        self.0.load(Ordering::Relaxed) & ASKED != 0
    }

    /// Whether the call runs in the background.
    pub fn in_background(&self) -> bool {
        self.0.load(Ordering::Relaxed) & MOVED != 0
    }
}

/// One call's count of epoch ticks, kept in its store.
#[derive(Debug, Clone, Default)]
pub struct CallClock {
    /// Where the call runs.
    pub placement: Placement,
    ticks: u32,
    slice: Option<u32>,
}

impl CallClock {
    /// Called from the epoch callback: once the call's guest code has run
    /// across its slice of ticks, asks the scheduler to move it.
    pub fn tick(&mut self) {
        self.ticks = self.ticks.saturating_add(1);
        if let Some(slice) = self.slice
            && self.ticks >= slice
        {
            self.placement.ask_to_move();
        }
    }
}

/// Per function: until when its calls start in the background, in
/// milliseconds since the scheduler started (0: not penalised).
#[derive(Debug, Default)]
pub struct Penalty(AtomicU64);

/// The background runtime, shut down without blocking when dropped (a node
/// may be dropped inside async code).
struct Background(Option<Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Moves long and misbehaving calls to the background runtime.
pub struct Scheduler {
    background: Option<Background>,
    config: SchedConfig,
    epoch: Instant,
    /// Calls run in the background, by reason (`moved`, `penalised`).
    counter: IntCounterVec,
    /// Calls in the background now.
    running: Arc<AtomicUsize>,
}

/// Counts a call as running in the background until dropped.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Scheduler {
    /// Starts the background runtime (`config.threads` workers) unless
    /// `config.slice` is `None`.
    pub fn new(config: SchedConfig, counter: IntCounterVec) -> Result<Self, SchedError> {
        let background = match config.slice {
            None => None,
            Some(_) => {
                let workers = match config.threads {
                    0 => std::thread::available_parallelism()
                        .map_or(1, |n| n.get().saturating_sub(1).max(1)),
                    n => n,
                };
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("edge-background")
                    .enable_all()
                    .on_thread_start(lower_priority)
                    .build()?;
                Some(Background(Some(rt)))
            }
        };
        Ok(Self {
            background,
            config,
            epoch: Instant::now(),
            counter,
            running: Arc::default(),
        })
    }

    fn handle(&self) -> Option<&Handle> {
        self.background.as_ref()?.0.as_ref().map(Runtime::handle)
    }

    /// Runs `task` on the background runtime (its blocking work too runs
    /// under `SCHED_IDLE`), else on the current runtime.
    pub fn spawn_idle(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self.handle() {
            Some(h) => drop(h.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Whether any call runs in the background now (and may be holding the
    /// memory-map lock for long: growing, faulting in or freeing memory).
    pub fn busy(&self) -> bool {
        self.running.load(Ordering::Relaxed) > 0
    }

    /// A clock for a call starting now.
    pub fn clock(&self) -> CallClock {
        CallClock {
            placement: Placement::default(),
            ticks: 0,
            slice: self.config.slice,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts `function`'s calls in the background for the penalty period.
    pub fn penalise(&self, penalty: &Penalty) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.config.penalty.as_millis()).unwrap_or(u64::MAX));
        penalty.0.fetch_max(until, Ordering::Relaxed);
    }

    fn penalised(&self, penalty: &Penalty) -> bool {
        penalty.0.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Runs `call` (whose store carries `placement`) here until its epoch
    /// callback asks for a move, then in the background; penalised
    /// functions start there. Dropping the returned future stops the call
    /// wherever it runs. The call comes boxed: it can move to the
    /// background half-way, and the futures around it move a pointer.
    pub async fn run<F>(
        &self,
        penalty: &Penalty,
        placement: &Placement,
        mut call: Pin<Box<F>>,
    ) -> Result<F::Output, Cancelled>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(handle) = self.handle() else {
            return Ok(call.await);
        };
        if self.penalised(penalty) {
            self.counter.with_label_values(&["penalised"]).inc();
            placement.send_to_background();
            let _running = Running::new(&self.running);
            return in_background(handle, call).await;
        }
        let finished = poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            // The epoch callback asked and yielded: move now.
            Poll::Pending if placement.asked() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        match finished {
            Some(out) => Ok(out),
            None => {
                // Not penalised for this alone: a call that was merely slow
                // once moves, and the function's next call starts here.
                self.counter.with_label_values(&["moved"]).inc();
                placement.send_to_background();
                let _running = Running::new(&self.running);
                in_background(handle, call).await
            }
        }
    }
}

/// Aborts the background task when the caller stops waiting for it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn in_background<F>(handle: &Handle, call: F) -> Result<F::Output, Cancelled>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut task = AbortOnDrop(handle.spawn(call));
    match (&mut task.0).await {
        Ok(out) => Ok(out),
        // A panic in host code stays a panic of the request, as it would be
        // had the call not moved.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Cancelled),
    }
}

/// Puts the calling thread under `SCHED_IDLE` (the policy is per thread).
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    static WARNED: AtomicBool = AtomicBool::new(false);
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = ?e, "cannot lower the background threads' priority; long calls compete with short ones");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn scheduler(slice: Option<u32>) -> Scheduler {
        let counter = IntCounterVec::new(Opts::new("c", "c"), &["reason"]).unwrap();
        Scheduler::new(
            SchedConfig {
                slice,
                threads: 0,
                penalty: Duration::from_secs(60),
            },
            counter,
        )
        .unwrap()
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_owned()
    }

    /// The scheduling policy of the calling thread, from /proc (5 is
    /// `SCHED_IDLE`).
    fn own_policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Field 41; the command name (field 2) may hold spaces, so count
        // from its closing parenthesis.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(38).unwrap().parse().unwrap()
    }

    /// A call that yields `polls` times, each time after `ticks` epoch
    /// ticks of its clock.
    async fn call(mut clock: CallClock, polls: u32, ticks: u32) -> (String, u32) {
        for _ in 0..polls {
            for _ in 0..ticks {
                clock.tick();
            }
            tokio::task::yield_now().await;
        }
        (thread_name(), own_policy())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn short_calls_stay_and_long_ones_move_to_idle_priority_threads() {
        let s = scheduler(Some(2));
        let here = thread_name();
        let penalty = Penalty::default();

        // A call that waits long but runs across fewer ticks than its
        // slice stays.
        let clock = s.clock();
        let placement = clock.placement.clone();
        let waits = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            call(clock, 1, 1).await
        };
        let (thread, policy) = s.run(&penalty, &placement, Box::pin(waits)).await.unwrap();
        assert_eq!(thread, here);
        assert_eq!(policy, own_policy());
        assert_ne!(policy, 5);
        assert!(!placement.in_background());
        assert!(!s.penalised(&penalty));

        let clock = s.clock();
        let placement = clock.placement.clone();
        let long = call(clock, 3, 1);
        let (thread, policy) = s.run(&penalty, &placement, Box::pin(long)).await.unwrap();
        assert_eq!(thread, "edge-background");
        assert_eq!(policy, 5, "background threads run under SCHED_IDLE");
        assert!(placement.in_background());
        assert!(!s.penalised(&penalty), "moving alone does not penalise");

        // Penalised (as a trap or a missed deadline does): even a short
        // call starts in the background.
        s.penalise(&penalty);
        let clock = s.clock();
        let placement = clock.placement.clone();
        let (thread, _) = s
            .run(&penalty, &placement, Box::pin(call(clock, 1, 0)))
            .await
            .unwrap();
        assert_eq!(thread, "edge-background");
        assert!(placement.in_background());
        assert_eq!(s.counter.with_label_values(&["moved"]).get(), 1);
        assert_eq!(s.counter.with_label_values(&["penalised"]).get(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_slice_nothing_moves() {
        let off = scheduler(None);
        let clock = off.clock();
        let placement = clock.placement.clone();
        let (thread, _) = off
            .run(&Penalty::default(), &placement, Box::pin(call(clock, 3, 5)))
            .await
            .unwrap();
        assert_eq!(thread, thread_name());
        assert!(!placement.in_background());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_caller_stops_a_moved_call() {
        let s = scheduler(Some(2));
        let penalty = Penalty::default();
        s.penalise(&penalty);
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped.clone());
        let forever = async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        };
        let placement = Placement::default();
        {
            let mut run = std::pin::pin!(s.run(&penalty, &placement, Box::pin(forever)));
            let r = tokio::time::timeout(Duration::from_millis(50), &mut run).await;
            assert!(r.is_err());
            assert!(s.busy(), "the call runs in the background");
        }
        assert!(!s.busy());
        for _ in 0..200 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the background task kept running after its caller gave up");
    }
}
