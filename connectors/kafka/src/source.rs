//! The Kafka [`Source`]: a consumer-group member on its own thread, handing messages to the
//! runtime and committing, per partition, only offsets below the lowest unfinished message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use prometheus::IntCounter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message as _, Offset};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{
    Acknowledge, Closed, DeadLetter, DeliveryOrder, EventInfo, Full, Message, RetryPolicy, Source,
    SourceContext, SourceError,
};
use tributary_core::Chain;

use crate::config::{KafkaConfig, Order};
use crate::dead_letter::{DeadLetters, Original};
use crate::headers::function_headers;
use crate::hooks::{Hooks, commit};
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
            .map_err(|e| SourceError::caused("cannot register the Kafka metrics", e))?;
        let tracker = Arc::new(Tracker::default());
        let hooks = Hooks {
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            grace: self.config.rebalance_grace,
            last_error: std::sync::Mutex::new(String::new()),
            lag: ctx.lag_figures(),
        };
        let mut client = self
            .config
            .consumer_config()
            .map_err(|e| SourceError::caused("the Kafka settings cannot be used", e))?;
        if client.get("statistics.interval.ms").is_none() {
            client.set("statistics.interval.ms", "1000");
        }
        let consumer: BaseConsumer<Hooks> = client
            .create_with_context(hooks)
            .map_err(|e| SourceError::caused("cannot create the Kafka consumer", e))?;
        let dead_letters = match &self.config.dead_letter_topic {
            Some(topic) => Some(Arc::new(
                DeadLetters::new(&self.config, topic, metrics.clone(), ctx.cancelled())
                    .map_err(|e| SourceError::caused("the dead-letter topic cannot be used", e))?,
            )),
            None => None,
        };
        let handle = Handle::current();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (rewind_tx, rewinds) = std::sync::mpsc::channel();
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
                    consumed: Default::default(),
                    rewind_tx,
                    rewinds,
                };
                let result = consumer_loop.run();
                let _ = done_tx.send(result);
            })
            .map_err(|e| SourceError::caused("cannot start the Kafka consumer thread", e))?;
        done_rx
            .await
            .unwrap_or_else(|_| Err(SourceError::new("the Kafka consumer thread panicked")))
    }
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
    /// The consumed-messages counter of each partition seen.
    consumed: std::cell::RefCell<HashMap<Partition, IntCounter>>,
    /// Messages handed back (nacked) while running, to be read again.
    rewind_tx: std::sync::mpsc::Sender<Rewind>,
    rewinds: std::sync::mpsc::Receiver<Rewind>,
}

/// A partition to read again, under the assignment its handed-back message was taken in.
type Rewind = (Partition, u64);

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
            self.rewind();
            self.commit_due(false);
        };
        self.shutdown();
        result
    }

    /// Waits until the brokers answer, saying clearly when they do not; `false` on shutdown.
    fn wait_for_brokers(&self, cancel: &CancellationToken) -> bool {
        let brokers = self.config.brokers().join(",");
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
                    if let Some(dlt) = &self.config.dead_letter_topic
                        && !md
                            .topics()
                            .iter()
                            .any(|t| t.name() == dlt && t.error().is_none())
                    {
                        tracing::warn!(dead_letter_topic = %dlt, "the dead-letter topic does not exist yet; dead letters wait until it does");
                    }
                    self.consumer.context().clear_error();
                    return true;
                }
                Err(e) => {
                    tracing::error!(%brokers, error = %Chain(&e), retry_in = ?wait, "cannot reach the Kafka brokers (broker_hosts); retrying");
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
            SourceError::caused(format!("cannot subscribe to {}", topics.join(",")), e)
        })?;
        tracing::info!(topics = %topics.join(","), group = %self.config.group, "subscribed");
        Ok(())
    }

    /// Blocks while the runtime is full, until it has room for a batch (this thread is woken
    /// once per batch, not per finished message). After [`FULL_BEFORE_PAUSE`], pauses fetching
    /// and keeps polling, so rebalances are served and the group does not evict us.
    fn wait_for_room(&self) -> Result<(), Closed> {
        if self.ctx.has_room() {
            return Ok(());
        }
        if let Ok(ready) = self.handle.block_on(tokio::time::timeout(
            FULL_BEFORE_PAUSE,
            self.ctx.ready_for_batch(),
        )) {
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
                .block_on(tokio::time::timeout(POLL, self.ctx.ready_for_batch()))
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
                let Some(message) = self.message(&m) else {
                    return Ok(());
                };
                // Most messages find room at once: no runtime round trip for them.
                match self.ctx.try_send(message) {
                    Ok(()) => Ok(()),
                    Err(Full(message)) => self.handle.block_on(self.ctx.send(*message)),
                }
            }
        }
    }

    /// Builds the runtime message for `m`, recording its offset as in flight; `None` when its
    /// partition is being revoked.
    fn message(&self, m: &BorrowedMessage<'_>) -> Option<Message> {
        let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
        let key = (topic.clone(), partition);
        {
            let mut consumed = self.consumed.borrow_mut();
            match consumed.get(&key) {
                Some(counter) => counter.inc(),
                None => {
                    let counter = self.metrics.consumed(&topic, partition);
                    counter.inc();
                    consumed.insert(key.clone(), counter);
                }
            }
        }
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
            rewind: self.rewind_tx.clone(),
            stopping: self.ctx.cancelled(),
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
        let mut event = EventInfo::new(format!("/kafka/{topic}"), "com.tributary.kafka.message")
            .with_id(format!("kafka:{topic}:{partition}:{offset}"))
            .with_subject(format!("{partition}/{offset}"));
        if let Some(ms) = m.timestamp().to_millis() {
            event = event.with_unix_millis(ms);
        }
        let mut message = Message::new(topic, payload, ack)
            .with_key(order_key)
            .with_context(context)
            .with_event(event);
        message.headers = headers;
        Some(message)
    }

    /// Seeks each partition with a handed-back (nacked) message back to its lowest unfinished
    /// offset, so the message is delivered again (and those after it too: at-least-once). Its
    /// offset stays unfinished, so nothing at or after it is committed meanwhile.
    fn rewind(&self) {
        let mut points: HashMap<Partition, i64> = HashMap::new();
        while let Ok((partition, epoch)) = self.rewinds.try_recv() {
            if let Some(offset) = self.tracker.rewind_point(&partition, epoch) {
                points.insert(partition, offset);
            }
        }
        for ((topic, partition), offset) in points {
            match self.consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                Ok(()) => {
                    tracing::warn!(%topic, partition, offset, "a message was handed back: reading its partition again from it (the messages after it are delivered again)")
                }
                Err(e) => {
                    tracing::warn!(%topic, partition, offset, error = %Chain(&e), "cannot seek back to a handed-back message; it stays uncommitted and is redelivered after a restart or rebalance")
                }
            }
        }
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
                tracing::warn!(error = %Chain(&e), "offset commit failed; it is retried with the next one")
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

/// Settles one message's offset.
struct KafkaAck {
    tracker: Arc<Tracker>,
    partition: Partition,
    epoch: u64,
    offset: i64,
    dead_letters: Option<Arc<DeadLetters>>,
    original: Option<Original>,
    rewind: std::sync::mpsc::Sender<Rewind>,
    stopping: CancellationToken,
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

    /// Not delivered: the offset stays unfinished, so nothing at or after it is committed. At
    /// shutdown the group redelivers it; while running, the partition is read again from it.
    async fn nack(self: Box<Self>, _retry_after: Option<Duration>) {
        if !self.stopping.is_cancelled() {
            let _ = self.rewind.send((self.partition.clone(), self.epoch));
        }
    }

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
