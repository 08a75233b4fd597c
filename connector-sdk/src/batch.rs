//! Batches: a function annotated with `com.tributary.batch.size` (and optionally
//! `com.tributary.batch.window`, default 500ms) gets up to that many messages of its topics in
//! one call, as soon as that many are there or the window since the first has passed. The body
//! is a JSON array of `{"id", "key", "topic", "headers", "payload"}`; `payload` is the message's
//! JSON value when it is JSON, else its text, else base64 with `"encoding": "base64"`. The
//! function may answer AWS Lambda's `{"batchItemFailures": [{"itemIdentifier": "ID"}]}`: only
//! those items are retried (and dead-lettered when their retries run out), the others are done.
//!
//! One batch per function is in flight at a time and items keep the order they were admitted in;
//! when an item fails, the later items with the same key in that batch are retried with it, so
//! order per key holds inside and across batches.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tributary_core::trace::TraceContext;

use crate::dispatch::Shared;
use crate::event::EventInfo;
use crate::invoker::{Delivery, InvocationOutcome, Request};
use crate::options::FunctionOptions;
use crate::source::RetryPolicy;

/// The annotation with the most messages per call.
pub const BATCH_SIZE_ANNOTATION: &str = "com.tributary.batch.size";
/// The annotation with the longest wait for a batch to fill (a duration).
pub const BATCH_WINDOW_ANNOTATION: &str = "com.tributary.batch.window";
/// The window when only the size is set.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(500);
/// The largest batch size accepted.
pub const MAX_BATCH: usize = 10_000;

/// A function's batch settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchSettings {
    pub(crate) size: usize,
    pub(crate) window: Duration,
}

impl BatchSettings {
    /// From the annotations; `Ok(None)` without a size.
    pub(crate) fn parse(size: Option<&str>, window: Option<&str>) -> Result<Option<Self>, String> {
        let Some(size) = size else {
            return Ok(None);
        };
        let size: usize = size
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_BATCH).contains(n))
            .ok_or_else(|| {
                format!(
                    "{BATCH_SIZE_ANNOTATION}={size:?} must be a whole number from 1 to {MAX_BATCH}"
                )
            })?;
        let window = match window {
            None => DEFAULT_WINDOW,
            Some(w) => tributary_core::units::parse_duration(w)
                .map_err(|e| format!("{BATCH_WINDOW_ANNOTATION}={w:?}: {e}"))?,
        };
        Ok(Some(Self { size, window }))
    }
}

/// One message waiting in a batch.
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) key: Option<String>,
    pub(crate) topic: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Bytes,
    pub(crate) context: Arc<std::collections::BTreeMap<String, String>>,
    pub(crate) trace: TraceContext,
    pub(crate) reply: oneshot::Sender<InvocationOutcome>,
}

/// Where a function's items go; its task ends when every clone is dropped.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<Item>,
    pub(crate) settings: BatchSettings,
    /// Ids for items whose message has no stable id.
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

/// What an item is made of: the message's parts.
pub(crate) struct ItemParts<'a> {
    pub(crate) id: Option<&'a str>,
    pub(crate) key: Option<&'a str>,
    pub(crate) topic: &'a str,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) payload: &'a Bytes,
    pub(crate) context: &'a Arc<std::collections::BTreeMap<String, String>>,
    pub(crate) trace: TraceContext,
}

impl Batcher {
    /// Starts the batching task of `function`.
    pub(crate) fn start(
        shared: Arc<Shared>,
        function: String,
        options: Arc<FunctionOptions>,
        settings: BatchSettings,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(shared, function, options, settings, rx));
        Self {
            tx,
            settings,
            next_id: Arc::default(),
        }
    }

    /// Queues a message; its outcome arrives on the returned receiver (closed: interrupted,
    /// the message is handed back).
    pub(crate) fn queue(&self, parts: ItemParts<'_>) -> oneshot::Receiver<InvocationOutcome> {
        let (reply, rx) = oneshot::channel();
        let id = parts.id.map_or_else(
            || {
                self.next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .to_string()
            },
            str::to_owned,
        );
        let _ = self.tx.send(Item {
            id,
            key: parts.key.map(str::to_owned),
            topic: parts.topic.to_owned(),
            headers: parts.headers.to_vec(),
            payload: parts.payload.clone(),
            context: parts.context.clone(),
            trace: parts.trace,
            reply,
        });
        rx
    }
}

/// The outcome of a batched message whose batch never finished (shutdown).
pub(crate) fn interrupted(function: &str, req: &Request<'_>) -> InvocationOutcome {
    InvocationOutcome {
        function: function.to_owned(),
        topic: req.topic.to_owned(),
        delivery: Delivery::Interrupted,
        status: None,
        body: Bytes::new(),
        headers: http::HeaderMap::new(),
        error: Some("the connector stopped before the batch was delivered".into()),
        duration: Duration::ZERO,
        attempts: 0,
        retryable: true,
        context: req.context.clone(),
    }
}

/// The JSON of one item.
fn item_json(item: &Item) -> Value {
    let headers: serde_json::Map<String, Value> = item
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut v = json!({"id": item.id, "key": item.key, "topic": item.topic, "headers": headers});
    match serde_json::from_slice::<Value>(&item.payload) {
        Ok(json) => v["payload"] = json,
        Err(_) => match std::str::from_utf8(&item.payload) {
            Ok(text) => v["payload"] = Value::String(text.to_owned()),
            Err(_) => {
                v["payload"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(&item.payload));
                v["encoding"] = Value::String("base64".into());
            }
        },
    }
    v
}

/// The item ids a `batchItemFailures` answer names (`None`: not that shape, so all succeeded).
fn failed_ids(body: &[u8]) -> Option<HashSet<String>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let list = v.get("batchItemFailures")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|f| f.get("itemIdentifier"))
            .map(|id| match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
    )
}

/// Collects items into batches and delivers them, one batch at a time.
async fn run(
    shared: Arc<Shared>,
    function: String,
    options: Arc<FunctionOptions>,
    settings: BatchSettings,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    let cancel = shared.cancel.clone();
    loop {
        let first = tokio::select! {
            item = rx.recv() => match item {
                Some(i) => i,
                None => return,
            },
            _ = cancel.cancelled() => return,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + settings.window;
        while batch.len() < settings.size {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(i) => batch.push(i),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = cancel.cancelled() => break,
            }
        }
        deliver(&shared, &function, &options, batch).await;
    }
}

/// Delivers one batch: failed items (and the later ones of their keys) go again until they
/// succeed or their retries run out (as the source's retry policy says), then each item's
/// outcome is reported.
async fn deliver(shared: &Shared, function: &str, options: &FunctionOptions, mut batch: Vec<Item>) {
    let started = Instant::now();
    let retry = &options.retry;
    let mut round = 0u32;
    loop {
        round += 1;
        let body = Bytes::from(
            serde_json::to_vec(&batch.iter().map(item_json).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        let headers = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Batch-Size".to_owned(), batch.len().to_string()),
        ];
        let event = EventInfo::default();
        let req = Request {
            topic: &batch[0].topic,
            payload: &body,
            headers: &headers,
            context: &batch[0].context,
            call: None,
            event: &event,
            trace: batch[0].trace,
        };
        let whole_retries = match shared.policy {
            RetryPolicy::Redeliver => 0,
            _ => retry.max_retries(),
        };
        let outcome = shared
            .invoker
            .invoke(function, &req, options, whole_retries, &shared.cancel)
            .await;
        let failed: HashSet<String> = match outcome.delivery {
            Delivery::Delivered => {
                let named = failed_ids(&outcome.body).unwrap_or_default();
                // An item that failed takes the later items of its key with it (order per key).
                let mut keys = HashSet::new();
                batch
                    .iter()
                    .filter(|i| {
                        let failed = named.contains(&i.id)
                            || i.key.as_ref().is_some_and(|k| keys.contains(k));
                        if failed && let Some(k) = &i.key {
                            keys.insert(k.clone());
                        }
                        failed
                    })
                    .map(|i| i.id.clone())
                    .collect()
            }
            _ => batch.iter().map(|i| i.id.clone()).collect(),
        };
        // Whole-batch failures were retried by the invoker already; here: the items a function
        // reported failed, or (holding until delivered) everything.
        let again = !failed.is_empty()
            && outcome.delivery != Delivery::Interrupted
            && match shared.policy {
                RetryPolicy::UntilDelivered => true,
                RetryPolicy::InProcess => {
                    round <= retry.max_retries() && outcome.delivery == Delivery::Delivered
                }
                RetryPolicy::Redeliver => false,
            };
        let (retried, done): (Vec<Item>, Vec<Item>) = batch
            .into_iter()
            .partition(|i| again && failed.contains(&i.id));
        for item in done {
            let mut o = outcome.clone();
            o.topic = item.topic.clone();
            o.context = item.context.clone();
            o.duration = started.elapsed();
            o.attempts = round.max(o.attempts);
            if outcome.delivery == Delivery::Delivered && failed.contains(&item.id) {
                o.delivery = Delivery::Failed;
                o.retryable = true;
                o.error = Some(format!(
                    "the function reported item {} failed (batchItemFailures)",
                    item.id
                ));
            }
            let _ = item.reply.send(o);
        }
        if retried.is_empty() {
            return;
        }
        let wait = retry.backoff(round, None);
        tracing::debug!(
            function,
            items = retried.len(),
            round,
            ?wait,
            "retrying the failed items of a batch"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.cancel.cancelled() => return,
        }
        batch = retried;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_annotations() {
        assert_eq!(BatchSettings::parse(None, Some("1s")), Ok(None));
        assert_eq!(
            BatchSettings::parse(Some("10"), None),
            Ok(Some(BatchSettings {
                size: 10,
                window: DEFAULT_WINDOW
            }))
        );
        assert_eq!(
            BatchSettings::parse(Some("100"), Some("2s")).map(|s| s.map(|s| s.window)),
            Ok(Some(Duration::from_secs(2)))
        );
        assert!(
            BatchSettings::parse(Some("0"), None)
                .unwrap_err()
                .contains("from 1 to")
        );
        assert!(BatchSettings::parse(Some("ten"), None).is_err());
        assert!(
            BatchSettings::parse(Some("5"), Some("soon"))
                .unwrap_err()
                .contains("batch.window")
        );
    }

    #[test]
    fn items_and_failures_as_json() {
        let (reply, _rx) = oneshot::channel::<InvocationOutcome>();
        let mut item = Item {
            id: "kafka:t:0:1".into(),
            key: Some("k".into()),
            topic: "t".into(),
            headers: vec![("X-A".into(), "1".into())],
            payload: Bytes::from_static(br#"{"n": 1}"#),
            context: Arc::default(),
            trace: TraceContext::new_root(),
            reply,
        };
        let v = item_json(&item);
        assert_eq!(v["payload"], json!({"n": 1}));
        assert_eq!(v["headers"]["X-A"], "1");
        assert!(v.get("encoding").is_none());
        item.payload = Bytes::from_static(b"plain");
        assert_eq!(item_json(&item)["payload"], "plain");
        item.payload = Bytes::from_static(&[0xff, 0x00]);
        let v = item_json(&item);
        assert_eq!(
            (v["payload"].as_str(), v["encoding"].as_str()),
            (Some("/wA="), Some("base64"))
        );
        let ids = failed_ids(
            br#"{"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": 7}]}"#,
        )
        .unwrap();
        assert!(ids.contains("a") && ids.contains("7"));
        assert!(failed_ids(b"ok").is_none());
        assert!(
            failed_ids(br#"{"batchItemFailures": []}"#)
                .unwrap()
                .is_empty()
        );
    }
}
