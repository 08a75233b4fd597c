//! The proxy against a real upstream on a random port that counts the connections it accepts
//! (the pool itself is tested in `tributary_core::http::pool`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use tributary_core::http::pool::testing::{refused, upstream};

use super::*;

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

#[tokio::test]
async fn calls_one_after_another_share_one_connection() {
    let (addr, seen) = upstream().await;
    let proxy = HttpProxy::new(Duration::from_secs(5), 1 << 20);
    for _ in 0..5 {
        let response = call(&proxy, addr, "/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "ok");
    }
    assert_eq!(seen.accepted(), 1);
    assert_eq!(proxy.pools.idle_here(&addr), 1);
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
        proxy.pools.idle_here(&addr),
        1,
        "the idle connection was closed"
    );
    assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    assert_eq!(seen.accepted(), 1);
}

#[tokio::test]
async fn a_call_past_the_timeout_is_a_504_and_its_connection_is_not_reused() {
    let (addr, seen) = upstream().await;
    let proxy = HttpProxy::new(Duration::from_secs(1), 1 << 20);
    let error = forward(&proxy, addr, "/slow").await.expect_err("timed out");
    assert!(
        matches!(error, GatewayError::UpstreamTimeout { .. }),
        "{error:?}"
    );
    assert_eq!(text(call(&proxy, addr, "/").await).await, "ok");
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_bad_gateway_naming_the_function() {
    let addr = refused().await;
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
