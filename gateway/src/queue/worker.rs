//! The queue worker: takes requests from a [`Queue`], invokes `/function/NAME` on the gateway,
//! retries (durably, through the queue) connection errors and the retryable codes with
//! exponential backoff, full jitter and `Retry-After`, dead-letters what keeps failing, keeps
//! long calls leased, and posts each final result to `X-Callback-Url`.
//!
//! Per-function overrides come from annotations, as in OpenFaaS:
//! `com.openfaas.retry.attempts`, `com.openfaas.retry.codes` (e.g. `429,503`),
//! `com.openfaas.retry.min_wait` and `com.openfaas.retry.max_wait` (e.g. `5s`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::config::parse_duration;
use tributary_connector_sdk::invoker::{exponential, full_jitter, retry_after};
use tributary_connector_sdk::{
    ConnectorMetrics, Controller, ControllerConfig, RETRYABLE_STATUS, TopicMap,
};

use super::{DeadLetterRecord, Leased, Queue, now_ms};

/// Queue worker settings (OpenFaaS queue-worker names).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The gateway whose `/function/NAME` is called.
    pub gateway_url: String,
    /// Requests in flight at once (`max_inflight`, default 50).
    pub max_inflight: usize,
    /// Attempts before dead-lettering (`max_retry_attempts`, default 10).
    pub max_retry_attempts: u32,
    /// First retry wait (`initial_retry_wait`, default 10s), doubling per attempt.
    pub initial_retry_wait: Duration,
    /// Longest retry wait (`max_retry_wait`, default 120s).
    pub max_retry_wait: Duration,
    /// Timeout of one call (`upstream_timeout`).
    pub upstream_timeout: Duration,
    /// Attempts to deliver a callback.
    pub callback_attempts: u32,
    /// Basic auth for reading function annotations from `/system/*`.
    pub basic_auth: bool,
    /// Folder of `basic-auth-user` / `basic-auth-password`.
    pub secret_mount_path: std::path::PathBuf,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            gateway_url: "http://127.0.0.1:8080".into(),
            max_inflight: 50,
            max_retry_attempts: 10,
            initial_retry_wait: Duration::from_secs(10),
            max_retry_wait: Duration::from_secs(120),
            upstream_timeout: Duration::from_secs(60),
            callback_attempts: 5,
            basic_auth: false,
            secret_mount_path: "/var/openfaas/secrets".into(),
        }
    }
}

/// Response headers not copied to the callback, besides hop-by-hop ones: the worker sets its own.
const NOT_FORWARDED: [&str; 6] = [
    "content-length",
    "date",
    "x-call-id",
    "x-duration-seconds",
    "x-start-time",
    "x-function-status",
];

/// How one function's failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RetryPolicy {
    attempts: u32,
    codes: Vec<u16>,
    min_wait: Duration,
    max_wait: Duration,
}

impl RetryPolicy {
    fn from_annotations(
        config: &WorkerConfig,
        function: &str,
        annotation: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let mut p = Self {
            attempts: config.max_retry_attempts,
            codes: RETRYABLE_STATUS.to_vec(),
            min_wait: config.initial_retry_wait,
            max_wait: config.max_retry_wait,
        };
        let warn = |key: &str, value: &str| {
            tracing::warn!(
                function,
                annotation = key,
                value,
                "invalid retry annotation; using the default"
            );
        };
        if let Some(v) = annotation("com.openfaas.retry.attempts") {
            match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => p.attempts = n,
                _ => warn("com.openfaas.retry.attempts", &v),
            }
        }
        if let Some(v) = annotation("com.openfaas.retry.codes") {
            let codes: Result<Vec<u16>, _> = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::parse::<u16>)
                .collect();
            match codes {
                Ok(c) => p.codes = c,
                Err(_) => warn("com.openfaas.retry.codes", &v),
            }
        }
        if let Some(v) = annotation("com.openfaas.retry.min_wait") {
            match parse_duration(&v) {
                Ok(d) => p.min_wait = d,
                Err(_) => warn("com.openfaas.retry.min_wait", &v),
            }
        }
        if let Some(v) = annotation("com.openfaas.retry.max_wait") {
            match parse_duration(&v) {
                Ok(d) => p.max_wait = d,
                Err(_) => warn("com.openfaas.retry.max_wait", &v),
            }
        }
        p.min_wait = p.min_wait.min(p.max_wait);
        p
    }
}

#[derive(Clone)]
struct WorkerMetrics {
    inflight: IntGauge,
    invocations: IntCounterVec,
    retries: IntCounterVec,
    dead_letters: IntCounterVec,
    callbacks: IntCounterVec,
}

impl WorkerMetrics {
    fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let m = Self {
            inflight: IntGauge::new(
                "queue_worker_inflight",
                "Asynchronous requests being invoked",
            )
            .expect("static metric definition"),
            invocations: counter(
                "queue_worker_invocations_total",
                "Asynchronous invocations by function and status code (0: no answer)",
                &["function_name", "code"],
            ),
            retries: counter(
                "queue_worker_retries_total",
                "Asynchronous requests put back for a retry",
                &["function_name"],
            ),
            dead_letters: counter(
                "queue_worker_dead_letters_total",
                "Asynchronous requests dead-lettered",
                &["function_name"],
            ),
            callbacks: counter(
                "queue_worker_callbacks_total",
                "Callbacks by result",
                &["result"],
            ),
        };
        for c in [
            Box::new(m.inflight.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.invocations.clone()),
            Box::new(m.retries.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.callbacks.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "queue worker metric not registered");
            }
        }
        m
    }
}

/// Retry policies by (function, namespace), and the topic map they were parsed from.
type PolicyCache = (Arc<TopicMap>, HashMap<(String, String), RetryPolicy>);

/// The queue worker.
pub struct Worker {
    queue: Arc<dyn Queue>,
    client: reqwest::Client,
    config: Arc<WorkerConfig>,
    controller: Controller,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Policies parsed from the topic map they were read from.
    policies: std::sync::Mutex<PolicyCache>,
    metrics: WorkerMetrics,
}

/// What one call produced.
struct CallResult {
    status: Option<u16>,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
    error: Option<String>,
    took: Duration,
}

impl Worker {
    /// A worker on `queue`; its metrics are registered in `registry`.
    pub fn new(queue: Arc<dyn Queue>, config: WorkerConfig, registry: &Registry) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.upstream_timeout)
            .pool_max_idle_per_host(config.max_inflight.max(8))
            .tcp_nodelay(true)
            .user_agent(concat!(
                "tributary-queue-worker/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_default();
        let controller_config = ControllerConfig {
            gateway_url: config.gateway_url.trim_end_matches('/').to_owned(),
            basic_auth: config.basic_auth,
            secret_mount_path: config.secret_mount_path.clone(),
            rebuild_interval: Duration::from_secs(10),
            ..ControllerConfig::default()
        };
        Self {
            queue,
            client,
            controller: Controller::new(Arc::new(controller_config), ConnectorMetrics::new()),
            last_refresh: tokio::sync::Mutex::new(None),
            policies: std::sync::Mutex::new((Arc::default(), HashMap::new())),
            metrics: WorkerMetrics::register(registry),
            config: Arc::new(config),
        }
    }

    /// Works until `cancel` fires, then lets calls in flight finish.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(
            backend = self.queue.backend(),
            gateway_url = %self.config.gateway_url,
            max_inflight = self.config.max_inflight,
            max_retry_attempts = self.config.max_retry_attempts,
            "queue worker started"
        );
        if let Err(e) = self.controller.sync().await {
            tracing::warn!(error = %e, "cannot read function annotations yet; default retry policy until the gateway answers");
        }
        let refresh = {
            let controller = self.controller.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { controller.run(cancel).await })
        };
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.config.max_inflight));
        let mut tasks = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = cancel.cancelled() => break,
            };
            while tasks.try_join_next().is_some() {}
            match this.queue.lease(&cancel).await {
                Ok(Some(leased)) => {
                    let worker = this.clone();
                    tasks.spawn(async move {
                        worker.process(leased).await;
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot take requests from the queue; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = cancel.cancelled() => break,
                    }
                }
            }
        }
        while tasks.try_join_next().is_some() {}
        tracing::info!(
            in_flight = tasks.len(),
            "queue worker stopping; finishing calls in flight"
        );
        while tasks.join_next().await.is_some() {}
        let _ = refresh.await;
        tracing::info!("queue worker stopped");
    }

    /// The policy of a function from the current topic map, parsed once per map version.
    fn cached_policy(&self, function: &str, namespace: &str) -> Option<RetryPolicy> {
        let map = self.controller.topic_map();
        let mut cache = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&cache.0, &map) {
            *cache = (map.clone(), HashMap::new());
        }
        let key = (function.to_owned(), namespace.to_owned());
        if let Some(p) = cache.1.get(&key) {
            return Some(p.clone());
        }
        let info = map
            .functions()
            .iter()
            .find(|f| f.name == function && f.namespace == namespace)?;
        let policy = RetryPolicy::from_annotations(&self.config, function, |key| {
            info.annotation(key).map(str::to_owned)
        });
        cache.1.insert(key, policy.clone());
        Some(policy)
    }

    /// The retry policy of a function, from its annotations. A function missing from the
    /// cached list (deployed since the last refresh) triggers a refresh, at most once a second.
    async fn policy(&self, function: &str, namespace: &str) -> RetryPolicy {
        if let Some(p) = self.cached_policy(function, namespace) {
            return p;
        }
        {
            let mut last = self.last_refresh.lock().await;
            if last.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                *last = Some(Instant::now());
                if let Err(e) = self.controller.sync().await {
                    tracing::debug!(error = %e, "cannot refresh function annotations");
                }
            }
        }
        self.cached_policy(function, namespace)
            .unwrap_or_else(|| RetryPolicy::from_annotations(&self.config, function, |_| None))
    }

    async fn call(&self, leased: &Leased) -> CallResult {
        let r = &leased.request;
        let url = format!(
            "{}/function/{}.{}{}",
            self.config.gateway_url.trim_end_matches('/'),
            r.function,
            r.namespace,
            r.path
        );
        let method =
            reqwest::Method::from_bytes(r.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut builder = self.client.request(method, url);
        for (k, v) in &r.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder = builder.header("X-Call-Id", r.call_id.as_str());
        let started = Instant::now();
        let call = builder.body(r.body.clone()).send();
        tokio::pin!(call);
        // Keep the request leased for as long as the call runs.
        let mut tick = tokio::time::interval(self.queue.lease_refresh());
        tick.tick().await;
        let response = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = tick.tick() => {
                    if let Err(e) = leased.lease.extend().await {
                        tracing::warn!(call_id = %r.call_id, error = %e, "could not extend the lease");
                    }
                }
            }
        };
        match response {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                match resp.bytes().await {
                    Ok(body) => CallResult {
                        status: Some(status),
                        headers,
                        body,
                        error: None,
                        took: started.elapsed(),
                    },
                    Err(e) => CallResult {
                        status: None,
                        headers,
                        body: bytes::Bytes::new(),
                        error: Some(format!("reading the answer failed: {e}")),
                        took: started.elapsed(),
                    },
                }
            }
            Err(e) => CallResult {
                status: None,
                headers: reqwest::header::HeaderMap::new(),
                body: bytes::Bytes::new(),
                error: Some(format!("{e}")),
                took: started.elapsed(),
            },
        }
    }

    async fn process(&self, leased: Leased) {
        self.metrics.inflight.inc();
        let r = &leased.request;
        let label = format!("{}.{}", r.function, r.namespace);
        let policy = self.policy(&r.function, &r.namespace).await;
        let result = self.call(&leased).await;
        self.metrics
            .invocations
            .with_label_values(&[label.as_str(), &result.status.unwrap_or(0).to_string()])
            .inc();
        let retryable = result.status.is_none_or(|s| policy.codes.contains(&s));
        let outcome = if retryable && leased.attempt < policy.attempts {
            let delay = retry_after(&result.headers)
                .unwrap_or_else(|| {
                    full_jitter(exponential(
                        leased.attempt,
                        policy.min_wait,
                        policy.max_wait,
                    ))
                })
                .min(policy.max_wait);
            tracing::info!(
                call_id = %r.call_id, function = %label, attempt = leased.attempt, status = ?result.status,
                error = ?result.error, retry_in = ?delay, "asynchronous call failed; retrying"
            );
            self.metrics
                .retries
                .with_label_values(&[label.as_str()])
                .inc();
            leased.lease.retry(delay).await
        } else {
            if r.callback_url.is_some() {
                self.callback(r, &result).await;
            }
            if retryable {
                let reason = result
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("function answered {}", result.status.unwrap_or(0)));
                tracing::warn!(call_id = %r.call_id, function = %label, attempts = leased.attempt, %reason, "asynchronous call dead-lettered");
                self.metrics
                    .dead_letters
                    .with_label_values(&[label.as_str()])
                    .inc();
                leased
                    .lease
                    .dead_letter(DeadLetterRecord {
                        call_id: r.call_id.clone(),
                        function: r.function.clone(),
                        namespace: r.namespace.clone(),
                        status: result.status,
                        reason: format!("{reason} (gave up after {} attempts)", leased.attempt),
                        attempts: leased.attempt,
                        failed_at_ms: now_ms(),
                        body_bytes: r.body.len(),
                    })
                    .await
            } else {
                tracing::info!(
                    call_id = %r.call_id, function = %label, status = ?result.status, attempts = leased.attempt,
                    duration_ms = result.took.as_millis() as u64, "asynchronous call done"
                );
                leased.lease.ack().await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(call_id = %r.call_id, error = %e, "could not record the outcome; the request will be delivered again");
        }
        self.metrics.inflight.dec();
    }

    /// POSTs the result to `X-Callback-Url`, retrying with backoff.
    async fn callback(&self, r: &super::QueuedRequest, result: &CallResult) {
        let Some(url) = &r.callback_url else { return };
        for attempt in 1..=self.config.callback_attempts {
            let mut builder = self.client.post(url);
            for (name, value) in &result.headers {
                if !NOT_FORWARDED.contains(&name.as_str())
                    && !crate::proxy::is_hop_by_hop(name.as_str())
                {
                    builder = builder.header(name, value);
                }
            }
            let sent = builder
                .header("X-Call-Id", r.call_id.as_str())
                .header("X-Function-Name", r.function.as_str())
                .header(
                    "X-Function-Status",
                    result.status.unwrap_or(502).to_string(),
                )
                .header(
                    "X-Duration-Seconds",
                    format!("{:.6}", result.took.as_secs_f64()),
                )
                .body(result.body.clone())
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    self.metrics
                        .callbacks
                        .with_label_values(&["delivered"])
                        .inc();
                    return;
                }
                Ok(resp) => {
                    tracing::warn!(call_id = %r.call_id, %url, status = %resp.status(), attempt, "callback refused")
                }
                Err(e) => {
                    tracing::warn!(call_id = %r.call_id, %url, error = %e, attempt, "callback failed")
                }
            }
            if attempt < self.config.callback_attempts {
                tokio::time::sleep(full_jitter(exponential(
                    attempt,
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                )))
                .await;
            }
        }
        tracing::error!(call_id = %r.call_id, %url, "callback not delivered; giving up");
        self.metrics.callbacks.with_label_values(&["failed"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_override_the_retry_policy() {
        let config = WorkerConfig::default();
        let a: HashMap<&str, &str> = HashMap::from([
            ("com.openfaas.retry.attempts", "3"),
            ("com.openfaas.retry.codes", "429, 503"),
            ("com.openfaas.retry.min_wait", "500ms"),
            ("com.openfaas.retry.max_wait", "5s"),
        ]);
        let p = RetryPolicy::from_annotations(&config, "f", |k| a.get(k).map(|v| (*v).to_owned()));
        assert_eq!(p.attempts, 3);
        assert_eq!(p.codes, vec![429, 503]);
        assert_eq!(p.min_wait, Duration::from_millis(500));
        assert_eq!(p.max_wait, Duration::from_secs(5));
        let bad: HashMap<&str, &str> = HashMap::from([("com.openfaas.retry.attempts", "many")]);
        let p =
            RetryPolicy::from_annotations(&config, "f", |k| bad.get(k).map(|v| (*v).to_owned()));
        assert_eq!(p.attempts, 10);
        assert_eq!(p.codes, RETRYABLE_STATUS.to_vec());
    }
}
