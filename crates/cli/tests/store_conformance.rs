//! Every state store keeps the same semantics (`edge_host_api::conformance`):
//! this node's sled, a real Redis server, and a real peer node's state server.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use edge_host_api::{StateStore, conformance};
use edge_store_peer::PeerStore;
use edge_store_redis::RedisStore;
use edge_store_sled::SledStore;
use std::sync::Arc;
use support::{RedisServer, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_redis_and_a_peer_node_keep_the_same_state_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::new(sled::open(dir.path().join("db")).unwrap()).unwrap();
    conformance::run_all(Arc::new(sled), "sled").await;

    let redis = RedisServer::start().await;
    let store: Arc<dyn StateStore> = Arc::new(RedisStore::connect(&redis.url).await.unwrap());
    conformance::run_all(store, "redis").await;

    let node_dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(node_dir.path(), &[]).await;
    let store: Arc<dyn StateStore> =
        Arc::new(PeerStore::new(&node.url, edge_proto::PeerClient::default()).unwrap());
    conformance::run_all(store, "peer").await;
    assert!(node.healthy().await);
}
