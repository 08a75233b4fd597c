//! The `Provider` trait: where functions run. `local` runs them as local processes.

pub mod local;
mod process;

use async_trait::async_trait;
use axum::body::Body;
use http::{Request, Response};

use crate::error::GatewayError;
use crate::model::{FunctionDeployment, FunctionStatus, ProviderInfo};

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

    /// Stops every function process and waits for them to exit.
    async fn shutdown(&self);
}
