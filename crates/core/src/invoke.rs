//! Running one invocation: a fresh instance, the handler called under a
//! deadline, the state committed only when the guest returned `ok`.

mod call;
mod http;
mod pinned;
mod task;

pub use http::HttpResponse;

use call::{Classifier, Instance, fresh_call};

use crate::engine::new_store;
use crate::metrics::LiveInstance;
use crate::node::{Node, new_session_id};
use crate::registry::{Function, FunctionKind, RegistryError};
use crate::sched::Placement;
use crate::session::{Held, Session, SessionError, SessionMode, Trigger};
use edge_host_api::{Input, Mode, Source, StateCtx, StoreError, valid_session_id};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// How many times an invocation is re-run when state it read changed
/// before it could commit.
const MAX_ATTEMPTS: u32 = 64;

/// One call of a function.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// The function's name.
    pub function: String,
    /// The session; `None` opens a new one.
    pub session: Option<String>,
    /// The inputs, each tagged with its source.
    pub inputs: Vec<Input>,
}

impl InvokeRequest {
    /// A call from a client with one input.
    pub fn from_client(
        function: impl Into<String>,
        session: Option<String>,
        data: Vec<u8>,
    ) -> Self {
        Self {
            function: function.into(),
            session,
            inputs: vec![Input {
                source: Source::Client,
                data,
            }],
        }
    }
}

/// Whether the call made a new instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// A new instance was made for this call.
    Cold,
    /// The call ran on an instance that already existed.
    Warm,
}

impl StartKind {
    /// `cold` or `warm`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Cold => "cold",
            StartKind::Warm => "warm",
        }
    }
}

/// What a successful call produced.
#[derive(Debug, Clone)]
pub struct InvokeOutcome {
    /// The handler's output.
    pub output: Vec<u8>,
    /// The session the call ran in (new if the request named none).
    pub session: String,
    /// Cold or warm.
    pub start: StartKind,
    /// The mode the session was served in.
    pub mode: Mode,
    /// Why the session is not in the mode it asked for (`capacity`).
    pub mode_reason: Option<&'static str>,
    /// Time spent in the node for this call.
    pub duration: Duration,
}

/// How a guest trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// It tried to grow memory or a table past the cap.
    MemoryLimit,
    /// Its stack overflowed.
    StackOverflow,
    /// It executed `unreachable` (a Rust panic or abort ends here).
    Unreachable,
    /// Anything else.
    Other,
}

impl TrapKind {
    /// The `kind` reported in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::MemoryLimit => "memory_limit",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::Unreachable => "trap",
            TrapKind::Other => "trap",
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// No such function.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The session id is malformed.
    #[error("invalid session id: expected 1-128 characters of [A-Za-z0-9._-]")]
    InvalidSession,
    /// The guest returned `err` with this message.
    #[error("{0}")]
    Guest(String),
    /// The guest trapped.
    #[error("guest trapped: {message}")]
    Trap {
        /// What kind of trap.
        kind: TrapKind,
        /// wasmtime's description.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("deadline of {0:?} exceeded")]
    Deadline(Duration),
    /// No instance could be had in time.
    #[error("no instance available: {0}")]
    Capacity(String),
    /// Too many invocations in flight on this node; retry later.
    #[error("node overloaded: {0} invocations already admitted; retry shortly")]
    Overloaded(usize),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The state kept changing under the call.
    #[error("state of the session kept changing; gave up after {0} attempts")]
    Contention(u32),
    /// The session lives on another node now (the HTTP layer forwards).
    #[error("session moved to {0}")]
    Moved(String),
    /// A session operation failed.
    #[error(transparent)]
    Session(SessionError),
    /// The function serves the other world (`Edge`: it is invoked, not
    /// served HTTP; `Http`: the reverse).
    #[error("{}", wrong_kind(function, *kind))]
    WrongKind {
        /// The function.
        function: String,
        /// What it is.
        kind: FunctionKind,
    },
}

impl From<SessionError> for InvokeError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Moved(url) => InvokeError::Moved(url),
            SessionError::Store(e) => InvokeError::State(e),
            SessionError::InvalidId => InvokeError::InvalidSession,
            SessionError::Busy(d) => InvokeError::Deadline(d),
            e => InvokeError::Session(e),
        }
    }
}

fn wrong_kind(function: &str, kind: FunctionKind) -> String {
    match kind {
        FunctionKind::Edge => format!(
            "{function} is an edge:function function: call it with POST /v1/functions/{function}/invoke"
        ),
        FunctionKind::Http => {
            format!("{function} is a wasi:http function: send it HTTP requests under /{function}/")
        }
    }
}

/// What one routed call produced, before timing is added.
struct Served {
    output: Vec<u8>,
    start: StartKind,
    mode: SessionMode,
    reason: Option<&'static str>,
}

impl Node {
    /// Runs one invocation in its session's mode.
    #[tracing::instrument(skip(self, req), fields(function = %req.function))]
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeOutcome, InvokeError> {
        let started = Instant::now();
        // Shed at once beyond the admission limit: a bounded queue, and a
        // flood costs the node nothing but the refusals.
        let Ok(_admitted) = self.admission.try_acquire() else {
            self.metrics.shed.inc();
            return Err(InvokeError::Overloaded(self.config.max_pending_invocations));
        };
        let function = self.registry.function(&req.function).await?;
        if function.info.kind != FunctionKind::Edge {
            return Err(InvokeError::WrongKind {
                function: req.function,
                kind: function.info.kind,
            });
        }
        let (session, ephemeral) = match req.session {
            Some(s) if valid_session_id(&s) => (self.sessions.get(&s).await?, false),
            Some(_) => return Err(InvokeError::InvalidSession),
            None => (self.sessions.ephemeral(new_session_id()), true),
        };
        let id = session.id.clone();
        session.touch(self.sessions.epoch());
        session.uses([&function.name[..]]);
        let deadline = started + self.config.invoke_deadline;
        let inputs: Arc<[Input]> = req.inputs.into();
        // Boxed: the call's future is several KiB, and the HTTP layer moves
        // (and boxes) the future that holds it; a pointer moves for free.
        let result = Box::pin(self.route(&function, &session, &inputs, deadline)).await;
        if ephemeral {
            self.sessions.keep_if_used(&session).await;
        }
        let duration = started.elapsed();
        let (start, outcome_label) = match &result {
            Ok(s) => (s.start, "ok"),
            Err(InvokeError::Guest(_)) => (StartKind::Cold, "guest_error"),
            Err(InvokeError::Trap { .. }) => (StartKind::Cold, "trap"),
            Err(InvokeError::Deadline(_)) => (StartKind::Cold, "deadline"),
            Err(InvokeError::Moved(_)) => (StartKind::Cold, "moved"),
            Err(_) => (StartKind::Cold, "error"),
        };
        self.metrics
            .invocations
            .with_label_values(&[&*function.name, start.as_str(), outcome_label])
            .inc();
        self.metrics
            .invoke_seconds
            .with_label_values(&[&*function.name])
            .observe(duration.as_secs_f64());
        let served = result?;
        Ok(InvokeOutcome {
            output: served.output,
            session: id,
            start: served.start,
            mode: served.mode.wit(),
            mode_reason: served.reason,
            duration,
        })
    }

    /// Serves the call in the session's mode; a mode that changes between
    /// looking and locking is looked at again.
    async fn route(
        &self,
        function: &Arc<Function>,
        session: &Arc<Session>,
        inputs: &Arc<[Input]>,
        deadline: Instant,
    ) -> Result<Served, InvokeError> {
        for _ in 0..4 {
            {
                let inner = session.read_by(deadline).await?;
                if let Some(url) = &inner.record.moved_to {
                    return Err(InvokeError::Moved(url.clone()));
                }
                if inner.record.mode == SessionMode::Remote {
                    // Local-state on another node: its state is there.
                    if let Some(owner) = self.sessions.owner_of(session).await? {
                        return Err(InvokeError::Moved(owner));
                    }
                    let desired = inner.record.desired;
                    let (output, requested) = self
                        .run_remote(function, &session.id, inputs, deadline)
                        .await?;
                    drop(inner);
                    // A guest's request, or an earlier wish for local that
                    // capacity refused, is tried once the call is done.
                    let hot = desired == SessionMode::Remote && self.sessions.is_hot(session);
                    let (want, trigger) = match requested.map(SessionMode::from_wit) {
                        Some(m) => (m, Trigger::Guest),
                        None if hot => (SessionMode::Local, Trigger::Policy),
                        None if self.sessions.retries_wishes() => (desired, Trigger::Policy),
                        None => (SessionMode::Remote, Trigger::Policy),
                    };
                    let mut reason = None;
                    if want == SessionMode::Local {
                        let mut inner = session.write_by(deadline).await?;
                        // A wish read before the gate was let go may be
                        // gone: the client may have asked for remote-state
                        // meanwhile, and its word is the later one.
                        let wished = trigger == Trigger::Guest
                            || hot
                            || inner.record.desired == SessionMode::Local;
                        if !wished {
                            return Ok(Served {
                                output,
                                start: StartKind::Cold,
                                mode: SessionMode::Remote,
                                reason: None,
                            });
                        }
                        reason = match self
                            .sessions
                            .transition(session, &mut inner, want, trigger)
                            .await
                        {
                            Ok(outcome) => {
                                if hot && outcome.mode == SessionMode::Local {
                                    self.metrics.promotions.inc();
                                }
                                outcome.reason
                            }
                            // Another node took it meanwhile: this call is
                            // done (and committed); the next one goes there.
                            Err(SessionError::Moved(_)) => Some("owned_elsewhere"),
                            Err(e) => return Err(e.into()),
                        };
                    }
                    // A guest's wish this node has no room for goes to a
                    // member with room, as a client's request does (`spill`).
                    if trigger == Trigger::Guest
                        && reason == Some("capacity")
                        && self.place_at_member(&session.id).await?.is_some()
                    {
                        reason = Some("local_at_member");
                    }
                    return Ok(Served {
                        output,
                        start: StartKind::Cold,
                        mode: SessionMode::Remote,
                        reason,
                    });
                }
            }
            let mut inner = session.write_by(deadline).await?;
            if inner.record.mode != SessionMode::Local || inner.record.moved_to.is_some() {
                continue;
            }
            match self.sessions.confirm_local(session, &mut inner).await? {
                Held::Here => {}
                Held::Elsewhere(owner) => return Err(InvokeError::Moved(owner)),
                // The copy here was stale: served remote-state now.
                Held::Dropped => continue,
            }
            let began = Instant::now();
            let (output, start, requested) = self
                .run_pinned(function, session, &mut inner, inputs, deadline)
                .await?;
            self.sessions.load.local(began.elapsed());
            if let Some(to) = requested.map(SessionMode::from_wit) {
                self.sessions
                    .transition(session, &mut inner, to, Trigger::Guest)
                    .await?;
            }
            return Ok(Served {
                output,
                start,
                mode: SessionMode::Local,
                reason: None,
            });
        }
        Err(InvokeError::Contention(4))
    }

    async fn acquire_slot(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, InvokeError> {
        if let Ok(slot) = self.instance_slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        // Every slot is held: an idle pinned instance gives its slot up
        // rather than this call waiting until it is refused.
        if self.config.pressure_evict {
            self.sessions.evict_for_slot();
        }
        let _waiting = self
            .sessions
            .load
            .wait_for_slot(self.config.engine.max_instances as usize);
        let wait = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(wait, self.instance_slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                InvokeError::Capacity("every instance slot stayed busy until the deadline".into())
            })?
            .map_err(|e| InvokeError::Capacity(e.to_string()))
    }

    /// Remote-state: a fresh instance per attempt, state from the remote
    /// store, committed only if nothing read changed meanwhile.
    async fn run_remote(
        &self,
        function: &Arc<Function>,
        session: &str,
        inputs: &Arc<[Input]>,
        deadline: Instant,
    ) -> Result<(Vec<u8>, Option<Mode>), InvokeError> {
        let store = self.sessions.store_for(SessionMode::Remote);
        self.run_remote_on(function, session, inputs, deadline, store)
            .await
    }

    /// A fresh instance per attempt against `store`, committed only if
    /// nothing read changed meanwhile; returns the output and the mode the
    /// guest asked for.
    pub(crate) async fn run_remote_on(
        &self,
        function: &Arc<Function>,
        session: &str,
        inputs: &Arc<[Input]>,
        deadline: Instant,
        store: Arc<dyn edge_host_api::StateStore>,
    ) -> Result<(Vec<u8>, Option<Mode>), InvokeError> {
        self.sessions.load.remote_call();
        for attempt in 0..MAX_ATTEMPTS {
            let slot = self.acquire_slot(deadline).await?;
            let began = Instant::now();
            let ctx = StateCtx::new(
                store.clone(),
                session.to_owned(),
                Mode::Remote,
                self.config.state_limits,
            );
            let mut wasm = self.call_store(function, ctx, deadline);
            let clock = self.sched.clock();
            let placement = clock.placement.clone();
            wasm.data_mut().clock = clock;
            let call = fresh_call(
                function.clone(),
                Instance {
                    store: wasm,
                    _slot: slot,
                    _live: LiveInstance::new(&self.metrics.live_instances),
                },
                inputs.clone(),
                self.classifier(),
                self.offload(),
            );
            let (output, requested, commit) =
                self.scheduled(function, &placement, deadline, call).await?;
            // The instance (and its slot) is gone once the call returned.
            let held = began.elapsed();
            let output = self.judged(function, output)?;
            let committed = store.commit_by(session, &commit, deadline).await;
            // What the orchestrator weighs, queueing for the slot left out.
            self.sessions
                .load
                .remote_attempt(held, began.elapsed() - held);
            match committed {
                Ok(()) => return Ok((output, requested)),
                Err(StoreError::Conflict { key }) => {
                    self.conflicted(&key, attempt, deadline).await?
                }
                // Another node took the session meanwhile: nothing was
                // written; the call goes to it.
                Err(StoreError::Owned(owner)) => return Err(InvokeError::Moved(owner)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(InvokeError::Contention(MAX_ATTEMPTS))
    }

    /// Runs `call` through the scheduler, bounded by the deadline plus a
    /// second (the epoch callback stops guest code at the deadline; the
    /// bound also covers time spent in host calls: a stuck store, say).
    async fn scheduled<F>(
        &self,
        function: &Function,
        placement: &Placement,
        deadline: Instant,
        call: F,
    ) -> Result<F::Output, InvokeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let grace = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        // Boxed here, where it is made: the timeout and the scheduler move a
        // pointer, and the scheduler can move the call to the background.
        let call = Box::pin(call);
        match tokio::time::timeout(grace, self.sched.run(&function.penalty, placement, call)).await
        {
            Err(_) => {
                self.sched.penalise(&function.penalty);
                Err(InvokeError::Deadline(self.config.invoke_deadline))
            }
            Ok(Err(e)) => Err(InvokeError::Capacity(e.to_string())),
            Ok(Ok(out)) => Ok(out),
        }
    }

    /// Passes a call's result on; a trap or a missed deadline penalises the
    /// function (its next calls start at background priority).
    fn judged<T>(
        &self,
        function: &Function,
        result: Result<T, InvokeError>,
    ) -> Result<T, InvokeError> {
        if let Err(InvokeError::Trap { .. } | InvokeError::Deadline(_)) = &result {
            self.sched.penalise(&function.penalty);
        }
        result
    }

    /// Counts a conflict and waits a random moment (growing with `attempt`)
    /// so that contenders spread out instead of colliding again.
    async fn conflicted(
        &self,
        key: &str,
        attempt: u32,
        deadline: Instant,
    ) -> Result<(), InvokeError> {
        tracing::debug!(%key, attempt, "state changed under the call; running it again");
        self.metrics.state_conflicts.inc();
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        let cap_us = 200u64 << attempt.min(6);
        let pause = Duration::from_micros(u64::from(u16::from_le_bytes(r)) % cap_us);
        if Instant::now() + pause >= deadline {
            return Err(InvokeError::Deadline(self.config.invoke_deadline));
        }
        tokio::time::sleep(pause).await;
        Ok(())
    }

    /// The teardown thread, while calls run in the background (see
    /// `call::release`).
    fn offload(&self) -> Option<crate::teardown::Teardown> {
        self.sched.busy().then(|| self.teardown.clone())
    }

    /// A store for one instance of `function`, with `state`, until `deadline`.
    fn call_store(
        &self,
        function: &Function,
        state: StateCtx,
        deadline: Instant,
    ) -> wasmtime::Store<crate::engine::HostState> {
        new_store(
            &self.engine,
            &self.config.engine,
            crate::engine::StoreFor {
                function: function.name.clone(),
                allow_hosts: function.allow_hosts.clone(),
                config: self.registry.config_of(&function.name),
                tls: self.guest_tls.clone(),
            },
            self.config.guest_log_bytes,
            state,
            deadline,
        )
    }

    fn classifier(&self) -> Classifier {
        Classifier {
            deadline: self.config.invoke_deadline,
            max_memory_bytes: self.config.engine.max_memory_bytes,
        }
    }
}
