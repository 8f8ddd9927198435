//! Guest stdout/stderr, sent to the node's log tagged with the function.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The log sink of one instance: both streams share a byte budget so a
/// chatty guest cannot flood the node's log.
#[derive(Clone)]
pub struct GuestLog {
    function: Arc<str>,
    budget: Arc<AtomicUsize>,
}

impl GuestLog {
    /// A sink for `function` that logs at most `budget` bytes.
    pub fn new(function: Arc<str>, budget: usize) -> Self {
        Self {
            function,
            budget: Arc::new(AtomicUsize::new(budget)),
        }
    }

    /// The stream named `name` (`stdout` or `stderr`).
    pub fn stream(&self, name: &'static str) -> GuestStream {
        GuestStream {
            log: self.clone(),
            name,
        }
    }
}

/// One of a guest's output streams.
#[derive(Clone)]
pub struct GuestStream {
    log: GuestLog,
    name: &'static str,
}

impl GuestStream {
    fn emit(&self, buf: &[u8]) {
        let want = buf.len();
        let took = self
            .log
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(want))
            })
            .unwrap_or(0);
        if took == 0 {
            return;
        }
        let shown = &buf[..want.min(took)];
        let text = String::from_utf8_lossy(shown);
        for line in text.lines().filter(|l| !l.is_empty()) {
            tracing::info!(target: "guest", function = %self.log.function, stream = self.name, "{line}");
        }
        if want > took {
            tracing::warn!(target: "guest", function = %self.log.function, "guest output budget used up; the rest is dropped");
        }
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.emit(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
