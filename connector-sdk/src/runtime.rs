//! The at-least-once runtime: takes messages from a [`Source`], invokes every subscribed
//! function, and acknowledges a message only once every function's outcome is final.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ControllerConfig};
use crate::invoker::{Delivery, InvocationOutcome, Invoker, Request, retry_after};
use crate::metrics::ConnectorMetrics;
use crate::source::{
    Admitted, DeadLetter, DeliveryOrder, FailedInvocation, RetryPolicy, Source, SourceContext,
    SourceError,
};
use crate::topic_map::Controller;

/// How long a source gets to return after shutdown starts.
const SOURCE_STOP_GRACE: Duration = Duration::from_secs(10);

/// Errors that stop a connector.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metrics port could not be bound.
    #[error("cannot serve metrics on port {port} (metrics_port): {source}")]
    Metrics {
        /// The port.
        port: u16,
        /// The bind error.
        source: std::io::Error,
    },
    /// The source failed.
    #[error("source failed: {0}")]
    Source(SourceError),
}

impl From<SourceError> for ConnectorError {
    fn from(e: SourceError) -> Self {
        Self::Source(e)
    }
}

/// Receives every invocation outcome: for logging, metrics, reply topics.
pub trait ResponseSubscriber: Send + Sync + 'static {
    /// Called once per function per message, when that function's outcome is final.
    fn response(&self, outcome: &InvocationOutcome);
}

impl<F: Fn(&InvocationOutcome) + Send + Sync + 'static> ResponseSubscriber for F {
    fn response(&self, outcome: &InvocationOutcome) {
        self(outcome)
    }
}

/// Logs each outcome (`print_response`, `print_response_body`).
struct LogResponses {
    body: bool,
}

impl ResponseSubscriber for LogResponses {
    fn response(&self, o: &InvocationOutcome) {
        let body = if self.body {
            String::from_utf8_lossy(&o.body).into_owned()
        } else {
            String::new()
        };
        match o.delivery {
            Delivery::Delivered => tracing::info!(
                function = %o.function, topic = %o.topic, status = ?o.status, attempts = o.attempts,
                duration_ms = o.duration.as_millis() as u64, body = %body, "function invoked"
            ),
            _ => tracing::warn!(
                function = %o.function, topic = %o.topic, status = ?o.status, attempts = o.attempts,
                duration_ms = o.duration.as_millis() as u64, error = ?o.error, body = %body, "function invocation failed"
            ),
        }
    }
}

/// A connector: configuration, response subscribers and metrics, ready to run a source.
pub struct Connector {
    config: Arc<ControllerConfig>,
    subscribers: Vec<Arc<dyn ResponseSubscriber>>,
    metrics: ConnectorMetrics,
}

impl Connector {
    /// A connector with the given configuration.
    pub fn new(config: ControllerConfig) -> Self {
        let mut subscribers: Vec<Arc<dyn ResponseSubscriber>> = Vec::new();
        if config.print_response {
            subscribers.push(Arc::new(LogResponses {
                body: config.print_response_body,
            }));
        }
        Self {
            config: Arc::new(config),
            subscribers,
            metrics: ConnectorMetrics::new(),
        }
    }

    /// Adds a response subscriber.
    pub fn with_subscriber(mut self, subscriber: impl ResponseSubscriber) -> Self {
        self.subscribers.push(Arc::new(subscriber));
        self
    }

    /// The connector's metrics (and registry).
    pub fn metrics(&self) -> &ConnectorMetrics {
        &self.metrics
    }

    /// Runs `source` until it ends or `cancel` fires, then finishes or hands back every message
    /// in flight, and returns.
    pub async fn run<S: Source>(
        self,
        source: S,
        cancel: CancellationToken,
    ) -> Result<(), ConnectorError> {
        let config = self.config.clone();
        let name = source.name().to_owned();
        let order = source.order();
        let policy = source.retry_policy();
        tracing::info!(
            connector = %name,
            gateway_url = %config.gateway_url,
            rebuild_interval = ?config.rebuild_interval,
            max_inflight = config.max_inflight,
            max_retries = config.max_retries,
            asynchronous_invocation = config.asynchronous_invocation,
            ?order,
            ?policy,
            "connector starting"
        );
        let stop = CancellationToken::new();
        let _stop_guard = stop.clone().drop_guard();
        if config.metrics_port != 0 {
            let addr = SocketAddr::from(([0, 0, 0, 0], config.metrics_port));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ConnectorError::Metrics {
                    port: config.metrics_port,
                    source,
                })?;
            tokio::spawn(self.metrics.clone().serve(listener, stop.clone()));
        }

        let controller = Controller::new(config.clone(), self.metrics.clone());
        if !controller.sync_until_ready(&cancel).await {
            tracing::info!("stopped before the topic map was built; no message was taken");
            return Ok(());
        }
        let rebuild = {
            let controller = controller.clone();
            let stop = stop.clone();
            tokio::spawn(async move { controller.run(stop).await })
        };

        let source_cancel = cancel.child_token();
        let (tx, rx) = mpsc::channel(config.max_inflight);
        let ctx = SourceContext {
            tx,
            permits: Arc::new(Semaphore::new(config.max_inflight)),
            topics: controller.subscribe(),
            cancel: source_cancel.clone(),
            registry: self.metrics.registry().clone(),
        };
        let mut source_task = tokio::spawn(source.run(ctx));
        tracing::info!(connector = %name, topics = ?controller.topic_map().topics(), "connector running");

        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut dispatcher = Dispatcher {
            invoker: Invoker::new(config.clone(), &name, self.metrics.clone()),
            controller,
            metrics: self.metrics.clone(),
            subscribers: Arc::new(self.subscribers),
            order,
            policy,
            print_request_body: config.print_request_body,
            tasks: JoinSet::new(),
            keyed: HashMap::new(),
            done_tx,
            cancel: cancel.clone(),
        };
        dispatcher.dispatch(rx, done_rx).await;

        source_cancel.cancel();
        let source_result = match tokio::time::timeout(SOURCE_STOP_GRACE, &mut source_task).await {
            Ok(Ok(Err(SourceError::Closed))) => Ok(()),
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(SourceError::new(format!("source task panicked: {e}"))),
            Err(_) => {
                source_task.abort();
                Err(SourceError::new(
                    "source did not stop within 10s of shutdown",
                ))
            }
        };
        stop.cancel();
        let _ = rebuild.await;
        tracing::info!(connector = %name, "connector stopped");
        source_result.map_err(ConnectorError::Source)
    }
}

/// Runs `source` with a default [`Connector`] built from `config`.
pub async fn run<S: Source>(
    config: ControllerConfig,
    source: S,
    cancel: CancellationToken,
) -> Result<(), ConnectorError> {
    Connector::new(config).run(source, cancel).await
}

/// A token cancelled on SIGINT or SIGTERM, for `main` functions.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            _ = term => tracing::info!("SIGTERM received, shutting down"),
        }
        t.cancel();
    });
    token
}

/// Gives a message that was admitted but never started back to its source.
async fn hand_back(metrics: &ConnectorMetrics, a: Admitted) {
    metrics.nacked(&a.message.topic);
    a.message.ack.nack(None).await;
    drop(a.permit);
}

/// [`RetryPolicy::UntilDelivered`]: invokes the functions that failed again, with backoff,
/// until every one is delivered or shutdown interrupts (the message is then handed back).
async fn hold_until_delivered(
    invoker: &Invoker,
    req: &Request<'_>,
    outcomes: &mut [InvocationOutcome],
    cancel: &CancellationToken,
) {
    let mut round = 1u32;
    while outcomes.iter().any(|o| o.delivery == Delivery::Failed) {
        round = round.saturating_add(1);
        let wait = invoker.backoff(round, None);
        for o in outcomes.iter().filter(|o| o.delivery == Delivery::Failed) {
            tracing::warn!(
                function = %o.function, topic = %o.topic, status = ?o.status, error = ?o.error,
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
        for o in outcomes.iter_mut() {
            if o.delivery == Delivery::Failed {
                let attempts = o.attempts;
                *o = invoker
                    .invoke(&o.function, req, invoker.max_retries(), cancel)
                    .await;
                o.attempts = o.attempts.saturating_add(attempts);
            }
        }
    }
}

/// [`RetryPolicy::Redeliver`]: how long the broker should wait before redelivering, or `None`
/// when the message is to be dead-lettered (a permanent failure, or `max_retries` exhausted).
fn redeliver_after(
    invoker: &Invoker,
    outcomes: &[InvocationOutcome],
    delivery_count: u32,
) -> Option<Duration> {
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.delivery == Delivery::Failed)
        .collect();
    if failed.is_empty()
        || failed.iter().any(|o| !o.retryable)
        || delivery_count > invoker.max_retries()
    {
        return None;
    }
    let asked = failed.iter().filter_map(|o| retry_after(&o.headers)).max();
    Some(invoker.backoff(delivery_count, asked))
}

struct Dispatcher {
    invoker: Invoker,
    controller: Controller,
    metrics: ConnectorMetrics,
    subscribers: Arc<Vec<Arc<dyn ResponseSubscriber>>>,
    order: DeliveryOrder,
    policy: RetryPolicy,
    print_request_body: bool,
    tasks: JoinSet<()>,
    /// Keys with a message in flight, and the messages waiting behind it.
    keyed: HashMap<String, VecDeque<(Admitted, Vec<String>)>>,
    done_tx: mpsc::UnboundedSender<String>,
    cancel: CancellationToken,
}

impl Dispatcher {
    /// Takes messages until the source ends or shutdown, then drains.
    async fn dispatch(
        &mut self,
        mut rx: mpsc::Receiver<Admitted>,
        mut done_rx: mpsc::UnboundedReceiver<String>,
    ) {
        let cancel = self.cancel.clone();
        let mut source_open = true;
        loop {
            if !source_open && self.tasks.is_empty() && self.keyed.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(key) = done_rx.recv() => self.key_done(key),
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
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
                self.metrics.received(&a.message.topic);
                hand_back(&self.metrics, a).await;
                handed_back += 1;
            }
            for (_, queue) in std::mem::take(&mut self.keyed) {
                for (a, _) in queue {
                    hand_back(&self.metrics, a).await;
                    handed_back += 1;
                }
            }
            tracing::info!(
                in_flight = self.tasks.len(),
                handed_back,
                "shutting down: finishing in-flight messages"
            );
        }
        while self.tasks.join_next().await.is_some() {}
    }

    fn admit(&mut self, a: Admitted) {
        let topic = a.message.topic.clone();
        self.metrics.received(&topic);
        let targets = match &a.message.targets {
            Some(t) => t.clone(),
            None => self.controller.topic_map().functions_for(&topic).to_vec(),
        };
        if targets.is_empty() {
            tracing::debug!(%topic, "no function subscribes to this topic; acknowledging");
            self.metrics.unrouted(&topic);
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

    fn start(&mut self, a: Admitted, targets: Vec<String>, key: Option<String>) {
        let invoker = self.invoker.clone();
        let metrics = self.metrics.clone();
        let subscribers = self.subscribers.clone();
        let cancel = self.cancel.clone();
        let done = self.done_tx.clone();
        let print_body = self.print_request_body;
        let policy = self.policy;
        self.tasks.spawn(async move {
            let Admitted { message, permit } = a;
            let crate::source::Message {
                topic,
                payload,
                headers,
                context,
                ack,
                delivery_count,
                ..
            } = message;
            if print_body {
                tracing::info!(%topic, body = %String::from_utf8_lossy(&payload), "request");
            }
            let req = Request {
                topic: &topic,
                payload: &payload,
                headers: &headers,
                context: &context,
            };
            let max_retries = match policy {
                RetryPolicy::Redeliver => 0,
                _ => invoker.max_retries(),
            };
            let mut outcomes = futures::future::join_all(
                targets
                    .iter()
                    .map(|f| invoker.invoke(f, &req, max_retries, &cancel)),
            )
            .await;
            if policy == RetryPolicy::UntilDelivered {
                hold_until_delivered(&invoker, &req, &mut outcomes, &cancel).await;
            }
            for o in &outcomes {
                for s in subscribers.iter() {
                    s.response(o);
                }
            }
            let redeliver_after = (policy == RetryPolicy::Redeliver)
                .then(|| redeliver_after(&invoker, &outcomes, delivery_count))
                .flatten();
            if outcomes.iter().all(|o| o.delivery == Delivery::Delivered) {
                ack.ack().await;
                metrics.acked(&topic);
            } else if outcomes.iter().any(|o| o.delivery == Delivery::Interrupted) {
                ack.nack(None).await;
                metrics.nacked(&topic);
            } else if let Some(wait) = redeliver_after {
                tracing::debug!(%topic, delivery_count, ?wait, "handing the message back for redelivery");
                ack.nack(Some(wait)).await;
                metrics.nacked(&topic);
            } else {
                let letter = DeadLetter {
                    topic: topic.clone(),
                    failures: outcomes
                        .iter()
                        .filter(|o| o.delivery == Delivery::Failed)
                        .map(|o| FailedInvocation {
                            function: o.function.clone(),
                            status: o.status,
                            error: o.error.clone().unwrap_or_default(),
                            attempts: o.attempts,
                        })
                        .collect(),
                };
                tracing::warn!(%letter, "dead-lettering message");
                ack.dead_letter(letter).await;
                metrics.dead_lettered(&topic);
            }
            drop(permit);
            if let Some(k) = key {
                let _ = done.send(k);
            }
        });
    }
}
