//! The Kafka [`Source`]: a consumer-group member on its own thread, handing messages to the
//! runtime and committing, per partition, only offsets below the lowest unfinished message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{ClientContext, Message as _, Offset, Statistics, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{
    Acknowledge, Closed, DeadLetter, DeliveryOrder, Message, RetryPolicy, Source, SourceContext,
    SourceError,
};

use crate::config::{KafkaConfig, Order};
use crate::dead_letter::{DeadLetters, Original};
use crate::metrics::KafkaMetrics;
use crate::offsets::{Partition, Tracker};
use crate::{CONNECTOR_NAME, KafkaError};

/// How long one poll waits for a message; also the longest a finished offset waits for its
/// commit when no new message arrives.
const POLL: Duration = Duration::from_millis(50);
/// How long the runtime may stay full before fetching is paused (the group is still served).
const FULL_BEFORE_PAUSE: Duration = Duration::from_secs(1);
/// How long in-flight messages get to finish at shutdown before the final commit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Consumes Kafka topics as a consumer-group member.
pub struct KafkaSource {
    config: KafkaConfig,
}

impl KafkaSource {
    /// A source for `config`; fails on invalid settings or unreadable credential files.
    pub fn new(config: KafkaConfig) -> Result<Self, KafkaError> {
        config.validate()?;
        config.consumer_config()?;
        Ok(Self { config })
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &str {
        CONNECTOR_NAME
    }

    fn order(&self) -> DeliveryOrder {
        match self.config.order {
            Order::None => DeliveryOrder::Unordered,
            Order::Partition | Order::Key => DeliveryOrder::PerKey,
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        if self.config.dead_letter_topic.is_some() {
            RetryPolicy::InProcess
        } else {
            RetryPolicy::UntilDelivered
        }
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let metrics = KafkaMetrics::register(ctx.registry())
            .map_err(|e| SourceError::new(format!("cannot register Kafka metrics: {e}")))?;
        let tracker = Arc::new(Tracker::default());
        let hooks = Hooks {
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            grace: self.config.rebalance_grace,
            last_error: std::sync::Mutex::new(String::new()),
        };
        let mut client = self.config.consumer_config().map_err(SourceError::new)?;
        if client.get("statistics.interval.ms").is_none() {
            client.set("statistics.interval.ms", "1000");
        }
        let consumer: BaseConsumer<Hooks> = client
            .create_with_context(hooks)
            .map_err(|e| SourceError::new(format!("cannot create the Kafka consumer: {e}")))?;
        let dead_letters = match &self.config.dead_letter_topic {
            Some(topic) => Some(Arc::new(
                DeadLetters::new(&self.config, topic, metrics.clone(), ctx.cancelled())
                    .map_err(SourceError::new)?,
            )),
            None => None,
        };
        let handle = Handle::current();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let config = self.config;
        std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || {
                let _runtime = handle.enter();
                let consumer_loop = ConsumerLoop {
                    consumer,
                    ctx,
                    handle: handle.clone(),
                    tracker,
                    metrics,
                    dead_letters,
                    config,
                    last_commit: std::cell::Cell::new(Instant::now()),
                };
                let result = consumer_loop.run();
                let _ = done_tx.send(result);
            })
            .map_err(|e| {
                SourceError::new(format!("cannot start the Kafka consumer thread: {e}"))
            })?;
        done_rx
            .await
            .unwrap_or_else(|_| Err(SourceError::new("the Kafka consumer thread panicked")))
    }
}

/// librdkafka callbacks: logs, errors, statistics (lag) and rebalances.
struct Hooks {
    tracker: Arc<Tracker>,
    metrics: KafkaMetrics,
    grace: Duration,
    last_error: std::sync::Mutex<String>,
}

impl Hooks {
    /// Logs an error once until a different one happens (librdkafka repeats them).
    fn report(&self, error: String) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last != error {
            tracing::warn!(%error, "Kafka client error (librdkafka keeps retrying)");
            *last = error;
        }
    }

    fn clear_error(&self) {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !last.is_empty() {
            tracing::info!("Kafka client recovered");
            last.clear();
        }
    }
}

impl ClientContext for Hooks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            L::Notice | L::Info => tracing::debug!(target: "librdkafka", fac, "{message}"),
            L::Debug => tracing::trace!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.report(format!("{error}: {reason}"));
    }

    fn stats(&self, stats: Statistics) {
        let points: BTreeMap<Partition, i64> = self.tracker.commit_points().into_iter().collect();
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || p.hi_offset < 0 {
                    continue;
                }
                let base = points
                    .get(&(topic.clone(), *id))
                    .copied()
                    .or((p.committed_offset >= 0).then_some(p.committed_offset));
                if let Some(base) = base {
                    self.metrics.lag(topic, *id, p.hi_offset - base);
                }
            }
        }
    }
}

impl ConsumerContext for Hooks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let (points, unfinished) = self.tracker.revoke(&partitions, self.grace);
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                grace = ?self.grace,
                "partitions revoked with messages still in flight; they stay uncommitted and the next owner redelivers them"
            );
        }
        if !points.is_empty() && !consumer.assignment_lost() {
            match commit(consumer, &points, CommitMode::Sync) {
                Ok(()) => {
                    for ((topic, partition), offset) in &points {
                        self.metrics.committed(topic, *partition, *offset);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "final commit before releasing partitions failed; the next owner may redeliver some messages")
                }
            }
        }
        self.metrics.rebalance("revoked", partitions.len());
        tracing::info!(partitions = %list(&partitions), "partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<Partition> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for p in &partitions {
                    self.tracker.assign(p.clone());
                }
                self.metrics.rebalance("assigned", partitions.len());
                tracing::info!(partitions = %list(&partitions), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed; it is retried with the next one");
        }
    }
}

fn list(partitions: &[Partition]) -> String {
    partitions
        .iter()
        .map(|(t, p)| format!("{t}[{p}]"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn commit(
    consumer: &BaseConsumer<Hooks>,
    points: &[(Partition, i64)],
    mode: CommitMode,
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in points {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, mode)
}

/// The consumer thread.
struct ConsumerLoop {
    consumer: BaseConsumer<Hooks>,
    ctx: SourceContext,
    handle: Handle,
    tracker: Arc<Tracker>,
    metrics: KafkaMetrics,
    dead_letters: Option<Arc<DeadLetters>>,
    config: KafkaConfig,
    last_commit: std::cell::Cell<Instant>,
}

impl ConsumerLoop {
    fn run(self) -> Result<(), SourceError> {
        let cancel = self.ctx.cancelled();
        if !self.wait_for_brokers(&cancel) {
            return Ok(());
        }
        // With no `topics`, follow the topic map: re-read only when it changes, not per poll.
        let follow = self.config.topics.is_empty();
        let mut changes = self.ctx.topic_changes();
        let mut subscribed = if follow {
            changes.borrow_and_update().topics()
        } else {
            self.config.topics.clone()
        };
        self.subscribe(&subscribed)?;
        let result = loop {
            if cancel.is_cancelled() {
                break Ok(());
            }
            if follow && changes.has_changed().unwrap_or(false) {
                let wanted = changes.borrow_and_update().topics();
                if wanted != subscribed {
                    self.subscribe(&wanted)?;
                    subscribed = wanted;
                }
            }
            if let Err(Closed) = self.wait_for_room() {
                break Ok(());
            }
            let polled = self.consumer.poll(POLL);
            if let Err(Closed) = self.handle_poll(polled) {
                break Ok(());
            }
            self.commit_due(false);
        };
        self.shutdown();
        result
    }

    /// Waits until the brokers answer, saying clearly when they do not; `false` on shutdown.
    fn wait_for_brokers(&self, cancel: &CancellationToken) -> bool {
        let brokers = self.config.brokers.join(",");
        let mut wait = Duration::from_millis(500);
        loop {
            match self.consumer.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(md) => {
                    tracing::info!(
                        %brokers,
                        brokers_seen = md.brokers().len(),
                        topics_seen = md.topics().len(),
                        group = %self.config.group,
                        "connected to Kafka"
                    );
                    if let Some(dlt) = &self.config.dead_letter_topic {
                        if !md
                            .topics()
                            .iter()
                            .any(|t| t.name() == dlt && t.error().is_none())
                        {
                            tracing::warn!(dead_letter_topic = %dlt, "the dead-letter topic does not exist yet; dead letters wait until it does");
                        }
                    }
                    self.consumer.context().clear_error();
                    return true;
                }
                Err(e) => {
                    tracing::error!(%brokers, error = %e, retry_in = ?wait, "cannot reach the Kafka brokers (broker_hosts); retrying");
                }
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if cancel.is_cancelled() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    fn subscribe(&self, topics: &[String]) -> Result<(), SourceError> {
        if topics.is_empty() {
            self.consumer.unsubscribe();
            tracing::info!(
                "no topic to consume yet: waiting for a function with a `topic` annotation"
            );
            return Ok(());
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&names).map_err(|e| {
            SourceError::new(format!("cannot subscribe to {}: {e}", topics.join(",")))
        })?;
        tracing::info!(topics = %topics.join(","), group = %self.config.group, "subscribed");
        Ok(())
    }

    /// Blocks while the runtime is full. After [`FULL_BEFORE_PAUSE`], pauses fetching and
    /// keeps polling, so rebalances are served and the group does not evict us.
    fn wait_for_room(&self) -> Result<(), Closed> {
        if self.ctx.has_room() {
            return Ok(());
        }
        if let Ok(ready) = self
            .handle
            .block_on(tokio::time::timeout(FULL_BEFORE_PAUSE, self.ctx.ready()))
        {
            return ready;
        }
        let paused = self.consumer.assignment().unwrap_or_default();
        let _ = self.consumer.pause(&paused);
        tracing::debug!(partitions = paused.count(), "runtime full: fetching paused");
        let result = loop {
            self.commit_due(false);
            let polled = self.consumer.poll(Duration::ZERO);
            self.handle_poll(polled)?;
            if let Ok(ready) = self
                .handle
                .block_on(tokio::time::timeout(POLL, self.ctx.ready()))
            {
                break ready;
            }
        };
        let _ = self.consumer.resume(&paused);
        result
    }

    fn handle_poll(&self, polled: Option<KafkaResult<BorrowedMessage<'_>>>) -> Result<(), Closed> {
        match polled {
            None => Ok(()),
            Some(Err(e)) => {
                self.consumer.context().report(e.to_string());
                Ok(())
            }
            Some(Ok(m)) => {
                let message = self.message(&m);
                match message {
                    Some(message) => self.handle.block_on(self.ctx.send(message)),
                    None => Ok(()),
                }
            }
        }
    }

    /// Builds the runtime message for `m`, recording its offset as in flight; `None` when its
    /// partition is being revoked.
    fn message(&self, m: &BorrowedMessage<'_>) -> Option<Message> {
        let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
        self.metrics.consumed(&topic, partition);
        let key = (topic.clone(), partition);
        let Some(epoch) = self.tracker.take(&key, offset) else {
            tracing::debug!(%topic, partition, offset, "partition is being revoked: message left to the next owner");
            return None;
        };
        let payload = Bytes::copy_from_slice(m.payload().unwrap_or_default());
        let headers = function_headers(m);
        let original = self.dead_letters.as_ref().map(|_| Original {
            key: m.key().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            payload: payload.clone(),
        });
        let ack = KafkaAck {
            tracker: self.tracker.clone(),
            partition: key,
            epoch,
            offset,
            dead_letters: self.dead_letters.clone(),
            original,
        };
        let mut context = BTreeMap::new();
        context.insert("kafka-topic".to_owned(), topic.clone());
        context.insert("kafka-partition".to_owned(), partition.to_string());
        context.insert("kafka-offset".to_owned(), offset.to_string());
        let order_key = match (self.config.order, m.key()) {
            (Order::Key, Some(k)) => format!(
                "{topic}/{partition}/{}",
                base64::engine::general_purpose::STANDARD.encode(k)
            ),
            _ => format!("{topic}/{partition}"),
        };
        let mut message = Message::new(topic, payload, ack)
            .with_key(order_key)
            .with_context(context);
        message.headers = headers;
        Some(message)
    }

    /// Commits the partitions whose commit point moved, at most every `commit_interval`
    /// unless `now`.
    fn commit_due(&self, now: bool) {
        if !now && self.last_commit.get().elapsed() < self.config.commit_interval {
            return;
        }
        self.last_commit.set(Instant::now());
        let due = self.tracker.due();
        if due.is_empty() {
            return;
        }
        let mode = if now {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match commit(&self.consumer, &due, mode) {
            Ok(()) => {
                for ((topic, partition), offset) in &due {
                    self.metrics.committed(topic, *partition, *offset);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; it is retried with the next one")
            }
        }
    }

    /// Lets in-flight messages finish, commits, and leaves the group.
    fn shutdown(self) {
        let unfinished = self.tracker.drain(SHUTDOWN_GRACE);
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "stopping with messages in flight: they stay uncommitted and are redelivered"
            );
        }
        self.commit_due(true);
        tracing::info!("leaving the consumer group");
        // Dropping the consumer closes it: revocation commits once more, then it leaves.
    }
}

/// `X-Kafka-*` headers for the functions.
fn function_headers(m: &BorrowedMessage<'_>) -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut h = vec![
        ("X-Kafka-Partition".to_owned(), m.partition().to_string()),
        ("X-Kafka-Offset".to_owned(), m.offset().to_string()),
    ];
    if let Some(ts) = m.timestamp().to_millis() {
        h.push(("X-Kafka-Timestamp".to_owned(), ts.to_string()));
    }
    if let Some(key) = m.key() {
        match std::str::from_utf8(key).ok().filter(|k| header_value_ok(k)) {
            Some(k) => h.push(("X-Kafka-Key".to_owned(), k.to_owned())),
            None => {
                h.push(("X-Kafka-Key".to_owned(), b64.encode(key)));
                h.push(("X-Kafka-Key-Enc".to_owned(), "b64".to_owned()));
            }
        }
    }
    if let Some(headers) = m.headers() {
        for kh in headers.iter() {
            if kh.key.is_empty() || !kh.key.bytes().all(is_token_byte) {
                tracing::debug!(
                    header = kh.key,
                    "Kafka header name is not a valid HTTP header name: not passed"
                );
                continue;
            }
            let value = kh.value.unwrap_or_default();
            let value = match std::str::from_utf8(value)
                .ok()
                .filter(|v| header_value_ok(v))
            {
                Some(v) => v.to_owned(),
                None => b64.encode(value),
            };
            h.push((format!("X-Kafka-{}", kh.key), value));
        }
    }
    h
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_value_ok(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Settles one message's offset.
struct KafkaAck {
    tracker: Arc<Tracker>,
    partition: Partition,
    epoch: u64,
    offset: i64,
    dead_letters: Option<Arc<DeadLetters>>,
    original: Option<Original>,
}

impl KafkaAck {
    fn finish(&self) {
        self.tracker
            .finish(&self.partition, self.epoch, self.offset);
    }
}

#[async_trait]
impl Acknowledge for KafkaAck {
    async fn ack(self: Box<Self>) {
        self.finish();
    }

    /// Not delivered (shutdown): the offset stays unfinished, so nothing at or after it is
    /// committed and the group redelivers it.
    async fn nack(self: Box<Self>, _retry_after: Option<Duration>) {}

    async fn dead_letter(self: Box<Self>, letter: DeadLetter) {
        let (Some(dlq), Some(original)) = (&self.dead_letters, &self.original) else {
            tracing::error!(%letter, "no dead_letter_topic: the message stays uncommitted and is redelivered");
            return;
        };
        let (topic, partition) = &self.partition;
        if dlq
            .send(original, &letter, topic, *partition, self.offset)
            .await
        {
            self.finish();
        }
    }
}
