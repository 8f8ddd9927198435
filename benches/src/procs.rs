//! Servers under test as child processes: started on a free loopback port,
//! waited for, watched (CPU time and RSS from `/proc`), and stopped.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (free when asked; the caller binds it next).
pub fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A server process; killed when dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// When it was spawned.
    pub spawned: Instant,
}

impl Server {
    /// Spawns `cmd` (which must listen on `addr`), output discarded.
    pub fn spawn(mut cmd: Command, addr: SocketAddr) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(Server {
            child,
            addr,
            spawned: Instant::now(),
        })
    }

    /// Waits until it accepts connections (at most `limit`).
    pub fn wait_listening(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited before listening: {status}");
            }
            if Instant::now() > deadline {
                bail!("server did not listen on {} within {limit:?}", self.addr);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Time from spawn until `request` first gets a 200, polling every
    /// millisecond (at most `limit`).
    pub fn time_to_first_ok(&mut self, request: &Request, limit: Duration) -> Result<Duration> {
        let deadline = self.spawned + limit;
        loop {
            if let Ok((200, _)) = request.send(self.addr) {
                return Ok(self.spawned.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited before its first reply: {status}");
            }
            if Instant::now() > deadline {
                bail!("no 200 from {} within {limit:?}", self.addr);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// User + system CPU seconds the process has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) start at
        // field 3; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11..13)
            .context("short /proc/PID/stat")?
            .iter()
            .map(|f| f.parse::<u64>())
            .sum::<Result<u64, _>>()?;
        Ok(ticks as f64 / clock_ticks_per_second())
    }

    /// Resident set size, in bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed VmRSS")?
            .parse()?;
        Ok(kib * 1024)
    }

    /// Asks it to stop (SIGTERM) and waits (killing it after 10 s).
    pub fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// One HTTP/1.1 request, sent on a new connection (`Connection: close`).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, `PUT`.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: &'static str, path: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// With one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// With a body.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Sends it; returns the status and the whole response (head and body).
    pub fn send(&self, addr: SocketAddr) -> Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&self.body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let status = std::str::from_utf8(response.get(9..12).context("short response")?)?
            .parse()
            .context("malformed status line")?;
        Ok((status, response))
    }

    /// Sends it and fails unless the status is 2xx.
    pub fn expect_ok(&self, addr: SocketAddr) -> Result<Vec<u8>> {
        let (status, response) = self.send(addr)?;
        if !(200..300).contains(&status) {
            bail!(
                "{} {} answered {status}: {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&response)
            );
        }
        Ok(response)
    }
}

/// `name` on PATH (or in `~/.cargo/bin`), if there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}
