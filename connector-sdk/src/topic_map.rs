//! The topic map (topic → functions) and [`TopicMapSync`], which rebuilds it from the gateway.
//!
//! The sync lists `/system/namespaces`, then `/system/functions?namespace=` for each, reads every
//! function's `topic` annotation and swaps in a new map atomically. When the gateway is down or
//! refuses the credentials it keeps the last good map, logs, and tries again next interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tributary_core::Chain;
use tributary_core::client::{ClientError, GatewayClient};
use tributary_core::model::{DEFAULT_NAMESPACE, FunctionStatus, split_address};

use crate::config::ControllerConfig;
use crate::metrics::ConnectorMetrics;

/// How long one `/system` call of a rebuild may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Topic → function addresses, plus every function seen.
///
/// The map keeps what functions declare (spec, labels, annotations), not their runtime counters
/// (replicas, invocations), so it only changes when a deploy, update or removal changes it.
#[derive(Debug, Clone, Default)]
pub struct TopicMap {
    functions: Vec<FunctionStatus>,
    by_topic: HashMap<String, Vec<String>>,
    by_name: HashMap<(String, String), usize>,
}

impl PartialEq for TopicMap {
    fn eq(&self, other: &Self) -> bool {
        self.functions == other.functions && self.by_topic == other.by_topic
    }
}

impl TopicMap {
    /// Builds the map from functions, splitting `topic` annotations on `delimiter`.
    pub fn build(mut functions: Vec<FunctionStatus>, delimiter: &str) -> Self {
        functions.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut by_topic: HashMap<String, Vec<String>> = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, f) in functions.iter_mut().enumerate() {
            if f.namespace.is_empty() {
                f.namespace = DEFAULT_NAMESPACE.to_owned();
            }
            f.invocation_count = 0.0;
            f.replicas = 0;
            f.available_replicas = 0;
            by_name.insert((f.namespace.clone(), f.name.clone()), i);
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
            by_name,
        }
    }

    /// The functions subscribed to `topic`.
    pub fn functions_for(&self, topic: &str) -> &[String] {
        self.by_topic.get(topic).map_or(&[], Vec::as_slice)
    }

    /// The function at `address` (`name` or `name.namespace`), if the gateway listed it.
    pub fn function(&self, address: &str) -> Option<&FunctionStatus> {
        let (name, namespace) = split_address(address);
        self.by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|&i| &self.functions[i])
    }

    /// Every topic some function subscribes to, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.by_topic.keys().cloned().collect();
        t.sort();
        t
    }

    /// Every function the gateway listed.
    pub fn functions(&self) -> &[FunctionStatus] {
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
pub struct TopicMapSync {
    client: GatewayClient,
    delimiter: String,
    rebuild_interval: Duration,
    map: watch::Sender<Arc<TopicMap>>,
    metrics: ConnectorMetrics,
    last_refresh: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl TopicMapSync {
    /// A sync with an empty map; call [`TopicMapSync::sync`] to fill it.
    pub fn new(config: &ControllerConfig, metrics: ConnectorMetrics) -> Result<Self, ClientError> {
        Ok(Self {
            client: GatewayClient::new(&config.gateway_url, config.client_auth(), LIST_TIMEOUT)?,
            delimiter: config.topic_delimiter.clone(),
            rebuild_interval: config.rebuild_interval,
            map: watch::channel(Arc::new(TopicMap::default())).0,
            metrics,
            last_refresh: Arc::default(),
        })
    }

    /// The current map.
    pub fn topic_map(&self) -> Arc<TopicMap> {
        self.map.borrow().clone()
    }

    /// A receiver that sees every new map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TopicMap>> {
        self.map.subscribe()
    }

    /// Lists namespaces and functions once and swaps in the new map.
    pub async fn sync(&self) -> Result<Arc<TopicMap>, ClientError> {
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

    /// Syncs now unless a refresh happened within `min_age` (for a message naming a function
    /// the map does not know yet, e.g. one deployed since the last rebuild).
    pub async fn refresh(&self, min_age: Duration) {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_age) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.sync().await {
            tracing::debug!(error = %Chain(&e), "cannot refresh the topic map");
        }
    }

    async fn fetch(&self) -> Result<Arc<TopicMap>, ClientError> {
        // Gateways without namespace support answer 404: then there is only the default.
        let namespaces = self.client.namespaces().await?.unwrap_or_default();
        let namespaces: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.into_iter().map(Some).collect()
        };
        let mut functions = Vec::new();
        for ns in namespaces {
            let listed = self.client.functions(ns.as_deref()).await?;
            functions.extend(listed.into_iter().map(|mut f| {
                if f.namespace.is_empty() {
                    f.namespace = ns.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
                }
                f
            }));
        }
        Ok(Arc::new(TopicMap::build(functions, &self.delimiter)))
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
                    tracing::warn!(error = %Chain(&e), retry_in = ?wait, "cannot build the topic map yet; no messages are taken until it is built");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(self.rebuild_interval);
        }
    }

    /// Rebuilds the map every `rebuild_interval` until `cancel` fires, keeping the last good
    /// map when the gateway fails.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.rebuild_interval) => {}
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
                    tracing::warn!(error = %Chain(&e), "topic map rebuild failed; keeping the last good map");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tributary_core::model::TOPIC_ANNOTATION;

    fn f(name: &str, ns: &str, topic: Option<&str>) -> FunctionStatus {
        FunctionStatus {
            name: name.into(),
            namespace: ns.into(),
            annotations: topic
                .map(|t| BTreeMap::from([(TOPIC_ANNOTATION.to_owned(), t.to_owned())])),
            ..FunctionStatus::default()
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
        assert_eq!(map.function("b.team-b").map(|f| f.name.as_str()), Some("b"));
        assert_eq!(
            map.function("c.openfaas-fn").map(|f| f.name.as_str()),
            Some("c")
        );
        assert!(map.function("b").is_none());
    }

    #[test]
    fn runtime_counters_do_not_change_the_map() {
        let mut busy = f("a", DEFAULT_NAMESPACE, Some("t"));
        busy.invocation_count = 42.0;
        busy.replicas = 3;
        let a = TopicMap::build(vec![busy], ",");
        let b = TopicMap::build(vec![f("a", "", Some("t"))], ",");
        assert_eq!(a, b);
    }

    #[test]
    fn custom_delimiter() {
        let map = TopicMap::build(vec![f("a", "", Some("x;y"))], ";");
        assert_eq!(map.topics(), ["x", "y"]);
    }
}
