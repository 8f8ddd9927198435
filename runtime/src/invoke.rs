//! Running one invocation: a fresh instance, the handler called under a
//! deadline, the state committed only when the guest returned `ok`.

use crate::engine::{DeadlineExceeded, HostState, new_store};
use crate::metrics::LiveInstance;
use crate::node::{Node, new_session_id};
use crate::registry::{Function, RegistryError};
use edge_host_api::{Input, Mode, Source, StateCtx, StoreError, valid_session_id};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap};

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
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StoreError),
    /// The state kept changing under the call.
    #[error("state of the session kept changing; gave up after {0} attempts")]
    Contention(u32),
}

impl Node {
    /// Runs one invocation.
    #[tracing::instrument(skip(self, req), fields(function = %req.function))]
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeOutcome, InvokeError> {
        let started = Instant::now();
        let function = self.registry.get(&req.function)?;
        let session = match req.session {
            Some(s) if valid_session_id(&s) => s,
            Some(_) => return Err(InvokeError::InvalidSession),
            None => new_session_id(),
        };
        let deadline_span = self.config.invoke_deadline;
        let deadline = started + deadline_span;
        let result = self
            .run_with_retries(&function, &session, &req.inputs, deadline)
            .await;
        let duration = started.elapsed();
        let outcome_label = match &result {
            Ok(_) => "ok",
            Err(InvokeError::Guest(_)) => "guest_error",
            Err(InvokeError::Trap { .. }) => "trap",
            Err(InvokeError::Deadline(_)) => "deadline",
            Err(_) => "error",
        };
        self.metrics
            .invocations
            .with_label_values(&[&*function.name, StartKind::Cold.as_str(), outcome_label])
            .inc();
        self.metrics
            .invoke_seconds
            .with_label_values(&[&*function.name])
            .observe(duration.as_secs_f64());
        let output = result?;
        Ok(InvokeOutcome {
            output,
            session,
            start: StartKind::Cold,
            mode: Mode::Remote,
            duration,
        })
    }

    async fn run_with_retries(
        &self,
        function: &Arc<Function>,
        session: &str,
        inputs: &[Input],
        deadline: Instant,
    ) -> Result<Vec<u8>, InvokeError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let _slot = tokio::time::timeout(wait, self.instance_slots.acquire())
            .await
            .map_err(|_| {
                InvokeError::Capacity("every instance slot stayed busy until the deadline".into())
            })?
            .map_err(|e| InvokeError::Capacity(e.to_string()))?;
        for _ in 0..MAX_ATTEMPTS {
            let ctx = StateCtx::new(
                self.state.clone(),
                session.to_owned(),
                Mode::Remote,
                self.config.state_limits,
            );
            let mut store = new_store(
                &self.engine,
                &self.config.engine,
                &function.name,
                self.config.guest_log_bytes,
                ctx,
                deadline,
            );
            let output = self
                .call_once(function, &mut store, inputs, deadline)
                .await?;
            let commit = store.into_data().state.into_commit();
            match self.state.commit(session, &commit).await {
                Ok(()) => return Ok(output),
                Err(StoreError::Conflict { key }) => {
                    tracing::debug!(%key, "state changed under the call; running it again");
                    self.metrics.state_conflicts.inc();
                    if Instant::now() >= deadline {
                        return Err(InvokeError::Deadline(self.config.invoke_deadline));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(InvokeError::Contention(MAX_ATTEMPTS))
    }

    /// Instantiates `function` in `store` and calls its handler once.
    async fn call_once(
        &self,
        function: &Function,
        store: &mut Store<HostState>,
        inputs: &[Input],
        deadline: Instant,
    ) -> Result<Vec<u8>, InvokeError> {
        let _live = LiveInstance::new(&self.metrics.live_instances);
        let call = async {
            let instance = function.pre.instantiate_async(&mut *store).await?;
            instance
                .edge_function_handler()
                .call_handle(&mut *store, inputs)
                .await
        };
        // The epoch callback stops guest code at the deadline; this bound
        // also covers time spent in host calls (a stuck store, say).
        let grace = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        match tokio::time::timeout(grace, call).await {
            Err(_) => Err(InvokeError::Deadline(self.config.invoke_deadline)),
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(message))) => Err(InvokeError::Guest(message)),
            Ok(Err(e)) => Err(self.classify(store, e)),
        }
    }

    fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> InvokeError {
        if e.downcast_ref::<DeadlineExceeded>().is_some() {
            return InvokeError::Deadline(self.config.invoke_deadline);
        }
        // The client gets the cause; the backtrace goes to the log.
        tracing::debug!(error = ?e, "guest failed");
        let message = truncate(e.root_cause().to_string(), 1024);
        if message.contains("pooling allocator") || message.contains("maximum concurrent") {
            return InvokeError::Capacity(message);
        }
        let kind = if store.data().limits.denied {
            TrapKind::MemoryLimit
        } else {
            match e.downcast_ref::<Trap>() {
                Some(Trap::StackOverflow) => TrapKind::StackOverflow,
                Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
                _ => TrapKind::Other,
            }
        };
        let message = match kind {
            TrapKind::MemoryLimit => format!(
                "memory limit of {} bytes exceeded ({message})",
                self.config.engine.max_memory_bytes
            ),
            _ => message,
        };
        InvokeError::Trap { kind, message }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
