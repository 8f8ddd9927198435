//! kill -9 at random points during uploads: after every restart the node
//! opens, every acknowledged upload is listed and runs, and nothing
//! half-registered is listed (each listed function answers).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::{TestNode, guests};

async fn listed(node: &TestNode) -> BTreeSet<String> {
    node.get_json("/v1/functions")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn kill_9_during_uploads_leaves_no_half_registered_function() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]).await;
    let echo = std::fs::read(guests::ECHO).unwrap();
    // scripts/campaigns.sh raises this.
    let total = support::env_or("EDGE_UPLOAD_KILLS", 30) as u32;
    let mut rng = support::Rng::new(0x00b1_0ad5);
    let (mut acked, mut checked) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..total {
        let name = format!("f{i}");
        let bytes = support::distinct_component(&echo, i);
        let (http, url) = (node.http.clone(), node.at(&format!("/v1/functions/{name}")));
        let upload = tokio::spawn(async move {
            http.put(url)
                .body(bytes)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        // Upload, compile (a child process), write source, artifact and
        // record take a few hundred ms: kill somewhere in or after them.
        tokio::time::sleep(Duration::from_millis(rng.below(600))).await;
        node.kill9().await;
        if matches!(upload.await.unwrap(), Ok(201)) {
            acked.insert(name);
        }
        node = TestNode::start(dir.path(), &[]).await;
        let now = listed(&node).await;
        assert!(
            acked.is_subset(&now),
            "acknowledged uploads missing after restart {i}: {:?}",
            acked.difference(&now).collect::<Vec<_>>()
        );
        // Whatever is listed is whole: it answers.
        for f in now.difference(&checked).cloned().collect::<Vec<_>>() {
            assert_eq!(node.invoke_ok(&f, None, "x").await, "x", "{f}");
            checked.insert(f);
        }
    }
    println!(
        "kill -9 during uploads: {total} kills, {} acknowledged, {} listed after the last restart, every listed one answering",
        acked.len(),
        checked.len()
    );
    assert!(!acked.is_empty(), "no upload finished before its kill");
    assert!(
        (acked.len() as u32) < total,
        "every upload finished before its kill: the kills missed the upload"
    );
}
