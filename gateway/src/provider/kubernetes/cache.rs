//! Watch-backed caches (kube-runtime reflectors): the functions' Deployments and Endpoints of
//! every function namespace, and the namespaces labelled `openfaas: "1"`. Reads never call the
//! API server; changes made by anyone (`kubectl scale`, `kubectl delete`) arrive by watch.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Namespace};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tributary_core::Chain;

use super::objects::FUNCTION_LABEL;
use crate::error::GatewayError;

/// The label faas-netes looks for on extra function namespaces.
pub(super) const NAMESPACE_LABEL: &str = "openfaas=1";
/// How long a read waits for a namespace's first list before it fails.
const READY_WAIT: Duration = Duration::from_secs(5);

/// The cached objects of one function namespace.
pub(super) struct NamespaceCache {
    /// Deployments labelled `faas_function`.
    pub(super) deployments: Store<Deployment>,
    /// Endpoints (one per function Service).
    pub(super) endpoints: Store<Endpoints>,
    cancel: CancellationToken,
}

impl NamespaceCache {
    /// One function's Deployment, if cached.
    pub(super) fn deployment(&self, name: &str, namespace: &str) -> Option<Arc<Deployment>> {
        self.deployments
            .get(&ObjectRef::new(name).within(namespace))
            .filter(|d| d.metadata.deletion_timestamp.is_none())
    }

    /// One Service's Endpoints, if cached.
    pub(super) fn endpoints(&self, name: &str, namespace: &str) -> Option<Arc<Endpoints>> {
        self.endpoints.get(&ObjectRef::new(name).within(namespace))
    }

    async fn ready(&self, namespace: &str) -> Result<(), GatewayError> {
        let both = async {
            let _ = self.deployments.wait_until_ready().await;
            let _ = self.endpoints.wait_until_ready().await;
        };
        tokio::time::timeout(READY_WAIT, both)
            .await
            .map_err(|_| GatewayError::Kubernetes {
                verb: "list",
                resource: "deployments",
                namespace: namespace.to_owned(),
                hint: "the watch has not listed them yet: the API server could not be reached or refused (see the gateway's log); try again".to_owned(),
                source: "cache not ready".into(),
            })
    }
}

impl Drop for NamespaceCache {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Every cache the provider reads from.
pub(super) struct Cache {
    client: Client,
    default_namespace: String,
    namespaces: RwLock<BTreeMap<String, Arc<NamespaceCache>>>,
    labelled: Store<Namespace>,
    cancel: CancellationToken,
    /// The runtime the cache was started on: watches run there, whichever HTTP worker's
    /// request asked for a namespace first (a worker's runtime ends with the server).
    runtime: tokio::runtime::Handle,
}

impl Cache {
    /// Starts the watches: the default namespace's objects, and labelled namespaces (each
    /// gets its own watches as it appears).
    pub(super) fn start(
        client: Client,
        default_namespace: String,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let (labelled, writer) = reflector::store::<Namespace>();
        let cache = Arc::new(Self {
            client: client.clone(),
            default_namespace: default_namespace.clone(),
            namespaces: RwLock::new(BTreeMap::new()),
            labelled,
            cancel: cancel.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        cache.ensure(&default_namespace);
        let api: Api<Namespace> = Api::all(client);
        let config = watcher::Config::default().labels(NAMESPACE_LABEL);
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        let weak = Arc::downgrade(&cache);
        tokio::spawn(drive(
            stream,
            "namespaces",
            "(cluster scope)".to_owned(),
            cancel,
            move |event| {
                if let (Some(cache), watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) =
                    (weak.upgrade(), event)
                    && let Some(name) = ns.metadata.name.as_deref()
                {
                    cache.ensure(name);
                }
            },
        ));
        cache
    }

    /// The default namespace and those labelled `openfaas: "1"` (not being deleted), sorted.
    pub(super) fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .labelled
            .state()
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter_map(|ns| ns.metadata.name.clone())
            .collect();
        names.push(self.default_namespace.clone());
        names.sort();
        names.dedup();
        names
    }

    /// Whether `namespace` may hold functions.
    fn allowed(&self, namespace: &str) -> bool {
        namespace == self.default_namespace
            || self
                .labelled
                .get(&ObjectRef::new(namespace))
                .is_some_and(|ns| ns.metadata.deletion_timestamp.is_none())
    }

    /// A function namespace's cache without waiting (`None` when not a function namespace or
    /// not watched yet).
    pub(super) fn peek(&self, namespace: &str) -> Option<Arc<NamespaceCache>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .cloned()
    }

    /// A function namespace's cache, watched from now on; 400 for other namespaces.
    pub(super) fn watched(&self, namespace: &str) -> Result<Arc<NamespaceCache>, GatewayError> {
        if !self.allowed(namespace) {
            return Err(GatewayError::BadRequest(format!(
                "namespace {namespace:?} is not a function namespace: use {:?} or label a namespace with openfaas=1",
                self.default_namespace
            )));
        }
        Ok(self.ensure(namespace))
    }

    /// A function namespace's cache, once it has listed its objects.
    pub(super) async fn get(&self, namespace: &str) -> Result<Arc<NamespaceCache>, GatewayError> {
        let cache = self.watched(namespace)?;
        cache.ready(namespace).await?;
        Ok(cache)
    }

    /// Starts watching a namespace's Deployments and Endpoints unless already watched.
    fn ensure(&self, namespace: &str) -> Arc<NamespaceCache> {
        if let Some(c) = self.peek(namespace) {
            return c;
        }
        let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        map.entry(namespace.to_owned())
            .or_insert_with(|| {
                tracing::info!(namespace, "watching function deployments and endpoints");
                let _on_main = self.runtime.enter();
                let cancel = self.cancel.child_token();
                let deployments = watch(
                    Api::namespaced(self.client.clone(), namespace),
                    watcher::Config::default().labels(FUNCTION_LABEL),
                    "deployments",
                    namespace,
                    &cancel,
                );
                let endpoints = watch(
                    Api::namespaced(self.client.clone(), namespace),
                    watcher::Config::default(),
                    "endpoints",
                    namespace,
                    &cancel,
                );
                Arc::new(NamespaceCache {
                    deployments,
                    endpoints,
                    cancel,
                })
            })
            .clone()
    }
}

/// A reflector over `api`, driven by a task until `cancel`.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    resource: &'static str,
    namespace: &str,
    cancel: &CancellationToken,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(drive(
        stream,
        resource,
        format!("in namespace {namespace:?}"),
        cancel.clone(),
        |_| {},
    ));
    store
}

/// Polls a watch stream until `cancel`, logging failures once per run of them (the stream
/// itself backs off and retries).
async fn drive<K, S>(
    stream: S,
    resource: &'static str,
    scope: String,
    cancel: CancellationToken,
    mut on_event: impl FnMut(watcher::Event<K>),
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            None => return,
            Some(Ok(event)) => {
                if failing {
                    tracing::info!(resource, scope, "kubernetes watch recovered");
                    failing = false;
                }
                on_event(event);
            }
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(
                        resource,
                        scope,
                        error = %Chain(&e),
                        "kubernetes: list/watch {resource} {scope} failed; retrying with backoff (check the API server and the gateway's RBAC)"
                    );
                }
                failing = true;
            }
        }
    }
}
