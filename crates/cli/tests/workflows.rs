//! Workflows across three real nodes: the same outputs and states under
//! every model, causal order, joins, deadlines, dead peers, and the traffic
//! of each model against Table 1 of the chains/DAGs paper.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::{TestNode, guests};

const MODELS: [&str; 3] = ["pure-faas", "state-prop", "state-local"];

/// Nodes b and c, then the entry node a that knows them as peers; every
/// node hosts `stage` and `echo`.
async fn cluster(dirs: &[tempfile::TempDir; 3], extra: &[&str]) -> (TestNode, TestNode, TestNode) {
    let b = TestNode::start(dirs[1].path(), extra).await;
    let c = TestNode::start(dirs[2].path(), extra).await;
    let (pb, pc) = (format!("b={}", b.url), format!("c={}", c.url));
    let mut args = vec!["--peer", &pb, "--peer", &pc];
    args.extend_from_slice(extra);
    let a = TestNode::start(dirs[0].path(), &args).await;
    for n in [&a, &b, &c] {
        n.deploy("stage", guests::STAGE).await;
        n.deploy("echo", guests::ECHO).await;
    }
    (a, b, c)
}

fn dirs() -> [tempfile::TempDir; 3] {
    [
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    ]
}

async fn run(a: &TestNode, spec: &Value) -> (u16, Value) {
    a.run_workflow(spec).await
}

async fn run_ok(a: &TestNode, spec: &Value) -> Value {
    let (status, v) = run(a, spec).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn put_state(node: &TestNode, session: &str, key: &str, value: Vec<u8>) {
    let r = node
        .http
        .put(node.at(&format!("/v1/sessions/{session}/state/{key}")))
        .body(value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

async fn get_state(node: &TestNode, session: &str, key: &str) -> String {
    node.http
        .get(node.at(&format!("/v1/sessions/{session}/state/{key}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn task(id: &str, node: &str) -> Value {
    json!({ "id": id, "function": "stage", "node": node, "args": format!("name={id}") })
}

#[tokio::test]
async fn a_chain_and_the_fig12_dag_agree_under_every_model() {
    let d = dirs();
    let (a, _b, _c) = cluster(&d, &[]).await;
    let chain = json!({
        "tasks": [task("t1", "self"), task("t2", "b"), task("t3", "c")],
        "edges": [["t1", "t2"], ["t2", "t3"]],
        "states": { "S": ["t1", "t3"], "T": ["t2"] },
        "initial": { "T": "" },
        "input": "hello",
    });
    // Modelled on Fig. 12: l2 and l4 run in parallel; S is used by l4, then
    // l3, then l5; T by l1, then l2.
    let dag = json!({
        "tasks": [task("l1", "self"), task("l2", "b"), task("l3", "c"), task("l4", "b"), task("l5", "c")],
        "edges": [["l1", "l2"], ["l1", "l4"], ["l2", "l3"], ["l4", "l3"], ["l3", "l5"]],
        "states": { "S": ["l4", "l3", "l5"], "T": ["l1", "l2"] },
        "initial": { "T": "" },
        "input": "hi",
    });
    for (name, spec, expect_out, expect_states) in [
        (
            "chain",
            chain,
            ("t3", "hello"),
            [("S", "init;t1;t3;"), ("T", "t2;")],
        ),
        (
            "dag",
            dag,
            ("l5", "hi"),
            [("S", "init;l4;l3;l5;"), ("T", "l1;l2;")],
        ),
    ] {
        for model in MODELS {
            let session = format!("{name}-{model}");
            put_state(&a, &session, "S", b"init;".to_vec()).await;
            let mut spec = spec.clone();
            spec["model"] = json!(model);
            spec["session"] = json!(session);
            let result = run_ok(&a, &spec).await;
            assert_eq!(
                result["outputs_text"][expect_out.0], expect_out.1,
                "{name} {model}: {result}"
            );
            for (state, value) in expect_states {
                assert_eq!(
                    result["states"][state]["text"], value,
                    "{name} {model} state {state}: {result}"
                );
                assert_eq!(
                    get_state(&a, &session, state).await,
                    value,
                    "written back to the session"
                );
            }
            let timings = result["timings"].as_array().unwrap();
            assert_eq!(timings.len(), spec["tasks"].as_array().unwrap().len());
            assert!(result["traffic"]["total"]["args"].as_u64().unwrap() > 0);
        }
    }
}

#[tokio::test]
async fn state_local_without_a_session_leaves_states_with_their_owner() {
    let d = dirs();
    let (a, _b, c) = cluster(&d, &[]).await;
    let spec = json!({
        "tasks": [task("t1", "b"), task("t2", "c")],
        "edges": [["t1", "t2"]],
        "states": { "S": ["t1", "t2"] },
        "initial": { "S": "" },
        "model": "state-local",
        "input": "x",
    });
    let result = run_ok(&a, &spec).await;
    let s = &result["states"]["S"];
    assert_eq!(s["owner"], c.url);
    assert!(s["text"].is_null());
    let exec = result["execution"].as_str().unwrap();
    let url = format!("{}/v1/wf/{exec}/states/S?version={}", c.url, s["version"]);
    let first = c.http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), "t1;t2;");
    // Handed over once: a second take is refused.
    assert_eq!(c.http.get(&url).send().await.unwrap().status(), 409);
}

#[tokio::test]
async fn tasks_sharing_a_state_run_in_the_declared_order() {
    let d = dirs();
    let (a, _b, _c) = cluster(&d, &[]).await;
    // x and y have no data path between them; S orders y before x.
    let mut rng = support::Rng::new(0x2545_f491_4f6c_dd1du64);
    let mut rand = move |n: u64| rng.below(n);
    for i in 0..100 {
        let model = MODELS[i % 3];
        let (dx, dy) = (rand(15), rand(15));
        let spec = json!({
            "tasks": [
                { "id": "src", "function": "stage", "node": "self" },
                { "id": "x", "function": "stage", "node": "b", "args": format!("name=x,sleep={dx}") },
                { "id": "y", "function": "stage", "node": "c", "args": format!("name=y,sleep={dy}") },
                { "id": "sink", "function": "echo", "node": "self" },
            ],
            "edges": [["src", "x"], ["src", "y"], ["x", "sink"], ["y", "sink"]],
            "states": { "S": ["y", "x"] },
            "initial": { "S": "" },
            "session": format!("order-{i}"),
            "model": model,
            "input": "go",
        });
        let result = run_ok(&a, &spec).await;
        assert_eq!(
            result["states"]["S"]["text"], "y;x;",
            "run {i} ({model}, delays {dx}/{dy})"
        );
        assert_eq!(result["outputs_text"]["sink"], "gogo");
    }
}

#[tokio::test]
async fn a_five_branch_fan_out_is_joined() {
    let d = dirs();
    let (a, _b, _c) = cluster(&d, &[]).await;
    let nodes = ["self", "b", "c", "b", "c"];
    let mut tasks = vec![json!({ "id": "src", "function": "stage", "node": "self" })];
    let mut edges = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let id = format!("b{i}");
        tasks.push(json!({ "id": id, "function": "stage", "node": node }));
        edges.push(json!(["src", id]));
        edges.push(json!([id, "join"]));
    }
    tasks.push(json!({ "id": "join", "function": "echo", "node": "c" }));
    for model in MODELS {
        let spec = json!({ "tasks": tasks, "edges": edges, "model": model, "input": "ab" });
        let result = run_ok(&a, &spec).await;
        assert_eq!(
            result["outputs_text"]["join"], "ababababab",
            "{model}: {result}"
        );
        assert_eq!(result["timings"].as_array().unwrap().len(), 7);
    }
}

#[tokio::test]
async fn a_join_whose_input_never_comes_fails_by_the_deadline() {
    let d = dirs();
    let (a, _b, c) = cluster(&d, &[]).await;
    for model in ["state-prop", "state-local", "pure-faas"] {
        let spec = json!({
            "tasks": [
                { "id": "src", "function": "stage", "node": "self" },
                { "id": "slow", "function": "stage", "node": "b", "args": "sleep=4000" },
                { "id": "fast", "function": "stage", "node": "c" },
                { "id": "join", "function": "echo", "node": "c" },
            ],
            "edges": [["src", "slow"], ["src", "fast"], ["slow", "join"], ["fast", "join"]],
            "model": model,
            "input": "z",
            "deadline_ms": 800,
        });
        let started = std::time::Instant::now();
        let (status, body) = run(&a, &spec).await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "ended by the deadline"
        );
        assert_eq!(status, 504, "{model}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("\"slow\"") && message.contains("join"),
            "{message}"
        );
    }
    // The join that waited on c was dropped there.
    c.wait_for_metric("edge_workflow_pending", 0.0).await;
}

#[tokio::test]
async fn a_peer_killed_mid_run_fails_the_run_by_the_deadline() {
    let d = dirs();
    let (a, b, c) = cluster(&d, &[]).await;
    let b_url = b.url.clone();
    // Kill b while a run is in flight on it.
    let spec = json!({
        "tasks": [
            { "id": "src", "function": "stage", "node": "self" },
            { "id": "mid", "function": "stage", "node": "b", "args": "sleep=1000" },
            { "id": "side", "function": "stage", "node": "c" },
            { "id": "join", "function": "echo", "node": "c" },
        ],
        "edges": [["src", "mid"], ["src", "side"], ["mid", "join"], ["side", "join"]],
        "model": "state-prop",
        "input": "k",
        "deadline_ms": 2000,
    });
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(run(&a, &spec), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        b.kill9().await;
    });
    let (status, body) = result;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3500),
        "no hang"
    );
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"mid\""),
        "{body}"
    );
    c.wait_for_metric("edge_workflow_pending", 0.0).await;
    // With b gone, every model now fails fast, naming b.
    for model in MODELS {
        let mut spec = spec.clone();
        spec["model"] = json!(model);
        let (status, body) = run(&a, &spec).await;
        assert!(matches!(status, 502 | 504), "{model}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains(&b_url) || message.contains("\"mid\""),
            "{model}: {message}"
        );
    }
}

#[tokio::test]
async fn invalid_specs_are_refused_with_names() {
    let d = dirs();
    let (a, _b, _c) = cluster(&d, &[]).await;
    let cases = [
        (
            json!({ "tasks": [], "model": "state-prop" }),
            "at least one task",
        ),
        (
            json!({ "tasks": [task("a", "self")], "model": "nope" }),
            "invalid workflow spec",
        ),
        (
            json!({ "tasks": [task("a", "self"), task("b", "self")], "edges": [["a", "b"], ["b", "zz"]], "model": "pure-faas" }),
            "\"zz\"",
        ),
        (
            json!({ "tasks": [task("a", "self"), task("b", "self")], "edges": [["a", "b"]], "states": { "S": ["b", "ghost"] }, "model": "pure-faas" }),
            "\"ghost\"",
        ),
        (
            json!({ "tasks": [task("l1", "self"), task("l2", "self"), task("l3", "self"), task("l4", "self")],
                    "edges": [["l1", "l2"], ["l2", "l3"], ["l3", "l4"]], "states": { "S": ["l4", "l2"] }, "model": "state-prop" }),
            "cycle",
        ),
        (
            json!({ "tasks": [{ "id": "a", "function": "missing-fn" }], "model": "state-prop" }),
            "missing-fn",
        ),
        (
            json!({ "tasks": [{ "id": "a", "function": "stage", "node": "zed" }], "model": "state-prop" }),
            "zed",
        ),
    ];
    for (spec, needle) in cases {
        let (status, body) = run(&a, &spec).await;
        assert_eq!(status, 400, "{spec}: {body}");
        assert_eq!(body["kind"], "invalid_spec");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{needle}: {body}"
        );
    }
    let r = a.http.post(a.at("/v1/workflows/validate")).json(&json!({
        "tasks": [task("a", "self"), task("b", "b")], "edges": [["a", "b"]], "model": "state-local" })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(a.healthy().await);
}

/// Expected argument and state bytes of one execution (Table 1).
struct Expect {
    args: u64,
    states: u64,
    exact: bool,
}

fn table1(model: &str, spec: &Value, arg: u64, sizes: &BTreeMap<String, u64>) -> Expect {
    let tasks: Vec<&str> = spec["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let edges: Vec<(&str, &str)> = spec["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap(), e[1].as_str().unwrap()))
        .collect();
    let preds = |t: &str| edges.iter().filter(|e| e.1 == t).count() as u64;
    let succs = |t: &str| edges.iter().filter(|e| e.0 == t).count() as u64;
    let n = tasks.len() as u64;
    let sources = tasks.iter().filter(|t| preds(t) == 0).count() as u64;
    let chain = sources == 1 && tasks.iter().all(|t| preds(t) <= 1 && succs(t) <= 1);
    let deg = |s: &str| spec["states"][s].as_array().unwrap().len() as u64;
    match model {
        // Each task gets its inputs from the client and returns its output;
        // every state goes to and back from every user.
        "pure-faas" => Expect {
            args: tasks.iter().map(|t| preds(t).max(1) * arg).sum::<u64>() + n * arg,
            states: sizes.iter().map(|(s, size)| 2 * deg(s) * size).sum(),
            exact: true,
        },
        "state-prop" if chain => Expect {
            args: (n + 1) * arg,
            states: (n + 1) * sizes.values().sum::<u64>(),
            exact: true,
        },
        _ => Expect {
            // Σ deg⁺(λᵢ)·outᵢ with λ₀ the client and each sink's out-degree 1.
            args: sources * arg + tasks.iter().map(|t| succs(t).max(1) * arg).sum::<u64>(),
            states: sizes.iter().map(|(s, size)| (1 + deg(s)) * size).sum(),
            exact: model == "state-prop",
        },
    }
}

#[tokio::test]
async fn traffic_matches_table_1() {
    let d = dirs();
    let (a, _b, _c) = cluster(&d, &[]).await;
    let nodes = ["self", "b", "c"];
    let mut rng = support::Rng::new(0x1234_5678_9abc_def1u64);
    let mut rand = move |n: u64| rng.below(n);
    let mut specs = Vec::new();
    // Chains of 3 and 6 functions, 3 or 6 states of (i+1)×10 kB, each used
    // by a random subset of the chain (possibly none), arguments of 10/100 kB.
    for len in [3usize, 6] {
        for nstates in [3usize, 6] {
            for arg in [10_000u64, 100_000] {
                let tasks: Vec<Value> = (0..len)
                    .map(|i| json!({ "id": format!("f{i}"), "function": "stage", "node": nodes[i % 3] }))
                    .collect();
                let edges: Vec<Value> = (1..len)
                    .map(|i| json!([format!("f{}", i - 1), format!("f{i}")]))
                    .collect();
                let mut states = serde_json::Map::new();
                let mut sizes = BTreeMap::new();
                for s in 0..nstates {
                    let users: Vec<String> = (0..len)
                        .filter(|_| rand(2) == 1)
                        .map(|i| format!("f{i}"))
                        .collect();
                    states.insert(format!("s{s}"), json!(users));
                    sizes.insert(format!("s{s}"), (s as u64 + 1) * 10_000);
                }
                specs.push((
                    json!({ "tasks": tasks, "edges": edges, "states": states }),
                    arg,
                    sizes,
                ));
            }
        }
    }
    // The 19-function DAG: 4 stateful collectors, 5-branch fan-outs between them.
    for arg in [10_000u64, 100_000] {
        let mut tasks = Vec::new();
        let mut edges = Vec::new();
        for k in 0..4 {
            tasks.push(json!({ "id": format!("c{k}"), "function": "stage", "node": nodes[k % 3] }));
            if k < 3 {
                for j in 0..5 {
                    let id = format!("b{k}{j}");
                    tasks
                        .push(json!({ "id": id, "function": "stage", "node": nodes[(k + j) % 3] }));
                    edges.push(json!([format!("c{k}"), id]));
                    edges.push(json!([id, format!("c{}", k + 1)]));
                }
            }
        }
        let states = json!({ "s0": ["c0", "c2"], "s1": ["c1", "c3"], "s2": ["c0", "c1", "c2", "c3"], "s3": ["c3"] });
        let sizes: BTreeMap<String, u64> = (0..4)
            .map(|s| (format!("s{s}"), (s as u64 + 1) * 10_000))
            .collect();
        assert_eq!(tasks.len(), 19);
        specs.push((
            json!({ "tasks": tasks, "edges": edges, "states": states }),
            arg,
            sizes,
        ));
    }
    for (i, (spec, arg, sizes)) in specs.iter().enumerate() {
        for model in MODELS {
            let session = format!("traffic-{i}-{model}");
            for (s, size) in sizes {
                put_state(&a, &session, s, vec![7u8; *size as usize]).await;
            }
            let mut spec = spec.clone();
            spec["model"] = json!(model);
            spec["session"] = json!(session);
            spec["input"] = json!("i".repeat(*arg as usize));
            let result = run_ok(&a, &spec).await;
            let total = &result["traffic"]["total"];
            let (args, states) = (
                total["args"].as_u64().unwrap(),
                total["states"].as_u64().unwrap(),
            );
            let want = table1(model, &spec, *arg, sizes);
            if want.exact {
                assert_eq!((args, states), (want.args, want.states), "spec {i} {model}");
            } else {
                assert!(
                    args <= want.args && states <= want.states,
                    "spec {i} {model}: {args}/{states} > {}/{}",
                    want.args,
                    want.states
                );
            }
            assert!(total["control"].as_u64().unwrap() > 0);
            // Sizes are kept: every output is the argument, every state its size.
            let sink_out = result["outputs"]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .as_str()
                .unwrap();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(sink_out)
                .unwrap();
            assert_eq!(decoded.len() as u64, *arg);
        }
    }
}

#[tokio::test]
async fn repeated_deliveries_run_a_join_once() {
    use edge_proto::envelope::{Envelope, Kind};
    use edge_workflow::hop::Deliver;
    use edge_workflow::{ExecCtx, Plan, unix_ms};
    let dir = tempfile::tempdir().unwrap();
    let a = TestNode::start(dir.path(), &[]).await;
    a.deploy("echo", guests::ECHO).await;
    let spec = serde_json::from_value(json!({
        "tasks": [{ "id": "p1", "function": "echo" }, { "id": "p2", "function": "echo" }, { "id": "j", "function": "echo" }],
        "edges": [["p1", "j"], ["p2", "j"]],
        "model": "state-prop",
    }))
    .unwrap();
    let ctx = ExecCtx::new(
        "dup-test".into(),
        a.url.clone(),
        Plan::new(spec).unwrap(),
        vec![a.url.clone(); 3],
        unix_ms() + 10_000,
    );
    let deliver_with = |from: usize, data: &'static [u8], with_plan: bool| {
        let mut env = Envelope::new(Deliver {
            ctx: ctx.wire(with_plan),
            task: 2,
            inputs: vec![],
            states: vec![],
        });
        let blob = env.push(Kind::Arg, bytes::Bytes::from_static(data));
        env.header.inputs.push((Some(from), blob));
        env.encode().unwrap().0
    };
    let post = |body: bytes::Bytes| a.http.post(a.at("/v1/wf/deliver")).body(body).send();
    // Only the plan's digest, for an execution the node was never sent:
    // refused, so that the sender sends the plan; nothing is kept.
    let r = post(deliver_with(0, b"one", false)).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["kind"], "plan_unknown");
    // With the plan once, then by digest.
    assert_eq!(
        post(deliver_with(0, b"one", true)).await.unwrap().status(),
        202
    );
    let deliver = |from: usize, data: &'static [u8]| deliver_with(from, data, false);
    // From p1, twice more: j yields, once.
    for _ in 0..2 {
        assert_eq!(post(deliver(0, b"one")).await.unwrap().status(), 202);
    }
    a.wait_for_metric("edge_workflow_pending", 1.0).await;
    // p2 completes the join; its repeats, and p1's, change nothing.
    for (from, data) in [(1, &b"two"[..]), (1, b"two"), (0, b"one")] {
        assert_eq!(post(deliver(from, data)).await.unwrap().status(), 202);
    }
    a.wait_for_metric("edge_workflow_pending", 0.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // j ran once: its output ("onetwo") was sent to the entry once.
    let traffic = a.get_json("/v1/wf/dup-test/traffic").await;
    assert_eq!(traffic["args"], 6, "{traffic}");
}

#[tokio::test]
async fn a_session_state_changed_during_a_run_is_never_overwritten() {
    let d = dirs();
    let (a, _b, _c) = cluster(&d, &[]).await;
    for model in MODELS {
        let session = format!("cas-{model}");
        put_state(&a, &session, "S", b"start;".to_vec()).await;
        let spec = json!({
            "tasks": [{ "id": "t1", "function": "stage", "node": "self", "args": "name=t1,sleep=600" }],
            "states": { "S": ["t1"] },
            "model": model,
            "session": session,
        });
        let client_write = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            put_state(&a, &session, "S", b"client;".to_vec()).await;
        };
        let ((status, body), ()) = tokio::join!(run(&a, &spec), client_write);
        assert_eq!(status, 500, "{model}: {body}");
        assert_eq!(body["kind"], "session", "{model}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("changed during the workflow")
        );
        assert_eq!(
            get_state(&a, &session, "S").await,
            "client;",
            "{model}: the write stands"
        );
        // Without a concurrent write the run writes its states back.
        let result = run_ok(&a, &spec).await;
        assert_eq!(result["states"]["S"]["text"], "client;t1;", "{model}");
        assert_eq!(get_state(&a, &session, "S").await, "client;t1;");
    }
}
