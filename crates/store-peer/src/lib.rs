//! [`StateStore`] on another edge-node's state server (the "in-edge" model).
//!
//! Wire format (served by `edge-node`, see the README):
//! - `GET  /v1/sessions/{id}/state/{key}` → the bytes, `ETag: "<version>"`; 404 when absent;
//! - `GET  /v1/sessions/{id}/state` → `[{"key": "...", "version": n}]`;
//! - `POST /v1/sessions/{id}/commit` with a [`WireCommit`] → 204, or 409 on a version conflict;
//! - `DELETE /v1/sessions/{id}/state` → `{"deleted": n}`.

use async_trait::async_trait;
use edge_host_api::{Commit, StateStore, StoreError, Versioned, valid_session_id};
use edge_proto::{Answer, KeyVersion, PeerClient, PeerError, PeerRequest, WireCommit, routes};
use serde::Deserialize;
use std::time::Duration;

/// The conflict body a peer answers a stale commit with.
#[derive(Debug, Deserialize)]
struct ConflictBody {
    key: Option<String>,
}

/// How long one state-server request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Session state held by a peer edge-node.
#[derive(Clone)]
pub struct PeerStore {
    base: String,
    peer: PeerClient,
}

impl PeerStore {
    /// A store on the peer at `base` (e.g. `http://10.0.0.2:7878`), reached
    /// through `peer` (the node's one client: its pool and its token).
    pub fn new(base: &str, peer: PeerClient) -> Result<Self, StoreError> {
        routes::endpoint(base, &[]).map_err(backend)?;
        Ok(Self {
            base: base.to_owned(),
            peer,
        })
    }

    async fn send(
        &self,
        session: &str,
        tail: &[&str],
        request: fn(edge_proto::Url) -> PeerRequest,
    ) -> Result<Answer, StoreError> {
        if !valid_session_id(session) {
            return Err(StoreError::InvalidSession);
        }
        let url = routes::session(&self.base, session, tail).map_err(backend)?;
        self.peer
            .send(request(url).timeout(TIMEOUT))
            .await
            .map_err(backend)
    }
}

fn backend(e: PeerError) -> StoreError {
    StoreError::Backend(format!("peer: {e}"))
}

#[async_trait]
impl StateStore for PeerStore {
    async fn get(&self, session: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let a = self
            .send(session, &["state", key], PeerRequest::get)
            .await?;
        if a.status == 404 {
            return Ok(None);
        }
        let a = a.success().map_err(backend)?;
        let version = a
            .header("etag")
            .and_then(|v| v.trim_matches('"').parse().ok())
            .ok_or_else(|| StoreError::Backend(format!("peer: {} sent no ETag", a.url)))?;
        Ok(Some(Versioned {
            value: a.body.to_vec(),
            version,
        }))
    }

    async fn keys(&self, session: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let a = self.send(session, &["state"], PeerRequest::get).await?;
        let keys: Vec<KeyVersion> = a.success().and_then(|a| a.json()).map_err(backend)?;
        Ok(keys.into_iter().map(|k| (k.key, k.version)).collect())
    }

    async fn commit(&self, session: &str, commit: &Commit) -> Result<(), StoreError> {
        if commit.is_read_only() {
            return Ok(());
        }
        if !valid_session_id(session) {
            return Err(StoreError::InvalidSession);
        }
        let url = routes::session(&self.base, session, &["commit"]).map_err(backend)?;
        let request = PeerRequest::post_json(url, &WireCommit::from(commit)).map_err(backend)?;
        let a = self
            .peer
            .send(request.timeout(TIMEOUT))
            .await
            .map_err(backend)?;
        if a.status == 409 {
            let body: ConflictBody = a.json().map_err(backend)?;
            return Err(StoreError::Conflict {
                key: body.key.unwrap_or_default(),
            });
        }
        a.success().map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&self, session: &str) -> Result<usize, StoreError> {
        let a = self.send(session, &["state"], PeerRequest::delete).await?;
        #[derive(Deserialize)]
        struct Deleted {
            deleted: usize,
        }
        let d: Deleted = a.success().and_then(|a| a.json()).map_err(backend)?;
        Ok(d.deleted)
    }
}
