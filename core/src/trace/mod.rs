//! W3C trace context and OpenTelemetry spans. Every component continues the trace a request or
//! message carries in `traceparent` (or starts one) and passes its own span on; spans are
//! exported over OTLP/HTTP (JSON) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and not at all
//! otherwise (the default).
//!
//! ```
//! use tributary_core::trace::TraceContext;
//! let incoming = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
//! let mine = incoming.child();
//! assert_eq!(mine.trace_id, incoming.trace_id);
//! assert!(mine.header().starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
//! ```

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

mod context;

pub use context::{TRACEPARENT, TRACESTATE, TraceContext, is_trace_context};

/// Spans waiting for export; past this, new spans are dropped (and counted in the log).
const QUEUE: usize = 4096;
/// Spans per export request.
const BATCH: usize = 512;
/// How often spans are exported.
const EVERY: Duration = Duration::from_secs(1);

/// What a span does, as OTLP numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Inside a component.
    Internal = 1,
    /// Serving a request.
    Server = 2,
    /// Making a request.
    Client = 3,
    /// Handling a message.
    Consumer = 5,
}

/// A span being timed; exported when it ends (on [`ActiveSpan::end`] or drop).
pub struct ActiveSpan {
    tracer: Tracer,
    name: String,
    kind: SpanKind,
    context: TraceContext,
    parent: Option<u64>,
    start: SystemTime,
    attributes: Vec<(String, String)>,
    error: Option<String>,
    ended: bool,
}

impl ActiveSpan {
    /// This span's context, for `traceparent` and child spans.
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Adds an attribute.
    pub fn attr(&mut self, key: &str, value: impl Into<String>) {
        if self.tracer.enabled() {
            self.attributes.push((key.to_owned(), value.into()));
        }
    }

    /// Marks the span failed.
    pub fn fail(&mut self, error: impl Into<String>) {
        self.error = Some(error.into());
    }

    /// Ends the span.
    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let Some(tx) = &self.tracer.inner else {
            return;
        };
        let nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                .to_string()
        };
        let mut span = json!({
            "traceId": format!("{:032x}", self.context.trace_id),
            "spanId": format!("{:016x}", self.context.span_id),
            "name": self.name,
            "kind": self.kind as u8,
            "startTimeUnixNano": nanos(self.start),
            "endTimeUnixNano": nanos(SystemTime::now()),
            "attributes": self.attributes.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
            "status": match &self.error {
                Some(e) => json!({"code": 2, "message": e}),
                None => json!({"code": 1}),
            },
        });
        if let Some(p) = self.parent {
            span["parentSpanId"] = json!(format!("{p:016x}"));
        }
        if tx.spans.try_send(span).is_err() {
            tracing::debug!("span export queue full: span dropped");
        }
    }
}

impl Drop for ActiveSpan {
    fn drop(&mut self) {
        self.finish();
    }
}

struct Exporter {
    spans: mpsc::Sender<Value>,
    /// Asks the exporter to send what it holds now; answered when sent.
    flushes: mpsc::Sender<oneshot::Sender<()>>,
}

/// Starts spans and exports them (or only computes their contexts, when disabled); cheap to
/// clone.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Exporter>>,
}

impl Tracer {
    /// A tracer that exports nothing: contexts are still computed and passed on.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A tracer exporting to an OTLP/HTTP endpoint (`http://collector:4318`; `/v1/traces` is
    /// added unless given) as `service`. Needs a Tokio runtime. Export failures are logged and
    /// the spans dropped.
    pub fn otlp(endpoint: &str, service: &str) -> Result<Self, reqwest::Error> {
        let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (flushes, flush_rx) = mpsc::channel(4);
        tokio::spawn(export(
            client,
            url.clone(),
            service.to_owned(),
            rx,
            flush_rx,
        ));
        tracing::info!(%url, service, "exporting OpenTelemetry spans over OTLP/HTTP");
        Ok(Self {
            inner: Some(Arc::new(Exporter { spans: tx, flushes })),
        })
    }

    /// Sends the spans that ended so far, waiting at most `limit` (at shutdown, so the last
    /// second's spans are not lost).
    pub async fn flush(&self, limit: Duration) {
        let Some(exporter) = &self.inner else {
            return;
        };
        let (done, sent) = oneshot::channel();
        if exporter.flushes.send(done).await.is_ok() {
            let _ = tokio::time::timeout(limit, sent).await;
        }
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts a span continuing `parent` (its child), or a new trace.
    pub fn start(
        &self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&TraceContext>,
    ) -> ActiveSpan {
        ActiveSpan {
            tracer: self.clone(),
            name: if self.enabled() {
                name.into()
            } else {
                String::new()
            },
            kind,
            context: parent.map_or_else(TraceContext::new_root, TraceContext::child),
            parent: parent.map(|p| p.span_id),
            start: SystemTime::now(),
            attributes: Vec::new(),
            error: None,
            ended: false,
        }
    }
}

/// Sends batches of spans every [`EVERY`] until every sender is gone.
async fn export(
    client: reqwest::Client,
    url: String,
    service: String,
    mut rx: mpsc::Receiver<Value>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    loop {
        let deadline = tokio::time::sleep(EVERY);
        tokio::pin!(deadline);
        let open = loop {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= BATCH {
                            break true;
                        }
                    }
                    None => break false,
                },
                () = &mut deadline => break true,
                Some(done) = flushes.recv() => {
                    waiting.push(done);
                    // Everything that ended before the flush was asked for goes now.
                    while let Ok(s) = rx.try_recv() {
                        batch.push(s);
                    }
                    break true;
                }
            }
        };
        if !batch.is_empty() {
            let body = json!({"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "tributary", "version": env!("CARGO_PKG_VERSION")}, "spans": std::mem::take(&mut batch)}],
            }]});
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(%url, status = %r.status(), "the OTLP endpoint refused spans")
                }
                Err(e) => tracing::warn!(%url, error = %crate::Chain(&e), "cannot export spans"),
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

static GLOBAL: OnceLock<Tracer> = OnceLock::new();

/// Sets the process's tracer once (the CLI does, from `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn set_global(tracer: Tracer) {
    let _ = GLOBAL.set(tracer);
}

/// The process's tracer (disabled unless [`set_global`] set one).
pub fn global() -> &'static Tracer {
    GLOBAL.get_or_init(Tracer::disabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flush_sends_the_ended_spans_at_once_as_otlp_json() {
        let got: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let store = got.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let store = store.clone();
                async move {
                    store.lock().expect("lock").push(body);
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tracer =
            Tracer::otlp(&format!("http://127.0.0.1:{port}"), "test-service").expect("tracer");
        let parent = TraceContext::new_root();
        let mut span = tracer.start("work", SpanKind::Consumer, Some(&parent));
        span.attr("k", "v");
        span.fail("it broke");
        let context = span.context();
        span.end();
        let started = std::time::Instant::now();
        tracer.flush(Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < EVERY,
            "flushed without waiting for the interval"
        );
        let bodies = got.lock().expect("lock").clone();
        assert_eq!(bodies.len(), 1);
        let rs = &bodies[0]["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "test-service"
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], format!("{:032x}", parent.trace_id));
        assert_eq!(s["spanId"], format!("{:016x}", context.span_id));
        assert_eq!(s["parentSpanId"], format!("{:016x}", parent.span_id));
        assert_eq!(
            (s["name"].as_str(), s["kind"].as_u64()),
            (Some("work"), Some(5))
        );
        assert_eq!(s["attributes"][0]["key"], "k");
        assert_eq!(
            (
                s["status"]["code"].as_u64(),
                s["status"]["message"].as_str()
            ),
            (Some(2), Some("it broke"))
        );
    }

    #[test]
    fn children_keep_the_trace_and_roots_start_one() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(TraceContext::new_root().trace_id, root.trace_id);
        let span = Tracer::disabled().start("x", SpanKind::Internal, Some(&root));
        assert_eq!(span.context().trace_id, root.trace_id);
        assert_eq!(span.parent, Some(root.span_id));
        assert!(TraceContext::parse(&span.context().header()).is_some());
    }
}
