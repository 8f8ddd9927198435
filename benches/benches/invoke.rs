//! Cold and warm paths of one invocation, from compile to an HTTP round trip.
//!
//! `cargo bench -p edge-benches --bench invoke`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use edge_benches::fixture::{Fixture, client_input};
use edge_benches::{ServedNode, guests};
use edge_core::engine::build_engine;
use edge_core::session::SessionMode;
use edge_core::{EngineConfig, InvokeRequest, Node, NodeConfig, RemoteStore};
use std::time::Duration;
use wasmtime::component::Component;

fn fixture(pooling: bool) -> Fixture {
    Fixture::new(guests::ECHO, pooling).unwrap()
}

fn compile_and_load(c: &mut Criterion) {
    let engine = build_engine(&EngineConfig::default()).unwrap();
    let bytes = std::fs::read(guests::ECHO).unwrap();
    let mut g = c.benchmark_group("cold");
    g.sample_size(10);
    g.bench_function("compile_echo", |b| {
        b.iter(|| Component::new(&engine, &bytes).unwrap())
    });
    let artifact = Component::new(&engine, &bytes)
        .unwrap()
        .serialize()
        .unwrap();
    g.bench_function("load_echo_from_artifact", |b| {
        b.iter(|| {
            // SAFETY: `artifact` was serialized just above by this engine.
            #[allow(unsafe_code)]
            unsafe {
                Component::deserialize(&engine, &artifact).unwrap()
            }
        })
    });
    g.finish();
}

fn instantiate_and_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("instance");
    for (label, pooling) in [
        ("instantiate_pooled", true),
        ("instantiate_on_demand", false),
    ] {
        let f = fixture(pooling);
        g.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                let mut store = f.store();
                f.pre.instantiate_async(&mut store).await.unwrap();
                drop(store);
            })
        });
    }
    let f = fixture(true);
    let mut store = f.store();
    let instance = rt.block_on(f.pre.instantiate_async(&mut store)).unwrap();
    let inputs = client_input(b"hello");
    g.bench_function("call_warm_instance", |b| {
        b.iter(|| {
            rt.block_on(
                instance
                    .edge_function_handler()
                    .call_handle(&mut store, &inputs),
            )
            .unwrap()
            .unwrap()
        })
    });
    g.finish();
}

fn node_paths(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let served = rt
        .block_on(ServedNode::start(&[
            ("echo", guests::ECHO),
            ("counter", guests::COUNTER),
        ]))
        .unwrap();
    rt.block_on(async {
        for s in ["local-counter", "local-echo"] {
            served.node.set_mode(s, SessionMode::Local).await.unwrap();
        }
    });
    let client = reqwest::Client::new();
    let url = served.url("/v1/functions/echo/invoke");
    let mut g = c.benchmark_group("node");
    g.bench_function("invoke_in_process", |b| {
        b.to_async(&rt).iter(|| async {
            served
                .node
                .invoke(InvokeRequest::from_client(
                    "echo",
                    Some("b".into()),
                    b"hi".to_vec(),
                ))
                .await
                .unwrap()
        })
    });
    // Sessions: a stateful call on a pinned warm instance vs a fresh instance
    // with state in the embedded remote store, and a stateless warm call.
    for (label, function, session) in [
        ("counter_local_pinned", "counter", "local-counter"),
        ("counter_remote_sled", "counter", "remote-counter"),
        ("echo_local_pinned", "echo", "local-echo"),
    ] {
        g.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                let req = InvokeRequest::from_client(function, Some(session.into()), Vec::new());
                served.node.invoke(req).await.unwrap()
            })
        });
    }
    // The same stateful call on the external stores: Redis and a peer node.
    let redis = edge_benches::Redis::start();
    let state_server = rt.block_on(ServedNode::start(&[])).unwrap();
    let mut stores = vec![(
        "counter_remote_peer",
        RemoteStore::Peer(state_server.url("")),
    )];
    if let Some(r) = &redis {
        stores.push(("counter_remote_redis", RemoteStore::Redis(r.url.clone())));
    }
    for (label, store) in stores {
        let remote = rt
            .block_on(ServedNode::start_with(
                &[("counter", guests::COUNTER)],
                |c| c.remote_store = store,
            ))
            .unwrap();
        g.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                let req = InvokeRequest::from_client(
                    "counter",
                    Some("remote-counter".into()),
                    Vec::new(),
                );
                remote.node.invoke(req).await.unwrap()
            })
        });
    }
    g.bench_function("http_invoke_echo", |b| {
        b.to_async(&rt).iter(|| async {
            let r = client
                .post(&url)
                .header("edge-session", "b")
                .body("hi")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        })
    });
    // Restart: open an existing data dir (artifacts cached) and answer a call.
    let cached = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let node = Node::open(NodeConfig::new(cached.path())).await.unwrap();
        node.registry()
            .deploy("echo", std::fs::read(guests::ECHO).unwrap())
            .await
            .unwrap();
        node.flush().await.unwrap();
    });
    // A dropped node's sled writer thread ends (and lets go of the
    // database's lock) a moment later, so each iteration opens a copy of
    // the directory made beforehand (not timed), and the node is dropped
    // after the timing.
    std::thread::sleep(Duration::from_millis(200));
    g.sample_size(20);
    g.bench_function("open_cached_node_to_first_reply", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let copy = tempfile::tempdir().unwrap();
                copy_dir(cached.path(), copy.path()).unwrap();
                copy
            },
            |copy| async move {
                let node = Node::open(NodeConfig::new(copy.path())).await.unwrap();
                node.invoke(InvokeRequest::from_client("echo", None, b"x".to_vec()))
                    .await
                    .unwrap();
                (node, copy)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Copies directory `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = compile_and_load, instantiate_and_call, node_paths
}
criterion_main!(benches);
