//! The orchestrator: a policy loop that decides which sessions are local.
//!
//! Every `--orchestrate-ms` it reads what the node measured since the last
//! round — each session's calls, how long remote-state and local-state
//! calls held their instance, how much of a remote call was the remote
//! store — and plans (see `plan`) how many sessions should be local to
//! minimise the mean latency of all calls under the node's instance slots
//! and local places. It then promotes the busiest remote sessions and
//! demotes the local ones that fell out of the plan (trigger `policy`).
//!
//! Wishes are hints with a priority: a session whose client or guest asked
//! for local-state is planned before any other, but only as many as the
//! plan makes room for; an explicit request is still served at once when a
//! place is free. A move waits for the calls in flight on its session (at
//! most [`GATE_WAIT`]; calls arriving meanwhile wait for the move); a round
//! moves at most [`MOVES_PER_ROUND`] sessions, and keeps the current split
//! unless another is predicted better by [`MARGIN`] or the current one holds
//! more local sessions than the plan (which keeps headroom, see
//! [`plan::HEADROOM`]).
//!
//! A plan that turns back waits [`REVERSAL_ROUNDS`] rounds, except when the
//! shared slots are overloaded (as many calls waiting for a slot as there
//! are slots not held by local sessions): a growing queue is followed at
//! once, and a queue as long as the node has slots calls a round early.

use super::plan::{self, Inputs};
use super::{Session, SessionMode, Sessions, Trigger};
use edge_host_api::{Commit, StateStore, StoreError, Versioned};
use futures_util::future::join_all;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A split is changed only when another is predicted this much better.
pub const MARGIN: f64 = 0.05;
/// Sessions moved in one round, at most: each move costs a state transfer.
pub const MOVES_PER_ROUND: usize = 8;
/// A remote session replaces a local one only when called this much more
/// often, and more often by three standard deviations of the rates' noise
/// (so that two sessions called alike do not swap back and forth).
const SWAP_FACTOR: f64 = 1.5;
/// Call rates are averaged over about this long (an exponential moving
/// average with this time constant).
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// How long a move waits for the calls in flight on its session.
const GATE_WAIT: Duration = Duration::from_millis(250);
/// Rounds in a row a plan that turns back must hold before it is followed.
const REVERSAL_ROUNDS: u32 = 4;
/// Weight of the newest round in the smoothed service times.
const SMOOTHING: f64 = 0.5;
/// After a round, the slot queue can call the next one this much of a
/// period early at the soonest.
const EARLY_ROUND: u32 = 4;

/// What calls measured since the orchestrator's last round.
#[derive(Debug, Default)]
pub struct Load {
    remote_calls: AtomicU64,
    remote_busy_ns: AtomicU64,
    /// Sum of squared attempt times, µs² (for their variability).
    remote_busy_sq: AtomicU64,
    remote_attempts: AtomicU64,
    remote_after_ns: AtomicU64,
    local_calls: AtomicU64,
    local_busy_ns: AtomicU64,
    local_busy_sq: AtomicU64,
    store_ns: Arc<AtomicU64>,
    /// Calls waiting for an instance slot now, and the time waited by the
    /// ones that stopped waiting.
    queued: AtomicU64,
    slot_wait_ns: AtomicU64,
    /// Told when the slot queue grows as long as the node has slots.
    overloaded: Arc<tokio::sync::Notify>,
}

/// A call waiting for an instance slot; the wait ends when it is dropped.
pub struct SlotWait<'a> {
    load: &'a Load,
    since: Instant,
}

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        self.load.queued.fetch_sub(1, Ordering::Relaxed);
        self.load
            .slot_wait_ns
            .fetch_add(self.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Load {
    /// A remote-state call starts (its attempts are counted by
    /// [`Load::remote_attempt`]: a call re-run after a conflict holds
    /// instances longer, it is not two calls).
    pub fn remote_call(&self) {
        self.remote_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt of a remote-state call held an instance for `busy`, then
    /// took `after` more (its commit) without it.
    pub fn remote_attempt(&self, busy: Duration, after: Duration) {
        self.remote_attempts.fetch_add(1, Ordering::Relaxed);
        self.remote_busy_sq
            .fetch_add(squared_us(busy), Ordering::Relaxed);
        self.remote_busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        self.remote_after_ns
            .fetch_add(after.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A local-state call held its pinned instance for `busy`.
    pub fn local(&self, busy: Duration) {
        self.local_calls.fetch_add(1, Ordering::Relaxed);
        self.local_busy_sq
            .fetch_add(squared_us(busy), Ordering::Relaxed);
        self.local_busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A call starts waiting for one of the node's `slots`; a queue as long
    /// as the node has slots calls the orchestrator's next round early.
    pub fn wait_for_slot(&self, slots: usize) -> SlotWait<'_> {
        let queued = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if queued as usize >= slots.max(1) {
            self.overloaded.notify_one();
        }
        SlotWait {
            load: self,
            since: Instant::now(),
        }
    }

    /// Wraps the remote store so that time spent in it is measured.
    pub(super) fn timed(&self, store: Arc<dyn StateStore>) -> Arc<dyn StateStore> {
        Arc::new(Timed {
            inner: store,
            ns: self.store_ns.clone(),
        })
    }

    fn take(&self) -> [u64; 10] {
        [
            self.remote_calls.swap(0, Ordering::Relaxed),
            self.remote_busy_ns.swap(0, Ordering::Relaxed),
            self.remote_after_ns.swap(0, Ordering::Relaxed),
            self.remote_attempts.swap(0, Ordering::Relaxed),
            self.remote_busy_sq.swap(0, Ordering::Relaxed),
            self.local_calls.swap(0, Ordering::Relaxed),
            self.local_busy_ns.swap(0, Ordering::Relaxed),
            self.local_busy_sq.swap(0, Ordering::Relaxed),
            self.store_ns.swap(0, Ordering::Relaxed),
            self.slot_wait_ns.swap(0, Ordering::Relaxed),
        ]
    }
}

/// A duration squared, in µs² (saturating: a call lasts at most minutes).
fn squared_us(d: Duration) -> u64 {
    let us = d.as_micros().min(u128::from(u32::MAX)) as u64;
    us.saturating_mul(us)
}

/// Squared coefficient of variation from `n` samples' sum (ns) and sum of
/// squares (µs²); 1 (exponential) without enough samples.
fn scv(n: u64, sum_ns: u64, sum_sq_us: u64) -> f64 {
    if n < 2 || sum_ns == 0 {
        return 1.0;
    }
    let mean = sum_ns as f64 / 1e3 / n as f64;
    let var = (sum_sq_us as f64 / n as f64 - mean * mean).max(0.0);
    var / (mean * mean)
}

/// The remote store, timed.
struct Timed {
    inner: Arc<dyn StateStore>,
    ns: Arc<AtomicU64>,
}

impl Timed {
    async fn time<T>(&self, op: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = op.await;
        self.ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

#[async_trait::async_trait]
impl StateStore for Timed {
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.time(self.inner.get(session, key)).await
    }

    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.time(self.inner.keys(session)).await
    }

    async fn commit(&self, session: &str, commit: &Commit) -> Result<(), StoreError> {
        self.time(self.inner.commit(session, commit)).await
    }

    async fn commit_by(
        &self,
        session: &str,
        commit: &Commit,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.time(self.inner.commit_by(session, commit, deadline))
            .await
    }

    async fn delete_session(&self, session: &str) -> Result<usize, StoreError> {
        self.inner.delete_session(session).await
    }
}

/// The orchestrator's view, as `GET /v1/node` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// Rounds run.
    pub rounds: u64,
    /// Sessions the last plan made local.
    pub planned_local: usize,
    /// Candidates in the last plan (sessions called lately, or local).
    pub candidates: usize,
    /// Predicted mean latency of the last plan, milliseconds (null:
    /// overloaded whatever the split).
    pub predicted_ms: Option<f64>,
    /// Measured mean time a remote-state call holds its instance, ms.
    pub remote_service_ms: f64,
    /// Measured mean time a remote-state call takes after it let its
    /// instance go (its commit), ms.
    pub remote_after_ms: f64,
    /// Of which in the remote store, ms.
    pub remote_store_ms: f64,
    /// Measured mean time a local-state call holds its instance, ms
    /// (estimated from the remote one less its store time until a local
    /// call was measured).
    pub local_service_ms: f64,
    /// Variability of the remote and local service times (variance /
    /// mean²: 1 for exponential times, 0 for constant ones).
    pub remote_scv: f64,
    /// See `remote_scv`.
    pub local_scv: f64,
    /// Calls per second, all sessions.
    pub calls_per_sec: f64,
    /// Calls waiting for an instance slot in the last round, on average.
    pub slot_queue: f64,
    /// Rounds run early because the slot queue grew as long as the node
    /// has slots.
    pub early_rounds: u64,
    /// Rounds that found the shared slots overloaded (a queue at least as
    /// long as they are many): they follow a plan at once, even one that
    /// turns back.
    pub overloaded_rounds: u64,
    /// Sessions promoted and demoted by the orchestrator.
    pub promoted: u64,
    /// See `promoted`.
    pub demoted: u64,
}

/// The orchestrator's memory between rounds.
#[derive(Default)]
pub(super) struct Orchestrator {
    /// Per session: calls counted at the last round, smoothed call rate.
    rates: HashMap<String, (u64, f64)>,
    remote_service: Option<f64>,
    remote_after: Option<f64>,
    local_service: Option<f64>,
    remote_scv: Option<f64>,
    local_scv: Option<f64>,
    store_share: Option<f64>,
    other_rate: f64,
    /// Calls per second lately of the remote and of the local candidates.
    remote_level: Option<f64>,
    local_level: Option<f64>,
    last: Option<Instant>,
    view: View,
    /// Whether the last change of the split grew it (1) or shrank it (-1).
    last_direction: i8,
    /// Rounds in a row the plan has wanted to turn back.
    reversal_rounds: u32,
    /// Whether this round found the shared slots overloaded.
    overloaded: bool,
}

fn smooth(old: Option<f64>, new: f64) -> f64 {
    smooth_by(old, new, SMOOTHING)
}

fn smooth_by(old: Option<f64>, new: f64, weight: f64) -> f64 {
    match old {
        Some(o) => o + weight * (new - o),
        None => new,
    }
}

/// Starts the loop; it ends with the sessions. A round runs every
/// `period`, or early (at most every `period / EARLY_ROUND`) when calls
/// queue for slots as many as the node has.
pub(super) fn spawn(sessions: Weak<Sessions>, period: Duration, slots: usize) {
    let Some(overloaded) = sessions.upgrade().map(|s| s.load.overloaded.clone()) else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            let early = tokio::select! {
                _ = tick.tick() => false,
                () = overloaded.notified() => true,
            };
            if early {
                tokio::time::sleep_until(last + period / EARLY_ROUND).await;
                tick.reset();
            }
            last = tokio::time::Instant::now();
            let Some(s) = sessions.upgrade() else { break };
            s.orchestrate(slots, early).await;
        }
    });
}

/// One candidate in a round.
struct Candidate {
    session: Arc<Session>,
    rate: f64,
    wish: bool,
    local: bool,
}

impl Sessions {
    /// The orchestrator's view (`None` when it is off).
    pub fn orchestrator(&self) -> Option<View> {
        self.orchestrator
            .as_ref()
            .map(|o| o.lock().unwrap_or_else(|p| p.into_inner()).view.clone())
    }

    /// One round (`early`: called by the slot queue): measure, plan, move.
    pub async fn orchestrate(&self, slots: usize, early: bool) {
        let Some(state) = &self.orchestrator else {
            return;
        };
        let (candidates, inputs, current) = {
            let mut o = state.lock().unwrap_or_else(|p| p.into_inner());
            self.measure(&mut o, slots)
        };
        let mut plan = plan::choose(&inputs, current, MARGIN);
        // A plan that turns back (fewer local sessions right after more, or
        // the reverse) must hold for a few rounds first: the moves change
        // what is measured, and the split would otherwise swing.
        // An overloaded node follows its plan at once: holding back lets the
        // queue grow faster than it can drain later.
        let direction = (plan.local as i64 - current as i64).signum() as i8;
        {
            let mut o = state.lock().unwrap_or_else(|p| p.into_inner());
            if o.overloaded {
                o.reversal_rounds = 0;
            } else if direction != 0 && direction == -o.last_direction {
                o.reversal_rounds += 1;
                if o.reversal_rounds < REVERSAL_ROUNDS {
                    plan.local = current;
                }
            } else {
                o.reversal_rounds = 0;
            }
        }
        let (promoted, demoted) = self.apply(&candidates, plan.local).await;
        let mut o = state.lock().unwrap_or_else(|p| p.into_inner());
        if plan.local != current {
            o.last_direction = direction;
            o.reversal_rounds = 0;
        }
        let overloaded = o.overloaded;
        let v = &mut o.view;
        v.rounds += 1;
        v.early_rounds += u64::from(early);
        v.overloaded_rounds += u64::from(overloaded);
        v.planned_local = plan.local;
        v.candidates = candidates.len();
        v.predicted_ms = plan.predicted.is_finite().then_some(plan.predicted * 1e3);
        v.promoted += promoted;
        v.demoted += demoted;
        self.metrics.orchestrator_local.set(plan.local as i64);
        if promoted + demoted > 0 {
            tracing::info!(
                planned_local = plan.local,
                promoted,
                demoted,
                predicted_ms = ?v.predicted_ms,
                "orchestrator moved sessions"
            );
        }
    }

    /// Reads the round's measurements into the plan's inputs; returns the
    /// candidates in plan order and how many are local now.
    fn measure(&self, o: &mut Orchestrator, slots: usize) -> (Vec<Candidate>, Inputs, usize) {
        let now = Instant::now();
        let span = o
            .last
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        o.last = Some(now);
        let [
            remote_calls,
            remote_ns,
            after_ns,
            attempts,
            remote_sq,
            local_calls,
            local_ns,
            local_sq,
            store_ns,
            slot_wait_ns,
        ] = self.load.take();
        if attempts >= 2 {
            o.remote_scv = Some(smooth(o.remote_scv, scv(attempts, remote_ns, remote_sq)));
        }
        if local_calls >= 2 {
            o.local_scv = Some(smooth(o.local_scv, scv(local_calls, local_ns, local_sq)));
        }
        if remote_calls > 0 {
            let service = remote_ns as f64 / 1e9 / remote_calls as f64;
            o.remote_service = Some(smooth(o.remote_service, service));
            let after = after_ns as f64 / 1e9 / remote_calls as f64;
            o.remote_after = Some(smooth(o.remote_after, after));
            // The store's share of a remote call's whole time.
            let share = (store_ns as f64 / (remote_ns + after_ns).max(1) as f64).min(1.0);
            o.store_share = Some(smooth(o.store_share, share));
        }
        if local_calls > 0 {
            let service = local_ns as f64 / 1e9 / local_calls as f64;
            o.local_service = Some(smooth(o.local_service, service));
        }
        let mut seen = HashMap::with_capacity(o.rates.len());
        let mut candidates = Vec::new();
        // This round's calls per second, of the remote and the local
        // candidates: what the smoothed rates are scaled to below.
        let (mut now_remote, mut now_local) = (0.0, 0.0);
        for session in self.all() {
            let calls = session.invocations();
            // A session seen for the first time was opened since the last
            // round (or the loop just started): its calls so far are its
            // first measurement.
            let known = o.rates.get(&session.id).copied();
            let before = known.map_or(0, |(c, _)| c);
            let now = if span > 0.0 {
                calls.saturating_sub(before) as f64 / span
            } else {
                0.0
            };
            let weight = (span / RATE_WINDOW.as_secs_f64()).min(1.0);
            let rate = smooth_by(known.map(|(_, r)| r), now, weight);
            seen.insert(session.id.clone(), (calls, rate));
            // Its record at a glance: a session in a local call holds its
            // gate, and must still be counted.
            let shown = session.shown();
            if shown.moved || (!shown.local && rate < 0.01) {
                continue;
            }
            if shown.local {
                now_local += now;
            } else {
                now_remote += now;
            }
            candidates.push(Candidate {
                // An idle session's wish waits until it is called again.
                wish: shown.wish && rate >= 0.01,
                session,
                rate,
                local: shown.local,
            });
        }
        o.rates = seen;
        // The slot queue's mean length over the round (Little's law on the
        // waits that ended), or the calls waiting now if more.
        let waiting = self.load.queued.load(Ordering::Relaxed) as f64;
        let queue = if span > 0.0 {
            (slot_wait_ns as f64 / 1e9 / span).max(waiting)
        } else {
            waiting
        };
        let shared = slots.saturating_sub(candidates.iter().filter(|c| c.local).count());
        o.overloaded = queue >= shared.max(1) as f64;
        o.view.slot_queue = queue;
        let remote_rate = if span > 0.0 {
            remote_calls as f64 / span
        } else {
            0.0
        };
        // Remote-state calls of no candidate (stateless ones, say) use the
        // same slots.
        o.other_rate = smooth(Some(o.other_rate), (remote_rate - now_remote).max(0.0));
        // Overloaded, a rise in the load is taken at once (falls are
        // smoothed as always).
        let level = |old: Option<f64>, new: f64| {
            let smoothed = smooth(old, new);
            if o.overloaded {
                smoothed.max(new)
            } else {
                smoothed
            }
        };
        o.remote_level = Some(level(o.remote_level, now_remote));
        o.local_level = Some(level(o.local_level, now_local));
        candidates.sort_by(|a, b| {
            b.wish
                .cmp(&a.wish)
                .then(b.rate.total_cmp(&a.rate))
                .then(b.local.cmp(&a.local))
        });
        // The smoothed rates rank the sessions; the load the model sees is
        // the one measured lately, so that a session that stopped is not
        // counted for the seconds its average takes to fall.
        let sum_of = |local: bool| -> f64 {
            candidates
                .iter()
                .filter(|c| c.local == local)
                .map(|c| c.rate)
                .sum()
        };
        let factor = |level: Option<f64>, sum: f64| match level {
            Some(l) if sum > 0.0 => l / sum,
            _ => 1.0,
        };
        let (f_local, f_remote) = (
            factor(o.local_level, sum_of(true)),
            factor(o.remote_level, sum_of(false)),
        );
        let remote_service = o.remote_service.unwrap_or(0.0);
        let remote_after = o.remote_after.unwrap_or(0.0);
        let remote_store = (remote_service + remote_after) * o.store_share.unwrap_or(0.0);
        let local_service = o.local_service.unwrap_or_else(|| {
            // Until a local call is measured: a remote call without its
            // remote-store time.
            (remote_service + remote_after - remote_store).max(0.0)
        });
        let v = &mut o.view;
        v.remote_service_ms = remote_service * 1e3;
        v.remote_after_ms = remote_after * 1e3;
        v.remote_store_ms = remote_store * 1e3;
        v.local_service_ms = local_service * 1e3;
        v.remote_scv = o.remote_scv.unwrap_or(1.0);
        v.local_scv = o.local_scv.unwrap_or(1.0);
        v.calls_per_sec =
            o.remote_level.unwrap_or(0.0) + o.local_level.unwrap_or(0.0) + o.other_rate;
        let current = candidates.iter().filter(|c| c.local).count();
        let inputs = Inputs {
            slots,
            max_local: self.max_local,
            remote_service,
            remote_after,
            local_service,
            remote_scv: o.remote_scv.unwrap_or(1.0),
            local_scv: o.local_scv.unwrap_or(1.0),
            other_rate: o.other_rate,
            rates: candidates
                .iter()
                .map(|c| c.rate * if c.local { f_local } else { f_remote })
                .collect(),
        };
        (candidates, inputs, current)
    }

    /// Makes the first `k` candidates local and the others remote, moving
    /// at most [`MOVES_PER_ROUND`]; returns (promoted, demoted).
    async fn apply(&self, candidates: &[Candidate], k: usize) -> (u64, u64) {
        let (wanted, rest) = candidates.split_at(k.min(candidates.len()));
        // Best first.
        let ins: Vec<&Candidate> = wanted.iter().filter(|c| !c.local).collect();
        // Least called first.
        let outs: Vec<&Candidate> = rest.iter().filter(|c| c.local).rev().collect();
        // What the plan adds or removes goes through; where one session
        // would take another's place, it does so only when clearly busier.
        let pairs = ins.len().min(outs.len());
        let (grow, shrink) = (ins.len() - pairs, outs.len() - pairs);
        let swaps = (0..pairs)
            .take_while(|&i| {
                let (incoming, outgoing) = (ins[grow + i], outs[shrink + i]);
                let noise = ((incoming.rate + outgoing.rate) / RATE_WINDOW.as_secs_f64()).sqrt();
                incoming.wish && !outgoing.wish
                    || incoming.rate > SWAP_FACTOR * outgoing.rate.max(0.01)
                        && incoming.rate - outgoing.rate > 3.0 * noise
            })
            .count();
        let ins = &ins[..grow + swaps];
        let outs = &outs[..shrink + swaps];
        // Out first, their places going to the ones coming in; the moves of
        // a batch run at once.
        let outs = outs.iter().take(MOVES_PER_ROUND);
        let demoted = join_all(outs.map(|c| self.move_by_policy(&c.session, SessionMode::Remote)))
            .await
            .into_iter()
            .filter(|&moved| moved)
            .count() as u64;
        let ins = ins.iter().take(MOVES_PER_ROUND - demoted as usize);
        let promoted = join_all(ins.map(|c| self.move_by_policy(&c.session, SessionMode::Local)))
            .await
            .into_iter()
            .filter(|&moved| moved)
            .count() as u64;
        self.metrics.promotions.inc_by(promoted);
        self.metrics.demotions.inc_by(demoted);
        (promoted, demoted)
    }

    /// Moves a session the orchestrator chose, if it is not in a call; its
    /// client's or guest's wish stays what it was. True if it moved.
    async fn move_by_policy(&self, session: &Session, to: SessionMode) -> bool {
        // Calls queue behind the move (the gate is fair); one that does not
        // finish soon keeps the session where it is this round.
        let Ok(mut inner) = session.write_by(Instant::now() + GATE_WAIT).await else {
            return false;
        };
        if inner.record.moved_to.is_some() || inner.record.mode == to {
            return false;
        }
        let wish = inner.record.desired;
        let moved = match self
            .transition(session, &mut inner, to, Trigger::Policy)
            .await
        {
            Ok(outcome) => outcome.mode == to && outcome.reason.is_none(),
            Err(e) => {
                tracing::debug!(session = %session.id, error = %e, "orchestrator could not move a session");
                false
            }
        };
        if inner.record.desired != wish {
            inner.record.desired = wish;
            if let Err(e) = self.save(&session.id, &inner.record).await {
                tracing::warn!(session = %session.id, error = %e, "could not record a session's wish");
            }
        }
        moved
    }
}
