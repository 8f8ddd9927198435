//! The accept loop: HTTP/1.1 on hyper (over TLS when configured) with a
//! header-read timeout, keep-alive, a cap on open connections and graceful
//! shutdown.

use crate::tls::ClientCertified;
use edge_core::node::Node;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long the last flush may take at shutdown.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// Connection-level limits of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this certificate (the handshake, too, must finish
    /// within `header_read_timeout`).
    pub tls: Option<crate::Tls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Serves the API for `node` on `listener` until `shutdown` completes, then
/// stops accepting, lets requests in flight finish (up to the grace period)
/// and flushes the node's data.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = super::router(super::AppState::new(node.clone()));
    // With a shared Redis, the node shows itself to the cluster while it serves.
    edge_core::cluster::join(&node).await;
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &config.tls else {
            let service = TowerToHyperService::new(router.clone());
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        };
        let (acceptor, builder, watcher) = (tls.0.clone(), builder.clone(), graceful.watcher());
        let router = router.clone();
        let handshake = config.header_read_timeout;
        tokio::spawn(async move {
            // A client that never finishes its handshake holds a slot no
            // longer than one that never sends its headers.
            let stream = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // rustls keeps the client's certificates only when they
            // verified against the client authorities.
            let certified = stream.get_ref().1.peer_certificates().is_some();
            let router = tower::ServiceExt::map_request(
                router,
                move |mut request: http::Request<hyper::body::Incoming>| {
                    if certified {
                        request.extensions_mut().insert(ClientCertified);
                    }
                    request
                },
            );
            let service = TowerToHyperService::new(router);
            let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!("requests still running after the grace period; stopping anyway");
        }
    }
    // Nothing to flush once storage stopped (every acknowledged write was
    // flushed; sled can write nothing more); otherwise bounded, so a stuck
    // disk cannot keep the process from exiting.
    let _ = tokio::time::timeout(Duration::from_secs(2), node.leave_cluster()).await;
    if node.storage().failed().is_some() {
        return Ok(());
    }
    match tokio::time::timeout(FINAL_FLUSH, node.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
        Err(_) => tracing::error!("final flush did not finish in {FINAL_FLUSH:?}; stopping anyway"),
    }
    Ok(())
}
