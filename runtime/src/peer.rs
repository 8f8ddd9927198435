//! The client side of node-to-node calls: handing a migrating session to
//! another node, and forwarding calls for a session that moved. One pooled
//! HTTP client with persistent connections.

use crate::session::SessionError;
use edge_host_api::{Versioned, WireEntry};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a node sends to take in a migrating session.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The session's whole state, with versions.
    pub entries: Vec<WireEntry>,
}

/// A pooled HTTP client for other nodes.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
}

impl Default for PeerClient {
    fn default() -> Self {
        Self::new(None)
    }
}

impl PeerClient {
    /// A client with keep-alive connections that presents `token` (the
    /// cluster token) on every call.
    pub fn new(token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(Ok(v)) =
            token.map(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")))
        {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // Below a peer's header-read timeout (10 s by default), which is
            // also how long it keeps an idle connection: reusing one the peer
            // is closing fails a request that never reached it.
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http }
    }

    /// The underlying client (the HTTP layer forwards calls with it).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Hands session `id` with `entries` to the node at `to`, which makes it
    /// local there.
    pub async fn import(
        &self,
        to: &str,
        id: &str,
        entries: Vec<(String, Versioned)>,
    ) -> Result<(), SessionError> {
        let body = ImportRequest {
            entries: entries
                .iter()
                .map(|(k, v)| WireEntry::encode(k, v))
                .collect(),
        };
        let url = format!("{}/v1/sessions/{id}/import", to.trim_end_matches('/'));
        let r = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| SessionError::Storage(format!("migrating to {to}: {e}")))?;
        if !r.status().is_success() {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            return Err(SessionError::Storage(format!(
                "{to} refused the session: {status} {text}"
            )));
        }
        let outcome: serde_json::Value = r
            .json()
            .await
            .map_err(|e| SessionError::Storage(format!("{to}: {e}")))?;
        if outcome["mode"] != "local" {
            return Err(SessionError::Storage(format!(
                "{to} cannot take the session in local-state mode ({})",
                outcome["reason"].as_str().unwrap_or("unknown")
            )));
        }
        Ok(())
    }
}
