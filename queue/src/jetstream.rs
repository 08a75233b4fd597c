//! The NATS JetStream queue: a work-queue stream `faas-request` (subjects
//! `faas-request.<function>.<namespace>`), a durable pull consumer `faas-workers` with explicit
//! acks, and a `faas-dead-letters` stream. A request's metadata travels in the
//! `Tributary-Request` header (base64 JSON) and its body as the message payload.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tributary_core::queue::{
    AsyncQueue, BoxError, DeadLetterRecord, QueueError, QueueStats, QueuedRequest,
};

use crate::backend::{Backend, Lease, Leased};

/// The stream of queued requests.
pub const REQUEST_STREAM: &str = "faas-request";
/// The stream of dead letters.
pub const DEAD_LETTER_STREAM: &str = "faas-dead-letters";
/// The durable consumer shared by every queue worker.
pub const CONSUMER: &str = "faas-workers";
const META_HEADER: &str = "Tributary-Request";
const RECORD_HEADER: &str = "Tributary-Dead-Letter";

fn encode<T: serde::Serialize>(value: &T) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode<T: serde::de::DeserializeOwned>(value: &str) -> Option<T> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// An error of the JetStream queue at `url`, while doing `what`.
fn error(url: &str, what: &str, source: impl Into<BoxError>) -> QueueError {
    QueueError::Backend {
        queue: format!("NATS JetStream queue ({url})"),
        what: what.to_owned(),
        source: source.into(),
    }
}

/// The JetStream-backed queue.
pub struct JetStreamQueue {
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: jetstream::consumer::PullConsumer,
    messages: Mutex<Option<pull::Stream>>,
    ack_wait: Duration,
}

impl JetStreamQueue {
    /// Connects to `url`, creating the streams and the durable consumer when missing.
    /// `ack_wait` is how long a delivery stays leased without a progress signal.
    pub async fn connect(
        url: &str,
        ack_wait: Duration,
        max_ack_pending: i64,
    ) -> Result<Self, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .name("tributary-queue")
            .connect(url)
            .await
            .map_err(|e| error(url, "cannot connect", e))?;
        let js = jetstream::new(client.clone());
        let requests = js
            .get_or_create_stream(stream::Config {
                name: REQUEST_STREAM.into(),
                subjects: vec![format!("{REQUEST_STREAM}.>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                error(
                    url,
                    &format!("cannot create stream {REQUEST_STREAM} (is JetStream enabled? nats-server -js)"),
                    e,
                )
            })?;
        js.get_or_create_stream(stream::Config {
            name: DEAD_LETTER_STREAM.into(),
            subjects: vec!["faas-dead-letter.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            error(
                url,
                &format!("cannot create stream {DEAD_LETTER_STREAM}"),
                e,
            )
        })?;
        let consumer = requests
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait,
                    max_deliver: -1,
                    max_ack_pending,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| error(url, &format!("cannot create consumer {CONSUMER}"), e))?;
        tracing::info!(%url, stream = REQUEST_STREAM, consumer = CONSUMER, ?ack_wait, "NATS JetStream queue connected");
        Ok(Self {
            url: url.to_owned(),
            client,
            js,
            consumer,
            messages: Mutex::new(None),
            ack_wait,
        })
    }

    fn err(&self, what: &str, source: impl Into<BoxError>) -> QueueError {
        error(&self.url, what, source)
    }

    /// A stream and its current state.
    async fn stream(&self, name: &str) -> Result<(stream::Stream, stream::State), QueueError> {
        let what = || format!("cannot read stream {name}");
        let mut s = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| self.err(&what(), e))?;
        let state = s
            .info()
            .await
            .map_err(|e| self.err(&what(), e))?
            .state
            .clone();
        Ok((s, state))
    }

    /// The next request from the pull stream; `None` once `cancel` fires.
    async fn next(
        &self,
        stream: &mut Option<pull::Stream>,
        cancel: &CancellationToken,
        wait: bool,
    ) -> Result<Option<Leased>, QueueError> {
        loop {
            if stream.is_none() {
                *stream = Some(
                    self.consumer
                        .messages()
                        .await
                        .map_err(|e| self.err("cannot pull from consumer", e))?,
                );
            }
            let Some(messages) = stream.as_mut() else {
                continue;
            };
            let next = if wait {
                tokio::select! {
                    n = messages.next() => n,
                    _ = cancel.cancelled() => return Ok(None),
                }
            } else {
                match messages.next().now_or_never() {
                    Some(n) => n,
                    None => return Ok(None),
                }
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "JetStream pull failed; re-subscribing");
                    *stream = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => {
                    *stream = None;
                    continue;
                }
            };
            let attempt = message
                .info()
                .map(|i| u32::try_from(i.delivered).unwrap_or(1))
                .unwrap_or(1);
            let meta = message
                .headers
                .as_ref()
                .and_then(|h| h.get(META_HEADER))
                .and_then(|v| decode::<QueuedRequest>(v.as_str()));
            let Some(mut request) = meta else {
                tracing::error!(subject = %message.subject, "message without a readable {META_HEADER} header; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            };
            request.body = message.payload.clone();
            return Ok(Some(Leased {
                request,
                attempt,
                lease: Box::new(JetStreamLease {
                    message,
                    js: self.js.clone(),
                    url: self.url.clone(),
                }),
            }));
        }
    }
}

#[async_trait]
impl AsyncQueue for JetStreamQueue {
    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn enqueue(&self, request: QueuedRequest) -> Result<(), QueueError> {
        let meta = encode(&request);
        let limit = self.client.server_info().max_payload;
        let size = request.body.len() + meta.len() + 64;
        if size > limit {
            return Err(QueueError::TooLarge {
                size: request.body.len(),
                limit: limit.saturating_sub(meta.len() + 64),
                what: "the NATS server's max_payload",
            });
        }
        self.publish_request(&request, &meta, request.body.clone())
            .await?;
        Ok(())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let (_, state) = self.stream(REQUEST_STREAM).await?;
        Ok(state.messages)
    }

    async fn depth_by_function(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, QueueError> {
        use futures::TryStreamExt;
        let (s, _) = self.stream(REQUEST_STREAM).await?;
        let what = "cannot count the requests per function";
        // Subjects are `faas-request.FUNCTION.NAMESPACE`: the server counts them.
        let prefix = format!("{REQUEST_STREAM}.");
        let mut subjects = s
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|e| self.err(what, e))?;
        let mut out = std::collections::BTreeMap::new();
        while let Some((subject, count)) =
            subjects.try_next().await.map_err(|e| self.err(what, e))?
        {
            if let Some(function) = subject.strip_prefix(&prefix) {
                *out.entry(function.to_owned()).or_default() += count as u64;
            }
        }
        Ok(out)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRecord>, QueueError> {
        let (s, state) = self.stream(DEAD_LETTER_STREAM).await?;
        let (first, last) = (state.first_sequence, state.last_sequence);
        let mut out = Vec::new();
        let mut seq = last;
        while seq >= first && seq > 0 && out.len() < limit {
            if let Ok(m) = s.get_raw_message(seq).await
                && let Some(mut record) = m
                    .headers
                    .get(RECORD_HEADER)
                    .and_then(|v| decode::<DeadLetterRecord>(v.as_str()))
            {
                record.id = seq;
                out.push(record);
            }
            seq -= 1;
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let (requests, state) = self.stream(REQUEST_STREAM).await?;
        let (_, dead) = self.stream(DEAD_LETTER_STREAM).await?;
        let consumer = self
            .consumer
            .get_info()
            .await
            .map_err(|e| self.err(&format!("cannot read consumer {CONSUMER}"), e))?;
        // The oldest request's acceptance time travels in its metadata header.
        let oldest_age_ms = match state.messages {
            0 => None,
            _ => requests
                .get_raw_message(state.first_sequence)
                .await
                .ok()
                .and_then(|m| {
                    m.headers
                        .get(META_HEADER)
                        .and_then(|v| decode::<QueuedRequest>(v.as_str()))
                })
                .map(|r| {
                    u64::try_from(tributary_core::queue::now_ms() - r.enqueued_at_ms).unwrap_or(0)
                }),
        };
        Ok(QueueStats {
            backend: "nats".into(),
            depth: state.messages,
            in_flight: consumer.num_ack_pending as u64,
            oldest_age_ms,
            dead_letters: dead.messages,
        })
    }

    async fn redrive(&self, id: u64) -> Result<bool, QueueError> {
        let (s, _) = self.stream(DEAD_LETTER_STREAM).await?;
        let Some(m) = self.dead_letter_message(&s, id).await? else {
            return Ok(false);
        };
        let Some(meta) = m.headers.get(META_HEADER).map(|v| v.as_str().to_owned()) else {
            return Err(self.err(
                &format!("dead letter {id} has no {META_HEADER} header"),
                "it cannot be redriven; delete it",
            ));
        };
        let Some(request) = decode::<QueuedRequest>(&meta) else {
            return Err(self.err(
                &format!("dead letter {id} has a corrupt {META_HEADER} header"),
                "it cannot be redriven; delete it",
            ));
        };
        self.publish_request(&request, &meta, m.payload).await?;
        self.delete_dead_letter(id).await?;
        Ok(true)
    }

    async fn delete_dead_letter(&self, id: u64) -> Result<bool, QueueError> {
        let (s, _) = self.stream(DEAD_LETTER_STREAM).await?;
        if self.dead_letter_message(&s, id).await?.is_none() {
            return Ok(false);
        }
        s.delete_message(id)
            .await
            .map_err(|e| self.err(&format!("cannot delete dead letter {id}"), e))
    }
}

impl JetStreamQueue {
    /// Stores a request (its encoded metadata `meta`, its `body`) on its function's subject
    /// and waits until the stream has it.
    async fn publish_request(
        &self,
        request: &QueuedRequest,
        meta: &str,
        body: Bytes,
    ) -> Result<(), QueueError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(META_HEADER, meta);
        let subject = format!(
            "{REQUEST_STREAM}.{}.{}",
            request.function, request.namespace
        );
        let ack = self
            .js
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(|e| self.err("cannot publish the request", e))?;
        ack.await
            .map_err(|e| self.err("the request was not stored", e))?;
        Ok(())
    }

    /// Dead letter `seq`, or `None` when the stream has no such message.
    async fn dead_letter_message(
        &self,
        s: &stream::Stream,
        seq: u64,
    ) -> Result<Option<jetstream::message::StreamMessage>, QueueError> {
        use async_nats::jetstream::{ErrorCode, stream::LastRawMessageErrorKind as Kind};
        match s.get_raw_message(seq).await {
            Ok(m) => Ok(Some(m)),
            Err(e) => match e.kind() {
                Kind::NoMessageFound => Ok(None),
                Kind::JetStream(j) if j.error_code() == ErrorCode::NO_MESSAGE_FOUND => Ok(None),
                _ => Err(self.err(&format!("cannot read dead letter {seq}"), e)),
            },
        }
    }
}

#[async_trait]
impl Backend for JetStreamQueue {
    async fn lease(
        &self,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Leased>, QueueError> {
        let mut stream = tokio::select! {
            g = self.messages.lock() => g,
            _ = cancel.cancelled() => return Ok(Vec::new()),
        };
        let mut leased = Vec::new();
        // Wait for the first; take whatever else is already buffered, up to `max`.
        while leased.len() < max.max(1) {
            match self.next(&mut stream, cancel, leased.is_empty()).await? {
                Some(l) => leased.push(l),
                None => break,
            }
        }
        Ok(leased)
    }

    fn lease_refresh(&self) -> Duration {
        self.ack_wait / 3
    }

    async fn flush(&self) -> Result<(), QueueError> {
        self.client
            .flush()
            .await
            .map_err(|e| self.err("cannot send the last acknowledgements", e))
    }
}

struct JetStreamLease {
    message: jetstream::Message,
    js: jetstream::Context,
    url: String,
}

impl JetStreamLease {
    fn err(&self, what: &str, source: impl Into<BoxError>) -> QueueError {
        error(&self.url, what, source)
    }

    async fn send(&self, kind: AckKind) -> Result<(), QueueError> {
        self.message
            .ack_with(kind)
            .await
            .map_err(|e| self.err("cannot acknowledge the request", e))
    }
}

#[async_trait]
impl Lease for JetStreamLease {
    /// A plain ack, not a confirmed one (`double_ack`): the server's confirmation doubled
    /// nats-server's and the gateway's work per message (bench/async.sh: 54-59 -> 29-36 us of
    /// nats-server CPU per call). An ack lost on the way means a redelivery, which at-least-once
    /// allows; the worker flushes the connection when it stops.
    async fn ack(&self) -> Result<(), QueueError> {
        self.message
            .ack()
            .await
            .map_err(|e| self.err("cannot acknowledge the request", e))
    }

    async fn retry(&self, delay: Duration) -> Result<(), QueueError> {
        self.send(AckKind::Nak(Some(delay))).await
    }

    async fn dead_letter(&self, record: DeadLetterRecord) -> Result<(), QueueError> {
        let mut headers = self.message.headers.clone().unwrap_or_default();
        headers.insert(RECORD_HEADER, encode(&record).as_str());
        let subject = format!("faas-dead-letter.{}.{}", record.function, record.namespace);
        let payload: Bytes = self.message.payload.clone();
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| self.err("cannot publish the dead letter", e))?;
        ack.await
            .map_err(|e| self.err("the dead letter was not stored", e))?;
        self.send(AckKind::Term).await
    }

    async fn extend(&self) -> Result<(), QueueError> {
        self.send(AckKind::Progress).await
    }
}
