//! The cluster's function record on the shared Redis: one hash, name →
//! [`ClusterFunction`] (JSON), written by every node a function is deployed
//! to with `deploy --all`, read by a node as it joins. Only names and
//! digests live in Redis; the components themselves go from node to node.

use edge_host_api::StoreError;
use edge_proto::ClusterFunction;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

/// The hash of cluster functions.
pub(crate) const HASH: &str = "edge:functions";

/// The functions deployed to the whole cluster, on a Redis server.
#[derive(Clone)]
pub struct RedisFunctions {
    conn: ConnectionManager,
}

fn error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("cluster functions: {e}"))
}

impl RedisFunctions {
    /// Over a connection from [`crate::connect`].
    pub fn new(conn: ConnectionManager) -> Self {
        Self { conn }
    }

    /// Records `function` as the cluster's (replacing its earlier record).
    pub async fn record(&self, function: &ClusterFunction) -> Result<(), StoreError> {
        let json = serde_json::to_string(function).map_err(error)?;
        let mut conn = self.conn.clone();
        let _: i64 = conn.hset(HASH, &function.name, json).await.map_err(error)?;
        Ok(())
    }

    /// Forgets `name`: nodes that join later do not deploy it.
    pub async fn forget(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.hdel(HASH, name).await.map_err(error)?;
        Ok(())
    }

    /// Every recorded function, sorted by name (unreadable records skipped).
    pub async fn all(&self) -> Result<Vec<ClusterFunction>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = conn.hvals(HASH).await.map_err(error)?;
        let mut all: Vec<ClusterFunction> = raw
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}
