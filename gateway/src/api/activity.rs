//! `GET /system/activity[?namespace=NS]`: the recent traffic the dashboard shows (see
//! [`crate::activity`]) and the next firings of the namespace's cron-scheduled functions.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tributary_core::model::FunctionStatus;
use tributary_schedule::{CRON_TOPIC, SCHEDULE_ANNOTATION, TIMEZONE_ANNOTATION};

use super::App;
use super::system::NamespaceQuery;
use crate::activity::Snapshot;
use crate::error::GatewayError;

/// Firings listed per function.
const NEXT_FIRINGS: usize = 3;

/// A scheduled function's next firings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Schedule {
    function: String,
    schedule: String,
    time_zone: String,
    next: Vec<String>,
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActivityBody {
    #[serde(flatten)]
    snapshot: Snapshot,
    schedules: Vec<Schedule>,
}

pub(super) async fn activity(
    State(app): App,
    Query(q): Query<NamespaceQuery>,
) -> Result<Response, GatewayError> {
    let ns = q.resolve(&app.function_namespace)?;
    let functions = app.provider.list(&ns).await?;
    let now = Utc::now();
    let schedules = functions.iter().filter_map(|f| schedule(f, now)).collect();
    Ok(Json(ActivityBody {
        snapshot: app.activity.snapshot(),
        schedules,
    })
    .into_response())
}

/// The next firings of a function the cron connector schedules (its `topic` lists
/// `cron-function`), in the function's time zone annotation or UTC, the connector's default.
fn schedule(f: &FunctionStatus, now: DateTime<Utc>) -> Option<Schedule> {
    if !f.topics(",").iter().any(|t| t == CRON_TOPIC) {
        return None;
    }
    let text = f.annotation(SCHEDULE_ANNOTATION).unwrap_or("").to_owned();
    let zone = f
        .annotation(TIMEZONE_ANNOTATION)
        .unwrap_or("UTC")
        .to_owned();
    let parsed =
        tributary_schedule::parse_tz(&zone).and_then(|tz| tributary_schedule::parse(&text, tz));
    let (next, error) = match parsed {
        Ok(schedules) => {
            let mut next: Vec<DateTime<Utc>> = Vec::new();
            for s in &schedules {
                let mut at = now;
                for _ in 0..NEXT_FIRINGS {
                    match s.next_after(at, now) {
                        Some(t) => {
                            next.push(t);
                            at = t;
                        }
                        None => break,
                    }
                }
            }
            next.sort();
            next.dedup();
            next.truncate(NEXT_FIRINGS);
            let next = next
                .iter()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .collect();
            (next, None)
        }
        Err(e) => (Vec::new(), Some(tributary_core::Chain(&e).to_string())),
    };
    Some(Schedule {
        function: f.address(),
        schedule: text,
        time_zone: zone,
        next,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn function(annotations: &[(&str, &str)]) -> FunctionStatus {
        FunctionStatus {
            name: "tick".into(),
            namespace: "openfaas-fn".into(),
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
    fn next_firings_of_scheduled_functions_only() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T10:07:30Z")
            .expect("time")
            .with_timezone(&Utc);
        let s = schedule(
            &function(&[("topic", "cron-function"), ("schedule", "*/15 * * * *")]),
            now,
        )
        .expect("scheduled");
        assert_eq!(
            s.next,
            [
                "2026-01-01T10:15:00Z",
                "2026-01-01T10:30:00Z",
                "2026-01-01T10:45:00Z"
            ]
        );
        assert_eq!((s.function.as_str(), s.time_zone.as_str()), ("tick", "UTC"));
        assert!(schedule(&function(&[("topic", "orders")]), now).is_none());
        let bad = schedule(
            &function(&[
                ("topic", "cron-function"),
                ("schedule", "every now and then"),
            ]),
            now,
        )
        .expect("listed with its error");
        assert!(bad.next.is_empty());
        assert!(
            bad.error
                .expect("error")
                .contains("invalid cron expression")
        );
    }
}
