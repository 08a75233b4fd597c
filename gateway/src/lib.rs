//! An OpenFaaS-compatible gateway: the REST API, a reverse proxy to functions, pluggable
//! [`Provider`]s (the embedded [`LocalProvider`] runs functions as local processes), basic
//! auth and Prometheus metrics with OpenFaaS names.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//! use tributary_gateway::{Gateway, GatewayConfig, LocalConfig, LocalProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cancel = CancellationToken::new();
//! let provider = Arc::new(LocalProvider::new(LocalConfig::default(), cancel.child_token()));
//! let gateway = Gateway::new(GatewayConfig::default(), provider)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway.serve(listener, cancel).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod provider;
pub mod proxy;
pub mod queue;
pub mod stack;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{AuthError, Credentials};
pub use config::GatewayConfig;
pub use error::GatewayError;
pub use metrics::Metrics;
pub use provider::{LocalConfig, LocalProvider, Provider};

/// A configured gateway, ready to serve.
pub struct Gateway {
    config: GatewayConfig,
    provider: Arc<dyn Provider>,
    metrics: Metrics,
    credentials: Option<Arc<Credentials>>,
    queue: Option<Arc<dyn queue::Queue>>,
}

impl Gateway {
    /// Builds a gateway; reads basic-auth credentials when `basic_auth` is on.
    pub fn new(config: GatewayConfig, provider: Arc<dyn Provider>) -> Result<Self, AuthError> {
        let credentials = if config.basic_auth {
            Some(Arc::new(Credentials::from_secret_mount(
                &config.secret_mount_path,
            )?))
        } else {
            None
        };
        Ok(Self {
            config,
            provider,
            metrics: Metrics::new(),
            credentials,
            queue: None,
        })
    }

    /// Accepts `/async-function` requests into `queue`.
    pub fn with_queue(mut self, queue: Arc<dyn queue::Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The registry behind `/metrics`, for in-process components such as the queue worker.
    pub fn registry(&self) -> &prometheus::Registry {
        self.metrics.registry()
    }

    /// The provider behind this gateway.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// The axum router serving the whole API.
    pub fn router(&self) -> axum::Router {
        let state = Arc::new(api::AppState {
            provider: self.provider.clone(),
            metrics: self.metrics.clone(),
            max_body_size: self.config.max_body_size,
            queue: self.queue.clone(),
        });
        api::router(state, self.credentials.clone())
    }

    /// Serves until `cancel` fires, then drains connections and stops every function process.
    pub async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let router = self.router();
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            provider = %self.provider.info().provider,
            basic_auth = self.credentials.is_some(),
            upstream_timeout = ?self.config.upstream_timeout,
            max_body_size = self.config.max_body_size,
            queue = self.queue.as_ref().map_or("none", |q| q.backend()),
            "gateway listening"
        );
        let shutdown = cancel.clone();
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        tracing::info!("gateway stopped accepting requests; stopping functions");
        self.provider.shutdown().await;
        served
    }
}
