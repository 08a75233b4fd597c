//! The kubernetes provider: functions as Deployments and Services, as faas-netes manages them,
//! read through watch-backed caches and invoked at their Endpoints.

mod cache;
mod config;
mod error;
mod invoke;
mod logs;
mod objects;
mod secrets;
mod status;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use http::{Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use self::cache::{Cache, NamespaceCache};
pub use self::config::KubernetesConfig;
use self::error::{api_error, api_status};
use super::{LogQuery, LogStream, Provider};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::model::{FunctionDeployment, FunctionStatus, ProviderInfo, SCALE_MIN_LABEL, Secret};
use crate::proxy::HttpProxy;

/// How long a write waits to see itself in the cache, so a read right after it agrees.
const SETTLE: Duration = Duration::from_secs(5);
/// How often an update is retried when another writer changed the Deployment meanwhile.
const UPDATE_ATTEMPTS: u32 = 5;
/// How often a held call looks for a ready endpoint.
const ENDPOINT_POLL: Duration = Duration::from_millis(50);

/// Runs functions as Kubernetes Deployments and Services.
pub struct KubernetesProvider {
    client: Client,
    config: KubernetesConfig,
    cache: Arc<Cache>,
    proxy: HttpProxy,
    upstream_timeout: Duration,
    next: AtomicUsize,
    cancel: CancellationToken,
}

impl KubernetesProvider {
    /// Connects with the in-cluster service account, else `KUBECONFIG` / `~/.kube/config`,
    /// and starts the watches (an unreachable API server is retried in the background).
    pub async fn connect(
        config: KubernetesConfig,
        gateway: &GatewayConfig,
        cancel: CancellationToken,
    ) -> Result<Self, GatewayError> {
        // Other dependencies (the AWS SDK) enable a second TLS backend, so rustls cannot pick
        // one by itself: choose ring, which kube is built with. Already set is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kube_config = kube::Config::infer().await.map_err(|e| {
            GatewayError::internal(
                "kubernetes: no cluster configuration found (not in a pod with a service account, and no KUBECONFIG or ~/.kube/config)",
                e,
            )
        })?;
        tracing::info!(server = %kube_config.cluster_url, namespace = %gateway.function_namespace, "kubernetes provider");
        let client = Client::try_from(kube_config)
            .map_err(|e| GatewayError::internal("kubernetes: building the API client failed", e))?;
        let cache = Cache::start(
            client.clone(),
            gateway.function_namespace.clone(),
            cancel.clone(),
        );
        let provider = Self {
            client,
            config,
            cache,
            proxy: HttpProxy::new(gateway.upstream_timeout, gateway.max_body_size),
            upstream_timeout: gateway.upstream_timeout,
            next: AtomicUsize::new(0),
            cancel,
        };
        // Serve with a warm cache when the API server answers; otherwise start anyway.
        if let Err(e) = provider.namespace(&gateway.function_namespace).await {
            tracing::warn!(error = %tributary_core::Chain(&e), "kubernetes: starting with an empty cache");
        }
        Ok(provider)
    }

    async fn namespace(&self, namespace: &str) -> Result<Arc<NamespaceCache>, GatewayError> {
        self.cache.get(namespace).await
    }

    fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn services(&self, namespace: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn cached(&self, name: &str, namespace: &str) -> Result<Arc<Deployment>, GatewayError> {
        self.namespace(namespace)
            .await?
            .deployment(name, namespace)
            .ok_or_else(|| not_found(name, namespace))
    }

    /// Waits (bounded) until the cache shows what a write did.
    async fn settle(
        &self,
        name: &str,
        namespace: &str,
        done: impl Fn(Option<&Deployment>) -> bool,
    ) {
        let Ok(cache) = self.namespace(namespace).await else {
            return;
        };
        let deadline = Instant::now() + SETTLE;
        while !done(cache.deployment(name, namespace).as_deref()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replaces a function's Deployment, keeping its replica count (the autoscaler's or
    /// kubectl's, not the spec's); a write that races another (409) is retried on the latest.
    async fn replace_deployment(
        &self,
        d: &FunctionDeployment,
        namespace: &str,
        secrets: &[k8s_openapi::api::core::v1::Secret],
    ) -> Result<Deployment, GatewayError> {
        let api = self.deployments(namespace);
        let mut attempt = 0;
        loop {
            let current = match api.get(&d.service).await {
                Ok(current) => current,
                Err(e) if api_status(&e) == Some(404) => {
                    return Err(not_found(&d.service, namespace));
                }
                Err(e) => return Err(api_error("get", "deployments", namespace, e)),
            };
            let replicas = status::desired_replicas(&current);
            let mut next = objects::deployment(d, namespace, secrets, replicas, &self.config);
            next.metadata.resource_version = current.metadata.resource_version;
            match api.replace(&d.service, &PostParams::default(), &next).await {
                Ok(written) => return Ok(written),
                Err(e) if api_status(&e) == Some(409) && attempt < UPDATE_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(api_error("update", "deployments", namespace, e)),
            }
        }
    }
}

fn not_found(name: &str, namespace: &str) -> GatewayError {
    GatewayError::FunctionNotFound {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
    }
}

/// An object's resourceVersion as a number (etcd's revision; 0 when absent or opaque).
fn resource_version(d: &Deployment) -> u64 {
    d.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Replicas a new function starts with: `com.openfaas.scale.min`, else 1.
fn initial_replicas(d: &FunctionDeployment) -> i32 {
    d.label(SCALE_MIN_LABEL)
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

#[async_trait]
impl Provider for KubernetesProvider {
    fn info(&self) -> ProviderInfo {
        super::provider_info("tributary-kubernetes", "kubernetes")
    }

    fn has_function(&self, name: &str, namespace: &str) -> bool {
        self.cache
            .peek(namespace)
            .is_some_and(|c| c.deployment(name, namespace).is_some())
    }

    async fn deploy(&self, d: FunctionDeployment) -> Result<(), GatewayError> {
        let namespace = d.namespace_or_default().to_owned();
        self.cache.watched(&namespace)?;
        let secrets = secrets::fetch(&self.client, &d.service, &d.secrets, &namespace).await?;
        let deployment =
            objects::deployment(&d, &namespace, &secrets, initial_replicas(&d), &self.config);
        match self
            .deployments(&namespace)
            .create(&PostParams::default(), &deployment)
            .await
        {
            Ok(_) => {}
            Err(e) if api_status(&e) == Some(409) => {
                return Err(GatewayError::AlreadyExists {
                    name: d.service,
                    namespace,
                });
            }
            Err(e) => return Err(api_error("create", "deployments", &namespace, e)),
        }
        let service = objects::service(&d, &namespace);
        match self
            .services(&namespace)
            .create(&PostParams::default(), &service)
            .await
        {
            // A Service left behind by an earlier function of this name is reused.
            Ok(_) => {}
            Err(e) if api_status(&e) == Some(409) => {}
            Err(e) => return Err(api_error("create", "services", &namespace, e)),
        }
        tracing::info!(function = %d.service, namespace, "deployment and service created");
        self.settle(&d.service, &namespace, |d| d.is_some()).await;
        Ok(())
    }

    async fn update(&self, d: FunctionDeployment) -> Result<(), GatewayError> {
        let namespace = d.namespace_or_default().to_owned();
        let secrets = secrets::fetch(&self.client, &d.service, &d.secrets, &namespace).await?;
        let written = self.replace_deployment(&d, &namespace, &secrets).await?;
        let services = self.services(&namespace);
        let wanted = objects::service(&d, &namespace);
        match services.get(&d.service).await {
            Ok(mut current) => {
                current.metadata.annotations = wanted.metadata.annotations;
                if let (Some(spec), Some(wanted)) = (current.spec.as_mut(), wanted.spec) {
                    spec.selector = wanted.selector;
                    spec.ports = wanted.ports;
                }
                services
                    .replace(&d.service, &PostParams::default(), &current)
                    .await
                    .map_err(|e| api_error("update", "services", &namespace, e))?;
            }
            Err(e) if api_status(&e) == Some(404) => {
                services
                    .create(&PostParams::default(), &wanted)
                    .await
                    .map_err(|e| api_error("create", "services", &namespace, e))?;
            }
            Err(e) => return Err(api_error("get", "services", &namespace, e)),
        }
        let version = resource_version(&written);
        self.settle(&d.service, &namespace, |d| {
            d.is_some_and(|d| resource_version(d) >= version)
        })
        .await;
        Ok(())
    }

    async fn delete(&self, name: &str, namespace: &str) -> Result<(), GatewayError> {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match self.deployments(namespace).delete(name, &params).await {
            Ok(_) => {}
            Err(e) if api_status(&e) == Some(404) => return Err(not_found(name, namespace)),
            Err(e) => return Err(api_error("delete", "deployments", namespace, e)),
        }
        match self.services(namespace).delete(name, &params).await {
            Ok(_) => {}
            Err(e) if api_status(&e) == Some(404) => {}
            Err(e) => return Err(api_error("delete", "services", namespace, e)),
        }
        tracing::info!(function = %name, namespace, "deployment and service deleted");
        self.settle(name, namespace, |d| d.is_none()).await;
        Ok(())
    }

    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, GatewayError> {
        let cache = self.namespace(namespace).await?;
        let mut functions: Vec<FunctionStatus> = cache
            .deployments
            .state()
            .iter()
            .filter_map(|d| status::status(d))
            .collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(functions)
    }

    async fn status(&self, name: &str, namespace: &str) -> Result<FunctionStatus, GatewayError> {
        let deployment = self.cached(name, namespace).await?;
        status::status(&deployment).ok_or_else(|| not_found(name, namespace))
    }

    async fn scale(&self, name: &str, namespace: &str, replicas: u64) -> Result<(), GatewayError> {
        let replicas = i32::try_from(replicas)
            .map_err(|_| GatewayError::BadRequest(format!("{replicas} replicas is too many")))?;
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        match self
            .deployments(namespace)
            .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if api_status(&e) == Some(404) => return Err(not_found(name, namespace)),
            Err(e) => return Err(api_error("patch", "deployments/scale", namespace, e)),
        }
        tracing::info!(function = %name, namespace, replicas, "scaled");
        self.settle(name, namespace, |d| {
            d.is_some_and(|d| status::desired_replicas(d) == replicas)
        })
        .await;
        Ok(())
    }

    async fn namespaces(&self) -> Result<Vec<String>, GatewayError> {
        Ok(self.cache.namespaces())
    }

    async fn invoke(
        &self,
        name: &str,
        namespace: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let cache = self.namespace(namespace).await?;
        if cache.deployment(name, namespace).is_none() {
            return Err(not_found(name, namespace));
        }
        let addr = match self.pick(&Self::addresses(&cache, name, namespace)) {
            Some(addr) => addr,
            None => self.wait_for_endpoint(&cache, name, namespace).await?,
        };
        self.proxy.forward(name, addr, request).await
    }

    async fn secrets(&self, namespace: &str) -> Result<Vec<Secret>, GatewayError> {
        secrets::list(&self.client, namespace).await
    }

    async fn create_secret(&self, secret: Secret) -> Result<(), GatewayError> {
        secrets::create(&self.client, secret).await
    }

    async fn update_secret(&self, secret: Secret) -> Result<(), GatewayError> {
        secrets::update(&self.client, secret).await
    }

    async fn delete_secret(&self, name: &str, namespace: &str) -> Result<(), GatewayError> {
        secrets::delete(&self.client, name, namespace).await
    }

    async fn logs(&self, query: LogQuery) -> Result<LogStream, GatewayError> {
        self.cached(&query.name, &query.namespace).await?;
        logs::stream(&self.client, query, self.cancel.child_token()).await
    }

    async fn shutdown(&self) {
        // Functions keep running in the cluster; only the watches stop.
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_functions_start_at_their_minimum() {
        let mut d = FunctionDeployment {
            service: "f".into(),
            ..Default::default()
        };
        assert_eq!(initial_replicas(&d), 1);
        d.labels = Some([(SCALE_MIN_LABEL.to_owned(), "3".to_owned())].into());
        assert_eq!(initial_replicas(&d), 3);
        d.labels = Some([(SCALE_MIN_LABEL.to_owned(), "0".to_owned())].into());
        assert_eq!(initial_replicas(&d), 1);
    }
}
