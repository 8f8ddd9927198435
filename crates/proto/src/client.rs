//! The one client an edge-node uses to talk to other nodes: pooled
//! keep-alive connections, the cluster token on every request, a deadline on
//! every request, and one policy for when a request is sent again.

use crate::session::{ImportRequest, WireEntry};
use backon::{ConstantBuilder, Retryable};
use bytes::Bytes;
use edge_host_api::Versioned;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long an idle connection is kept: below a peer's header-read timeout
/// (10 s by default), which is also how long it keeps an idle connection, so
/// that a request is never sent on a connection the peer is closing.
const POOL_IDLE: Duration = Duration::from_secs(4);
/// The deadline of a request that sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request to another node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The address is not an http(s) URL that can take a path.
    #[error("bad peer URL {0:?}")]
    Url(String),
    /// No answer within the request's deadline.
    #[error("{url}: no answer within {after:?}")]
    Timeout {
        /// The request.
        url: String,
        /// Its deadline.
        after: Duration,
    },
    /// The request did not reach the node, or its answer did not come back.
    #[error("{url}: {message}")]
    Unreachable {
        /// The request.
        url: String,
        /// What failed, with its causes.
        message: String,
    },
    /// TLS could not be set up (a bad CA file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The node answered with a status other than success.
    #[error("{url} answered {}: {body}", status_text(*.status))]
    Status {
        /// The request.
        url: String,
        /// The status code.
        status: u16,
        /// The body, as text.
        body: String,
    },
}

/// Whether a request that got no answer may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: the request has an effect a second copy would repeat.
    Never,
    /// Once, at once, when the request failed without an answer and before
    /// its deadline (a pooled connection the peer closed as it was reused):
    /// for requests whose second copy changes nothing.
    Idempotent,
}

/// One request to another node.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    method: reqwest::Method,
    url: reqwest::Url,
    body: Option<(Bytes, &'static str)>,
    headers: Vec<(&'static str, String)>,
    timeout: Duration,
    retry: Retry,
}

impl PeerRequest {
    fn new(method: reqwest::Method, url: reqwest::Url) -> Self {
        let retry = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            Retry::Idempotent
        } else {
            Retry::Never
        };
        Self {
            method,
            url,
            body: None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            retry,
        }
    }

    /// `GET url` (sent again once if it got no answer).
    pub fn get(url: reqwest::Url) -> Self {
        Self::new(reqwest::Method::GET, url)
    }

    /// `DELETE url` (sent again once if it got no answer).
    pub fn delete(url: reqwest::Url) -> Self {
        Self::new(reqwest::Method::DELETE, url)
    }

    /// `POST url` with `body` of `content_type` (never sent again unless
    /// [`PeerRequest::retry`] says so).
    pub fn post(url: reqwest::Url, body: Bytes, content_type: &'static str) -> Self {
        let mut r = Self::new(reqwest::Method::POST, url);
        r.body = Some((body, content_type));
        r
    }

    /// A call of `function` passed on to `node` (a session's owner, or a
    /// member that has the function): never sent twice (a call acts), never
    /// passed on again by `node`, bounded by the call's `deadline` plus the
    /// hop's grace.
    pub fn forwarded_invoke(
        node: &str,
        function: &str,
        session: Option<&str>,
        input: Bytes,
        deadline: Duration,
    ) -> Result<Self, PeerError> {
        /// What the hop may add to the call's own deadline.
        const GRACE: Duration = Duration::from_secs(5);
        let url = crate::routes::invoke(node, function)?;
        let mut request = Self::post(url, input, "application/octet-stream")
            .timeout(deadline + GRACE)
            .retry(Retry::Never)
            .header(crate::routes::FORWARDED_HEADER, "1");
        if let Some(s) = session {
            request = request.header(crate::routes::SESSION_HEADER, s);
        }
        Ok(request)
    }

    /// `POST url` with `value` as JSON.
    pub fn post_json(url: reqwest::Url, value: &impl serde::Serialize) -> Result<Self, PeerError> {
        let body = serde_json::to_vec(value).map_err(|e| PeerError::Unreachable {
            url: url.to_string(),
            message: format!("encoding the request: {e}"),
        })?;
        Ok(Self::post(url, Bytes::from(body), "application/json"))
    }

    /// `PUT url` with `value` as JSON (never sent again unless
    /// [`PeerRequest::retry`] says so).
    pub fn put_json(url: reqwest::Url, value: &impl serde::Serialize) -> Result<Self, PeerError> {
        let mut r = Self::post_json(url, value)?;
        r.method = reqwest::Method::PUT;
        Ok(r)
    }

    /// The whole request, answer included, must be over within `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether it may be sent again.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }
}

/// A node's answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The URL asked.
    pub url: String,
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// This answer if it is a success, else [`PeerError::Status`].
    pub fn success(self) -> Result<Self, PeerError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(PeerError::Status {
                status: self.status,
                body: String::from_utf8_lossy(&self.body).into_owned(),
                url: self.url,
            })
        }
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PeerError> {
        serde_json::from_slice(&self.body).map_err(|e| PeerError::Unreachable {
            url: self.url.clone(),
            message: format!("unreadable answer: {e}"),
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The pooled client for other nodes. Cheap to clone.
///
/// Made by [`PeerClient::new`], it loads the system's certificate
/// authorities (a few hundred files to read and parse: milliseconds a
/// starting node should not wait for) on first use, or in the background
/// after [`PeerClient::prepare`].
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<Lazy>,
}

struct Lazy {
    token: Option<String>,
    http: OnceLock<reqwest::Client>,
}

/// The HTTP client: the token on every request, the system's roots and
/// `roots` trusted, `identity` presented to a server that asks for a client
/// certificate.
fn build(
    token: Option<&str>,
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, PeerError> {
    let mut headers = HeaderMap::new();
    if let Some(Ok(v)) = token.map(|t| HeaderValue::from_str(&format!("Bearer {t}"))) {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .pool_idle_timeout(POOL_IDLE)
        .tcp_nodelay(true);
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| PeerError::Tls(format!("building the HTTP client: {e}")))
}

impl Default for PeerClient {
    fn default() -> Self {
        Self::new(None)
    }
}

impl PeerClient {
    /// A client that presents `token` (the cluster token) on every request
    /// and trusts the system's certificate authorities for `https://` nodes.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            inner: Arc::new(Lazy {
                token: token.map(str::to_owned),
                http: OnceLock::new(),
            }),
        }
    }

    /// As [`PeerClient::new`], also trusting the certificate authorities in
    /// `roots` (one or more PEM certificates: a cluster's own CA) and
    /// presenting `identity` (a PEM certificate chain and its private key:
    /// the node's own) to a node that asks for a client certificate. The
    /// client is made now, so a bad file is refused at once.
    pub fn with_tls(
        token: Option<&str>,
        roots: Option<&[u8]>,
        identity: Option<&[u8]>,
    ) -> Result<Self, PeerError> {
        let roots = match roots {
            None => Vec::new(),
            Some(pem) => {
                let roots = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| PeerError::Tls(format!("the CA certificates: {e}")))?;
                if roots.is_empty() {
                    return Err(PeerError::Tls("no certificate in the CA file".into()));
                }
                roots
            }
        };
        let identity = identity
            .map(reqwest::Identity::from_pem)
            .transpose()
            .map_err(|e| PeerError::Tls(format!("the client certificate and key: {e}")))?;
        let http = build(token, roots, identity)?;
        Ok(Self {
            inner: Arc::new(Lazy {
                token: token.map(str::to_owned),
                http: OnceLock::from(http),
            }),
        })
    }

    /// Makes the client on a thread of its own now, so the first request
    /// finds it ready.
    pub fn prepare(&self) {
        let client = self.clone();
        let spawned = std::thread::Builder::new()
            .name("edge-peer-client".into())
            .spawn(move || {
                client.http();
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "the client is made on first use instead");
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.inner.http.get_or_init(|| {
            build(self.inner.token.as_deref(), Vec::new(), None).unwrap_or_else(|e| {
                // The builder fails only on a TLS backend or root store
                // that cannot be set up; a client without them then.
                tracing::warn!(error = %e, "peer client without the system's roots");
                reqwest::Client::new()
            })
        })
    }

    /// Sends `request` and reads the whole answer, whatever its status.
    #[tracing::instrument(level = "debug", skip_all, fields(method = %request.method, url = %request.url))]
    pub async fn send(&self, request: PeerRequest) -> Result<Answer, PeerError> {
        let started = tokio::time::Instant::now();
        let left = || request.timeout.saturating_sub(started.elapsed());
        let again = match request.retry {
            Retry::Never => 0,
            Retry::Idempotent => 1,
        };
        // At once: the failure this covers is a pooled connection the peer
        // had closed, and a new connection is the cure, not a pause.
        let policy = ConstantBuilder::default()
            .with_delay(Duration::ZERO)
            .with_max_times(again);
        (|| self.once(&request, left()))
            .retry(policy)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, PeerError::Unreachable { .. }) && !left().is_zero())
            .notify(|e, _| tracing::debug!(error = %e, "no answer; sending once more"))
            .await
    }

    async fn once(&self, r: &PeerRequest, timeout: Duration) -> Result<Answer, PeerError> {
        let url = r.url.to_string();
        let mut b = self.http().request(r.method.clone(), r.url.clone());
        for (name, value) in &r.headers {
            b = b.header(*name, value);
        }
        if let Some((body, content_type)) = &r.body {
            b = b
                .header(reqwest::header::CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        let exchange = async {
            let response = b.send().await.map_err(|e| unreachable(&url, &e))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(|e| unreachable(&url, &e))?;
            Ok(Answer {
                url: url.clone(),
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(PeerError::Timeout {
                url: url.clone(),
                after: timeout,
            }))
    }

    /// Passes a request for a `wasi:http` function on to `node` as it came
    /// (`method`, `path` with its query, `headers` but the hop-by-hop ones,
    /// `body`), marked as passed so that `node` does not pass it on again,
    /// with the cluster's token; never sent twice (a request acts). The
    /// answer's status and headers come within `timeout`; its body streams.
    pub async fn pass_http(
        &self,
        node: &str,
        method: reqwest::Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<reqwest::Response, PeerError> {
        let url = format!("{}{path}", node.trim_end_matches('/'));
        let target = reqwest::Url::parse(&url).map_err(|_| PeerError::Url(url.clone()))?;
        let mut passed = HeaderMap::new();
        for (name, value) in headers {
            if !crate::routes::HOP_BY_HOP.contains(&name.as_str()) {
                passed.append(name.clone(), value.clone());
            }
        }
        let request = self
            .http()
            .request(method, target)
            .headers(passed)
            .header(crate::routes::FORWARDED_HEADER, "1")
            .body(body);
        tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| PeerError::Timeout {
                url: url.clone(),
                after: timeout,
            })?
            .map_err(|e| unreachable(&url, &e))
    }

    /// Hands session `id` with `entries` to the node at `to`, which must
    /// take it in local-state mode and have every one of `functions`.
    pub async fn import(
        &self,
        to: &str,
        id: &str,
        entries: &[(String, Versioned)],
        functions: Vec<String>,
    ) -> Result<(), PeerError> {
        let body = ImportRequest {
            entries: entries
                .iter()
                .map(|(k, v)| WireEntry::encode(k, v))
                .collect(),
            functions,
        };
        let url = crate::routes::session(to, id, &["import"])?;
        let answer = self
            .send(PeerRequest::post_json(url, &body)?)
            .await?
            .success()?;
        let outcome: serde_json::Value = answer.json()?;
        if outcome["mode"] != "local" {
            return Err(PeerError::Status {
                url: answer.url,
                status: answer.status,
                body: format!(
                    "cannot take the session in local-state mode ({})",
                    outcome["reason"].as_str().unwrap_or("unknown")
                ),
            });
        }
        Ok(())
    }
}

/// `401 Unauthorized` for 401.
fn status_text(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| status.to_string())
}

/// An error with its causes, on one line.
fn unreachable(url: &str, e: &(dyn std::error::Error + 'static)) -> PeerError {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    PeerError::Unreachable {
        url: url.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that drops the first connection unanswered and answers
    /// `200 ok` on every later one; counts connections.
    async fn flaky_server() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if n > 0 {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                }
                // n == 0: dropped without an answer.
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn an_unanswered_get_is_sent_once_more_a_post_never() {
        let client = PeerClient::default();
        let (url, seen) = flaky_server().await;
        let get = PeerRequest::get(crate::routes::endpoint(&url, &["x"]).unwrap());
        let answer = client.send(get).await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));
        assert_eq!(seen.load(Ordering::SeqCst), 2);

        let (url, seen) = flaky_server().await;
        let post = PeerRequest::post(
            crate::routes::endpoint(&url, &["x"]).unwrap(),
            Bytes::from_static(b"run me once"),
            "text/plain",
        );
        let err = client.send(post).await.unwrap_err();
        assert!(matches!(err, PeerError::Unreachable { .. }), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 1, "a POST is never repeated");
    }

    #[tokio::test]
    async fn a_request_is_bounded_by_its_deadline() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let started = std::time::Instant::now();
        let get = PeerRequest::get(crate::routes::endpoint(&url, &[]).unwrap())
            .timeout(Duration::from_millis(200));
        let err = PeerClient::default().send(get).await.unwrap_err();
        assert!(matches!(err, PeerError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
