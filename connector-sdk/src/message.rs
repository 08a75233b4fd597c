//! What flows from a source to the runtime: messages, and the dead letters the runtime hands
//! back when delivery failed for good.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::ack::{Acknowledge, Pending};
use crate::event::EventInfo;

/// A message that replays one HTTP call to one named function (the async queue's calls): no
/// topic lookup, its own method and path, and only its own headers (no `X-Topic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectCall {
    /// The function address, `name.namespace` (or `name` in `openfaas-fn`).
    pub function: String,
    /// The HTTP method.
    pub method: http::Method,
    /// The function-relative path and query (`/orders?x=1`), or empty.
    pub path: String,
}

/// A message from a source.
pub struct Message {
    /// The topic; functions whose `topic` annotation names it are invoked.
    pub topic: String,
    /// The request body.
    pub payload: Bytes,
    /// Headers passed to the functions (e.g. `X-Kafka-Partition`).
    pub headers: Vec<(String, String)>,
    /// Ordering key, honoured when the source asks for [`crate::DeliveryOrder::PerKey`].
    pub key: Option<String>,
    /// Invoke only these functions instead of every subscriber of the topic (e.g. cron).
    pub targets: Option<Vec<String>>,
    /// A replayed call to one function instead of an event on a topic.
    pub call: Option<DirectCall>,
    /// Source metadata handed to response subscribers (e.g. partition and offset).
    pub context: Arc<BTreeMap<String, String>>,
    /// How many times the broker has delivered this message, counting this one (1 = first);
    /// used by [`crate::RetryPolicy::Redeliver`].
    pub delivery_count: u32,
    /// Its idempotency key and CloudEvents attributes.
    pub event: EventInfo,
    pub(crate) ack: Pending,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("key", &self.key)
            .field("targets", &self.targets)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl Message {
    /// A message for `topic` with `payload`, acknowledged through `ack`.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, ack: impl Acknowledge) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            headers: Vec::new(),
            key: None,
            targets: None,
            call: None,
            context: Arc::default(),
            delivery_count: 1,
            event: EventInfo::default(),
            ack: Pending::new(ack),
        }
    }

    /// A replayed call to one function; its topic (for metrics and logs) is the function.
    pub fn call(call: DirectCall, payload: impl Into<Bytes>, ack: impl Acknowledge) -> Self {
        let mut m = Self::new(call.function.clone(), payload, ack);
        m.call = Some(call);
        m
    }

    /// Adds a header for the functions.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the ordering key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Invokes only `functions` rather than every subscriber of the topic.
    pub fn with_targets(mut self, functions: Vec<String>) -> Self {
        self.targets = Some(functions);
        self
    }

    /// Sets how many times the broker has delivered the message (1 = first).
    pub fn with_delivery_count(mut self, count: u32) -> Self {
        self.delivery_count = count.max(1);
        self
    }

    /// Sets its idempotency key and CloudEvents attributes.
    pub fn with_event(mut self, event: EventInfo) -> Self {
        self.event = event;
        self
    }

    /// Sets the source context handed to response subscribers.
    pub fn with_context(mut self, context: BTreeMap<String, String>) -> Self {
        self.context = Arc::new(context);
        self
    }

    /// The functions this message goes to, given the subscribers of its topic.
    pub(crate) fn resolve_targets(
        &self,
        subscribers: impl FnOnce(&str) -> Vec<String>,
    ) -> Vec<String> {
        match (&self.call, &self.targets) {
            (Some(call), _) => vec![call.function.clone()],
            (None, Some(t)) => t.clone(),
            (None, None) => subscribers(&self.topic),
        }
    }
}

/// One function's final failure, as reported to the source when a message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedInvocation {
    /// The function address (`name` or `name.namespace`).
    pub function: String,
    /// The last HTTP status, if the function answered.
    pub status: Option<u16>,
    /// What went wrong last.
    pub error: String,
    /// How many attempts were made (deliveries, for [`crate::RetryPolicy::Redeliver`]).
    pub attempts: u32,
    /// Whether the last failure was worth another attempt (the retries ran out); false for a
    /// permanent failure such as a 400.
    pub retryable: bool,
}

/// Why a message is being dead-lettered: every function that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message's topic.
    pub topic: String,
    /// The functions that failed for good.
    pub failures: Vec<FailedInvocation>,
}

impl DeadLetter {
    fn join(&self, sep: &str, f: impl Fn(&FailedInvocation) -> String) -> String {
        self.failures.iter().map(f).collect::<Vec<_>>().join(sep)
    }

    /// The failed functions, comma-separated (for dead-letter headers and attributes).
    pub fn functions(&self) -> String {
        self.join(",", |x| x.function.clone())
    }

    /// Their last HTTP statuses (`none` when there was no answer), comma-separated.
    pub fn statuses(&self) -> String {
        self.join(",", |x| {
            x.status
                .map_or_else(|| "none".to_owned(), |s| s.to_string())
        })
    }

    /// Attempts made per function, comma-separated.
    pub fn attempts(&self) -> String {
        self.join(",", |x| x.attempts.to_string())
    }

    /// `function: last error` per function, `; `-separated.
    pub fn errors(&self) -> String {
        self.join("; ", |x| format!("{}: {}", x.function, x.error))
    }
}

impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic {:?}:", self.topic)?;
        for x in &self.failures {
            let status = x
                .status
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
            write!(
                f,
                " {} failed ({status}, {} attempts: {});",
                x.function, x.attempts, x.error
            )?;
        }
        Ok(())
    }
}
