//! What a function's annotations ask of deliveries to it: retry settings (`com.openfaas.retry.*`),
//! a filter (`com.tributary.filter`) and CloudEvents (`com.tributary.cloudevents`), parsed once
//! per topic map; and the choice, per message, of the functions whose filter it passes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tributary_core::model::FunctionStatus;
use tributary_core::retry::RetrySettings;

use crate::batch::{BATCH_SIZE_ANNOTATION, BATCH_WINDOW_ANNOTATION, BatchSettings};
use crate::event::{CLOUDEVENTS_ANNOTATION, wants_cloudevents};
use crate::filter::{FILTER_ANNOTATION, Filter, FilterError, event_of};
use crate::metrics::{ConnectorMetrics, FunctionMetrics};

/// One function's delivery options.
#[derive(Debug, Clone)]
pub(crate) struct FunctionOptions {
    /// Its retry settings: the connector's, overridden by its annotations.
    pub(crate) retry: Arc<RetrySettings>,
    /// CloudEvents binary mode.
    pub(crate) cloudevents: bool,
    /// Its filter; a bad pattern lets nothing through.
    pub(crate) filter: Option<Result<Filter, FilterError>>,
    /// Its batches, when annotated.
    pub(crate) batch: Option<BatchSettings>,
    /// Why its batch annotations cannot be used (it then gets one message per call).
    pub(crate) batch_error: Option<String>,
    /// Its metric handles.
    pub(crate) metrics: FunctionMetrics,
}

impl FunctionOptions {
    /// The options of `function` (as listed in the topic map as `f`); `cloudevents` is the
    /// connector's default.
    pub(crate) fn of(
        defaults: &RetrySettings,
        cloudevents: bool,
        function: &str,
        f: &FunctionStatus,
        metrics: &ConnectorMetrics,
    ) -> Self {
        let batch = BatchSettings::parse(
            f.annotation(BATCH_SIZE_ANNOTATION),
            f.annotation(BATCH_WINDOW_ANNOTATION),
        );
        Self {
            retry: Arc::new(
                defaults
                    .clone()
                    .with_annotations(function, |k| f.annotation(k)),
            ),
            cloudevents: cloudevents || wants_cloudevents(f.annotation(CLOUDEVENTS_ANNOTATION)),
            filter: f.annotation(FILTER_ANNOTATION).map(Filter::parse),
            batch: batch.as_ref().ok().copied().flatten(),
            batch_error: batch.err(),
            metrics: metrics.function(function),
        }
    }

    /// Options for `function`, which the topic map does not know: the defaults.
    pub(crate) fn defaults(
        defaults: &RetrySettings,
        cloudevents: bool,
        function: &str,
        metrics: &ConnectorMetrics,
    ) -> Self {
        Self {
            retry: Arc::new(defaults.clone()),
            cloudevents,
            filter: None,
            batch: None,
            batch_error: None,
            metrics: metrics.function(function),
        }
    }
}

/// Bad annotations already reported, so each is logged once rather than per message.
#[derive(Default)]
pub(crate) struct Reported(Mutex<HashSet<(String, String)>>);

impl Reported {
    /// Whether `error` of `function` is new (and so worth logging).
    pub(crate) fn first_time(&self, function: &str, error: &impl std::fmt::Display) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((function.to_owned(), error.to_string()))
    }
}

/// Keeps the targets whose filter the message passes; counts the others as filtered.
pub(crate) fn select(
    targets: Vec<(String, Arc<FunctionOptions>)>,
    topic: &str,
    payload: &[u8],
    headers: &[(String, String)],
    metrics: &ConnectorMetrics,
    reported: &Reported,
) -> Vec<(String, Arc<FunctionOptions>)> {
    let mut event: Option<Value> = None;
    targets
        .into_iter()
        .filter(|(function, options)| {
            let pass = match &options.filter {
                None => true,
                Some(Ok(filter)) => filter.matches(event.get_or_insert_with(|| event_of(payload, headers))),
                Some(Err(e)) => {
                    if reported.first_time(function, e) {
                        tracing::error!(function, error = %e, "the function's filter is invalid: it gets no messages until the annotation is fixed");
                    }
                    false
                }
            };
            if !pass {
                metrics.filtered(topic, function);
            }
            pass
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn function(annotations: &[(&str, &str)]) -> FunctionStatus {
        FunctionStatus {
            name: "f".into(),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..FunctionStatus::default()
        }
    }

    #[test]
    fn filters_select_and_bad_ones_let_nothing_through() {
        let defaults = RetrySettings::new(3, Duration::from_millis(1), Duration::from_secs(1));
        let metrics = ConnectorMetrics::new();
        let reported = Reported::default();
        let opts = |a: &[(&str, &str)]| {
            Arc::new(FunctionOptions::of(
                &defaults,
                false,
                "f",
                &function(a),
                &metrics,
            ))
        };
        let targets = vec![
            ("all".to_owned(), opts(&[])),
            (
                "orders".to_owned(),
                opts(&[(FILTER_ANNOTATION, r#"{"type": ["order"]}"#)]),
            ),
            (
                "eu".to_owned(),
                opts(&[(FILTER_ANNOTATION, r#"{"headers": {"x-region": ["eu"]}}"#)]),
            ),
            ("broken".to_owned(), opts(&[(FILTER_ANNOTATION, "{oops")])),
        ];
        let names = |v: Vec<(String, Arc<FunctionOptions>)>| {
            v.into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        };
        let chosen = select(
            targets.clone(),
            "t",
            br#"{"type": "order"}"#,
            &[("X-Region".into(), "us".into())],
            &metrics,
            &reported,
        );
        assert_eq!(names(chosen), ["all", "orders"]);
        let chosen = select(
            targets,
            "t",
            b"text",
            &[("X-Region".into(), "eu".into())],
            &metrics,
            &reported,
        );
        assert_eq!(names(chosen), ["all", "eu"]);
        let text = metrics.render();
        assert!(
            text.contains(r#"connector_messages_filtered_total{function="broken",topic="t"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"connector_messages_filtered_total{function="orders",topic="t"} 1"#),
            "{text}"
        );
        assert_eq!(reported.0.lock().expect("lock").len(), 1, "reported once");
        let batched = opts(&[
            (BATCH_SIZE_ANNOTATION, "10"),
            (BATCH_WINDOW_ANNOTATION, "2s"),
        ]);
        assert_eq!(
            batched.batch.map(|b| (b.size, b.window)),
            Some((10, Duration::from_secs(2)))
        );
        assert!(batched.batch_error.is_none());
        // A bad batch annotation: single calls, and the reason kept to be logged once.
        let bad = opts(&[(BATCH_SIZE_ANNOTATION, "0")]);
        assert!(bad.batch.is_none());
        assert!(
            bad.batch_error
                .as_deref()
                .is_some_and(|e| e.contains(BATCH_SIZE_ANNOTATION))
        );
        assert!(opts(&[(CLOUDEVENTS_ANNOTATION, "binary")]).cloudevents);
        assert!(!opts(&[]).cloudevents);
    }
}
