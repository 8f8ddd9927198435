//! [`StateStore`] on another edge-node's state server (the "in-edge" model).
//!
//! Wire format (served by `edge-node`, see the README):
//! - `GET  /v1/sessions/{id}/state/{key}` → the bytes, `ETag: "<version>"`; 404 when absent;
//! - `GET  /v1/sessions/{id}/state` → `[{"key": "...", "version": n}]`;
//! - `POST /v1/sessions/{id}/commit` with a [`WireCommit`] → 204, or 409 on a version conflict;
//! - `DELETE /v1/sessions/{id}/state` → `{"deleted": n}`.

use crate::store::{Commit, StateStore, StoreError, Versioned};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// A [`Commit`] as JSON: values in base64.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireCommit {
    /// Keys read and the version seen (`null`: absent).
    pub reads: Vec<(String, Option<u64>)>,
    /// Keys written: base64 bytes to set, `null` to delete.
    pub writes: Vec<(String, Option<String>)>,
}

impl From<&Commit> for WireCommit {
    fn from(c: &Commit) -> Self {
        Self {
            reads: c.reads.clone(),
            writes: c
                .writes
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|b| B64.encode(b))))
                .collect(),
        }
    }
}

impl TryFrom<WireCommit> for Commit {
    type Error = base64::DecodeError;

    fn try_from(w: WireCommit) -> Result<Self, Self::Error> {
        let writes = w
            .writes
            .into_iter()
            .map(|(k, v)| Ok((k, v.map(|s| B64.decode(s)).transpose()?)))
            .collect::<Result<_, base64::DecodeError>>()?;
        Ok(Commit {
            reads: w.reads,
            writes,
        })
    }
}

/// One key of a session with its value (base64) and version: how a
/// migrating session travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEntry {
    /// The key.
    pub key: String,
    /// The value, base64.
    pub value: String,
    /// Its version.
    pub version: u64,
}

impl WireEntry {
    /// Encodes one entry.
    pub fn encode(key: &str, v: &Versioned) -> Self {
        Self {
            key: key.to_owned(),
            value: B64.encode(&v.value),
            version: v.version,
        }
    }

    /// Decodes one entry.
    pub fn decode(self) -> Result<(String, Versioned), base64::DecodeError> {
        Ok((
            self.key,
            Versioned {
                value: B64.decode(self.value)?,
                version: self.version,
            },
        ))
    }
}

/// One key of a session listing.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyVersion {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: u64,
}

/// The conflict body a peer answers a stale commit with.
#[derive(Debug, Deserialize)]
struct ConflictBody {
    key: Option<String>,
}

/// Session state held by a peer edge-node.
#[derive(Clone)]
pub struct PeerStore {
    base: reqwest::Url,
    http: reqwest::Client,
    token: Option<String>,
}

impl PeerStore {
    /// A store on the peer at `base` (e.g. `http://10.0.0.2:7878`). Connections
    /// are kept alive and pooled.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, StoreError> {
        let base = reqwest::Url::parse(base)
            .map_err(|e| StoreError::Backend(format!("peer url {base:?}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(StoreError::Backend(format!(
                "peer url {base} is not http(s)"
            )));
        }
        let http = reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self { base, http, token })
    }

    fn url(&self, session: &str, tail: &[&str]) -> Result<reqwest::Url, StoreError> {
        if !crate::valid_session_id(session) {
            return Err(StoreError::InvalidSession);
        }
        let mut url = self.base.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| StoreError::Backend("peer url cannot take a path".into()))?;
            segs.pop_if_empty()
                .extend(["v1", "sessions", session])
                .extend(tail);
        }
        Ok(url)
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("peer: {e}"))
}

async fn fail(r: reqwest::Response) -> StoreError {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    StoreError::Backend(format!("peer answered {status}: {body}"))
}

#[async_trait]
impl StateStore for PeerStore {
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let r = self
            .request(reqwest::Method::GET, self.url(session, &["state", key])?)
            .send()
            .await
            .map_err(backend)?;
        match r.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let version = r
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim_matches('"').parse().ok())
                    .ok_or_else(|| backend("missing ETag"))?;
                let value = r.bytes().await.map_err(backend)?.to_vec();
                Ok(Some(Versioned { value, version }))
            }
            _ => Err(fail(r).await),
        }
    }

    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let r = self
            .request(reqwest::Method::GET, self.url(session, &["state"])?)
            .send()
            .await
            .map_err(backend)?;
        if !r.status().is_success() {
            return Err(fail(r).await);
        }
        let keys: Vec<KeyVersion> = r.json().await.map_err(backend)?;
        Ok(keys.into_iter().map(|k| (k.key, k.version)).collect())
    }

    async fn commit(&self, session: &str, commit: &Commit) -> Result<(), StoreError> {
        if commit.is_read_only() {
            return Ok(());
        }
        let r = self
            .request(reqwest::Method::POST, self.url(session, &["commit"])?)
            .json(&WireCommit::from(commit))
            .send()
            .await
            .map_err(backend)?;
        match r.status() {
            s if s.is_success() => Ok(()),
            reqwest::StatusCode::CONFLICT => {
                let body: ConflictBody = r.json().await.map_err(backend)?;
                Err(StoreError::Conflict {
                    key: body.key.unwrap_or_default(),
                })
            }
            _ => Err(fail(r).await),
        }
    }

    async fn delete_session(&self, session: &str) -> Result<usize, StoreError> {
        let r = self
            .request(reqwest::Method::DELETE, self.url(session, &["state"])?)
            .send()
            .await
            .map_err(backend)?;
        if !r.status().is_success() {
            return Err(fail(r).await);
        }
        let v: serde_json::Value = r.json().await.map_err(backend)?;
        Ok(v["deleted"].as_u64().unwrap_or(0) as usize)
    }
}
