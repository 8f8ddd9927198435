//! The state server's commit request: arbitrary JSON for an arbitrary
//! session id, applied to a real sled store. Never a panic; a commit that
//! is accepted reads back exactly what it wrote.
#![no_main]

use edge_host_api::{Commit, StateStore};
use edge_proto::WireCommit;
use edge_store_sled::SledStore;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn env() -> &'static (tokio::runtime::Runtime, SledStore) {
    static ENV: OnceLock<(tokio::runtime::Runtime, SledStore)> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("a temporary sled");
        (rt, SledStore::new(db).expect("a store"))
    })
}

fuzz_target!(|data: &[u8]| {
    // First line: the session id; the rest: the request body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let session = String::from_utf8_lossy(&data[..split]).into_owned();
    let body = data.get(split + 1..).unwrap_or_default();
    let Ok(wire) = serde_json::from_slice::<WireCommit>(body) else {
        return;
    };
    let Ok(commit) = Commit::try_from(wire) else {
        return;
    };
    let (rt, store) = env();
    rt.block_on(async {
        if store.commit(&session, &commit).await.is_ok() {
            let mut last = std::collections::HashMap::new();
            for (k, v) in &commit.writes {
                last.insert(k.clone(), v.clone());
            }
            for (k, v) in last {
                let got = store
                    .get(&session, &k)
                    .await
                    .expect("a read after a commit");
                assert_eq!(got.map(|g| g.value), v, "key {k:?}");
            }
        }
    });
});
