//! Nagle's algorithm is off wherever Tributary serves HTTP (gateway, echo function, metrics):
//! with it on, a client that delays its ACKs (as Go's net/http does) waits about 40 ms for the
//! last segment of every answer. A raw client (TCP_NODELAY on, as Go's) sends chunked POSTs (and
//! GETs) on one keep-alive connection and times each round trip; with Nagle on in the echo
//! function, the median was 44 ms here.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tributary_tests::{ConnectorProcess, GatewayProcess, echo_function, free_port, spawn_logged};

/// Reads one HTTP/1.1 response (Content-Length or chunked) from `s`.
fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let body = &buf[end + 4..];
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            if body.len() >= len {
                return buf;
            }
        } else if head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n") {
            return buf;
        }
    }
}

/// The median of 20 round trips of `request` (sent in the given pieces, as a client writing a
/// chunked body does) on one connection.
fn median_round_trip(port: u16, pieces: &[&[u8]]) -> Duration {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // As Go's net/http, curl and hyper clients: the client's own writes are not held back.
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            for p in pieces {
                s.write_all(p).unwrap();
            }
            let answer = read_response(&mut s);
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn chunked_post(path: &str) -> Vec<Vec<u8>> {
    vec![
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes(),
        b"5\r\nhello\r\n".to_vec(),
        b"0\r\n\r\n".to_vec(),
    ]
}

fn check(what: &str, port: u16, request: Vec<Vec<u8>>) {
    let pieces: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
    let median = tokio::task::block_in_place(|| median_round_trip(port, &pieces));
    println!("{what}: median round trip {median:?}");
    assert!(
        median < Duration::from_millis(15),
        "{what}: median round trip {median:?} (Nagle's algorithm left on?)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_round_trips_do_not_wait_for_delayed_acks() {
    let gw = GatewayProcess::start().await;
    gw.deploy_ok(echo_function("echo")).await;
    gw.wait_available("echo", 1).await;
    check("gateway /function", gw.port, chunked_post("/function/echo"));
    check(
        "gateway /metrics",
        gw.port,
        vec![b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()],
    );

    // The echo function on its own.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = std::process::Command::new(tributary_tests::tributary_bin());
    cmd.arg("echo").env("PORT", port.to_string());
    let (mut echo, _log) = spawn_logged(&mut cmd, dir.path(), "echo");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "echo did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check("echo", port, chunked_post("/"));
    let _ = echo.kill();
    let _ = echo.wait();

    // A connector's metrics server.
    let connector = ConnectorProcess::start("cron", &gw, &[]);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", connector.metrics_port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "metrics did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check(
        "connector /metrics",
        connector.metrics_port,
        vec![b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()],
    );
}
