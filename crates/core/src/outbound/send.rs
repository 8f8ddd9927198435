//! Sending a guest's request when the node trusts certificate authorities
//! of its own (`--tls-ca`): the same steps as wasmtime's default sender —
//! connect, TLS, an HTTP/1 handshake, the request, the response streamed
//! with the between-bytes timeout — with a root store of the bundled
//! Mozilla roots plus the node's CAs.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// The TLS settings guests' `https://` requests use: the bundled roots and
/// the certificate authorities in `pem`.
pub fn client_config(pem: &[u8]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("the CA certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificates: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("no certificate in the CA file".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What `send` hands back besides the response: the connection, to drive
/// while the guest reads the body.
pub type Connection = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// A byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Sends `request` (scheme and authority in its URI) with `tls` for
/// `https://`, within the timeouts of `options`.
pub async fn send(
    tls: Arc<ClientConfig>,
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
) -> Result<(http::Response<WasiBody>, Connection), Error> {
    let forever = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(forever);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(forever);
    let between_bytes = options
        .between_bytes_timeout
        .unwrap_or(forever)
        .max(Duration::from_nanos(1));
    let uri = request.uri();
    let use_tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_owned();
    let port = uri.port_u16().unwrap_or(if use_tls { 443 } else { 80 });
    // An IPv6 literal keeps its brackets in the URI, not in the address.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let connect = TcpStream::connect((bare.as_str(), port));
    let tcp = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let stream: Box<dyn Io> = if use_tls {
        let name = match bare.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::from(ip),
            Err(_) => ServerName::try_from(bare).map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let connector = tokio_rustls::TlsConnector::from(tls);
        let handshake = connector.connect(name, tcp);
        let stream = tokio::time::timeout(connect_timeout, handshake)
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
    let (mut sender, connection) = tokio::time::timeout(connect_timeout, handshake)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // The connection runs beside the exchange: the response needs its I/O.
    let driven = tokio::spawn(connection);
    // On the wire the request line carries the path only (no proxy here).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    *request.uri_mut() = path;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|incoming| {
        Paced {
            body: incoming,
            gap: between_bytes,
            timer: Box::pin(tokio::time::sleep(between_bytes)),
        }
        .boxed_unsync()
    });
    let connection: Connection = Box::new(async move {
        match driven.await {
            Ok(done) => done.map_err(Error::from),
            Err(e) => Err(Error::InternalError(Some(e.to_string()))),
        }
    });
    Ok((response, connection))
}

/// A response body that fails when no byte comes for `gap`.
struct Paced {
    body: hyper::body::Incoming,
    gap: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.gap;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
