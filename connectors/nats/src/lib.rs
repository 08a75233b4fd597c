//! The NATS connector: invokes functions for messages on NATS subjects.
//!
//! Two modes:
//! - **core**: a queue-group subscription on each subject in `topics`. Core NATS keeps nothing:
//!   delivery is **at-most-once** (a message in flight when the connector dies is lost).
//! - **jetstream**: a durable pull consumer with explicit acks on a stream holding the subjects.
//!   A message is acked only when the runtime says its outcome is final, `nak`ed (with the delay
//!   asked) to be redelivered, or on dead letter published to `dead_letter_subject` and `term`ed.
//!   While a call runs the connector sends progress signals, so long calls are not redelivered.
//!
//! Subjects may use the wildcards `*` and `>`. A message goes to the functions whose `topic`
//! annotation names its concrete subject **and** to those naming the subscribed pattern it
//! matched (both, each function once). NATS message headers are passed to the functions; when a
//! message has a reply subject, each function's response is published to it.
//!
//! ```no_run
//! use tributary_connector_sdk::{Connector, ControllerConfig, shutdown_signal};
//! use tributary_nats::{Mode, NatsConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NatsConfig { subjects: vec!["orders.>".into()], mode: Mode::Core, ..NatsConfig::default() };
//! let (source, replies) = tributary_nats::connect(config).await?;
//! Connector::new(ControllerConfig::from_env()?)
//!     .with_subscriber(replies)
//!     .run(source, shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{
    Acknowledge, DeadLetter, Delivery, InvocationOutcome, Message, NoAck, ResponseSubscriber,
    Source, SourceContext, SourceError, TopicMap,
};

/// The connector's name, sent as `X-Connector`.
pub const CONNECTOR_NAME: &str = "nats-connector";
const REPLY_KEY: &str = "nats-reply";

/// Errors setting the connector up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached or refused us.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server.
        url: String,
        /// What failed.
        reason: String,
    },
    /// JetStream setup failed.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// The stream or consumer.
        what: String,
        /// What failed.
        reason: String,
    },
}

/// Core or JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Queue-group subscriptions; at-most-once.
    #[default]
    Core,
    /// A durable JetStream pull consumer; at-least-once.
    JetStream,
}

/// How to authenticate.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// User and password.
    pub user: Option<(String, String)>,
    /// A token.
    pub token: Option<String>,
    /// A `.creds` file (JWT + NKey).
    pub creds_file: Option<PathBuf>,
}

/// TLS settings.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// CA certificate file(s) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Require TLS even if the server does not ask for it.
    pub required: bool,
}

/// NATS connector settings.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URL(s), comma separated.
    pub url: String,
    /// Subjects to subscribe to (wildcards allowed).
    pub subjects: Vec<String>,
    /// Core or JetStream.
    pub mode: Mode,
    /// Queue group of core subscriptions.
    pub queue_group: String,
    /// JetStream stream holding the subjects (created with them when missing).
    pub stream: String,
    /// JetStream durable consumer name.
    pub consumer: String,
    /// Where dead letters are published (JetStream); without one they are only logged and termed.
    pub dead_letter_subject: Option<String>,
    /// How long a JetStream delivery may go unacknowledged before redelivery.
    pub ack_wait: Duration,
    /// Unacknowledged JetStream deliveries at once (set it to the runtime's `max_inflight`),
    /// which bounds redeliveries after a crash to the messages in flight.
    pub max_ack_pending: usize,
    /// Credentials.
    pub credentials: Credentials,
    /// TLS.
    pub tls: Tls,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            subjects: Vec::new(),
            mode: Mode::Core,
            queue_group: "tributary-nats-connector".into(),
            stream: "tributary-events".into(),
            consumer: "tributary-nats-connector".into(),
            dead_letter_subject: None,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 64,
            credentials: Credentials::default(),
            tls: Tls::default(),
        }
    }
}

/// Turns `broker_host` (`host` or `host:port`) into a NATS URL.
pub fn url_from_broker_host(host: &str) -> String {
    let host = host.trim();
    if host.contains("://") {
        host.to_owned()
    } else if host.contains(':') {
        format!("nats://{host}")
    } else {
        format!("nats://{host}:4222")
    }
}

/// Whether `subject` matches `pattern` (`*` one token, `>` one or more trailing tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The functions for a message on `subject` that matched `pattern`: subscribers of either.
fn targets(map: &TopicMap, subject: &str, pattern: &str) -> Vec<String> {
    let mut out: Vec<String> = map.functions_for(subject).to_vec();
    if pattern != subject {
        for f in map.functions_for(pattern) {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
    }
    out
}

fn headers_of(message: &async_nats::Message) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(h) = &message.headers {
        for (name, values) in h.iter() {
            for v in values {
                out.push((name.to_string(), v.as_str().to_owned()));
            }
        }
    }
    out
}

async fn connect_client(config: &NatsConfig) -> Result<async_nats::Client, NatsError> {
    let fail = |reason: String| NatsError::Connect {
        url: config.url.clone(),
        reason,
    };
    let mut options = async_nats::ConnectOptions::new().name(CONNECTOR_NAME);
    if let Some((user, password)) = &config.credentials.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.credentials.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.credentials.creds_file {
        options = async_nats::ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|e| fail(format!("creds file {}: {e}", path.display())))?
            .name(CONNECTOR_NAME);
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls.client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls.required {
        options = options.require_tls(true);
    }
    options
        .connect(config.url.as_str())
        .await
        .map_err(|e| fail(e.to_string()))
}

/// Connects and returns the source and the subscriber that publishes replies.
pub async fn connect(config: NatsConfig) -> Result<(NatsSource, Replies), NatsError> {
    if config.subjects.is_empty() {
        return Err(NatsError::Config(
            "topics is empty: name the subjects to subscribe to, e.g. topics=orders,events.>"
                .into(),
        ));
    }
    let client = connect_client(&config).await?;
    tracing::info!(url = %config.url, subjects = ?config.subjects, mode = ?config.mode, "connected to NATS");
    Ok((
        NatsSource {
            client: client.clone(),
            config,
        },
        Replies { client },
    ))
}

/// Publishes each function's response to the message's reply subject.
pub struct Replies {
    client: async_nats::Client,
}

impl ResponseSubscriber for Replies {
    fn response(&self, outcome: &InvocationOutcome) {
        let Some(reply) = outcome.context.get(REPLY_KEY).cloned() else {
            return;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Function-Name", outcome.function.as_str());
        headers.insert(
            "X-Function-Status",
            outcome.status.unwrap_or(502).to_string().as_str(),
        );
        if outcome.delivery != Delivery::Delivered
            && let Some(e) = &outcome.error
        {
            headers.insert("X-Function-Error", e.as_str());
        }
        let client = self.client.clone();
        let body = outcome.body.clone();
        tokio::spawn(async move {
            if let Err(e) = client.publish_with_headers(reply, headers, body).await {
                tracing::warn!(error = %e, "cannot publish the reply");
            }
        });
    }
}

/// The NATS [`Source`].
pub struct NatsSource {
    client: async_nats::Client,
    config: NatsConfig,
}

impl NatsSource {
    fn message(
        &self,
        ctx: &SourceContext,
        m: &async_nats::Message,
        pattern: &str,
        ack: impl Acknowledge,
    ) -> Message {
        let subject = m.subject.to_string();
        let mut context = BTreeMap::from([
            ("nats-subject".to_owned(), subject.clone()),
            ("nats-pattern".to_owned(), pattern.to_owned()),
        ]);
        if let Some(reply) = &m.reply {
            context.insert(REPLY_KEY.to_owned(), reply.to_string());
        }
        let mut message = Message::new(subject.clone(), m.payload.clone(), ack)
            .with_targets(targets(&ctx.topic_map(), &subject, pattern))
            .with_header("X-NATS-Subject", subject)
            .with_context(context);
        for (k, v) in headers_of(m) {
            message = message.with_header(k, v);
        }
        message
    }

    async fn run_core(self, ctx: SourceContext) -> Result<(), SourceError> {
        let mut subscriptions = Vec::new();
        for subject in &self.config.subjects {
            let sub = self
                .client
                .queue_subscribe(subject.clone(), self.config.queue_group.clone())
                .await
                .map_err(|e| SourceError::new(format!("cannot subscribe to {subject}: {e}")))?;
            let pattern = subject.clone();
            subscriptions.push(sub.map(move |m| (pattern.clone(), m)).boxed());
        }
        tracing::info!(subjects = ?self.config.subjects, queue_group = %self.config.queue_group, "subscribed (core NATS, at-most-once)");
        let mut all = futures::stream::select_all(subscriptions);
        let cancel = ctx.cancelled();
        loop {
            let next = tokio::select! {
                n = all.next() => n,
                _ = cancel.cancelled() => return Ok(()),
            };
            let Some((pattern, m)) = next else {
                return Err(SourceError::new("the NATS subscriptions ended"));
            };
            let message = self.message(&ctx, &m, &pattern, NoAck);
            ctx.send(message).await?;
        }
    }

    async fn run_jetstream(self, ctx: SourceContext) -> Result<(), SourceError> {
        let js = jetstream::new(self.client.clone());
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SourceError::new(NatsError::JetStream {
                what: what.to_owned(),
                reason: e.to_string(),
            })
        };
        let stream = js
            .get_or_create_stream(stream::Config {
                name: self.config.stream.clone(),
                subjects: self.config.subjects.clone(),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(&format!("stream {}", self.config.stream), &e))?;
        let consumer = stream
            .get_or_create_consumer(
                &self.config.consumer,
                pull::Config {
                    durable_name: Some(self.config.consumer.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: i64::try_from(self.config.max_ack_pending).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| fail(&format!("consumer {}", self.config.consumer), &e))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.max_ack_pending.max(1))
            .messages()
            .await
            .map_err(|e| fail("pull subscription", &e))?;
        tracing::info!(stream = %self.config.stream, consumer = %self.config.consumer, ack_wait = ?self.config.ack_wait, "consuming (JetStream, at-least-once)");
        let cancel = ctx.cancelled();
        loop {
            let next = tokio::select! {
                n = messages.next() => n,
                _ = cancel.cancelled() => return Ok(()),
            };
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "JetStream pull failed; continuing");
                    continue;
                }
                None => return Err(SourceError::new("the JetStream subscription ended")),
            };
            let subject = m.subject.to_string();
            let pattern = self
                .config
                .subjects
                .iter()
                .find(|p| subject_matches(p, &subject))
                .cloned()
                .unwrap_or_else(|| subject.clone());
            let delivered = m.info().map(|i| i.delivered).unwrap_or(1);
            let keepalive = CancellationToken::new();
            let ack = JetStreamAck {
                message: m.clone(),
                client: self.client.clone(),
                dead_letter_subject: self.config.dead_letter_subject.clone(),
                keepalive: keepalive.clone(),
            };
            spawn_progress(m.clone(), self.config.ack_wait, keepalive);
            let message = self
                .message(&ctx, &m.message, &pattern, ack)
                .with_header("X-NATS-Delivered", delivered.to_string());
            ctx.send(message).await?;
        }
    }
}

/// Sends `in_progress` every third of `ack_wait` until `stop` fires, so calls longer than
/// `ack_wait` are not redelivered.
fn spawn_progress(message: jetstream::Message, ack_wait: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let period = (ack_wait / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {
                    if message.ack_with(AckKind::Progress).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

struct JetStreamAck {
    message: jetstream::Message,
    client: async_nats::Client,
    dead_letter_subject: Option<String>,
    keepalive: CancellationToken,
}

impl JetStreamAck {
    async fn send(&self, kind: AckKind) {
        self.keepalive.cancel();
        if let Err(e) = self.message.ack_with(kind).await {
            tracing::warn!(subject = %self.message.subject, error = %e, "JetStream acknowledgement failed; the message will be redelivered");
        }
    }
}

#[async_trait]
impl Acknowledge for JetStreamAck {
    async fn ack(self: Box<Self>) {
        self.keepalive.cancel();
        if let Err(e) = self.message.double_ack().await {
            tracing::warn!(subject = %self.message.subject, error = %e, "JetStream ack failed; the message will be redelivered");
        }
    }

    async fn nack(self: Box<Self>, retry_after: Option<Duration>) {
        self.send(AckKind::Nak(retry_after)).await;
    }

    async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
        if let Some(subject) = &self.dead_letter_subject {
            let mut headers = self.message.headers.clone().unwrap_or_default();
            headers.insert(
                "X-Dead-Letter-Reason",
                letter.to_string().replace(['\r', '\n'], " ").as_str(),
            );
            headers.insert("X-Original-Subject", self.message.subject.as_str());
            if let Some(f) = letter.failures.first() {
                headers.insert("X-Function-Name", f.function.as_str());
                headers.insert(
                    "X-Function-Status",
                    f.status.unwrap_or(0).to_string().as_str(),
                );
                headers.insert("X-Attempts", f.attempts.to_string().as_str());
            }
            let published = self
                .client
                .publish_with_headers(subject.clone(), headers, self.message.payload.clone())
                .await;
            let flushed = match published {
                Ok(()) => self.client.flush().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = flushed {
                tracing::error!(%subject, error = %e, "cannot publish the dead letter; leaving the message for redelivery");
                self.send(AckKind::Nak(Some(Duration::from_secs(5)))).await;
                return;
            }
        } else {
            tracing::warn!(subject = %self.message.subject, %letter, "no dead_letter_subject configured; terminating the message");
        }
        self.send(AckKind::Term).await;
    }
}

#[async_trait]
impl Source for NatsSource {
    fn name(&self) -> &str {
        CONNECTOR_NAME
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        match self.config.mode {
            Mode::Core => self.run_core(ctx).await,
            Mode::JetStream => self.run_jetstream(ctx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_connector_sdk::FunctionInfo;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("orders", "orders"));
        assert!(subject_matches("orders.*", "orders.eu"));
        assert!(!subject_matches("orders.*", "orders.eu.created"));
        assert!(subject_matches("orders.>", "orders.eu.created"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("*.created", "orders.created"));
        assert!(!subject_matches("orders", "orders.eu"));
    }

    #[test]
    fn targets_are_the_subject_and_the_pattern_subscribers() {
        let f = |name: &str, topic: &str| FunctionInfo {
            name: name.into(),
            namespace: "openfaas-fn".into(),
            annotations: Some(BTreeMap::from([("topic".to_owned(), topic.to_owned())])),
        };
        let map = TopicMap::build(
            vec![
                f("exact", "events.eu.created"),
                f("wild", "events.>"),
                f("both", "events.eu.created,events.>"),
            ],
            ",",
        );
        let mut t = targets(&map, "events.eu.created", "events.>");
        t.sort();
        assert_eq!(t, ["both", "exact", "wild"]);
        assert_eq!(targets(&map, "events.us.deleted", "events.>").len(), 2);
    }

    #[test]
    fn broker_host_becomes_a_url() {
        assert_eq!(url_from_broker_host("nats"), "nats://nats:4222");
        assert_eq!(url_from_broker_host("nats:4223"), "nats://nats:4223");
        assert_eq!(url_from_broker_host("tls://nats:4222"), "tls://nats:4222");
    }
}
