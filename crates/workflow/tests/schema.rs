//! `docs/workflow.schema.json` is generated from the spec's types and checked
//! against every example in `examples/`: a spec the schema accepts is one
//! the node accepts, and the other way round for what the schema can say.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use edge_workflow::{Plan, WorkflowSpec};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generated() -> String {
    let schema = schemars::schema_for!(WorkflowSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap();
    text.push('\n');
    text
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = root().join("docs/workflow.schema.json");
    let text = generated();
    if std::env::var_os("EDGE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == text,
        "docs/workflow.schema.json is stale: run \
         `EDGE_UPDATE_SCHEMA=1 cargo test -p edge-workflow --test schema`"
    );
}

#[test]
fn every_example_passes_the_schema_and_validates() {
    let schema: Value = serde_json::from_str(&generated()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        Plan::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 2, "examples/ has the chain and the DAG");
}

#[test]
fn the_schema_refuses_what_the_node_refuses() {
    let schema: Value = serde_json::from_str(&generated()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let ok = json!({ "tasks": [{ "id": "a", "function": "f" }], "model": "state-prop" });
    assert!(validator.is_valid(&ok));
    let bad = [
        json!({ "tasks": [], "model": "state-prop" }),
        json!({ "tasks": [{ "id": "a", "function": "f" }], "model": "eventual" }),
        json!({ "tasks": [{ "id": "a", "function": "f" }], "model": "state-prop", "extra": 1 }),
        json!({ "tasks": [{ "id": "a b", "function": "f" }], "model": "state-prop" }),
        json!({ "tasks": [{ "id": "a", "function": "f", "when": "now" }], "model": "state-prop" }),
        json!({ "tasks": [{ "id": "a", "function": "f" }], "model": "state-prop", "deadline_ms": 0 }),
        json!({ "tasks": [{ "id": "a" }], "model": "state-prop" }),
    ];
    for spec in bad {
        assert!(!validator.is_valid(&spec), "schema took {spec}");
        let node = serde_json::from_value::<WorkflowSpec>(spec.clone())
            .map_err(|e| e.to_string())
            .and_then(|s| Plan::new(s).map(|_| ()).map_err(|e| e.to_string()));
        assert!(node.is_err(), "node took {spec}");
    }
}
