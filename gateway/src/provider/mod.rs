//! The `Provider` trait: where functions run. `local` runs them as local processes,
//! `kubernetes` as Deployments and Services in a cluster.

pub mod kubernetes;
pub mod local;
mod process;

use async_trait::async_trait;
use axum::body::Body;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use http::{Request, Response};

use crate::error::GatewayError;
use crate::model::{FunctionDeployment, FunctionStatus, LogMessage, ProviderInfo, Secret};

pub use kubernetes::{KubernetesConfig, KubernetesProvider};
pub use local::{LocalConfig, LocalProvider};

/// A backend that deploys, scales and invokes functions.
///
/// Names passed in are validated by the gateway; namespaces are already defaulted.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// What `/system/info` reports for this provider.
    fn info(&self) -> ProviderInfo;

    /// Whether a function exists (cheap; called on every invocation).
    fn has_function(&self, name: &str, namespace: &str) -> bool;

    /// Creates a function; [`GatewayError::AlreadyExists`] if the name is taken.
    async fn deploy(&self, deployment: FunctionDeployment) -> Result<(), GatewayError>;

    /// Replaces a function's spec; [`GatewayError::FunctionNotFound`] if it does not exist.
    async fn update(&self, deployment: FunctionDeployment) -> Result<(), GatewayError>;

    /// Removes a function and stops its replicas.
    async fn delete(&self, name: &str, namespace: &str) -> Result<(), GatewayError>;

    /// Lists the functions of one namespace.
    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, GatewayError>;

    /// One function's status.
    async fn status(&self, name: &str, namespace: &str) -> Result<FunctionStatus, GatewayError>;

    /// Sets the desired replica count.
    async fn scale(&self, name: &str, namespace: &str, replicas: u64) -> Result<(), GatewayError>;

    /// The namespaces functions may live in.
    async fn namespaces(&self) -> Result<Vec<String>, GatewayError>;

    /// Invokes a function. The request URI holds only the function-relative path and query.
    async fn invoke(
        &self,
        name: &str,
        namespace: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, GatewayError>;

    /// The secrets of one namespace, names only.
    async fn secrets(&self, namespace: &str) -> Result<Vec<Secret>, GatewayError>;

    /// Creates a secret (namespace already set); [`GatewayError::SecretExists`] if it exists.
    async fn create_secret(&self, secret: Secret) -> Result<(), GatewayError>;

    /// Replaces a secret's value; [`GatewayError::SecretNotFound`] if it does not exist.
    async fn update_secret(&self, secret: Secret) -> Result<(), GatewayError>;

    /// Removes a secret; functions already given it keep their copy until redeployed.
    async fn delete_secret(&self, name: &str, namespace: &str) -> Result<(), GatewayError>;

    /// A function's captured output: the lines kept, then (with `follow`) new ones as they come.
    async fn logs(&self, query: LogQuery) -> Result<LogStream, GatewayError>;

    /// Stops every function process and waits for them to exit.
    async fn shutdown(&self);
}

/// What a provider reports in `/system/info`: its name and orchestration, this build's version.
pub(crate) fn provider_info(provider: &str, orchestration: &str) -> ProviderInfo {
    ProviderInfo {
        provider: provider.to_owned(),
        orchestration: orchestration.to_owned(),
        version: crate::model::VersionInfo {
            release: env!("CARGO_PKG_VERSION").to_owned(),
            // Set by release builds (`TRIBUTARY_GIT_SHA=$(git rev-parse HEAD) cargo build`).
            sha: option_env!("TRIBUTARY_GIT_SHA")
                .unwrap_or_default()
                .to_owned(),
            commit_message: None,
        },
    }
}

/// What `/system/logs` asks for (faas-provider's `logs.Request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Function name.
    pub name: String,
    /// Namespace (already defaulted).
    pub namespace: String,
    /// Only this instance's lines.
    pub instance: Option<String>,
    /// Only lines captured at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many of the kept lines (the newest); `None`: all.
    pub tail: Option<usize>,
    /// Keep streaming new lines until the client goes away.
    pub follow: bool,
}

/// Log lines as a provider streams them.
pub type LogStream = BoxStream<'static, LogMessage>;
