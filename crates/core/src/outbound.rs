//! Outgoing HTTP from guests (`wasi:http/outgoing-handler`): only to the
//! hosts a function was deployed with (`allow_hosts`), and never past the
//! call's deadline. Everything else is refused with `HTTP-request-denied`
//! before a connection is opened. `https://` is verified against the bundled
//! Mozilla roots, and the node's own CAs when it has some (`--tls-ca`).

mod send;

pub use send::client_config;

use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// TLS settings with the node's own CAs, for guests' `https://` requests.
pub type GuestTls = Arc<tokio_rustls::rustls::ClientConfig>;

/// What a guest's outgoing request may reach, and until when.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// `host`, `host:port`, or `*`.
    allowed: Arc<[String]>,
    /// The running call's deadline.
    pub deadline: Instant,
    /// With the node's own CAs; `None`: the bundled roots only.
    tls: Option<GuestTls>,
}

impl Outbound {
    /// Requests to `allowed`, until `deadline`, verified with `tls` (or
    /// the bundled roots).
    pub fn new(allowed: Arc<[String]>, deadline: Instant, tls: Option<GuestTls>) -> Self {
        Self {
            allowed,
            deadline,
            tls,
        }
    }

    /// True when `uri` names a host (and port) on the list.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        self.allowed.iter().any(|entry| {
            entry == "*"
                || *entry == host
                || entry
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| h == host && p.parse() == Ok(port))
        })
    }
}

type Sent = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Sent,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Sent), Error>> + Send> {
        drop(fut);
        let allowed = self.allows(request.uri());
        let tls = self.tls.clone();
        let left = self.deadline.saturating_duration_since(Instant::now());
        if !allowed {
            tracing::info!(uri = %request.uri(), "outgoing request denied: host not in allow_hosts");
        }
        Box::new(async move {
            if !allowed {
                return Err(Error::HttpRequestDenied);
            }
            let cap = |d: Option<Duration>| Some(d.map_or(left, |d| d.min(left)));
            let options = RequestOptions {
                connect_timeout: cap(options.and_then(|o| o.connect_timeout)),
                first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout)),
                between_bytes_timeout: cap(options.and_then(|o| o.between_bytes_timeout)),
            };
            if let Some(tls) = tls {
                return tokio::time::timeout(left, send::send(tls, request, options))
                    .await
                    .map_err(|_| Error::ConnectionTimeout)?;
            }
            let sent = tokio::time::timeout(
                left,
                wasmtime_wasi_http::default_send_request(request, Some(options)),
            )
            .await
            .map_err(|_| Error::ConnectionTimeout)?;
            let (response, io) = sent?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Sent))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &[&str], uri: &str) -> bool {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        Outbound::new(list.into(), Instant::now(), None).allows(&uri.parse().unwrap())
    }

    #[test]
    fn only_listed_hosts_and_ports_are_allowed() {
        assert!(!allows(&[], "http://example.com/"));
        assert!(allows(&["example.com"], "https://EXAMPLE.com/x"));
        assert!(allows(&["example.com"], "http://example.com:8080/"));
        assert!(allows(&["example.com:443"], "https://example.com/"));
        assert!(!allows(&["example.com:443"], "http://example.com/"));
        assert!(allows(&["127.0.0.1:9000"], "http://127.0.0.1:9000/"));
        assert!(!allows(&["127.0.0.1:9000"], "http://127.0.0.1:9001/"));
        assert!(!allows(&["example.com"], "http://example.com.evil.net/"));
        assert!(allows(&["*"], "http://anything.net/"));
    }
}
