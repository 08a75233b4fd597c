//! Clients that do not play along, against the real binary: slow headers, idle connections, too
//! many connections, and half-sent requests at shutdown.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tributary_tests::{GatewayOptions, GatewayProcess};

/// Waits until the server closes `stream` (EOF or reset), at most `limit`; how long it took.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut() {
    let gw = GatewayProcess::start_with(GatewayOptions::default().env("read_timeout", "2s")).await;
    // One byte a second, never finishing the headers.
    let mut slow = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let writer = {
        let mut w = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa" {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let took = closed_within(&mut slow, Duration::from_secs(10)).expect("cut");
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    let _ = writer.join();
    // A connection that sends nothing.
    let mut idle = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(10)).expect("closed");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // A keep-alive connection left idle after a request.
    let mut kept = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let took = closed_within(&mut kept, Duration::from_secs(10)).expect("closed");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // The gateway still serves.
    assert_eq!(gw.get_code("/healthz").await, 200);
}

#[tokio::test]
async fn the_connection_cap_holds_newcomers_logs_it_and_recovers() {
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .env("max_connections", "4")
            // One cap shared by every worker thread, not four each.
            .env("http_workers", "3")
            .env("read_timeout", "2s"),
    )
    .await;
    let hogs: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", gw.port)).unwrap())
        .collect();
    gw.wait_for_log("connection limit reached", Duration::from_secs(5))
        .await;
    // A newcomer waits while the hogs hold every slot, then is served once they time out.
    let started = Instant::now();
    let code = reqwest::Client::new()
        .get(gw.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(code, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served at once: the cap did not hold ({:?})",
        started.elapsed()
    );
    drop(hogs);
}

#[tokio::test]
async fn shutdown_ends_within_the_grace_despite_half_sent_requests() {
    let mut gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .env("read_timeout", "60s")
            .env("shutdown_grace", "2s"),
    )
    .await;
    gw.deploy_ok(tributary_tests::fork_function("cat", "cat"))
        .await;
    // A call whose body never finishes.
    let mut half = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    half.write_all(b"POST /function/cat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    // And a request whose headers never finish.
    let mut headers = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHost:")
        .unwrap();
    // Both are in the gateway's hands before it is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = gw.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
}
