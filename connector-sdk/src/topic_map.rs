//! The topic map (topic → functions) and the controller that rebuilds it from the gateway.
//!
//! The controller lists `/system/namespaces`, then `/system/functions?namespace=` for each, reads
//! every function's `topic` annotation and swaps in a new map atomically. When the gateway is
//! down or refuses the credentials it keeps the last good map, logs, and tries again next interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ControllerConfig;
use crate::metrics::ConnectorMetrics;

/// The namespace whose functions are addressed by bare name.
pub const DEFAULT_NAMESPACE: &str = "openfaas-fn";
/// The annotation naming a function's topics.
pub const TOPIC_ANNOTATION: &str = "topic";

/// Why the topic map could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The gateway could not be reached.
    #[error("gateway {url} is unreachable: {reason}")]
    Unreachable {
        /// What was requested.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The gateway refused the credentials.
    #[error(
        "gateway {url} answered 401 Unauthorized: set basic_auth=true and put basic-auth-user and basic-auth-password in secret_mount_path"
    )]
    Unauthorized {
        /// What was requested.
        url: String,
    },
    /// The gateway answered something else than 200.
    #[error("gateway {url} answered {status}: {body}")]
    Status {
        /// What was requested.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The gateway's JSON could not be read.
    #[error("gateway {url} sent JSON that cannot be read: {reason}")]
    BadJson {
        /// What was requested.
        url: String,
        /// The parse error.
        reason: String,
    },
    /// Basic-auth credentials could not be read.
    #[error("basic_auth is on but {0}")]
    Credentials(#[from] crate::config::SecretError),
}

/// A function as the connector sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FunctionInfo {
    /// Its name.
    pub name: String,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// Its annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl FunctionInfo {
    /// How to address it on `/function/`: `name`, or `name.namespace` outside `openfaas-fn`.
    pub fn address(&self) -> String {
        if self.namespace.is_empty() || self.namespace == DEFAULT_NAMESPACE {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.namespace)
        }
    }

    /// One annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// The topics in the `topic` annotation, split on `delimiter` and trimmed.
    pub fn topics(&self, delimiter: &str) -> Vec<String> {
        self.annotation(TOPIC_ANNOTATION)
            .map(|t| {
                t.split(delimiter)
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Topic → function addresses, plus every function seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMap {
    functions: Vec<FunctionInfo>,
    by_topic: HashMap<String, Vec<String>>,
}

impl TopicMap {
    /// Builds the map from functions, splitting `topic` annotations on `delimiter`.
    pub fn build(mut functions: Vec<FunctionInfo>, delimiter: &str) -> Self {
        functions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut by_topic: HashMap<String, Vec<String>> = HashMap::new();
        for f in &functions {
            for topic in f.topics(delimiter) {
                let entry = by_topic.entry(topic).or_default();
                let address = f.address();
                if !entry.contains(&address) {
                    entry.push(address);
                }
            }
        }
        Self {
            functions,
            by_topic,
        }
    }

    /// The functions subscribed to `topic`.
    pub fn functions_for(&self, topic: &str) -> &[String] {
        self.by_topic.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Every topic some function subscribes to, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.by_topic.keys().cloned().collect();
        t.sort();
        t
    }

    /// Every function the gateway listed.
    pub fn functions(&self) -> &[FunctionInfo] {
        &self.functions
    }

    /// Number of (topic, function) pairs.
    pub fn len(&self) -> usize {
        self.by_topic.values().map(Vec::len).sum()
    }

    /// Whether no function subscribes to anything.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}

/// Keeps the topic map in step with the gateway.
#[derive(Clone)]
pub struct Controller {
    config: Arc<ControllerConfig>,
    client: reqwest::Client,
    map: watch::Sender<Arc<TopicMap>>,
    metrics: ConnectorMetrics,
}

impl Controller {
    /// A controller with an empty map; call [`Controller::sync`] to fill it.
    pub fn new(config: Arc<ControllerConfig>, metrics: ConnectorMetrics) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!(
                "tributary-connector-sdk/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_default();
        Self {
            config,
            client,
            map: watch::channel(Arc::new(TopicMap::default())).0,
            metrics,
        }
    }

    /// The current map.
    pub fn topic_map(&self) -> Arc<TopicMap> {
        self.map.borrow().clone()
    }

    /// A receiver that sees every new map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TopicMap>> {
        self.map.subscribe()
    }

    fn credentials(&self) -> Result<Option<(String, String)>, SyncError> {
        if !self.config.basic_auth {
            return Ok(None);
        }
        Ok(Some(crate::config::read_basic_auth(
            &self.config.secret_mount_path,
        )?))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        credentials: &Option<(String, String)>,
    ) -> Result<Option<T>, SyncError> {
        let url = format!("{}{path}", self.config.gateway_url);
        let mut request = self.client.get(&url);
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| SyncError::Unreachable {
            url: url.clone(),
            reason: crate::invoker::error_chain(&e),
        })?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            401 => return Err(SyncError::Unauthorized { url }),
            status => {
                let body = response.text().await.unwrap_or_default();
                return Err(SyncError::Status {
                    url,
                    status,
                    body: body.chars().take(200).collect(),
                });
            }
        }
        let bytes = response.bytes().await.map_err(|e| SyncError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SyncError::BadJson {
                url,
                reason: e.to_string(),
            })
    }

    /// Lists namespaces and functions once and swaps in the new map.
    pub async fn sync(&self) -> Result<Arc<TopicMap>, SyncError> {
        let result = self.fetch().await;
        match &result {
            Ok(map) => {
                self.metrics.topic_map_rebuilt(map.len(), SystemTime::now());
                let map = map.clone();
                self.map.send_if_modified(|current| {
                    if **current == *map {
                        false
                    } else {
                        *current = map;
                        true
                    }
                });
            }
            Err(_) => self.metrics.topic_map_failed(),
        }
        result
    }

    async fn fetch(&self) -> Result<Arc<TopicMap>, SyncError> {
        let credentials = self.credentials()?;
        // Gateways without namespace support answer 404: then there is only the default.
        let namespaces: Vec<String> = self
            .get_json("/system/namespaces", &credentials)
            .await?
            .unwrap_or_default();
        let namespaces = if namespaces.is_empty() {
            vec![String::new()]
        } else {
            namespaces
        };
        let mut functions = Vec::new();
        for ns in namespaces {
            let path = if ns.is_empty() {
                "/system/functions".to_owned()
            } else {
                format!("/system/functions?namespace={ns}")
            };
            let listed: Vec<FunctionInfo> = self
                .get_json(&path, &credentials)
                .await?
                .unwrap_or_default();
            functions.extend(listed.into_iter().map(|mut f| {
                if f.namespace.is_empty() {
                    f.namespace = if ns.is_empty() {
                        DEFAULT_NAMESPACE.to_owned()
                    } else {
                        ns.clone()
                    };
                }
                f
            }));
        }
        Ok(Arc::new(TopicMap::build(
            functions,
            &self.config.topic_delimiter,
        )))
    }

    /// Syncs until one sync succeeds (backing off from 250 ms to `rebuild_interval`), or until
    /// `cancel` fires; returns whether a map was built.
    pub async fn sync_until_ready(&self, cancel: &CancellationToken) -> bool {
        let mut wait = Duration::from_millis(250);
        loop {
            match self.sync().await {
                Ok(map) => {
                    tracing::info!(
                        topics = ?map.topics(),
                        functions = map.functions().len(),
                        "topic map built"
                    );
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot build the topic map yet; no messages are taken until it is built");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(self.config.rebuild_interval);
        }
    }

    /// Rebuilds the map every `rebuild_interval` until `cancel` fires, keeping the last good
    /// map when the gateway fails.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.rebuild_interval) => {}
            }
            match self.sync().await {
                Ok(map) => {
                    if failing {
                        tracing::info!(topics = ?map.topics(), "gateway is back; topic map rebuilt");
                    }
                    failing = false;
                    tracing::debug!(topics = ?map.topics(), "topic map rebuilt");
                }
                Err(e) => {
                    failing = true;
                    tracing::warn!(error = %e, "topic map rebuild failed; keeping the last good map");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, ns: &str, topic: Option<&str>) -> FunctionInfo {
        FunctionInfo {
            name: name.into(),
            namespace: ns.into(),
            annotations: topic
                .map(|t| BTreeMap::from([(TOPIC_ANNOTATION.to_owned(), t.to_owned())])),
        }
    }

    #[test]
    fn maps_topics_to_addresses_across_namespaces() {
        let map = TopicMap::build(
            vec![
                f("a", DEFAULT_NAMESPACE, Some("payments, refunds")),
                f("b", "team-b", Some("payments")),
                f("c", DEFAULT_NAMESPACE, None),
                f("d", DEFAULT_NAMESPACE, Some(" , ")),
            ],
            ",",
        );
        assert_eq!(map.functions_for("payments"), ["a", "b.team-b"]);
        assert_eq!(map.functions_for("refunds"), ["a"]);
        assert!(map.functions_for("nothing").is_empty());
        assert_eq!(map.topics(), ["payments", "refunds"]);
        assert_eq!(map.len(), 3);
        assert_eq!(map.functions().len(), 4);
    }

    #[test]
    fn custom_delimiter() {
        let map = TopicMap::build(vec![f("a", "", Some("x;y"))], ";");
        assert_eq!(map.topics(), ["x", "y"]);
    }
}
