//! A request to a `wasi:http/proxy` function: a fresh instance from the pool
//! per request (as `wasmtime serve` does by default), the request handed to
//! its `incoming-handler`, the response returned as soon as the guest sets
//! it while its body streams on. The deadline and the memory cap hold as
//! for every call; the instance, its slot and its admission are freed when
//! the guest returns.
//!
//! A function that imports `wasi:keyvalue` keeps state: each request runs
//! in a session (the `edge-session` header, else the one named after the
//! function), held for the request so that requests of one session run one
//! at a time on this node. Its writes are committed when the handler
//! returns, and the response's body ends only after the commit: a client
//! that read the whole body can count on what the function wrote, and one
//! whose commit failed sees the body cut off.

use super::{InvokeError, LiveInstance};
use crate::node::{Node, new_session_id};
use crate::registry::{Function, FunctionKind, Pre};
use crate::session::{Held, Inner, Session, SessionMode};
use bytes::Bytes;
use edge_host_api::{Commit, Mode, StateCtx, StoreError, valid_session_id};
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::sync::{RwLockWriteGuard, oneshot};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::engine::HostState;

/// An HTTP function's answer; its body streams while the guest writes it.
pub type HttpResponse = http::Response<HyperOutgoingBody>;

/// The request header naming the session of a stateful HTTP function.
const SESSION_HEADER: &str = "edge-session";

/// What a request's task reports once its state is committed (or not).
type Committed = oneshot::Receiver<Result<(), String>>;

impl Node {
    /// Serves `request` with HTTP function `name`. `request`'s URI is the
    /// path the guest sees (the function's prefix taken off).
    #[tracing::instrument(skip(self, request), fields(method = %request.method()))]
    pub async fn serve_http(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<Full<Bytes>>,
    ) -> Result<HttpResponse, InvokeError> {
        let started = Instant::now();
        let Ok(admitted) = self.admission.clone().try_acquire_owned() else {
            self.metrics.shed.inc();
            return Err(InvokeError::Overloaded(self.config.max_pending_invocations));
        };
        let function = self.registry.function(name).await?;
        let Pre::Http(pre) = &function.pre else {
            return Err(InvokeError::WrongKind {
                function: name.to_owned(),
                kind: FunctionKind::Edge,
            });
        };
        let pre = pre.clone();
        let session = match function.keeps_state {
            true => Some(self.http_session(&function, &request).await?),
            false => None,
        };
        let deadline = started + self.config.invoke_deadline;
        let (sender, receiver) = oneshot::channel();
        let (committed, commit_outcome) = oneshot::channel();
        let node = self.clone();
        let held_session = session.clone();
        let task = tokio::spawn(async move {
            // The deadline bounds the whole call, the body's streaming
            // included, also while the guest waits on the host (the epoch
            // stops it only while it runs).
            let call = node.http_call(&function, pre, held_session, request, sender, deadline);
            let outcome = tokio::time::timeout_at(deadline.into(), call)
                .await
                .unwrap_or(Err(InvokeError::Deadline(node.config.invoke_deadline)));
            let label = match &outcome {
                Ok(()) => "ok",
                Err(InvokeError::Deadline(_)) => "deadline",
                Err(_) => "trap",
            };
            let metrics = &node.metrics;
            metrics
                .invocations
                .with_label_values(&[&*function.name, "cold", label])
                .inc();
            metrics
                .invoke_seconds
                .with_label_values(&[&*function.name])
                .observe(started.elapsed().as_secs_f64());
            drop(admitted);
            let _ = committed.send(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            outcome
        });
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(Ok(response))) => Ok(match session {
                None => response,
                Some(session) => gated(response, &session.id, commit_outcome),
            }),
            Ok(Ok(Err(code))) => Err(InvokeError::Guest(describe(&code))),
            // The guest returned (or trapped) without setting a response.
            Ok(Err(_)) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(InvokeError::Guest(
                    "the function returned without setting a response".into(),
                )),
                Err(e) => Err(InvokeError::Guest(format!("the call failed: {e}"))),
            },
            // Past the deadline: the epoch stops the guest in the task.
            Err(_) => Err(InvokeError::Deadline(self.config.invoke_deadline)),
        }
    }

    /// The session a stateful HTTP function's request runs in: the one its
    /// `edge-session` header names, else the one named after the function.
    async fn http_session(
        &self,
        function: &Function,
        request: &http::Request<Full<Bytes>>,
    ) -> Result<Arc<Session>, InvokeError> {
        let id = match request.headers().get(SESSION_HEADER) {
            Some(v) => v.to_str().map_err(|_| InvokeError::InvalidSession)?,
            None => &function.name,
        };
        if !valid_session_id(id) {
            return Err(InvokeError::InvalidSession);
        }
        let session = self.sessions.get(id).await?;
        session.touch(self.sessions.epoch());
        session.uses([&function.name[..]]);
        Ok(session)
    }

    /// One request, from holding its session (if it keeps state) to the
    /// commit; the response goes out through `sender` as soon as the guest
    /// sets it.
    async fn http_call(
        &self,
        function: &Function,
        pre: ProxyPre<HostState>,
        session: Option<Arc<Session>>,
        request: http::Request<Full<Bytes>>,
        sender: oneshot::Sender<Result<http::Response<HyperOutgoingBody>, ErrorCode>>,
        deadline: Instant,
    ) -> Result<(), InvokeError> {
        // The session first, then a slot: requests queued behind one busy
        // session hold no instance slot while they wait.
        let held = match &session {
            Some(s) => Some(self.hold_for_http(s, deadline).await?),
            None => None,
        };
        let slot = self.acquire_slot(deadline).await?;
        let limits = self.config.state_limits;
        let state = match (&session, &held) {
            (Some(s), Some((_, mode))) => StateCtx::new(
                self.sessions.store_for(*mode),
                s.id.clone(),
                mode.wit(),
                limits,
            ),
            // Nothing reaches it: a component without wasi:keyvalue has no
            // state import. Every store carries one.
            _ => StateCtx::new(
                self.sessions.store_for(SessionMode::Remote),
                new_session_id(),
                Mode::Remote,
                limits,
            ),
        };
        let mut store = self.call_store(function, state, deadline);
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| InvokeError::Guest(format!("{e:#}")))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| InvokeError::Guest(format!("{e:#}")))?;
        let live = LiveInstance::new(&self.metrics.live_instances);
        let called = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        }
        .await;
        called.map_err(|e| self.classifier().classify(&store, e))?;
        let (Some(session), Some((inner, mode))) = (&session, held) else {
            return Ok(());
        };
        let state = &mut store.data_mut().state;
        if let Some(full) = state.take_disk_full() {
            return Err(InvokeError::State(full));
        }
        let commit = state.take_commit();
        state.release_store();
        // The instance is done: its slot is free before the commit.
        drop((store, slot, live));
        self.commit_http(function, session, mode, &commit, deadline)
            .await?;
        drop(inner);
        Ok(())
    }

    /// Holds `session` for one HTTP request in the mode it is in on this
    /// node; a session whose state is on another node is `Moved` there.
    async fn hold_for_http<'s>(
        &self,
        session: &'s Session,
        deadline: Instant,
    ) -> Result<(RwLockWriteGuard<'s, Inner>, SessionMode), InvokeError> {
        for _ in 0..4 {
            let mut inner = session.write_by(deadline).await?;
            if let Some(url) = &inner.record.moved_to {
                return Err(InvokeError::Moved(url.clone()));
            }
            match inner.record.mode {
                SessionMode::Remote => {
                    if let Some(owner) = self.sessions.owner_of(session).await? {
                        return Err(InvokeError::Moved(owner));
                    }
                    return Ok((inner, SessionMode::Remote));
                }
                SessionMode::Local => match self.sessions.confirm_local(session, &mut inner).await?
                {
                    Held::Here => return Ok((inner, SessionMode::Local)),
                    Held::Elsewhere(owner) => return Err(InvokeError::Moved(owner)),
                    // The copy here was stale: looked at again.
                    Held::Dropped => continue,
                },
            }
        }
        Err(InvokeError::Contention(4))
    }

    /// Commits what one HTTP request wrote to its session's store.
    async fn commit_http(
        &self,
        function: &Function,
        session: &Session,
        mode: SessionMode,
        commit: &Commit,
        deadline: Instant,
    ) -> Result<(), InvokeError> {
        let committed = match mode {
            SessionMode::Local => {
                // Not past the lease: another node may have taken it over.
                self.sessions.still_held(session)?;
                self.commit_local(function, &session.id, commit, deadline)
                    .await
            }
            SessionMode::Remote => {
                self.sessions
                    .store_for(SessionMode::Remote)
                    .commit_by(&session.id, commit, deadline)
                    .await
            }
        };
        match committed {
            Ok(()) => {
                if mode == SessionMode::Local && !commit.is_read_only() {
                    session.mark_changed();
                }
                Ok(())
            }
            // Only another node (or the state API) writes the session while
            // this one holds it; a request cannot run again once answered.
            Err(StoreError::Conflict { key }) => {
                self.metrics.state_conflicts.inc();
                Err(InvokeError::Guest(format!(
                    "{key} changed under the request; nothing was committed"
                )))
            }
            Err(StoreError::Owned(owner)) => Err(InvokeError::Moved(owner)),
            Err(e) => Err(e.into()),
        }
    }
}

/// `response` of session `id`, its body ending only once the request's
/// state is committed (with an error if the commit failed).
fn gated(mut response: HttpResponse, id: &str, commit: Committed) -> HttpResponse {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response.map(|body| {
        UnsyncBoxBody::new(CommitGate {
            body,
            ended: false,
            commit: Some(commit),
        })
    })
}

/// A response body that ends when its request's commit is done.
struct CommitGate {
    body: HyperOutgoingBody,
    ended: bool,
    commit: Option<Committed>,
}

impl Body for CommitGate {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.ended {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => this.ended = true,
            }
        }
        let Some(commit) = this.commit.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(commit).poll(cx));
        this.commit = None;
        Poll::Ready(match outcome {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(Err(wasmtime_wasi_http::Error::InternalError(Some(why)))),
            Err(_) => Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                "the request ended before its state was committed".into(),
            )))),
        })
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn describe(code: &ErrorCode) -> String {
    format!("the function answered with an error: {code:?}")
}
