//! An OpenFaaS-compatible gateway: the REST API, a reverse proxy to functions, pluggable
//! [`Provider`]s (the embedded [`LocalProvider`] runs functions as local processes), basic
//! auth, Prometheus metrics with OpenFaaS names, and `/async-function` into any
//! [`AsyncQueue`](tributary_core::queue::AsyncQueue).
//!
//! ```no_run
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//! use tributary_gateway::{Gateway, GatewayConfig, LocalConfig, LocalProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cancel = CancellationToken::new();
//! let config = GatewayConfig::default();
//! let state = tributary_gateway::StateDir::open(config.state_dir.as_deref())?;
//! let provider = LocalProvider::new(LocalConfig::default(), &config, state.clone(), cancel.child_token());
//! let provider = Arc::new(provider);
//! // Basic auth is on by default: credentials from secret_mount_path, or generated in the state dir.
//! let credentials = tributary_gateway::gateway_credentials(&config.auth, &state).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen_addr()).await?;
//! let gateway = Gateway::new(config, provider, credentials.map(|(c, _)| c));
//! gateway.serve(listener, cancel).await?;
//! # Ok(()) }
//! ```

pub mod activity;
pub mod api;
pub mod auth;
pub mod autoscaler;
pub mod callback;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod server;
pub mod stack;
pub mod state;
pub mod ui;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tributary_core::queue::AsyncQueue;

pub use auth::{AuthError, CredentialSource, Credentials, gateway_credentials};
pub use config::GatewayConfig;
pub use error::GatewayError;
pub use metrics::Metrics;
pub use provider::{KubernetesConfig, KubernetesProvider, LocalConfig, LocalProvider, Provider};
pub use state::StateDir;
/// The OpenFaaS REST API types.
pub use tributary_core::model;

/// A configured gateway, ready to serve.
pub struct Gateway {
    config: GatewayConfig,
    provider: Arc<dyn Provider>,
    metrics: Metrics,
    guard: Option<Arc<auth::Guard>>,
    queue: Option<Arc<dyn AsyncQueue>>,
    lag: autoscaler::lag::LagReports,
    activity: activity::Activity,
}

impl Gateway {
    /// Builds a gateway; `/system/*` requires `credentials` (none: open to anyone who can reach
    /// it; see [`gateway_credentials`]).
    pub fn new(
        config: GatewayConfig,
        provider: Arc<dyn Provider>,
        credentials: Option<Credentials>,
    ) -> Self {
        Self {
            config,
            provider,
            metrics: Metrics::new(),
            guard: credentials.map(|credentials| {
                Arc::new(auth::Guard {
                    credentials,
                    sessions: auth::session::Sessions::default(),
                })
            }),
            queue: None,
            lag: autoscaler::lag::LagReports::default(),
            activity: activity::Activity::default(),
        }
    }

    /// Accepts `/async-function` requests into `queue`.
    pub fn with_queue(mut self, queue: Arc<dyn AsyncQueue>) -> Self {
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
        api::router(self.state(), self.guard.clone())
    }

    /// Function calls served in-process, as `/function/*` and `/async-function/*` over HTTP
    /// would be (for the gateway's own queue worker).
    pub fn loopback(&self) -> tributary_core::client::Loopback {
        api::loopback(self.state())
    }

    fn state(&self) -> Arc<api::AppState> {
        Arc::new(api::AppState {
            provider: self.provider.clone(),
            metrics: self.metrics.clone(),
            max_body_size: self.config.max_body_size,
            max_replicas: self.config.max_replicas,
            function_namespace: self.config.function_namespace.clone(),
            callback_allow: self.config.callback_allow.clone(),
            queue: self.queue.clone(),
            lag: self.lag.clone(),
            activity: self.activity.clone(),
        })
    }

    /// Serves until `cancel` fires, then drains connections and stops every function process.
    pub async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let state = self.state();
        let router = api::router(state.clone(), self.guard.clone());
        let hot = api::hot_path(state);
        let addr = listener.local_addr()?;
        if self.config.autoscaler.enabled {
            let scaler = autoscaler::Autoscaler::new(
                self.provider.clone(),
                self.metrics.clone(),
                self.config.autoscaler.clone(),
                self.config.max_replicas,
                self.lag.clone(),
                self.queue.clone(),
            );
            tokio::spawn(scaler.run(cancel.child_token()));
        }
        tracing::info!(
            %addr,
            provider = %self.provider.info().provider,
            basic_auth = self.guard.is_some(),
            upstream_timeout = ?self.config.upstream_timeout,
            max_body_size = self.config.max_body_size,
            queue = self.queue.as_ref().map_or("none", |q| q.backend()),
            "gateway listening"
        );
        let served =
            server::serve(listener, router, hot, self.config.server_limits(), cancel).await;
        tracing::info!("gateway stopped accepting requests; stopping functions");
        self.provider.shutdown().await;
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    /// A gateway on the local provider with a `cat` function, bodies limited to 16 bytes.
    async fn gateway() -> (Gateway, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = GatewayConfig {
            max_body_size: 16,
            ..GatewayConfig::default()
        };
        let state = StateDir::open(Some(tmp.path())).expect("state");
        let provider = LocalProvider::new(
            LocalConfig::default(),
            &config,
            state,
            CancellationToken::new(),
        );
        provider
            .deploy(model::FunctionDeployment {
                service: "cat".into(),
                env_process: Some("cat".into()),
                ..Default::default()
            })
            .await
            .expect("deploys");
        (Gateway::new(config, Arc::new(provider), None), tmp)
    }

    fn post(path: &str, body: &'static str) -> http::Request<Bytes> {
        http::Request::post(path)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Bytes::from_static(body.as_bytes()))
            .expect("request")
    }

    #[tokio::test]
    async fn the_loopback_answers_as_the_http_routes_do() {
        let (gw, _tmp) = gateway().await;
        let call = gw.loopback();
        let answer = call(post("/function/cat", "hello")).await;
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(&answer.body()[..], b"hello");
        assert!(answer.headers().contains_key("x-call-id"));
        let missing = call(post("/function/nope", "x")).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        // Only function routes: the rest of the API is not reachable this way.
        let other = call(post("/system/functions", "{}")).await;
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
        let large = call(post("/function/cat", "seventeen bytes!!")).await;
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // No queue configured: the async route says so rather than accepting.
        let queued = call(post("/async-function/cat", "x")).await;
        assert!(queued.status().is_server_error(), "{}", queued.status());
    }
}
