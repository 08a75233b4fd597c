//! The dispatcher: takes admitted messages, keeps order per key, and runs one delivery task per
//! message that invokes every target, applies the retry policy and settles the message.
//!
//! A delivery task that panics (in an invocation or in a [`ResponseSubscriber`]) still settles:
//! its message is nacked (its [`crate::ack::Pending`] handle nacks on drop), its permit is
//! released and the messages waiting behind its key go on.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_core::retry::{RetrySettings, retry_after};
use tributary_core::trace::{SpanKind, TRACEPARENT, TraceContext};

use crate::batch::{Batcher, ItemParts};
use crate::invoker::{Delivery, InvocationOutcome, Invoker, Request};
use crate::message::{DeadLetter, FailedInvocation, Message};
use crate::metrics::ConnectorMetrics;
use crate::options::{FunctionOptions, Reported, select};
use crate::runtime::ResponseSubscriber;
use crate::source::{Admitted, DeliveryOrder, RetryPolicy};
use crate::topic_map::{TopicMap, TopicMapSync};

/// How long a message naming an unknown function waits between topic map refreshes.
const UNKNOWN_FUNCTION_REFRESH: Duration = Duration::from_secs(1);

/// A target function and its options (`None`: not in the topic map yet).
type Target = (String, Option<Arc<FunctionOptions>>);
/// A chosen function, its options and, for a batch function, where its outcome will arrive.
type Chosen = (
    String,
    Arc<FunctionOptions>,
    Option<tokio::sync::oneshot::Receiver<InvocationOutcome>>,
);

/// What every delivery task shares.
pub(crate) struct Shared {
    pub(crate) invoker: Invoker,
    pub(crate) sync: TopicMapSync,
    pub(crate) metrics: ConnectorMetrics,
    pub(crate) subscribers: Vec<Arc<dyn ResponseSubscriber>>,
    pub(crate) policy: RetryPolicy,
    pub(crate) defaults: RetrySettings,
    pub(crate) print_request_body: bool,
    /// CloudEvents binary mode for every function (`cloudevents=binary`).
    pub(crate) cloudevents: bool,
    pub(crate) reported: Reported,
    pub(crate) cancel: CancellationToken,
}

impl Shared {
    /// A function's options from its annotations, if the topic map lists it.
    fn options(&self, map: &TopicMap, function: &str) -> Option<FunctionOptions> {
        let f = map.function(function)?;
        Some(FunctionOptions::of(
            &self.defaults,
            self.cloudevents,
            function,
            f,
        ))
    }
}

pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    order: DeliveryOrder,
    tasks: JoinSet<()>,
    /// Keys with a message in flight, and the messages waiting behind it.
    keyed: HashMap<String, VecDeque<(Admitted, Vec<Target>)>>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
    /// Options per function, parsed once per topic map.
    settings: (Arc<TopicMap>, HashMap<String, Arc<FunctionOptions>>),
    /// The batching task of each batch function.
    batchers: HashMap<String, Batcher>,
}

impl Dispatcher {
    pub(crate) fn new(shared: Shared, order: DeliveryOrder) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            shared: Arc::new(shared),
            order,
            tasks: JoinSet::new(),
            keyed: HashMap::new(),
            done_tx,
            done_rx,
            settings: (Arc::default(), HashMap::new()),
            batchers: HashMap::new(),
        }
    }

    /// Takes messages until the source ends or shutdown, then drains.
    pub(crate) async fn dispatch(&mut self, mut rx: mpsc::Receiver<Admitted>) {
        let cancel = self.shared.cancel.clone();
        let mut source_open = true;
        loop {
            if !source_open && self.tasks.is_empty() && self.keyed.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(key) = self.done_rx.recv() => self.key_done(key),
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => report(joined),
                admitted = rx.recv(), if source_open => match admitted {
                    Some(a) => self.admit(a),
                    None => source_open = false,
                },
            }
        }
        if cancel.is_cancelled() {
            // Stop taking messages; hand back what was admitted but never started.
            rx.close();
            let mut handed_back = 0usize;
            while let Some(a) = rx.recv().await {
                self.shared.metrics.received(&a.message.topic);
                hand_back(&self.shared.metrics, a).await;
                handed_back += 1;
            }
            for (_, queue) in std::mem::take(&mut self.keyed) {
                for (a, _) in queue {
                    hand_back(&self.shared.metrics, a).await;
                    handed_back += 1;
                }
            }
            tracing::info!(
                in_flight = self.tasks.len(),
                handed_back,
                "shutting down: finishing in-flight messages"
            );
        }
        while let Some(joined) = self.tasks.join_next().await {
            report(joined);
        }
    }

    /// The targets of a message with their options.
    fn targets(&mut self, message: &Message) -> Vec<Target> {
        let map = self.shared.sync.topic_map();
        if !Arc::ptr_eq(&self.settings.0, &map) {
            self.settings = (map.clone(), HashMap::new());
        }
        let functions = message.resolve_targets(|topic| map.functions_for(topic).to_vec());
        functions
            .into_iter()
            .map(|f| {
                let settings = match self.settings.1.get(&f) {
                    Some(s) => Some(s.clone()),
                    None => self.shared.options(&map, &f).map(|s| {
                        if let Some(e) = &s.batch_error
                            && self.shared.reported.first_time(&f, e)
                        {
                            tracing::error!(function = %f, error = %e, "the function's batch annotations are invalid: it gets one message per call until they are fixed");
                        }
                        let s = Arc::new(s);
                        self.settings.1.insert(f.clone(), s.clone());
                        s
                    }),
                };
                (f, settings)
            })
            .collect()
    }

    /// The batcher of a batch function (started, or restarted when its settings changed).
    fn batcher(&mut self, function: &str, options: &Arc<FunctionOptions>) -> Option<Batcher> {
        let settings = options.batch?;
        match self.batchers.get(function) {
            Some(b) if b.settings == settings => Some(b.clone()),
            _ => {
                let b = Batcher::start(
                    self.shared.clone(),
                    function.to_owned(),
                    options.clone(),
                    settings,
                );
                self.batchers.insert(function.to_owned(), b.clone());
                Some(b)
            }
        }
    }

    /// The batchers of a message's batch functions, by function.
    fn batchers_for(&mut self, targets: &[Target]) -> HashMap<String, Batcher> {
        targets
            .iter()
            .filter_map(|(f, o)| Some((f.clone(), self.batcher(f, o.as_ref()?)?)))
            .collect()
    }

    /// A message whose every target batches: filtered and queued into the batches now, in
    /// admission order, so the messages of a key need not wait for each other (each batcher
    /// keeps their order).
    fn admit_batched(&mut self, a: Admitted, targets: Vec<Target>) {
        let m = &a.message;
        let known: Vec<(String, Arc<FunctionOptions>)> = targets
            .into_iter()
            .filter_map(|(f, o)| Some((f, o?)))
            .collect();
        let selected = select(
            known,
            &m.topic,
            &m.payload,
            &m.headers,
            &self.shared.metrics,
            &self.shared.reported,
        );
        let trace = incoming_trace(&m.headers).unwrap_or_else(TraceContext::new_root);
        let mut chosen = Vec::with_capacity(selected.len());
        for (f, o) in selected {
            let rx = self.batcher(&f, &o).map(|b| {
                b.queue(ItemParts {
                    id: m.event.id.as_deref(),
                    key: m.key.as_deref(),
                    topic: &m.topic,
                    headers: &m.headers,
                    payload: &m.payload,
                    context: &m.context,
                    trace,
                })
            });
            chosen.push((f, o, rx));
        }
        self.tasks.spawn(deliver(
            self.shared.clone(),
            a,
            Vec::new(),
            None,
            HashMap::new(),
            Some(chosen),
        ));
    }

    fn admit(&mut self, a: Admitted) {
        let topic = a.message.topic.clone();
        self.shared.metrics.received(&topic);
        let targets = self.targets(&a.message);
        if !targets.is_empty()
            && targets
                .iter()
                .all(|(_, o)| o.as_ref().is_some_and(|o| o.batch.is_some()))
        {
            self.admit_batched(a, targets);
            return;
        }
        if targets.is_empty() {
            tracing::debug!(%topic, "no function subscribes to this topic; acknowledging");
            self.shared.metrics.unrouted(&topic);
            self.tasks.spawn(async move {
                a.message.ack.ack().await;
                drop(a.permit);
            });
            return;
        }
        let key = match (self.order, &a.message.key) {
            (DeliveryOrder::PerKey, Some(k)) => Some(k.clone()),
            _ => None,
        };
        if let Some(k) = &key {
            if let Some(queue) = self.keyed.get_mut(k) {
                queue.push_back((a, targets));
                return;
            }
            self.keyed.insert(k.clone(), VecDeque::new());
        }
        self.start(a, targets, key);
    }

    fn key_done(&mut self, key: String) {
        let next = self.keyed.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some((a, targets)) => self.start(a, targets, Some(key)),
            None => {
                self.keyed.remove(&key);
            }
        }
    }

    fn start(&mut self, a: Admitted, targets: Vec<Target>, key: Option<String>) {
        let key = key.map(|k| (k, self.done_tx.clone()));
        let batchers = self.batchers_for(&targets);
        self.tasks.spawn(deliver(
            self.shared.clone(),
            a,
            targets,
            key,
            batchers,
            None,
        ));
    }
}

/// Logs a delivery task that panicked; its guards have already settled its message.
fn report(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!(error = %e, "a delivery task panicked (in an invocation or a response subscriber); its message was nacked");
    }
}

/// Releases a delivery's key and counts it nacked if the task ended without settling it.
struct Settling {
    shared: Arc<Shared>,
    topic: String,
    key: Option<(String, mpsc::UnboundedSender<String>)>,
    settled: bool,
}

impl Drop for Settling {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.metrics.nacked(&self.topic);
        }
        if let Some((key, done)) = self.key.take() {
            let _ = done.send(key);
        }
    }
}

/// Gives a message that was admitted but never started back to its source.
async fn hand_back(metrics: &ConnectorMetrics, a: Admitted) {
    metrics.nacked(&a.message.topic);
    a.message.ack.nack(None).await;
    drop(a.permit);
}

/// The `traceparent` a message carries.
fn incoming_trace(headers: &[(String, String)]) -> Option<TraceContext> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
        .and_then(|(_, v)| TraceContext::parse(v))
}

/// Delivers one message to its targets and settles it: `chosen` when admission already
/// filtered and queued it into batches, else `targets` (filtered here, batch functions queued
/// through `batchers`).
async fn deliver(
    shared: Arc<Shared>,
    a: Admitted,
    targets: Vec<Target>,
    key: Option<(String, mpsc::UnboundedSender<String>)>,
    batchers: HashMap<String, Batcher>,
    chosen: Option<Vec<Chosen>>,
) {
    let Admitted { message, permit } = a;
    let Message {
        topic,
        payload,
        headers,
        context,
        mut ack,
        delivery_count,
        call,
        event,
        key: order_key,
        ..
    } = message;
    let mut guard = Settling {
        shared: shared.clone(),
        topic,
        key,
        settled: false,
    };
    let topic = guard.topic.clone();
    if shared.print_request_body {
        tracing::info!(%topic, body = %String::from_utf8_lossy(&payload), "request");
    }
    let incoming = incoming_trace(&headers);
    let mut targets: Vec<Chosen> = match chosen {
        Some(c) => c,
        None => {
            let mut known = Vec::with_capacity(targets.len());
            for (function, options) in targets {
                let options = match options {
                    Some(o) => o,
                    None => Arc::new(unknown_function_options(&shared, &function).await),
                };
                known.push((function, options));
            }
            let selected = select(
                known,
                &topic,
                &payload,
                &headers,
                &shared.metrics,
                &shared.reported,
            );
            let trace = incoming.unwrap_or_else(TraceContext::new_root);
            selected
                .into_iter()
                .map(|(f, o)| {
                    let rx = batchers.get(&f).map(|b| {
                        b.queue(ItemParts {
                            id: event.id.as_deref(),
                            key: order_key.as_deref(),
                            topic: &topic,
                            headers: &headers,
                            payload: &payload,
                            context: &context,
                            trace,
                        })
                    });
                    (f, o, rx)
                })
                .collect()
        }
    };
    if targets.is_empty() {
        tracing::debug!(%topic, "no function's filter matches; acknowledging");
        ack.ack().await;
        shared.metrics.acked(&topic);
        guard.settled = true;
        drop(permit);
        return;
    }
    // The message's trace continues here (or one starts): receive → invoke → acknowledge.
    let tracer = tributary_core::trace::global();
    let mut span = tracer.start("deliver", SpanKind::Consumer, incoming.as_ref());
    if tracer.enabled() {
        span.attr("messaging.destination.name", topic.as_str());
        if let Some(id) = &event.id {
            span.attr("messaging.message.id", id.as_str());
        }
    }
    let req = Request {
        topic: &topic,
        payload: &payload,
        headers: &headers,
        context: &context,
        call: call.as_ref(),
        event: &event,
        trace: span.context(),
    };
    let settings: Vec<Arc<RetrySettings>> =
        targets.iter().map(|(_, o, _)| o.retry.clone()).collect();
    let max_retries = |s: &RetrySettings| match shared.policy {
        RetryPolicy::Redeliver => 0,
        _ => s.max_retries(),
    };
    let (req, shared_ref) = (&req, &shared);
    let mut outcomes = futures::future::join_all(targets.iter_mut().map(|(f, o, batched)| {
        let batched = batched.take();
        let (f, o) = (&*f, &*o);
        async move {
            match batched {
                // A batch function: its batcher calls it and reports this message's part.
                Some(rx) => rx
                    .await
                    .unwrap_or_else(|_| crate::batch::interrupted(f, req)),
                None => {
                    shared_ref
                        .invoker
                        .invoke(f, req, o, max_retries(&o.retry), &shared_ref.cancel)
                        .await
                }
            }
        }
    }))
    .await;
    if shared.policy == RetryPolicy::UntilDelivered {
        // Batchers hold failed items themselves: only direct calls are held here.
        let direct: Vec<(String, Arc<FunctionOptions>)> = targets
            .iter()
            .map(|(f, o, _)| (f.clone(), o.clone()))
            .collect();
        hold_until_delivered(&shared, req, &direct, &mut outcomes).await;
    }
    for o in &outcomes {
        ack.observe(o);
        for s in &shared.subscribers {
            s.response(o);
        }
    }
    let metrics = &shared.metrics;
    let _acknowledging = tracer.start("acknowledge", SpanKind::Internal, Some(&span.context()));
    if outcomes.iter().all(|o| o.delivery == Delivery::Delivered) {
        ack.ack().await;
        metrics.acked(&topic);
    } else if outcomes.iter().any(|o| o.delivery == Delivery::Interrupted) {
        ack.nack(None).await;
        metrics.nacked(&topic);
    } else if let Some(wait) = (shared.policy == RetryPolicy::Redeliver)
        .then(|| redeliver_after(&outcomes, &settings, delivery_count))
        .flatten()
    {
        tracing::debug!(%topic, delivery_count, ?wait, "handing the message back for redelivery");
        ack.nack(Some(wait)).await;
        metrics.nacked(&topic);
    } else {
        let redelivered = shared.policy == RetryPolicy::Redeliver;
        let letter = DeadLetter {
            topic: topic.clone(),
            failures: outcomes
                .iter()
                .filter(|o| o.delivery == Delivery::Failed)
                .map(|o| FailedInvocation {
                    function: o.function.clone(),
                    status: o.status,
                    error: o.error.clone().unwrap_or_default(),
                    attempts: if redelivered {
                        delivery_count
                    } else {
                        o.attempts
                    },
                    retryable: o.retryable,
                })
                .collect(),
        };
        tracing::warn!(%letter, "dead-lettering message");
        span.fail(letter.to_string());
        ack.dead_letter(letter).await;
        metrics.dead_lettered(&topic);
    }
    guard.settled = true;
    drop(permit);
}

/// The options of a function the topic map does not list (yet): refresh it (at most once a
/// second), then the function's own options, or the defaults.
async fn unknown_function_options(shared: &Shared, function: &str) -> FunctionOptions {
    shared.sync.refresh(UNKNOWN_FUNCTION_REFRESH).await;
    shared
        .options(&shared.sync.topic_map(), function)
        .unwrap_or_else(|| FunctionOptions::defaults(&shared.defaults, shared.cloudevents))
}

/// [`RetryPolicy::UntilDelivered`]: invokes the functions that failed again, with backoff,
/// until every one is delivered or shutdown interrupts (the message is then handed back).
async fn hold_until_delivered(
    shared: &Shared,
    req: &Request<'_>,
    targets: &[(String, Arc<FunctionOptions>)],
    outcomes: &mut [InvocationOutcome],
) {
    let cancel = &shared.cancel;
    let mut round = 1u32;
    while outcomes.iter().any(|o| o.delivery == Delivery::Failed) {
        round = round.saturating_add(1);
        let wait = outcomes
            .iter()
            .zip(targets)
            .filter(|(o, _)| o.delivery == Delivery::Failed)
            .map(|(_, (_, t))| t.retry.backoff(round, None))
            .max()
            .unwrap_or_default();
        for o in outcomes.iter().filter(|o| o.delivery == Delivery::Failed) {
            tracing::warn!(
                function = %o.function, topic = %o.topic, status = o.status, error = o.error.as_deref(),
                round, ?wait, "delivery failed and there is no dead-letter destination: holding the message (and the ones behind it) and trying again"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => {
                for o in outcomes.iter_mut().filter(|o| o.delivery == Delivery::Failed) {
                    o.delivery = Delivery::Interrupted;
                }
                return;
            }
        }
        for (o, (_, t)) in outcomes.iter_mut().zip(targets) {
            if o.delivery == Delivery::Failed {
                let attempts = o.attempts;
                *o = shared
                    .invoker
                    .invoke(&o.function, req, t, t.retry.max_retries(), cancel)
                    .await;
                o.attempts = o.attempts.saturating_add(attempts);
            }
        }
    }
}

/// [`RetryPolicy::Redeliver`]: how long the broker should wait before redelivering, or `None`
/// when the message is to be dead-lettered (a permanent failure, or a function's attempts used
/// up).
fn redeliver_after(
    outcomes: &[InvocationOutcome],
    settings: &[Arc<RetrySettings>],
    delivery_count: u32,
) -> Option<Duration> {
    let failed: Vec<_> = outcomes
        .iter()
        .zip(settings)
        .filter(|(o, _)| o.delivery == Delivery::Failed)
        .collect();
    if failed.is_empty()
        || failed
            .iter()
            .any(|(o, s)| !o.retryable || delivery_count >= s.attempts)
    {
        return None;
    }
    failed
        .iter()
        .map(|(o, s)| s.backoff(delivery_count, retry_after(&o.headers)))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn failed(
        status: u16,
        retryable: bool,
        retry_after: Option<&'static str>,
    ) -> InvocationOutcome {
        let mut headers = http::HeaderMap::new();
        if let Some(ra) = retry_after {
            headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static(ra),
            );
        }
        InvocationOutcome {
            function: "f".into(),
            topic: "t".into(),
            delivery: Delivery::Failed,
            status: Some(status),
            body: bytes::Bytes::new(),
            headers,
            error: None,
            duration: Duration::ZERO,
            attempts: 1,
            retryable,
            context: Arc::new(BTreeMap::new()),
        }
    }

    #[test]
    fn redelivery_follows_each_functions_attempts_and_retry_after() {
        let s = Arc::new(RetrySettings::new(
            3,
            Duration::from_millis(10),
            Duration::from_secs(5),
        ));
        let settings = [s.clone()];
        let wait = redeliver_after(&[failed(503, true, Some("2"))], &settings, 1);
        assert_eq!(wait, Some(Duration::from_secs(2)));
        assert!(redeliver_after(&[failed(503, true, None)], &settings, 2).is_some());
        assert_eq!(
            redeliver_after(&[failed(503, true, None)], &settings, 3),
            None,
            "the third delivery was the last attempt"
        );
        assert_eq!(
            redeliver_after(&[failed(400, false, None)], &settings, 1),
            None
        );
    }
}
