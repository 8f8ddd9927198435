//! Starts real `edge-node` processes on 127.0.0.1:0 with temp data dirs and
//! talks HTTP to them, so the tests stay short.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[allow(unused_imports)] // not every test crate calls a guest
pub use edge_guest_artifacts as guests;

pub mod bombs;
pub mod slow_link;

/// A node running as a child process; killed when dropped.
pub struct TestNode {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
}

impl TestNode {
    /// Starts a node on `data_dir` with extra `serve` flags.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> TestNode {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_edge-node")),
            data_dir,
            extra,
        )
        .await
    }

    /// As [`TestNode::start`], under `ulimit -v kib` (address space).
    pub async fn start_limited(data_dir: &Path, extra: &[&str], kib: u64) -> TestNode {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_edge-node"));
        Self::spawn(sh, data_dir, extra).await
    }

    /// As [`TestNode::start`], listening on `listen` (to come back on the
    /// same address after a kill).
    pub async fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> TestNode {
        let mut args = vec!["--listen", listen];
        args.extend_from_slice(extra);
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_edge-node")),
            data_dir,
            &args,
        )
        .await
    }

    /// Starts one node per dir, each on a free loopback port and each told
    /// of all the others as peers (`n0`, `n1`, …), so sessions may migrate
    /// between any two of them.
    pub async fn start_cluster(dirs: &[&Path], extra: &[&str]) -> Vec<TestNode> {
        let addrs: Vec<String> = dirs.iter().map(|_| free_addr()).collect();
        let mut nodes = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            for (j, addr) in addrs.iter().enumerate() {
                if j != i {
                    args.push("--peer".into());
                    args.push(format!("n{j}=http://{addr}"));
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(TestNode::start_at(dir, &addrs[i], &args).await);
        }
        nodes
    }

    async fn spawn(mut command: Command, data_dir: &Path, extra: &[&str]) -> TestNode {
        let listen_given = extra.contains(&"--listen");
        let default_listen: &[&str] = if listen_given {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = command
            .arg("serve")
            .args(default_listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env(
                "EDGE_LOG",
                std::env::var("EDGE_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn edge-node");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("node did not start in time")
            .unwrap()
            .expect("node exited before listening");
        let url = line
            .strip_prefix("edge-node listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        TestNode {
            child,
            url,
            data_dir: data_dir.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Presents `token` on every request this handle sends from now on.
    pub fn with_token(mut self, token: &str) -> TestNode {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        self.http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        self
    }

    /// Trusts the certificate authority `ca_pem` for this handle's requests
    /// (a node serving HTTPS with a certificate it signed).
    pub fn with_ca(mut self, ca_pem: &str) -> TestNode {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        self.http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        self
    }

    /// Sends this handle's requests with `http` (a client with its own
    /// roots, token and client certificate).
    pub fn with_client(mut self, http: reqwest::Client) -> TestNode {
        self.http = http;
        self
    }

    /// Waits (at most `limit`) for the node to exit on its own.
    pub async fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the node did not exit in time")
            .unwrap()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the node to exit.
    pub async fn terminate(self, limit: Duration) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit(limit).await
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the node is running")
    }

    /// The node's resident set size, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        let url = self.url.trim_start_matches("http://");
        url.trim_start_matches("https://").to_owned()
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Stops the node with SIGTERM and waits for it to exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("node still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("node did not stop after SIGTERM")
            .unwrap();
        assert!(exit.success(), "node exited with {exit}");
    }

    pub async fn deploy_bytes(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.http
            .put(self.at(&format!("/v1/functions/{name}")))
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// Deploys the component at `path` under `name` and asserts 201.
    pub async fn deploy(&self, name: &str, path: &str) {
        let r = self.deploy_bytes(name, std::fs::read(path).unwrap()).await;
        let status = r.status();
        assert_eq!(
            status,
            201,
            "deploy {name} to {} ({}): {}",
            self.url,
            self.data_dir.display(),
            r.text().await.unwrap()
        );
    }

    pub async fn invoke(
        &self,
        name: &str,
        session: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.at(&format!("/v1/functions/{name}/invoke")))
            .body(body);
        if let Some(s) = session {
            req = req.header("edge-session", s);
        }
        req.send().await.unwrap()
    }

    /// Deletes function `name` (with its versions).
    pub async fn delete_function(&self, name: &str) -> reqwest::Response {
        self.http
            .delete(self.at(&format!("/v1/functions/{name}")))
            .send()
            .await
            .unwrap()
    }

    /// Invokes and returns the body as text, asserting 200.
    pub async fn invoke_ok(
        &self,
        name: &str,
        session: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> String {
        let r = self.invoke(name, session, body).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "invoke {name}: {text}");
        text
    }

    /// The sum of every series of metric `name` in `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_where(name, "").await
    }

    /// Waits (up to 5 s) until metric `name` reads `value`; returns the last
    /// reading. Instances are freed on a thread of their own, a moment after
    /// their reply.
    pub async fn settled_metric(&self, name: &str, value: f64) -> f64 {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.metric(name).await;
            if got == value || std::time::Instant::now() > until {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The sum of the series of metric `name` whose labels contain `label`
    /// (`reason="moved"`, say).
    pub async fn metric_where(&self, name: &str, label: &str) -> f64 {
        let text = self
            .http
            .get(self.at("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `GET path`, whatever its answer.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.at(path)).send().await.unwrap()
    }

    /// `GET path` as JSON, asserting 200.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.http.get(self.at(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// Waits (up to 10 s) until metric `name` equals `want`.
    pub async fn wait_for_metric(&self, name: &str, want: f64) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while self.metric(name).await != want {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{name} never reached {want}");
    }

    pub async fn healthy(&self) -> bool {
        matches!(self.http.get(self.at("/healthz")).send().await, Ok(r) if r.status() == 200)
    }
}

/// Asserts `r` is an error with `status` and a JSON body naming `kind`.
pub async fn assert_error(r: reqwest::Response, status: u16, kind: &str) -> String {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(v["kind"], kind, "body: {text}");
    let message = v["error"].as_str().expect("error message").to_owned();
    assert!(!message.is_empty());
    message
}

impl TestNode {
    /// Kills the node with SIGKILL (no shutdown, no flush) and waits.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// Asks for `mode` on `session`; returns the JSON answer.
    pub async fn set_mode(&self, session: &str, mode: &str) -> serde_json::Value {
        let r = self
            .http
            .put(self.at(&format!("/v1/sessions/{session}/mode")))
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "set mode {mode}: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    /// `POST /v1/workflows` with `spec`: the status and the JSON answer.
    pub async fn run_workflow(&self, spec: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.at("/v1/workflows"))
            .json(spec)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// `POST /v1/functions/{name}/rollback`: the answer, whatever it is.
    pub async fn rollback(&self, name: &str) -> reqwest::Response {
        self.http
            .post(self.at(&format!("/v1/functions/{name}/rollback")))
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/sessions/{id}/migrate` to `to`: the answer, whatever it is.
    pub async fn migrate(&self, id: &str, to: &str) -> reqwest::Response {
        self.http
            .post(self.at(&format!("/v1/sessions/{id}/migrate")))
            .json(&serde_json::json!({ "to": to }))
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn session(&self, id: &str) -> serde_json::Value {
        let r = self
            .http
            .get(self.at(&format!("/v1/sessions/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// A real `redis-server` on a free loopback port, stopped when dropped.
pub struct RedisServer {
    child: std::process::Child,
    pub url: String,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::spawn(&[], "redis").await
    }

    /// A Redis that speaks only TLS, with `cert.pem` and `key.pem` from
    /// `certs` (`rediss://`).
    pub async fn start_tls(certs: &Path) -> RedisServer {
        Self::start_tls_clients(certs, "no").await
    }

    /// As [`RedisServer::start_tls`], and every client must present a
    /// certificate the same CA signed (mutual TLS).
    pub async fn start_mutual_tls(certs: &Path) -> RedisServer {
        Self::start_tls_clients(certs, "yes").await
    }

    async fn start_tls_clients(certs: &Path, auth_clients: &str) -> RedisServer {
        let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();
        let tls = [
            "--tls-cert-file".to_owned(),
            file("cert.pem"),
            "--tls-key-file".to_owned(),
            file("key.pem"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.pem"),
            "--tls-auth-clients".to_owned(),
            auth_clients.to_owned(),
        ];
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        Self::spawn(&tls, "rediss").await
    }

    async fn spawn(tls: &[&str], scheme: &str) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        // With TLS, the plain port is closed and the TLS one takes its number.
        let ports: Vec<&str> = if tls.is_empty() {
            vec!["--port", &port]
        } else {
            vec!["--port", "0", "--tls-port", &port]
        };
        let child = std::process::Command::new("redis-server")
            .args(ports)
            .args(tls)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (./scripts/test.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        RedisServer {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
        }
    }
}

impl RedisServer {
    /// The server's process id (to pause it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/healthz` asked every 100 ms until [`HealthWatch::stop`]: every answer
/// must be 200 within 2 s, or the watch panics (and the test with it).
pub struct HealthWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl HealthWatch {
    /// Starts watching `node`.
    pub fn start(node: &TestNode) -> HealthWatch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (url, flag) = (node.at("/healthz"), stop.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut checks = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let r = http.get(&url).timeout(Duration::from_secs(2)).send().await;
                assert!(
                    matches!(&r, Ok(r) if r.status() == 200),
                    "healthz failed after {checks} checks ({:?}): {r:?}",
                    started.elapsed()
                );
                checks += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            checks
        });
        HealthWatch { stop, task }
    }

    /// Stops watching; the number of checks made, all answered.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Two nodes sharing `redis` (a cluster of two), with their data dirs.
pub async fn two_sharing(redis: &RedisServer) -> (Vec<tempfile::TempDir>, TestNode, TestNode) {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let store = ["--remote-store", redis.url.as_str()];
    let a = TestNode::start(dirs[0].path(), &store).await;
    let b = TestNode::start(dirs[1].path(), &store).await;
    (dirs, a, b)
}

/// Runs the real CLI, `edge-node ARGS…`, which must succeed; returns its
/// standard output.
pub async fn cli_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "edge-node {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `edge-node serve --listen 127.0.0.1:0 --data-dir DATA ARGS…`, which
/// must refuse to start; returns what it said on stderr.
pub fn serve_refuses(data_dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} started: {stderr}");
    stderr
}

/// A response header as text ("" when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A small deterministic generator (xorshift64), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A count from the environment (the long campaigns raise the quick tests'
/// defaults), or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `bytes` (a component) with a custom section carrying `tag` appended: a
/// distinct component — new hash, so a new compile — that behaves the same.
pub fn distinct_component(bytes: &[u8], tag: u32) -> Vec<u8> {
    let name = b"edge-test";
    let payload = tag.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len() + payload.len()) as u8); // size < 128: one LEB128 byte
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// A mosquitto broker on a free loopback port; killed when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    pub port: u16,
    _config: Option<tempfile::TempDir>,
}

impl Mosquitto {
    pub async fn start() -> Mosquitto {
        Self::spawn(None, None, false).await
    }

    /// A broker that lets in only `user` with `password`.
    pub async fn start_with_password(user: &str, password: &str) -> Mosquitto {
        Self::spawn(Some((user, password)), None, false).await
    }

    /// A broker that speaks only TLS, with the certificates
    /// [`make_certificates`] wrote in `certs`.
    pub async fn start_tls(certs: &Path) -> Mosquitto {
        Self::spawn(None, Some(certs), false).await
    }

    /// As [`Mosquitto::start_tls`], and every client must present a
    /// certificate the same CA signed (mutual TLS).
    pub async fn start_mutual_tls(certs: &Path) -> Mosquitto {
        Self::spawn(None, Some(certs), true).await
    }

    async fn spawn(login: Option<(&str, &str)>, certs: Option<&Path>, mutual: bool) -> Mosquitto {
        let addr = free_addr();
        let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        let mut command = std::process::Command::new("mosquitto");
        let mut config = None;
        match (login, certs) {
            (None, None) => {
                command.args(["-p", &port.to_string()]);
            }
            (_, Some(certs)) => {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("mosquitto.conf");
                let pem = |name: &str| certs.join(name).display().to_string();
                let text = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {mutual}\n",
                    pem("ca.pem"),
                    pem("cert.pem"),
                    pem("key.pem")
                );
                std::fs::write(&file, text).unwrap();
                command.arg("-c").arg(&file);
                config = Some(dir);
            }
            (Some((user, password)), None) => {
                let dir = tempfile::tempdir().unwrap();
                let passwords = dir.path().join("passwords");
                let made = std::process::Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&passwords)
                    .args([user, password])
                    .status()
                    .expect("mosquitto_passwd comes with mosquitto");
                assert!(made.success());
                let file = dir.path().join("mosquitto.conf");
                let text = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                    passwords.display()
                );
                std::fs::write(&file, text).unwrap();
                command.arg("-c").arg(&file);
                config = Some(dir);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (./scripts/test.sh installs it)");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(std::time::Instant::now() < until, "mosquitto did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Mosquitto {
            child,
            port,
            _config: config,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and one certificate it signed for 127.0.0.1 and localhost (also
/// good as a client certificate), as PEM files in `dir`: `ca.pem`,
/// `cert.pem`, `key.pem`.
pub fn make_certificates(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: a leaf named like its issuer looks self-signed
    // to OpenSSL (a broker checking client certificates).
    ca.distinguished_name
        .push(DnType::CommonName, "edge-node test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let mut leaf = CertificateParams::new(names).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}
