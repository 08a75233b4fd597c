//! A raw HTTP/1.1 upstream for tests of pooled clients: it counts the connections it accepts
//! and those its client closed (feature `test-util`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    accepted: AtomicUsize,
    closed_by_client: AtomicUsize,
}

impl Seen {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the client closed so far.
    pub fn closed_by_client(&self) -> usize {
        self.closed_by_client.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 upstream on a random port: `/` answers `ok`, `/big` answers 1 MiB, `/close`
/// answers and then closes the connection without saying so, `/slow` answers after 2 s.
pub async fn upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test upstream");
    let addr = listener.local_addr().expect("its address");
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counts.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, counts.clone()));
        }
    });
    (addr, seen)
}

async fn serve(mut stream: TcpStream, seen: Arc<Seen>) {
    let mut buffer = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        buffer.drain(..end + 4);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        if path == "/slow" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let body = if path == "/big" {
            vec![b'x'; 1 << 20]
        } else {
            b"ok".to_vec()
        };
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
        {
            return;
        }
        if path == "/close" {
            return;
        }
    }
}

/// An address on this machine where nothing listens (a port just freed): connecting is refused.
pub async fn refused() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port to free");
    listener.local_addr().expect("its address")
}

/// Waits until `done` holds (checked every 10 ms); panics after 2 s.
pub async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached in 2 s");
}
