//! Where guest code runs.
//!
//! A call starts on the runtime that serves HTTP, so a short call pays no
//! hand-off. A call that has used up its slice of CPU time (measured around
//! each poll of it; a guest yields at every epoch tick) and is not done
//! moves to the *background* runtime,
//! whose threads run under Linux's `SCHED_IDLE` policy: any other thread of
//! the node that wakes up takes their core at once (a higher nice value
//! would only shrink their share: a waking thread could still wait out
//! their scheduler slice, milliseconds). A spinning or memory-hungry guest
//! then gets every core the node's other work leaves idle, and no more.
//! A function whose call trapped, ran past
//! its deadline or used up a slice is *penalised* for a while: its calls
//! start in the background at once.
//!
//! Guest code itself never notices: the same future is polled, only by a
//! different thread.

use prometheus::IntCounterVec;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// How calls are moved to the background.
#[derive(Debug, Clone)]
pub struct SchedConfig {
    /// A call that has used this much CPU time and is not done moves to the
    /// background; `None` keeps every call where it started (and starts no
    /// background runtime).
    pub slice: Option<Duration>,
    /// How long a function that misbehaved starts its calls in the
    /// background.
    pub penalty: Duration,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            slice: Some(Duration::from_millis(2)),
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

/// Where one call runs: set once the scheduler has sent it to the
/// background. Kept in the call's store, so that the instance is freed on
/// the side it ran on.
#[derive(Debug, Clone, Default)]
pub struct Placement(Arc<AtomicBool>);

impl Placement {
    fn send_to_background(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the call runs (or is about to run) in the background.
    pub fn in_background(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
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
}

impl Scheduler {
    /// Starts the background runtime (one worker per core) unless
    /// `config.slice` is `None`.
    pub fn new(config: SchedConfig, counter: IntCounterVec) -> Result<Self, SchedError> {
        let background = match config.slice {
            None => None,
            Some(_) => {
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
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
        })
    }

    fn handle(&self) -> Option<&Handle> {
        self.background.as_ref()?.0.as_ref().map(Runtime::handle)
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

    /// Runs `call` (whose store carries `placement`) here until it has
    /// used its slice of CPU time, then in the background; penalised
    /// functions start there. Dropping the returned future stops the call
    /// wherever it runs.
    pub async fn run<F>(
        &self,
        penalty: &Penalty,
        placement: &Placement,
        call: F,
    ) -> Result<F::Output, Cancelled>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (Some(handle), Some(slice)) = (self.handle(), self.config.slice) else {
            return Ok(call.await);
        };
        if self.penalised(penalty) {
            self.counter.with_label_values(&["penalised"]).inc();
            placement.send_to_background();
            return in_background(handle, call).await;
        }
        let mut call = Box::pin(call);
        // CPU time, not wall time: a short call that waited for a core (or
        // for I/O) has not used its slice.
        let mut used = Duration::ZERO;
        let finished = poll_fn(|cx| {
            let before = thread_cpu_time();
            let polled = call.as_mut().poll(cx);
            used += thread_cpu_time().saturating_sub(before);
            match polled {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending if used >= slice => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match finished {
            Some(out) => Ok(out),
            None => {
                self.counter.with_label_values(&["moved"]).inc();
                self.penalise(penalty);
                placement.send_to_background();
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

    fn scheduler(slice: Option<Duration>) -> Scheduler {
        let counter = IntCounterVec::new(Opts::new("c", "c"), &["reason"]).unwrap();
        Scheduler::new(
            SchedConfig {
                slice,
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

    /// A call that yields `polls` times, each time after burning `cpu` of
    /// CPU time.
    async fn call(polls: u32, cpu: Duration) -> (String, u32) {
        for _ in 0..polls {
            let until = thread_cpu_time() + cpu;
            while thread_cpu_time() < until {
                std::hint::spin_loop();
            }
            tokio::task::yield_now().await;
        }
        (thread_name(), own_policy())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn short_calls_stay_and_long_ones_move_to_idle_priority_threads() {
        let s = scheduler(Some(Duration::from_millis(2)));
        let here = thread_name();
        let penalty = Penalty::default();

        // Waiting (not CPU) does not use up a slice.
        let placement = Placement::default();
        let waits = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            call(3, Duration::ZERO).await
        };
        let (thread, policy) = s.run(&penalty, &placement, waits).await.unwrap();
        assert_eq!(thread, here);
        assert_eq!(policy, own_policy());
        assert_ne!(policy, 5);
        assert!(!placement.in_background());
        assert!(!s.penalised(&penalty));

        let placement = Placement::default();
        let long = call(3, Duration::from_millis(3));
        let (thread, policy) = s.run(&penalty, &placement, long).await.unwrap();
        assert_eq!(thread, "edge-background");
        assert_eq!(policy, 5, "background threads run under SCHED_IDLE");
        assert!(placement.in_background());
        assert!(s.penalised(&penalty), "a moved call penalises its function");

        // Penalised: even a short call starts in the background.
        let placement = Placement::default();
        let (thread, _) = s
            .run(&penalty, &placement, call(1, Duration::ZERO))
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
        let placement = Placement::default();
        let (thread, _) = off
            .run(
                &Penalty::default(),
                &placement,
                call(3, Duration::from_millis(3)),
            )
            .await
            .unwrap();
        assert_eq!(thread, thread_name());
        assert!(!placement.in_background());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_caller_stops_a_moved_call() {
        let s = scheduler(Some(Duration::from_millis(2)));
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
        let r = tokio::time::timeout(
            Duration::from_millis(50),
            s.run(&penalty, &Placement::default(), forever),
        )
        .await;
        assert!(r.is_err());
        for _ in 0..200 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the background task kept running after its caller gave up");
    }
}
