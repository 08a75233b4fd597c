//! The at-least-once runtime: takes messages from a [`Source`], invokes every subscribed
//! function, and acknowledges a message only once every function's outcome is final.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tributary_core::client::{ClientError, GatewayClient, Loopback};

use crate::config::{ConfigError, ControllerConfig};
use crate::dispatch::{Dispatcher, Shared};
use crate::invoker::{Delivery, InvocationOutcome, Invoker};
use crate::metrics::ConnectorMetrics;
use crate::source::{Source, SourceContext, SourceError};
use crate::topic_map::TopicMapSync;

/// How long a source gets to return after shutdown starts.
/// How long a lag report may take.
const LAG_TIMEOUT: Duration = Duration::from_secs(5);
const SOURCE_STOP_GRACE: Duration = Duration::from_secs(10);

/// Errors that stop a connector.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The gateway client cannot be set up (an unusable `gateway_url`, no HTTP client).
    #[error("cannot set up the gateway client")]
    Client(#[from] ClientError),
    /// The metrics port could not be bound.
    #[error("cannot serve metrics on port {port} (metrics_port)")]
    Metrics {
        /// The port.
        port: u16,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The source failed.
    #[error("the source failed")]
    Source(#[source] SourceError),
}

/// Receives every invocation outcome: for logging, metrics, reply topics.
pub trait ResponseSubscriber: Send + Sync + 'static {
    /// Called once per function per message, when that function's outcome is known. A panic
    /// here is caught by the runtime: the message is nacked and the connector goes on.
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
                function = %o.function, topic = %o.topic, status = o.status, attempts = o.attempts,
                duration_ms = o.duration.as_millis() as u64, body = %body, "function invoked"
            ),
            _ => tracing::warn!(
                function = %o.function, topic = %o.topic, status = o.status, attempts = o.attempts,
                duration_ms = o.duration.as_millis() as u64, error = o.error.as_deref(), body = %body, "function invocation failed"
            ),
        }
    }
}

/// A connector: configuration, response subscribers and metrics, ready to run a source.
pub struct Connector {
    config: Arc<ControllerConfig>,
    subscribers: Vec<Arc<dyn ResponseSubscriber>>,
    metrics: ConnectorMetrics,
    loopback: Option<Loopback>,
}

impl Connector {
    /// A connector with the given configuration and metrics in a registry of their own.
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
            loopback: None,
        }
    }

    /// Adds a response subscriber.
    pub fn with_subscriber(mut self, subscriber: impl ResponseSubscriber) -> Self {
        self.subscribers.push(Arc::new(subscriber));
        self
    }

    /// Keeps the connector's metrics in `metrics` (e.g. registered in a host's registry).
    pub fn with_metrics(mut self, metrics: ConnectorMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Calls functions through `loopback` instead of over HTTP: for a connector that runs
    /// inside the gateway (its queue worker). The topic map still comes from `gateway_url`.
    pub fn with_loopback(mut self, loopback: Loopback) -> Self {
        self.loopback = Some(loopback);
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
        let invoker = Invoker::new(&config, &name, self.metrics.clone(), self.loopback.clone())?;
        let sync = TopicMapSync::new(&config, self.metrics.clone())?;
        if !sync.sync_until_ready(&cancel).await {
            tracing::info!("stopped before the topic map was built; no message was taken");
            return Ok(());
        }
        let rebuild = {
            let sync = sync.clone();
            let stop = stop.clone();
            tokio::spawn(async move { sync.run(stop).await })
        };

        let lag = crate::lag::LagFigures::default();
        tokio::spawn(lag.clone().report(
            GatewayClient::new(&config.gateway_url, config.client_auth(), LAG_TIMEOUT)?,
            // Each replica reports its own share (e.g. its partitions): tell them apart.
            format!(
                "{name}@{}/{}",
                std::env::var("HOSTNAME").unwrap_or_default(),
                std::process::id()
            ),
            stop.clone(),
        ));
        let source_cancel = cancel.child_token();
        let (tx, rx) = mpsc::channel(config.max_inflight);
        let ctx = SourceContext {
            tx,
            permits: Arc::new(Semaphore::new(config.max_inflight)),
            capacity: config.max_inflight,
            topics: sync.subscribe(),
            cancel: source_cancel.clone(),
            registry: self.metrics.registry().clone(),
            lag: lag.clone(),
        };
        let mut source_task = tokio::spawn(source.run(ctx));
        tracing::info!(connector = %name, topics = ?sync.topic_map().topics(), "connector running");

        let mut dispatcher = Dispatcher::new(
            Shared {
                invoker,
                sync,
                metrics: self.metrics.clone(),
                subscribers: self.subscribers,
                policy,
                defaults: config.retry_defaults(),
                print_request_body: config.print_request_body,
                cloudevents: config.cloudevents,
                reported: crate::options::Reported::default(),
                cancel: cancel.clone(),
            },
            order,
        );
        dispatcher.dispatch(rx).await;

        source_cancel.cancel();
        let source_result = match tokio::time::timeout(SOURCE_STOP_GRACE, &mut source_task).await {
            Ok(Ok(Err(SourceError::Closed))) => Ok(()),
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(SourceError::caused("the source task panicked", e)),
            Err(_) => {
                source_task.abort();
                Err(SourceError::new(
                    "the source did not stop within 10s of shutdown",
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
