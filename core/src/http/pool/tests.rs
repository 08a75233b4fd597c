//! The pool against a real upstream on a random port that counts connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Empty};

use super::testing::{refused, upstream, wait_until};
use super::*;

type TestPools<K> = Arc<Pools<K, Empty<Bytes>>>;

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).body(Empty::new()).expect("request")
}

async fn text<K: Endpoint>(response: Response<PooledBody<K, Empty<Bytes>>>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The whole body of an answer read off a connection outside the pool.
async fn read(answered: Response<hyper::body::Incoming>) -> Bytes {
    answered
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

async fn call<K: Endpoint>(pools: &TestPools<K>, to: &K, path: &str) -> String {
    text(pools.send(to, get(path)).await.expect("answered")).await
}

fn pools<K: Endpoint>() -> TestPools<K> {
    Pools::new(Duration::from_secs(5), 16)
}

#[tokio::test]
async fn calls_one_after_another_share_one_connection() {
    let (addr, seen) = upstream().await;
    let pools = pools();
    for _ in 0..5 {
        assert_eq!(call(&pools, &addr, "/").await, "ok");
    }
    assert_eq!(seen.accepted(), 1);
    assert_eq!(pools.idle_here(&addr), 1);
}

#[tokio::test]
async fn a_host_name_endpoint_is_resolved_and_sent_as_the_host() {
    let (addr, seen) = upstream().await;
    let to = Authority::try_from(format!("localhost:{}", addr.port())).expect("authority");
    let pools = pools();
    // An absolute URI goes in origin form, the endpoint as its Host.
    let request = get(&format!("http://{to}/"));
    let answered = pools.send(&to, request).await.expect("answered");
    assert_eq!(text(answered).await, "ok");
    assert_eq!(call(&pools, &to, "/").await, "ok");
    assert_eq!(seen.accepted(), 1);
}

#[tokio::test]
async fn a_response_left_unread_closes_its_connection() {
    let (addr, seen) = upstream().await;
    let pools = pools();
    drop(pools.send(&addr, get("/big")).await.expect("answered"));
    assert_eq!(pools.idle_here(&addr), 0, "half-read connection kept");
    assert_eq!(call(&pools, &addr, "/").await, "ok");
    assert_eq!(seen.accepted(), 2);
    wait_until(|| seen.closed_by_client() == 1).await;
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let (addr, seen) = upstream().await;
    let pools = pools();
    assert_eq!(call(&pools, &addr, "/close").await, "ok");
    // Whether or not the pool has noticed the close yet, the next call is answered.
    for _ in 0..3 {
        assert_eq!(call(&pools, &addr, "/").await, "ok");
    }
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn a_request_a_closed_connection_could_not_take_goes_on_a_new_one() {
    let (addr, seen) = upstream().await;
    let mut sender = connect::<SocketAddr, Empty<Bytes>>(&addr)
        .await
        .expect("connected");
    let get = |path: &str| {
        Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    // The upstream answers and closes: this connection can carry nothing more.
    let answered = sender.send_request(get("/close")).await.expect("answered");
    assert_eq!(read(answered).await, "ok");
    wait_until(|| sender.is_closed()).await;
    let (answered, _) = exchange(&addr, Some(sender), get("/"))
        .await
        .expect("sent again");
    assert_eq!(read(answered).await, "ok");
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, seen) = upstream().await;
    let pools: TestPools<SocketAddr> = Pools::new(Duration::from_millis(100), 16);
    assert_eq!(call(&pools, &addr, "/").await, "ok");
    assert_eq!(pools.idle_here(&addr), 1);
    // No further call: the sweeper closes it.
    wait_until(|| seen.closed_by_client() == 1).await;
    assert_eq!(pools.idle_here(&addr), 0);
}

#[tokio::test]
async fn no_more_than_max_idle_connections_are_kept() {
    let (addr, seen) = upstream().await;
    let pools: TestPools<SocketAddr> = Pools::new(Duration::from_secs(5), 2);
    let answers = all_at_once(&pools, &addr, 4).await;
    assert!(answers.iter().all(|a| a == "ok"), "{answers:?}");
    assert_eq!(seen.accepted(), 4);
    assert_eq!(pools.idle_here(&addr), 2);
    wait_until(|| seen.closed_by_client() == 2).await;
}

/// `n` calls at once (each holding its connection until all are answered).
async fn all_at_once(pools: &TestPools<SocketAddr>, addr: &SocketAddr, n: usize) -> Vec<String> {
    let mut answered = Vec::new();
    for _ in 0..n {
        answered.push(pools.send(addr, get("/")).await.expect("answered"));
    }
    let mut texts = Vec::new();
    for response in answered {
        texts.push(text(response).await);
    }
    texts
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_connect_error_naming_it() {
    let addr = refused().await;
    let error = pools().send(&addr, get("/")).await.expect_err("refused");
    assert!(matches!(error, PoolError::Connect { .. }), "{error:?}");
    let text = crate::Chain(&error).to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("refused"),
        "{text}"
    );
}

#[test]
fn a_url_authority_is_connected_to_by_name_or_address_and_port() {
    let of = |a: &str| {
        let authority = Authority::try_from(a).expect("authority");
        let (host, port) = host_and_port(&authority);
        (host.to_owned(), port)
    };
    assert_eq!(of("gateway:8080"), ("gateway".to_owned(), 8080));
    assert_eq!(of("gateway"), ("gateway".to_owned(), 80));
    assert_eq!(of("[::1]:9000"), ("::1".to_owned(), 9000));
    assert_eq!(of("127.0.0.1"), ("127.0.0.1".to_owned(), 80));
}
