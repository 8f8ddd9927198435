//! HTTP abuse: a flood beyond the admission limit is shed with 503 at once,
//! 1 GB bodies (Content-Length and chunked) are refused with 413 after at
//! most the limit is read, and hundreds of slowloris sockets are cut off —
//! while the node keeps answering and its memory stays bounded.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{TestNode, guests, header};

#[tokio::test]
async fn a_flood_beyond_the_admission_limit_is_shed_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let node = std::sync::Arc::new(
        TestNode::start(
            dir.path(),
            &["--max-pending-invocations", "8", "--deadline-ms", "1000"],
        )
        .await,
    );
    node.deploy("hog", guests::HOG).await;
    let rss_before = node.rss_bytes();
    let mut calls = Vec::new();
    for _ in 0..40 {
        let node = node.clone();
        calls.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = node.invoke("hog", None, "loop").await;
            let status = r.status().as_u16();
            let retry = (status == 503).then(|| header(&r, "retry-after"));
            let body: serde_json::Value = r.json().await.unwrap();
            (
                status,
                body["kind"].as_str().unwrap_or("").to_owned(),
                retry,
                t0.elapsed(),
            )
        }));
    }
    // The node answers its health check during the flood.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    assert!(node.healthy().await);
    assert!(t0.elapsed() < Duration::from_secs(1));
    let (mut shed, mut deadline) = (0, 0);
    for c in calls {
        let (status, kind, retry, took) = c.await.unwrap();
        match (status, kind.as_str()) {
            (503, "overloaded") => {
                assert_eq!(retry.as_deref(), Some("1"));
                assert!(took < Duration::from_millis(900), "shed after {took:?}");
                shed += 1;
            }
            (504, "deadline") => deadline += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    println!("40 spinning calls with 8 admitted: {deadline} ran to their deadline, {shed} shed");
    assert!((1..=8).contains(&deadline), "{deadline} admitted");
    assert_eq!(shed + deadline, 40);
    assert_eq!(node.metric("edge_shed_total").await, f64::from(shed));
    // Admission frees up again.
    node.deploy("echo", guests::ECHO).await;
    assert_eq!(node.invoke_ok("echo", None, "after").await, "after");
    let grown = node.rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
}

/// Sends `head`, then up to 1 GiB of body (raw bytes, or chunks when
/// `chunked`), for at most 20 s; returns the status the node answered and
/// how many body bytes got out before it stopped reading.
fn send_gigabyte(addr: &str, head: &str, chunked: bool) -> (u16, u64) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        let block = vec![b'x'; 64 << 10];
        let frame = [
            format!("{:x}\r\n", block.len()).into_bytes(),
            block.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        let (mut sent, started) = (0u64, Instant::now());
        stream
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        while sent < 1 << 30 && started.elapsed() < Duration::from_secs(20) {
            let piece = if chunked { &frame } else { &block };
            if stream.write_all(piece).is_err() {
                break;
            }
            sent += block.len() as u64;
        }
        sent
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let sent = writer.join().unwrap();
    let status = std::str::from_utf8(&response[9..12])
        .unwrap()
        .parse()
        .unwrap();
    (status, sent)
}

#[tokio::test]
async fn gigabyte_bodies_are_refused_after_at_most_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &[
            "--max-invoke-bytes",
            "1048576",
            "--max-upload-bytes",
            "4194304",
        ],
    )
    .await;
    node.deploy("echo", guests::ECHO).await;
    let addr = node.addr();
    let rss_before = node.rss_bytes();
    // Socket buffers on both sides hold a few MiB the node never read.
    let slack: u64 = 16 << 20;
    let cases = [
        (
            "PUT /v1/functions/big",
            "content-length: 1073741824",
            false,
            4u64 << 20,
        ),
        (
            "POST /v1/functions/echo/invoke",
            "content-length: 1073741824",
            false,
            1 << 20,
        ),
        (
            "PUT /v1/functions/big",
            "transfer-encoding: chunked",
            true,
            4 << 20,
        ),
        (
            "POST /v1/functions/echo/invoke",
            "transfer-encoding: chunked",
            true,
            1 << 20,
        ),
    ];
    for (line, framing, chunked, limit) in cases {
        let head = format!("{line} HTTP/1.1\r\nhost: x\r\n{framing}\r\n\r\n");
        let addr = addr.clone();
        let t0 = Instant::now();
        let (status, sent) =
            tokio::task::spawn_blocking(move || send_gigabyte(&addr, &head, chunked))
                .await
                .unwrap();
        println!(
            "{line} ({framing}): {status} after {sent} bytes sent, {:?}",
            t0.elapsed()
        );
        assert_eq!(status, 413, "{line} {framing}");
        assert!(
            sent < limit + slack,
            "{sent} bytes went out for a {limit}-byte limit"
        );
        assert!(node.healthy().await);
    }
    let grown = node.rss_bytes().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    assert_eq!(node.invoke_ok("echo", None, "fine").await, "fine");
}

fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            // A response (a 408, say) before the close.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn hundreds_of_slowloris_sockets_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--header-timeout-secs", "2"]).await;
    let addr = node.addr();
    const SOCKETS: usize = 300;
    let slow = tokio::task::spawn_blocking(move || {
        let mut socks: Vec<TcpStream> = (0..SOCKETS)
            .map(|_| {
                let s = TcpStream::connect(&addr).unwrap();
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                s
            })
            .collect();
        // One header byte per socket every 100 ms, for at most 6 s: the
        // node must give up on each within its 2 s header timeout.
        let line = b"GET /healthz HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut open = vec![true; SOCKETS];
        let started = Instant::now();
        let mut i = 0;
        while open.iter().any(|o| *o) && started.elapsed() < Duration::from_secs(6) {
            for (k, s) in socks.iter_mut().enumerate() {
                if open[k] && s.write_all(&line[i % line.len()..][..1]).is_err() {
                    open[k] = false;
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        // Cut off: the node closed each (reads end), whatever still fit in buffers.
        let closed = socks.iter_mut().map(closed_by_peer).filter(|c| *c).count();
        (closed, started.elapsed())
    });
    // Others are served meanwhile. One check may pay a dropped SYN's 1 s
    // retransmit or a stall of the loaded machine, so the bound on every
    // check is the header timeout (a node serving nobody until the slow
    // sockets are cut would miss it) and most checks must be prompt.
    let mut took_each = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        assert!(node.healthy().await);
        took_each.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (closed, took) = slow.await.unwrap();
    let worst = took_each.iter().max().copied().unwrap_or_default();
    let prompt = took_each
        .iter()
        .filter(|t| **t < Duration::from_millis(500))
        .count();
    println!(
        "{SOCKETS} slowloris sockets: {closed} closed by the node within {took:?}; \
         health checks: {prompt}/20 within 500 ms, slowest {worst:?}"
    );
    assert_eq!(closed, SOCKETS);
    assert!(worst < Duration::from_secs(2), "slowest check {worst:?}");
    assert!(prompt >= 15, "only {prompt}/20 checks within 500 ms");
}
