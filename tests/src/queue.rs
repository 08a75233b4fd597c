//! The async queue's two backends for tests (the embedded SQLite queue and a real
//! `nats-server -js`), and enqueueing through a gateway.

use crate::{GatewayOptions, GatewayProcess, NatsServer};

/// Where queued requests live for one test.
pub enum Backend {
    /// The embedded SQLite queue, in this folder.
    Embedded(tempfile::TempDir),
    /// NATS JetStream on this server.
    Nats(NatsServer),
}

impl Backend {
    /// The embedded queue in a new folder.
    pub fn embedded() -> Self {
        Self::Embedded(tempfile::tempdir().expect("a temporary folder"))
    }

    /// JetStream on a new nats-server.
    pub fn nats() -> Self {
        Self::Nats(NatsServer::start())
    }

    /// `embedded` or `nats`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Nats(_) => "nats",
        }
    }

    /// Gateway options selecting this backend, with fast retries.
    pub fn options(&self) -> GatewayOptions {
        let o = GatewayOptions::default()
            .env("initial_retry_wait", "50ms")
            .env("max_retry_wait", "300ms")
            .env("max_retry_attempts", "5");
        match self {
            Self::Embedded(dir) => o
                .arg("--queue-path")
                .arg(dir.path().join("queue.db").to_string_lossy()),
            Self::Nats(nats) => o.env("nats_url", &nats.url).env("ack_wait", "3s"),
        }
    }
}

/// One of each backend.
pub fn both() -> [Backend; 2] {
    [Backend::embedded(), Backend::nats()]
}

/// Posts `body` to `/async-function/FUNCTION` (with `X-Callback-Url` when given); asserts the
/// 202 and returns its `X-Call-Id`.
pub async fn enqueue(
    gw: &GatewayProcess,
    function: &str,
    body: &str,
    callback: Option<&str>,
) -> String {
    let mut req = gw
        .http
        .post(gw.url(&format!("/async-function/{function}")))
        .body(body.to_owned());
    if let Some(url) = callback {
        req = req.header("X-Callback-Url", url);
    }
    let r = req.send().await.expect("the gateway answers");
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    r.headers()["x-call-id"]
        .to_str()
        .expect("a text call id")
        .to_owned()
}
