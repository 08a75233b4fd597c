//! The proxy against a real upstream on a random port, which counts the connections it accepts
//! and the ones the gateway closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::pool::Pools;
use super::*;

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    closed_by_gateway: AtomicUsize,
}

/// An HTTP/1.1 upstream: `/` answers `ok`, `/big` answers 1 MiB, `/close` answers and then
/// closes the connection without saying so, `/slow` answers after 2 s.
async fn upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
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
            seen.closed_by_gateway.fetch_add(1, Ordering::SeqCst);
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

/// A GET of `path` from function `f` at `addr`.
async fn forward(
    proxy: &HttpProxy,
    addr: SocketAddr,
    path: &str,
) -> Result<Response<Body>, GatewayError> {
    let request = Request::get(path).body(Body::empty()).expect("request");
    proxy.forward("f", addr, request).await
}

async fn call(proxy: &HttpProxy, addr: SocketAddr, path: &str) -> Response<Body> {
    forward(proxy, addr, path).await.expect("answered")
}

async fn text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn proxy_with(pools: Arc<Pools>) -> HttpProxy {
    HttpProxy {
        pools,
        timeout: Duration::from_secs(1),
        max_body_size: 1 << 20,
    }
}

#[tokio::test]
async fn calls_one_after_another_share_one_connection() {
    let (addr, seen) = upstream().await;
    let proxy = HttpProxy::new(Duration::from_secs(5), 1 << 20);
    for _ in 0..5 {
        let response = call(&proxy, addr, "/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "ok");
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.pools.idle_here(addr), 1);
}

#[tokio::test]
async fn a_response_left_unread_closes_its_connection() {
    let (addr, seen) = upstream().await;
    let proxy = HttpProxy::new(Duration::from_secs(5), 1 << 20);
    drop(call(&proxy, addr, "/big").await);
    assert_eq!(proxy.pools.idle_here(addr), 0, "half-read connection kept");
    assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
    wait_until(|| seen.closed_by_gateway.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let (addr, seen) = upstream().await;
    let proxy = HttpProxy::new(Duration::from_secs(5), 1 << 20);
    assert_eq!(text(call(&proxy, addr, "/close").await).await, "ok");
    // Whether or not the gateway has noticed the close yet, the next call is answered.
    for _ in 0..3 {
        assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_a_closed_connection_could_not_take_goes_on_a_new_one() {
    let (addr, seen) = upstream().await;
    let mut sender = super::pool::connect(addr).await.expect("connected");
    let get = |path: &str| {
        Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Body::empty())
            .expect("request")
    };
    // The upstream answers and closes: this connection can carry nothing more.
    let answered = sender.send_request(get("/close")).await.expect("answered");
    assert_eq!(text(answered.map(Body::new)).await, "ok");
    wait_until(|| sender.is_closed()).await;
    let (answered, _) = send(addr, Some(sender), get("/"))
        .await
        .expect("sent again");
    assert_eq!(text(answered.map(Body::new)).await, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_a_413_and_leaves_the_idle_connection_alone() {
    let (addr, seen) = upstream().await;
    let proxy = HttpProxy::new(Duration::from_secs(5), 1024);
    assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 512])));
    let request = Request::post("/")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("request");
    let error = proxy
        .forward("f", addr, request)
        .await
        .expect_err("too large");
    assert!(
        matches!(error, GatewayError::PayloadTooLarge { limit: 1024 }),
        "{error:?}"
    );
    assert_eq!(
        proxy.pools.idle_here(addr),
        1,
        "the idle connection was closed"
    );
    assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, seen) = upstream().await;
    let proxy = proxy_with(Pools::new(Duration::from_millis(100)));
    assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    assert_eq!(proxy.pools.idle_here(addr), 1);
    // No further call: the sweeper closes it.
    wait_until(|| seen.closed_by_gateway.load(Ordering::SeqCst) == 1).await;
    assert_eq!(proxy.pools.idle_here(addr), 0);
}

#[tokio::test]
async fn a_call_past_the_timeout_is_a_504_and_its_connection_is_not_reused() {
    let (addr, seen) = upstream().await;
    let proxy = proxy_with(Pools::with_defaults());
    let error = forward(&proxy, addr, "/slow").await.expect_err("timed out");
    assert!(
        matches!(error, GatewayError::UpstreamTimeout { .. }),
        "{error:?}"
    );
    assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_bad_gateway_naming_the_function() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let proxy = HttpProxy::new(Duration::from_secs(5), 1 << 20);
    let error = forward(&proxy, addr, "/").await.expect_err("refused");
    assert!(
        matches!(&error, GatewayError::Upstream { name, .. } if name == "f"),
        "{error:?}"
    );
    assert!(
        format!("{:?}", error).contains("refused"),
        "says why: {error:?}"
    );
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached in 2 s");
}
