//! One message's delivery: filters, queues into batches or invokes its functions, applies the
//! retry policy and settles it (ack, nack or dead letter), in a span of its own.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tributary_core::retry::RetrySettings;
use tributary_core::trace::{SpanKind, TraceContext};

use crate::batch::{Batcher, ItemParts};
use crate::dispatch::{Chosen, Shared, Target, UNKNOWN_FUNCTION_REFRESH, incoming_trace};
use crate::invoker::{Delivery, Request};
use crate::message::{DeadLetter, FailedInvocation, Message};
use crate::options::{FunctionOptions, select};
use crate::policy::{hold_until_delivered, redeliver_after};
use crate::source::{Admitted, RetryPolicy};

/// Releases a delivery's key and counts it nacked if the task ended without settling it.
struct Settling {
    shared: Arc<Shared>,
    topic: String,
    key: Option<(String, mpsc::UnboundedSender<String>)>,
    settled: bool,
}

impl Drop for Settling {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.metrics.nacked(&self.topic);
        }
        if let Some((key, done)) = self.key.take() {
            let _ = done.send(key);
        }
    }
}

/// Delivers one message to its targets and settles it: `chosen` when admission already
/// filtered and queued it into batches, else `targets` (filtered here, batch functions queued
/// through `batchers`).
pub(crate) async fn deliver(
    shared: Arc<Shared>,
    a: Admitted,
    targets: Vec<Target>,
    key: Option<(String, mpsc::UnboundedSender<String>)>,
    batchers: HashMap<String, Batcher>,
    chosen: Option<Vec<Chosen>>,
) {
    let Admitted { message, permit } = a;
    let Message {
        topic,
        payload,
        headers,
        context,
        mut ack,
        delivery_count,
        call,
        event,
        key: order_key,
        ..
    } = message;
    let mut guard = Settling {
        shared: shared.clone(),
        topic,
        key,
        settled: false,
    };
    let topic = guard.topic.clone();
    if shared.print_request_body {
        tracing::info!(%topic, body = %String::from_utf8_lossy(&payload), "request");
    }
    let incoming = incoming_trace(&headers);
    let mut targets: Vec<Chosen> = match chosen {
        Some(c) => c,
        None => {
            let mut known = Vec::with_capacity(targets.len());
            for (function, options) in targets {
                let options = match options {
                    Some(o) => o,
                    None => Arc::new(unknown_function_options(&shared, &function).await),
                };
                known.push((function, options));
            }
            let selected = select(
                known,
                &topic,
                &payload,
                &headers,
                &shared.metrics,
                &shared.reported,
            );
            let trace = incoming.unwrap_or_else(TraceContext::new_root);
            selected
                .into_iter()
                .map(|(f, o)| {
                    let rx = batchers.get(&f).map(|b| {
                        b.queue(ItemParts {
                            id: event.id.as_deref(),
                            key: order_key.as_deref(),
                            topic: &topic,
                            headers: &headers,
                            payload: &payload,
                            context: &context,
                            trace,
                        })
                    });
                    (f, o, rx)
                })
                .collect()
        }
    };
    if targets.is_empty() {
        tracing::debug!(%topic, "no function's filter matches; acknowledging");
        ack.ack().await;
        shared.metrics.acked(&topic);
        guard.settled = true;
        drop(permit);
        return;
    }
    // The message's trace continues here (or one starts): receive → invoke → acknowledge.
    let tracer = tributary_core::trace::global();
    let mut span = tracer.start("deliver", SpanKind::Consumer, incoming.as_ref());
    if tracer.enabled() {
        span.attr("messaging.destination.name", topic.as_str());
        if let Some(id) = &event.id {
            span.attr("messaging.message.id", id.as_str());
        }
    }
    let req = Request {
        topic: &topic,
        payload: &payload,
        headers: &headers,
        context: &context,
        call: call.as_ref(),
        event: &event,
        trace: span.context(),
    };
    let settings: Vec<Arc<RetrySettings>> =
        targets.iter().map(|(_, o, _)| o.retry.clone()).collect();
    let max_retries = |s: &RetrySettings| match shared.policy {
        RetryPolicy::Redeliver => 0,
        _ => s.max_retries(),
    };
    let (req, shared_ref) = (&req, &shared);
    let mut outcomes = futures::future::join_all(targets.iter_mut().map(|(f, o, batched)| {
        let batched = batched.take();
        let (f, o) = (&*f, &*o);
        async move {
            match batched {
                // A batch function: its batcher calls it and reports this message's part.
                Some(rx) => rx
                    .await
                    .unwrap_or_else(|_| crate::batch::interrupted(f, req)),
                None => {
                    shared_ref
                        .invoker
                        .invoke(f, req, o, max_retries(&o.retry), &shared_ref.cancel)
                        .await
                }
            }
        }
    }))
    .await;
    if shared.policy == RetryPolicy::UntilDelivered {
        // Batchers hold failed items themselves: only direct calls are held here.
        let direct: Vec<(String, Arc<FunctionOptions>)> = targets
            .iter()
            .map(|(f, o, _)| (f.clone(), o.clone()))
            .collect();
        hold_until_delivered(&shared, req, &direct, &mut outcomes).await;
    }
    for o in &outcomes {
        ack.observe(o);
        for s in &shared.subscribers {
            s.response(o);
        }
    }
    let metrics = &shared.metrics;
    let _acknowledging = tracer.start("acknowledge", SpanKind::Internal, Some(&span.context()));
    if outcomes.iter().all(|o| o.delivery == Delivery::Delivered) {
        ack.ack().await;
        metrics.acked(&topic);
    } else if outcomes.iter().any(|o| o.delivery == Delivery::Interrupted) {
        ack.nack(None).await;
        metrics.nacked(&topic);
    } else if let Some(wait) = (shared.policy == RetryPolicy::Redeliver)
        .then(|| redeliver_after(&outcomes, &settings, delivery_count))
        .flatten()
    {
        tracing::debug!(%topic, delivery_count, ?wait, "handing the message back for redelivery");
        ack.nack(Some(wait)).await;
        metrics.nacked(&topic);
    } else {
        let redelivered = shared.policy == RetryPolicy::Redeliver;
        let letter = DeadLetter {
            topic: topic.clone(),
            failures: outcomes
                .iter()
                .filter(|o| o.delivery == Delivery::Failed)
                .map(|o| FailedInvocation {
                    function: o.function.clone(),
                    status: o.status,
                    error: o.error.clone().unwrap_or_default(),
                    attempts: if redelivered {
                        delivery_count
                    } else {
                        o.attempts
                    },
                    retryable: o.retryable,
                })
                .collect(),
        };
        tracing::warn!(%letter, "dead-lettering message");
        span.fail(letter.to_string());
        ack.dead_letter(letter).await;
        metrics.dead_lettered(&topic);
    }
    guard.settled = true;
    drop(permit);
}

/// The options of a function the topic map does not list (yet): refresh it (at most once a
/// second), then the function's own options, or the defaults.
async fn unknown_function_options(shared: &Shared, function: &str) -> FunctionOptions {
    shared.sync.refresh(UNKNOWN_FUNCTION_REFRESH).await;
    shared
        .options(&shared.sync.topic_map(), function)
        .unwrap_or_else(|| {
            FunctionOptions::defaults(
                &shared.defaults,
                shared.cloudevents,
                function,
                &shared.metrics,
            )
        })
}
