//! `/system/alert`: Alertmanager webhooks scale functions as OpenFaaS CE does. A firing alert
//! (such as `APIHighRequestRate`) adds `com.openfaas.scale.factor` percent of the function's
//! maximum (default 20 %) to its replicas, up to the maximum; a resolved one sets them back to
//! the minimum. `/system/lag` takes the connectors' reports of messages waiting on their topics.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{App, AppState, parse_json};
use crate::autoscaler::policy::FACTOR;
use crate::error::GatewayError;
use crate::limits::{count_label, replica_cap};
use crate::model::{LagReport, SCALE_MIN_LABEL, split_address};

/// Alertmanager's webhook body, as far as scaling reads it.
#[derive(Debug, Deserialize)]
struct Webhook {
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
struct Alert {
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// Replicas after an alert: firing adds `factor` % of `max` (at least one), resolved goes back
/// to `min`.
fn replicas_after(firing: bool, current: u64, min: u64, max: u64, factor: u64) -> u64 {
    if !firing {
        return min;
    }
    if factor == 0 || current >= max {
        return current.min(max);
    }
    let step = (max * factor).div_ceil(100).max(1);
    (current + step).min(max)
}

async fn scale_for(
    app: &AppState,
    alert: &Alert,
) -> Result<Option<(String, u64, u64)>, GatewayError> {
    let Some(target) = alert.labels.get("function_name") else {
        return Ok(None);
    };
    let (name, ns) = split_address(target);
    let ns = if target.contains('.') {
        ns.to_owned()
    } else {
        app.function_namespace.clone()
    };
    let status = app.provider.status(name, &ns).await?;
    let labels = status.labels.as_ref();
    let min = count_label(labels, SCALE_MIN_LABEL)?.unwrap_or(1);
    let max = replica_cap(labels, app.max_replicas)?;
    let factor = count_label(labels, FACTOR)?.unwrap_or(20).min(100);
    let firing = alert.status != "resolved";
    let next = replicas_after(firing, status.replicas, min, max, factor);
    if next == status.replicas {
        return Ok(None);
    }
    app.provider.scale(name, &ns, next).await?;
    let label = format!("{name}.{ns}");
    let reason = if firing {
        "alert_firing"
    } else {
        "alert_resolved"
    };
    app.metrics.scaled(&label, reason);
    tracing::info!(function = %label, from = status.replicas, to = next, reason, alertname = alert.labels.get("alertname").map_or("", String::as_str), "scaled on an alert");
    Ok(Some((label, status.replicas, next)))
}

/// `POST /system/alert`: scales every function named by the webhook's alerts.
pub(super) async fn alert(State(app): App, body: Bytes) -> Result<Response, GatewayError> {
    let hook: Webhook = parse_json(&body)?;
    let mut changed = Vec::new();
    for alert in &hook.alerts {
        if let Some((function, from, to)) = scale_for(&app, alert).await? {
            changed.push(serde_json::json!({"function": function, "from": from, "to": to}));
        }
    }
    Ok((StatusCode::OK, axum::Json(changed)).into_response())
}

/// `POST /system/lag`: a connector's report of the messages waiting on its topics.
pub(super) async fn lag(State(app): App, body: Bytes) -> Result<Response, GatewayError> {
    let report: LagReport = parse_json(&body)?;
    if report.connector.is_empty() {
        return Err(GatewayError::BadRequest(
            "field `connector` must name the connector".to_owned(),
        ));
    }
    app.lag.record(&report);
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::replicas_after;

    #[test]
    fn firing_steps_up_by_the_factor_and_resolved_goes_to_min() {
        assert_eq!(replicas_after(true, 1, 1, 20, 20), 5);
        assert_eq!(replicas_after(true, 5, 1, 20, 20), 9);
        assert_eq!(replicas_after(true, 19, 1, 20, 20), 20);
        assert_eq!(replicas_after(true, 20, 1, 20, 20), 20);
        assert_eq!(replicas_after(true, 1, 1, 5, 20), 2, "at least one more");
        assert_eq!(
            replicas_after(true, 3, 1, 20, 0),
            3,
            "factor 0: alerts do not scale"
        );
        assert_eq!(replicas_after(false, 9, 2, 20, 20), 2);
    }
}
