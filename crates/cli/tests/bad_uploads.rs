//! Malformed uploads and bad names: each gets a 4xx with a message, and the
//! node keeps serving.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{TestNode, guests};

/// `len` pseudo-random bytes from `seed` (reproducible).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    support::Rng::new(seed).bytes(len)
}

#[tokio::test]
async fn malformed_uploads_get_4xx_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let echo = std::fs::read(guests::ECHO).unwrap();
    let limit = echo.len() + 1000;
    let node = TestNode::start(dir.path(), &["--max-upload-bytes", &limit.to_string()]).await;
    node.deploy("echo", guests::ECHO).await;

    let component_header = b"\0asm\x0d\x00\x01\x00".to_vec();
    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty body", vec![], 400),
        ("one byte", vec![0], 400),
        ("magic only", b"\0asm".to_vec(), 400),
        (
            "seven bytes of preamble",
            component_header[..7].to_vec(),
            400,
        ),
        ("wrong magic", b"\x7fELF\x02\x01\x01\x00rest".to_vec(), 400),
        ("unknown version", b"\0asm\x02\x00\x00\x00".to_vec(), 400),
        ("core module", b"\0asm\x01\x00\x00\x00".to_vec(), 400),
        (
            "core module with a type section",
            b"\0asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00".to_vec(),
            400,
        ),
        (
            "empty component (no handler export)",
            component_header.clone(),
            400,
        ),
        (
            "component header + garbage section",
            [component_header.clone(), vec![0xff, 0x05, 1, 2, 3, 4, 5]].concat(),
            400,
        ),
        (
            "component header + section longer than the body",
            [component_header.clone(), vec![0x01, 0xff, 0xff, 0x03]].concat(),
            400,
        ),
        ("one byte over the limit", vec![0u8; limit + 1], 413),
        ("far over the limit", vec![0u8; limit * 4], 413),
        ("text", b"hello, this is not wasm".to_vec(), 400),
    ];
    for (i, seed) in [1u64, 7, 42, 1234, 99_999].into_iter().enumerate() {
        let name: &'static str = [
            "random 100 B",
            "random 1 KiB",
            "random 10 KiB",
            "random 40 KiB",
            "random 3 B",
        ][i];
        let len = [100, 1024, 10 * 1024, 40 * 1024, 3][i];
        cases.push((name, noise(seed, len), 400));
    }
    for frac in [2usize, 4, 10] {
        cases.push(("truncated echo", echo[..echo.len() / frac].to_vec(), 400));
    }
    cases.push((
        "echo minus its last byte",
        echo[..echo.len() - 1].to_vec(),
        400,
    ));
    cases.push((
        "random bytes after a component header",
        [component_header.clone(), noise(5, 4096)].concat(),
        400,
    ));
    let mut flipped = echo.clone();
    flipped[8] = 0x7f; // the first section id: no such section
    cases.push(("echo with an invalid first section id", flipped, 400));

    assert!(cases.len() >= 20);
    for (what, bytes, status) in cases {
        let r = node.deploy_bytes("bad", bytes).await;
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(got, status, "{what}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert!(!v["error"].as_str().unwrap().is_empty(), "{what}");
        assert!(node.healthy().await, "after {what}");
    }

    let listed: Vec<serde_json::Value> =
        serde_json::from_value(node.get_json("/v1/functions").await).unwrap();
    assert_eq!(listed.len(), 1, "no malformed upload was registered");
    assert_eq!(node.invoke_ok("echo", None, "alive").await, "alive");
}

#[tokio::test]
async fn bad_names_are_refused_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    let echo = std::fs::read(guests::ECHO).unwrap();
    let long = "a".repeat(65);
    for name in [
        "Echo",
        "-echo",
        ".echo",
        "a..b",
        "a%2Fb",
        "x%2E%2E",
        "a%00b",
        "%C3%A9cho",
        "e%E2%80%8Bcho",
        "a%20b",
        long.as_str(),
    ] {
        let r = node.deploy_bytes(name, echo.clone()).await;
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(got, 400, "{name}: {text}");
        assert!(text.contains("invalid_name"), "{name}: {text}");
    }
    let listed: Vec<serde_json::Value> =
        serde_json::from_value(node.get_json("/v1/functions").await).unwrap();
    assert!(listed.is_empty());
}

/// The `i`-th mutant of `valid`: random bytes (half behind a component
/// preamble), a truncation, bit flips, or a spliced-in random run.
fn mutant(valid: &[u8], rng: &mut support::Rng, i: usize) -> Vec<u8> {
    const PREAMBLE: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
    match i % 5 {
        0 => {
            let len = rng.below(4096) as usize;
            rng.bytes(len)
        }
        1 => {
            let mut b = PREAMBLE.to_vec();
            let len = rng.below(4096) as usize;
            b.extend(rng.bytes(len));
            b
        }
        2 => valid[..rng.below(valid.len() as u64) as usize].to_vec(),
        3 => {
            let mut b = valid.to_vec();
            for _ in 0..=rng.below(8) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] ^= 1 << rng.below(8);
            }
            b
        }
        _ => {
            let mut b = valid.to_vec();
            let at = 8 + rng.below(b.len() as u64 - 8) as usize;
            let len = (rng.below(64) as usize + 1).min(b.len() - at);
            let noise = rng.bytes(len);
            b[at..at + len].copy_from_slice(&noise);
            b
        }
    }
}

#[tokio::test]
async fn a_thousand_mutated_components_get_answers_and_never_crash_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = std::sync::Arc::new(TestNode::start(dir.path(), &[]).await);
    node.deploy("echo", guests::ECHO).await;
    let valid = std::fs::read(guests::ECHO).unwrap();
    // scripts/campaigns.sh raises this.
    let mutants_total = support::env_or("EDGE_MUTANTS", 1000) as usize;
    let mut rng = support::Rng::new(2026);
    let mutants: Vec<Vec<u8>> = (0..mutants_total)
        .map(|i| mutant(&valid, &mut rng, i))
        .collect();
    let mutants = std::sync::Arc::new(mutants);
    // Four clients at once; each answer must be a 4xx with a JSON message,
    // or a 2xx for a mutation that left a valid component.
    let mut clients = Vec::new();
    for c in 0..4 {
        let (node, mutants) = (node.clone(), mutants.clone());
        let mutants_total = mutants.len();
        clients.push(tokio::spawn(async move {
            let (mut refused, mut accepted) = (0u32, 0u32);
            for i in (c..mutants_total).step_by(4) {
                let r = node
                    .deploy_bytes(&format!("m{i}"), mutants[i].clone())
                    .await;
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap();
                match status {
                    400..=499 => {
                        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
                        refused += 1;
                    }
                    200..=299 => accepted += 1,
                    _ => panic!("mutant {i}: {status} {body}"),
                }
            }
            (refused, accepted)
        }));
    }
    let (mut refused, mut accepted) = (0, 0);
    for c in clients {
        let (r, a) = c.await.unwrap();
        refused += r;
        accepted += a;
    }
    println!("{mutants_total} mutants: {refused} refused (4xx), {accepted} still valid (2xx)");
    assert_eq!(refused + accepted, mutants_total as u32);
    assert!(refused as usize > mutants_total / 2);
    // The node is the same process, still serving, and lists exactly what it accepted.
    assert!(node.healthy().await);
    assert_eq!(
        node.invoke_ok("echo", None, "still here").await,
        "still here"
    );
    let listed = node.get_json("/v1/functions").await;
    assert_eq!(listed.as_array().unwrap().len(), 1 + accepted as usize);
}

/// Files under `functions/` of a node's data dir.
fn function_files(data: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["sources", "artifacts"] {
        for e in std::fs::read_dir(data.join("functions").join(sub)).unwrap() {
            out.push(e.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn imports_the_node_lacks_are_refused_before_compiling_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]).await;
    node.deploy("echo", guests::ECHO).await;
    let kept = function_files(dir.path());
    assert_eq!(kept.len(), 2, "{kept:?}");
    // Components importing what this node does not offer: drafts of
    // wasi:config and wasi:keyvalue other than the ones it serves, and
    // wasi:blobstore.
    for name in [
        "wasi:config/store@0.2.0-draft",
        "wasi:keyvalue/store@0.2.0-draft2",
        "wasi:blobstore/blobstore@0.2.0-draft",
    ] {
        let r = node.deploy_bytes("kv-user", importing(name)).await;
        let message = support::assert_error(r, 400, "unsupported_imports").await;
        assert!(message.contains(name), "{message}");
    }
    assert_eq!(
        node.metric("edge_compilations_total").await,
        1.0,
        "nothing compiled"
    );
    assert_eq!(function_files(dir.path()), kept, "nothing left behind");
    assert_eq!(node.invoke_ok("echo", None, "still").await, "still");
}

/// A component whose only content is an import of instance `name`.
fn importing(name: &str) -> Vec<u8> {
    use wasm_encoder::{
        Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
    };
    let mut types = ComponentTypeSection::new();
    types.instance(&InstanceType::new());
    let mut imports = ComponentImportSection::new();
    imports.import(name, ComponentTypeRef::Instance(0));
    let mut c = Component::new();
    c.section(&types);
    c.section(&imports);
    c.finish()
}
