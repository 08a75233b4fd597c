//! The dispatcher: takes admitted messages, resolves their functions and options, keeps order
//! per key, and runs one delivery task per message ([`crate::deliver`]). A message whose every
//! function batches is queued into the batches at once, in admission order ([`crate::batch`]
//! keeps the order per key from there).
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
use tributary_core::retry::RetrySettings;
use tributary_core::trace::{TRACEPARENT, TraceContext};

use crate::batch::{Batcher, ItemParts};
use crate::deliver::deliver;
use crate::invoker::{InvocationOutcome, Invoker};
use crate::message::Message;
use crate::metrics::ConnectorMetrics;
use crate::options::{FunctionOptions, Reported, select};
use crate::runtime::ResponseSubscriber;
use crate::source::{Admitted, DeliveryOrder, RetryPolicy};
use crate::topic_map::{TopicMap, TopicMapSync};

/// How long a message naming an unknown function waits between topic map refreshes.
pub(crate) const UNKNOWN_FUNCTION_REFRESH: Duration = Duration::from_secs(1);

/// A target function and its options (`None`: not in the topic map yet).
pub(crate) type Target = (String, Option<Arc<FunctionOptions>>);
/// A chosen function, its options and, for a batch function, where its outcome will arrive.
pub(crate) type Chosen = (
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
    pub(crate) fn options(&self, map: &TopicMap, function: &str) -> Option<FunctionOptions> {
        let f = map.function(function)?;
        Some(FunctionOptions::of(
            &self.defaults,
            self.cloudevents,
            function,
            f,
            &self.metrics,
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
            // A removed function's batcher ends once its last batch is out.
            self.batchers.retain(|f, _| map.function(f).is_some());
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
        self.tasks.spawn(Box::pin(deliver(
            self.shared.clone(),
            a,
            Vec::new(),
            None,
            HashMap::new(),
            Some(chosen),
        )));
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
        // Boxed first: the delivery's state is moved once, not through every spawn layer.
        self.tasks.spawn(Box::pin(deliver(
            self.shared.clone(),
            a,
            targets,
            key,
            batchers,
            None,
        )));
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

/// Gives a message that was admitted but never started back to its source.
async fn hand_back(metrics: &ConnectorMetrics, a: Admitted) {
    metrics.nacked(&a.message.topic);
    a.message.ack.nack(None).await;
    drop(a.permit);
}

/// The `traceparent` a message carries.
pub(crate) fn incoming_trace(headers: &[(String, String)]) -> Option<TraceContext> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
        .and_then(|(_, v)| TraceContext::parse(v))
}
