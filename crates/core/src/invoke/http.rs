//! A request to a `wasi:http/proxy` function: a fresh instance from the pool
//! per request (as `wasmtime serve` does by default), the request handed to
//! its `incoming-handler`, the response returned as soon as the guest sets
//! it while its body streams on. The deadline and the memory cap hold as
//! for every call; the instance, its slot and its admission are freed when
//! the guest returns.

use super::{InvokeError, LiveInstance};
use crate::node::{Node, new_session_id};
use crate::registry::{FunctionKind, Pre};
use crate::session::SessionMode;
use bytes::Bytes;
use edge_host_api::{Mode, StateCtx};
use http_body_util::Full;
use std::time::Instant;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// An HTTP function's answer; its body streams while the guest writes it.
pub type HttpResponse = http::Response<HyperOutgoingBody>;

impl Node {
    /// Serves `request` with HTTP function `name`. `request`'s URI is the
    /// path the guest sees (the function's prefix taken off).
    #[tracing::instrument(skip(self, request), fields(method = %request.method()))]
    pub async fn serve_http(
        &self,
        name: &str,
        request: http::Request<Full<Bytes>>,
    ) -> Result<HttpResponse, InvokeError> {
        let started = Instant::now();
        let Ok(admitted) = self.admission.clone().try_acquire_owned() else {
            self.metrics.shed.inc();
            return Err(InvokeError::Overloaded(self.config.max_pending_invocations));
        };
        let function = self.registry.get(name)?;
        let Pre::Http(pre) = &function.pre else {
            return Err(InvokeError::WrongKind {
                function: name.to_owned(),
                kind: FunctionKind::Edge,
            });
        };
        let pre = pre.clone();
        let deadline = started + self.config.invoke_deadline;
        let slot = self.acquire_slot(deadline).await?;
        // The guest cannot reach it (a wasi:http component imports no
        // edge:function interface); every store carries one.
        let state = StateCtx::new(
            self.sessions.store_for(SessionMode::Remote),
            new_session_id(),
            Mode::Remote,
            self.config.state_limits,
        );
        let mut store = self.call_store(&function, state, deadline);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let handles = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request);
        let handles = handles.and_then(|req| {
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok((req, out))
        });
        let (req, out) = handles.map_err(|e| InvokeError::Guest(format!("{e:#}")))?;
        let errors = self.classifier();
        let live = LiveInstance::new(&self.metrics.live_instances);
        let metrics = self.metrics.clone();
        let function_name = function.name.clone();
        let limit = self.config.invoke_deadline;
        let task = tokio::spawn(async move {
            // The deadline bounds the whole call, the body's streaming
            // included, also while the guest waits on the host (the epoch
            // stops it only while it runs).
            let called = tokio::time::timeout_at(deadline.into(), async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            let outcome = match called {
                Ok(called) => called.map_err(|e| errors.classify(&store, e)),
                Err(_) => Err(InvokeError::Deadline(limit)),
            };
            let label = match &outcome {
                Ok(()) => "ok",
                Err(InvokeError::Deadline(_)) => "deadline",
                Err(_) => "trap",
            };
            metrics
                .invocations
                .with_label_values(&[&*function_name, "cold", label])
                .inc();
            metrics
                .invoke_seconds
                .with_label_values(&[&*function_name])
                .observe(started.elapsed().as_secs_f64());
            drop((store, slot, live, admitted));
            outcome
        });
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(Ok(response))) => Ok(response),
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
}

fn describe(code: &ErrorCode) -> String {
    format!("the function answered with an error: {code:?}")
}
