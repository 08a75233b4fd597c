//! The SQS [`Source`]: a long-polling receive loop per queue, a visibility heartbeat per
//! message, batched deletes, and the dead-letter queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use base64::Engine;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{
    DeliveryOrder, EventInfo, Message, RetryPolicy, Source, SourceContext, SourceError,
};

use crate::ack::SqsAck;
use crate::config::{SqsConfig, is_fifo};
use crate::dead_letter::DeadLetterQueue;
use crate::metrics::SqsMetrics;
use crate::{CONNECTOR_NAME, SqsError};

/// Deletes in flight at once per queue.
const DELETE_CONCURRENCY: usize = 8;

/// Long-polls SQS queues.
pub struct SqsSource {
    client: Client,
    config: SqsConfig,
}

/// An AWS error with everything it knows, on one line.
pub(crate) fn describe<E: std::error::Error>(e: E) -> String {
    DisplayErrorContext(e).to_string()
}

impl SqsSource {
    /// Builds the client from the standard AWS chain (region, credentials) and checks that
    /// every queue, and the dead-letter queue, answers.
    pub async fn connect(config: SqsConfig) -> Result<Self, SqsError> {
        let config = config.normalized();
        config.validate()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &config.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_sqs::config::Builder::from(&shared);
        if shared.region().is_none() {
            tracing::info!(
                "no AWS region configured (AWS_REGION, aws_region, profile): using us-east-1"
            );
            builder = builder.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(e) = &config.endpoint_url {
            builder = builder.endpoint_url(e.clone());
        }
        let client = Client::from_conf(builder.build());
        for url in config
            .queue_urls
            .iter()
            .chain(config.dead_letter_queue_url.iter())
        {
            client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::VisibilityTimeout)
                .send()
                .await
                .map_err(|e| SqsError::Queue {
                    queue_url: url.clone(),
                    reason: describe(&e),
                    source: Box::new(e),
                })?;
        }
        Ok(Self { client, config })
    }
}

#[async_trait]
impl Source for SqsSource {
    fn name(&self) -> &str {
        CONNECTOR_NAME
    }

    /// FIFO messages carry their group as the key; standard ones have none and run freely.
    fn order(&self) -> DeliveryOrder {
        DeliveryOrder::PerKey
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::Redeliver
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let metrics = SqsMetrics::register(ctx.registry())
            .map_err(|e| SourceError::caused("cannot register the SQS metrics", e))?;
        let cancel = ctx.cancelled();
        let ctx = Arc::new(ctx);
        let dead_letters = self.config.dead_letter_queue_url.clone().map(|url| {
            Arc::new(DeadLetterQueue {
                client: self.client.clone(),
                fifo: is_fifo(&url),
                url,
                metrics: metrics.clone(),
            })
        });
        let mut tasks = JoinSet::new();
        for (i, url) in self.config.queue_urls.iter().enumerate() {
            let queue = Arc::new(Queue {
                client: self.client.clone(),
                url: url.clone(),
                topic: self.config.topic(i),
                fifo: is_fifo(url),
                visibility: self.config.visibility_timeout,
                metrics: metrics.clone(),
                dead_letters: dead_letters.clone(),
            });
            tracing::info!(queue_url = %queue.url, topic = %queue.topic, fifo = queue.fifo,
                wait_time = ?self.config.wait_time, visibility_timeout = ?queue.visibility, "receiving");
            let (delete_tx, delete_rx) = mpsc::unbounded_channel();
            tasks.spawn(queue.clone().delete_batches(delete_rx));
            tasks.spawn(queue.clone().receive(
                ctx.clone(),
                delete_tx,
                self.config.wait_time,
                self.config.max_messages,
            ));
            tasks.spawn(queue.clone().poll_depth(
                self.config.depth_interval,
                cancel.clone(),
                ctx.lag_figures(),
            ));
        }
        drop(ctx);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// One queue being consumed.
pub(crate) struct Queue {
    pub(crate) client: Client,
    pub(crate) url: String,
    pub(crate) topic: String,
    pub(crate) fifo: bool,
    pub(crate) visibility: Duration,
    pub(crate) metrics: SqsMetrics,
    pub(crate) dead_letters: Option<Arc<DeadLetterQueue>>,
}

/// Whole seconds, rounded up, as SQS takes them.
pub(crate) fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX)
}

impl Queue {
    /// Receives until shutdown, handing each message to the runtime.
    async fn receive(
        self: Arc<Self>,
        ctx: Arc<SourceContext>,
        deletes: mpsc::UnboundedSender<String>,
        wait_time: Duration,
        max_messages: i32,
    ) {
        let cancel = ctx.cancelled();
        let mut backoff = Duration::from_millis(500);
        loop {
            if ctx.ready().await.is_err() {
                return;
            }
            let request = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(max_messages)
                .wait_time_seconds(secs(wait_time))
                .visibility_timeout(secs(self.visibility))
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send();
            let received = tokio::select! {
                r = request => r,
                _ = cancel.cancelled() => return,
            };
            let output = match received {
                Ok(o) => {
                    backoff = Duration::from_millis(500);
                    o
                }
                Err(e) => {
                    self.metrics
                        .receive_errors
                        .with_label_values(&[&self.url])
                        .inc();
                    tracing::warn!(queue_url = %self.url, error = %describe(e), retry_in = ?backoff, "ReceiveMessage failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            for m in output.messages() {
                let Some(message) = self.message(m, &deletes) else {
                    continue;
                };
                if ctx.send(message).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Builds the runtime message and starts its visibility heartbeat.
    fn message(
        self: &Arc<Self>,
        m: &aws_sdk_sqs::types::Message,
        deletes: &mpsc::UnboundedSender<String>,
    ) -> Option<Message> {
        let receipt = m.receipt_handle()?.to_owned();
        let id = m.message_id().unwrap_or_default().to_owned();
        self.metrics.received.with_label_values(&[&self.url]).inc();
        let system = m.attributes();
        let receive_count: u32 = system
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let group = system
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned();
        let sent_at: Option<i64> = system
            .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|t| t.parse().ok());
        let mut headers = vec![
            ("X-SQS-Message-ID".to_owned(), id.clone()),
            ("X-SQS-Queue-URL".to_owned(), self.url.clone()),
            ("X-SQS-Receive-Count".to_owned(), receive_count.to_string()),
        ];
        if let Some(g) = &group {
            headers.push(("X-SQS-Message-Group-ID".to_owned(), g.clone()));
        }
        let mut original_attributes = Vec::new();
        if let Some(attrs) = m.message_attributes() {
            let mut names: Vec<&String> = attrs.keys().collect();
            names.sort();
            for name in names {
                let v = &attrs[name];
                let value = match (v.string_value(), v.binary_value()) {
                    (Some(s), _) => s.to_owned(),
                    (None, Some(b)) => base64::engine::general_purpose::STANDARD.encode(b.as_ref()),
                    (None, None) => String::new(),
                };
                // W3C trace context attributes keep their names, so the trace continues.
                let trace = tributary_core::trace::is_trace_context(name);
                let header = if trace {
                    name.to_ascii_lowercase()
                } else {
                    format!("X-SQS-Attr-{name}")
                };
                headers.push((header, value));
                original_attributes.push((name.clone(), v.clone()));
            }
        }
        let stop = CancellationToken::new();
        tokio::spawn(self.clone().heartbeat(receipt.clone(), stop.clone()));
        let body = m.body().unwrap_or_default().to_owned();
        let ack = SqsAck {
            queue: self.clone(),
            receipt,
            message_id: id.clone(),
            receive_count,
            group: group.clone(),
            body: self.dead_letters.as_ref().map(|_| body.clone()),
            attributes: original_attributes,
            deletes: deletes.clone(),
            _heartbeat: stop.drop_guard(),
        };
        let mut context = BTreeMap::new();
        context.insert("sqs-queue-url".to_owned(), self.url.clone());
        let mut event = EventInfo::new(self.url.clone(), "com.tributary.sqs.message")
            .with_id(format!("sqs:{id}"));
        context.insert("sqs-message-id".to_owned(), id);
        if let Some(ms) = sent_at {
            event = event.with_unix_millis(ms);
        }
        let mut message = Message::new(self.topic.clone(), body, ack)
            .with_delivery_count(receive_count)
            .with_context(context)
            .with_event(event);
        if let Some(g) = group {
            message = message.with_key(g);
        }
        message.headers = headers;
        Some(message)
    }

    /// Extends the message's visibility every half timeout until `stop`.
    async fn heartbeat(self: Arc<Self>, receipt: String, stop: CancellationToken) {
        let period = self.visibility / 2;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.cancelled() => return,
            }
            let extended = self
                .client
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(&receipt)
                .visibility_timeout(secs(self.visibility))
                .send()
                .await;
            match extended {
                Ok(_) => {
                    self.metrics
                        .extensions
                        .with_label_values(&[&self.url])
                        .inc();
                    tracing::debug!(queue_url = %self.url, "visibility extended");
                }
                Err(e) if stop.is_cancelled() => {
                    tracing::debug!(error = %describe(e), "visibility extension raced the message's end");
                    return;
                }
                Err(e) => {
                    tracing::warn!(queue_url = %self.url, error = %describe(e), "cannot extend visibility; the message may be delivered again");
                }
            }
        }
    }

    /// Deletes settled messages in batches of up to ten; ends once every sender is gone.
    async fn delete_batches(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<String>) {
        let mut flushes = JoinSet::new();
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let linger = tokio::time::sleep(Duration::from_millis(5));
            tokio::pin!(linger);
            while batch.len() < 10 {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(x) => batch.push(x),
                        None => break,
                    },
                    _ = &mut linger => break,
                }
            }
            while flushes.len() >= DELETE_CONCURRENCY {
                flushes.join_next().await;
            }
            flushes.spawn(self.clone().delete(batch));
        }
        while flushes.join_next().await.is_some() {}
    }

    async fn delete(self: Arc<Self>, receipts: Vec<String>) {
        let entries: Vec<_> = receipts
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .ok()
            })
            .collect();
        let n = entries.len();
        match self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let failed = out.failed();
                for f in failed {
                    tracing::warn!(queue_url = %self.url, code = f.code(), message = ?f.message(), "delete failed; the message will be delivered again");
                }
                self.metrics
                    .deleted
                    .with_label_values(&[&self.url])
                    .inc_by((n - failed.len().min(n)) as u64);
            }
            Err(e) => {
                tracing::warn!(queue_url = %self.url, error = %describe(e), messages = n, "DeleteMessageBatch failed; these messages will be delivered again");
            }
        }
    }

    /// Reads `ApproximateNumberOfMessages` for the metrics and the gateway's autoscaler (as the
    /// lag of this queue's topic) until `cancel`.
    async fn poll_depth(
        self: Arc<Self>,
        every: Duration,
        cancel: CancellationToken,
        lag: tributary_connector_sdk::lag::LagFigures,
    ) {
        loop {
            let read = self
                .client
                .get_queue_attributes()
                .queue_url(&self.url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .send();
            let read = tokio::select! {
                r = read => r,
                _ = cancel.cancelled() => return,
            };
            match read {
                Ok(out) => {
                    if let Some(depth) = out
                        .attributes()
                        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
                        .and_then(|d| d.parse::<i64>().ok())
                    {
                        self.metrics
                            .depth
                            .with_label_values(&[&self.url])
                            .set(depth);
                        lag.set(&self.topic, u64::try_from(depth).unwrap_or(0));
                    }
                }
                Err(e) => {
                    tracing::debug!(queue_url = %self.url, error = %describe(e), "cannot read the queue depth")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}
