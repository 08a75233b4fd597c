//! What happens to a failed delivery under each [`RetryPolicy`]: held and tried again
//! ([`RetryPolicy::UntilDelivered`]), or handed back to the broker with a delay
//! ([`RetryPolicy::Redeliver`]).

use std::sync::Arc;
use std::time::Duration;

use tributary_core::retry::{RetrySettings, retry_after};

use crate::dispatch::Shared;
use crate::invoker::{Delivery, InvocationOutcome, Request};
use crate::options::FunctionOptions;
#[cfg(doc)]
use crate::source::RetryPolicy;

/// [`RetryPolicy::UntilDelivered`]: invokes the functions that failed again, with backoff,
/// until every one is delivered or shutdown interrupts (the message is then handed back).
pub(crate) async fn hold_until_delivered(
    shared: &Shared,
    req: &Request<'_>,
    targets: &[(String, Arc<FunctionOptions>)],
    outcomes: &mut [InvocationOutcome],
) {
    let cancel = &shared.cancel;
    let mut round = 1u32;
    while outcomes.iter().any(|o| o.delivery == Delivery::Failed) {
        round = round.saturating_add(1);
        let wait = outcomes
            .iter()
            .zip(targets)
            .filter(|(o, _)| o.delivery == Delivery::Failed)
            .map(|(_, (_, t))| t.retry.backoff(round, None))
            .max()
            .unwrap_or_default();
        for o in outcomes.iter().filter(|o| o.delivery == Delivery::Failed) {
            tracing::warn!(
                function = %o.function, topic = %o.topic, status = o.status, error = o.error.as_deref(),
                round, ?wait, "delivery failed and there is no dead-letter destination: holding the message (and the ones behind it) and trying again"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => {
                for o in outcomes.iter_mut().filter(|o| o.delivery == Delivery::Failed) {
                    o.delivery = Delivery::Interrupted;
                }
                return;
            }
        }
        for (o, (_, t)) in outcomes.iter_mut().zip(targets) {
            if o.delivery == Delivery::Failed {
                let attempts = o.attempts;
                *o = shared
                    .invoker
                    .invoke(&o.function, req, t, t.retry.max_retries(), cancel)
                    .await;
                o.attempts = o.attempts.saturating_add(attempts);
            }
        }
    }
}

/// [`RetryPolicy::Redeliver`]: how long the broker should wait before redelivering, or `None`
/// when the message is to be dead-lettered (a permanent failure, or a function's attempts used
/// up).
pub(crate) fn redeliver_after(
    outcomes: &[InvocationOutcome],
    settings: &[Arc<RetrySettings>],
    delivery_count: u32,
) -> Option<Duration> {
    let failed: Vec<_> = outcomes
        .iter()
        .zip(settings)
        .filter(|(o, _)| o.delivery == Delivery::Failed)
        .collect();
    if failed.is_empty()
        || failed
            .iter()
            .any(|(o, s)| !o.retryable || delivery_count >= s.attempts)
    {
        return None;
    }
    failed
        .iter()
        .map(|(o, s)| s.backoff(delivery_count, retry_after(&o.headers)))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn failed(
        status: u16,
        retryable: bool,
        retry_after: Option<&'static str>,
    ) -> InvocationOutcome {
        let mut headers = http::HeaderMap::new();
        if let Some(ra) = retry_after {
            headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static(ra),
            );
        }
        InvocationOutcome {
            function: "f".into(),
            topic: "t".into(),
            delivery: Delivery::Failed,
            status: Some(status),
            body: bytes::Bytes::new(),
            headers,
            error: None,
            duration: Duration::ZERO,
            attempts: 1,
            retryable,
            context: Arc::new(BTreeMap::new()),
        }
    }

    #[test]
    fn redelivery_follows_each_functions_attempts_and_retry_after() {
        let s = Arc::new(RetrySettings::new(
            3,
            Duration::from_millis(10),
            Duration::from_secs(5),
        ));
        let settings = [s.clone()];
        let wait = redeliver_after(&[failed(503, true, Some("2"))], &settings, 1);
        assert_eq!(wait, Some(Duration::from_secs(2)));
        assert!(redeliver_after(&[failed(503, true, None)], &settings, 2).is_some());
        assert_eq!(
            redeliver_after(&[failed(503, true, None)], &settings, 3),
            None,
            "the third delivery was the last attempt"
        );
        assert_eq!(
            redeliver_after(&[failed(400, false, None)], &settings, 1),
            None
        );
    }
}
