//! JetStream: a durable pull consumer with explicit acks. A message is acked only when the
//! runtime says its outcome is final, `nak`ed (with the delay asked) to be redelivered, or on
//! dead letter published to `dead_letter_subject` and `term`ed. While a call runs the connector
//! sends progress signals, so long calls are not redelivered.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::{CancellationToken, DropGuard};
use tributary_connector_sdk::{Acknowledge, DeadLetter, SourceContext, SourceError};
use tributary_core::Chain;

use crate::subjects::subject_matches;
use crate::{NatsError, NatsSource};

impl NatsSource {
    pub(crate) async fn run_jetstream(self, ctx: SourceContext) -> Result<(), SourceError> {
        let js = jetstream::new(self.client.clone());
        let fail = |what: String, e: Box<dyn std::error::Error + Send + Sync>| {
            SourceError::caused(
                "JetStream set-up failed",
                NatsError::JetStream { what, source: e },
            )
        };
        let stream = js
            .get_or_create_stream(stream::Config {
                name: self.config.stream.clone(),
                subjects: self.subjects.clone(),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(format!("stream {}", self.config.stream), e.into()))?;
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
            .map_err(|e| fail(format!("consumer {}", self.config.consumer), e.into()))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.max_ack_pending.max(1))
            .messages()
            .await
            .map_err(|e| fail("pull subscription".into(), e.into()))?;
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
                    tracing::warn!(error = %Chain(&e), "JetStream pull failed; continuing");
                    continue;
                }
                None => return Err(SourceError::new("the JetStream subscription ended")),
            };
            let subject = m.subject.to_string();
            let pattern = self
                .subjects
                .iter()
                .find(|p| subject_matches(p, &subject))
                .cloned()
                .unwrap_or_else(|| subject.clone());
            let info = m.info().ok();
            let delivered = info.as_ref().map_or(1, |i| i.delivered);
            // What the consumer still has to deliver after this message, for the gateway's
            // autoscaler (the consumer's count, reported under the subscription's topic).
            if let Some(info) = &info {
                ctx.report_lag(&pattern, info.pending);
            }
            let progress = CancellationToken::new();
            spawn_progress(m.clone(), self.config.ack_wait, progress.clone());
            let ack = JetStreamAck {
                message: m.clone(),
                client: self.client.clone(),
                dead_letter_subject: self.config.dead_letter_subject.clone(),
                _progress: progress.drop_guard(),
            };
            let mut message = self
                .message(&ctx, &m.message, &pattern, ack)
                .with_header("X-NATS-Delivered", delivered.to_string());
            if let Some(info) = &info {
                // The stream sequence: the same on every redelivery of this message.
                message.event.source = format!("/nats/{}", info.stream);
                message.event.id = Some(format!("nats:{}:{}", info.stream, info.stream_sequence));
            }
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

/// Settles one JetStream message.
struct JetStreamAck {
    message: jetstream::Message,
    client: async_nats::Client,
    dead_letter_subject: Option<String>,
    /// Stops the progress signals when the message is settled (or the handle dropped).
    _progress: DropGuard,
}

impl JetStreamAck {
    async fn send(&self, kind: AckKind) {
        if let Err(e) = self.message.ack_with(kind).await {
            tracing::warn!(subject = %self.message.subject, error = %Chain(&*e), "JetStream acknowledgement failed; the message will be redelivered");
        }
    }

    /// Publishes the dead letter; `false` if that failed.
    async fn publish_dead_letter(&self, subject: &str, letter: &DeadLetter) -> bool {
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
            .publish_with_headers(subject.to_owned(), headers, self.message.payload.clone())
            .await
            .map_err(|e| Chain(&e).to_string());
        let flushed = match published {
            Ok(()) => self.client.flush().await.map_err(|e| Chain(&e).to_string()),
            Err(e) => Err(e),
        };
        match flushed {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(%subject, error = %e, "cannot publish the dead letter; leaving the message for redelivery");
                false
            }
        }
    }
}

#[async_trait]
impl Acknowledge for JetStreamAck {
    async fn ack(self: Box<Self>) {
        if let Err(e) = self.message.double_ack().await {
            tracing::warn!(subject = %self.message.subject, error = %Chain(&*e), "JetStream ack failed; the message will be redelivered");
        }
    }

    async fn nack(self: Box<Self>, retry_after: Option<Duration>) {
        self.send(AckKind::Nak(retry_after)).await;
    }

    async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
        match &self.dead_letter_subject {
            Some(subject) => {
                if !self.publish_dead_letter(subject, &letter).await {
                    self.send(AckKind::Nak(Some(Duration::from_secs(5)))).await;
                    return;
                }
            }
            None => {
                tracing::warn!(subject = %self.message.subject, %letter, "no dead_letter_subject configured; terminating the message");
            }
        }
        self.send(AckKind::Term).await;
    }
}
