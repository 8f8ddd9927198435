//! The data dir: one node at a time, the function records as files (and the
//! move from the database an older node kept them in), and a database that
//! cannot be opened.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::{TestNode, guests, serve_refuses};

/// Each table's directory under `functions/` and the tree an older node
/// kept it in.
const TABLES: [(&str, &str); 3] = [
    ("records", "functions"),
    ("previous", "previous_versions"),
    ("config", "function_config"),
];

/// Puts a data dir back the way an older node left it: the records in
/// trees of its database, no record files.
fn to_older_layout(data: &Path) {
    let db = sled::open(data.join("db")).unwrap();
    for (dir, tree) in TABLES {
        let dir = data.join("functions").join(dir);
        let tree = db.open_tree(tree).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            tree.insert(name, std::fs::read(&path).unwrap()).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    db.flush().unwrap();
}

/// What a node started on `data` said when it stopped (it must, within a
/// minute, and not with success).
async fn refused(data: &Path) -> String {
    let data = data.to_owned();
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || serve_refuses(&data, &[])),
    )
    .await
    .expect("the node did not stop")
    .unwrap()
}

#[tokio::test]
async fn records_an_older_node_kept_in_its_database_move_to_files_whole() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("f", guests::ECHO).await;
    node.deploy("f", guests::COUNTER).await;
    node.deploy("kv", guests::WASI_KV).await;
    let r = node
        .http
        .put(node.at("/v1/functions/kv/config"))
        .json(&json!({"mode": "live"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(node.invoke_ok("f", Some("s"), "").await, "1");
    let before = node.get_json("/v1/functions/f").await;
    node.stop().await;
    let records = dir.path().join("functions/records");
    assert!(records.join("f.json").is_file(), "records are files");
    to_older_layout(dir.path());
    assert!(!records.exists());

    let node = TestNode::start(dir.path(), &[]).await;
    let after = node.get_json("/v1/functions/f").await;
    assert_eq!(after["digest"], before["digest"]);
    assert_eq!(after["previous"]["digest"], before["previous"]["digest"]);
    assert_eq!(
        node.get_json("/v1/functions/kv/config").await["keys"],
        json!(["mode"])
    );
    assert_eq!(node.invoke_ok("f", Some("s"), "").await, "2", "state kept");
    assert_eq!(
        node.metric("edge_compilations_total").await,
        0.0,
        "artifacts kept"
    );
    // The previous version came along: a rollback brings echo back.
    assert_eq!(node.rollback("f").await.status(), 200);
    assert_eq!(node.invoke_ok("f", None, "v1").await, "v1");
    node.stop().await;

    // The files are the records now; the old trees are gone.
    assert!(records.join("f.json").is_file());
    let db = sled::open(dir.path().join("db")).unwrap();
    let trees: Vec<String> = db
        .tree_names()
        .iter()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    for (_, tree) in TABLES {
        assert!(!trees.iter().any(|t| t == tree), "{tree} left in {trees:?}");
    }
    drop(db);
    // And the rollback, recorded in files, holds across another restart.
    let node = TestNode::start(dir.path(), &[]).await;
    assert_eq!(node.invoke_ok("f", None, "still v1").await, "still v1");
}

#[tokio::test]
async fn a_second_node_on_a_data_dir_in_use_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;
    let said = refused(dir.path()).await;
    assert!(said.contains("in use by another node"), "{said}");
    assert_eq!(node.invoke_ok("echo", None, "first").await, "first");
}

#[tokio::test]
async fn a_node_whose_database_cannot_open_stops_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // Where the database goes, a file: sled cannot open it. (The records
    // are files already: nothing to move, the node starts serving first.)
    std::fs::write(dir.path().join("db"), b"not a database").unwrap();
    std::fs::create_dir_all(dir.path().join("functions/records")).unwrap();
    let said = refused(dir.path()).await;
    assert!(said.contains("the database could not be opened"), "{said}");
    assert!(said.contains("opening the node in"), "{said}");
}
