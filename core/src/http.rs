//! The one way Tributary builds HTTP clients: TCP_NODELAY, pooled keep-alive, a timeout, and an
//! error when the client cannot be built (never a silent fallback to a client without timeouts).

mod plain;
pub mod pool;

use std::time::Duration;

pub use plain::{Answer, PlainHttp};

/// The HTTP client could not be built (e.g. no TLS backend could be initialised).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client ({user_agent})")]
pub struct HttpClientError {
    /// The client's user agent, naming what it was for.
    pub user_agent: String,
    /// What reqwest said.
    #[source]
    pub source: reqwest::Error,
}

/// How long a client keeps an idle keep-alive connection before closing it: below the idle
/// timeouts servers commonly close at (the gateway's `read_timeout`, 10 s by default; Go
/// servers' `ReadTimeout`; Node's 5 s), so a connection is never reused just as its server
/// closes it, which fails the request sent on it (a call every 10 s to a server closing idle
/// connections after 10 s would fail now and then). Reconnecting after a pause costs a
/// handshake; under load connections never go idle.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A client sending `user_agent`, whose requests time out after `timeout` (none when `None`),
/// keeping up to `max_idle_per_host` idle connections per host.
pub fn http_client(
    user_agent: &str,
    timeout: Option<Duration>,
    max_idle_per_host: usize,
) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle_per_host)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(user_agent);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder.build().map_err(|source| HttpClientError {
        user_agent: user_agent.to_owned(),
        source,
    })
}

/// Headers that apply to one connection only (RFC 9110 7.6.1) and are never forwarded, stored
/// or replayed.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The topic a connector's call delivers a message of.
pub const X_TOPIC: http::HeaderName = http::HeaderName::from_static("x-topic");
/// The connector that made a call.
pub const X_CONNECTOR: http::HeaderName = http::HeaderName::from_static("x-connector");
/// The attempt number of a connector's delivery (1 for the first, 2 for the first retry), so
/// the gateway can count retries per connector and topic.
pub const X_DELIVERY_ATTEMPT: http::HeaderName =
    http::HeaderName::from_static("x-delivery-attempt");

/// A call's id (OpenFaaS's name): the gateway's answers, the queue's deliveries and callbacks.
pub const X_CALL_ID: http::HeaderName = http::HeaderName::from_static("x-call-id");

/// How long a call took, in seconds (OpenFaaS's name; the gateway's answers and the queue
/// worker's callbacks carry it).
pub const X_DURATION_SECONDS: http::HeaderName =
    http::HeaderName::from_static("x-duration-seconds");

/// `took` in seconds with six decimals (`0.001234`), as OpenFaaS's `X-Duration-Seconds`:
/// written digit by digit, not through the float formatter, once per call.
pub fn duration_seconds(took: Duration) -> http::HeaderValue {
    // Written from the last digit backwards.
    let mut text = [0u8; 28];
    let mut at = text.len();
    let mut put = |byte: u8| {
        at -= 1;
        text[at] = byte;
    };
    let digit = |n: u64| b'0' + (n % 10) as u8;
    let mut micros = u64::from(took.subsec_micros());
    for _ in 0..6 {
        put(digit(micros));
        micros /= 10;
    }
    put(b'.');
    let mut secs = took.as_secs();
    loop {
        put(digit(secs));
        secs /= 10;
        if secs == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&text[at..]).unwrap_or(http::HeaderValue::from_static("0"))
}

/// Whether a (lower-case) header name is hop-by-hop.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn durations_are_written_in_seconds_with_six_decimals() {
        for micros in [
            0u64,
            1,
            999_999,
            1_000_000,
            1_234_567,
            12_000_001,
            86_400_000_000,
        ] {
            let took = Duration::from_micros(micros);
            assert_eq!(
                duration_seconds(took),
                format!("{:.6}", took.as_secs_f64()).as_str(),
                "{micros} us"
            );
        }
        // Below a microsecond it is cut, not rounded.
        assert_eq!(duration_seconds(Duration::from_nanos(1_999)), "0.000001");
    }

    /// A server that keeps connections open for ever; counts those accepted and those the
    /// client closed.
    async fn server() -> (String, Arc<(AtomicUsize, AtomicUsize)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen = counts.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.0.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    loop {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if stream.write_all(answer).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    seen.1.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (url, counts)
    }

    #[tokio::test]
    async fn clients_close_connections_idle_for_the_pool_idle_timeout_themselves() {
        let (url, counts) = server().await;
        let client = http_client("test", Some(Duration::from_secs(5)), 8).expect("client");
        let get = || async {
            let answer = client.get(&url).send().await.expect("sent");
            assert_eq!(answer.text().await.expect("body"), "ok");
        };
        get().await;
        get().await;
        assert_eq!(
            counts.0.load(Ordering::SeqCst),
            1,
            "kept alive while in use"
        );
        tokio::time::sleep(POOL_IDLE_TIMEOUT + Duration::from_millis(500)).await;
        get().await;
        assert_eq!(
            counts.0.load(Ordering::SeqCst),
            2,
            "a new connection after the pause"
        );
        assert_eq!(
            counts.1.load(Ordering::SeqCst),
            1,
            "the client closed the idle one, not the server"
        );
    }
}
