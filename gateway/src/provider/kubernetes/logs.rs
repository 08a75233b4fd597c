//! `/system/logs` from the function's pods' logs (`tail`, `since`, `follow`, one `instance`).

use chrono::{DateTime, Utc};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tributary_core::Chain;

use super::error::api_error;
use super::objects::FUNCTION_LABEL;
use crate::error::GatewayError;
use crate::model::LogMessage;
use crate::provider::{LogQuery, LogStream};

/// Splits a line written with `timestamps=true` into its time and text.
fn parse_line(line: &str) -> (DateTime<Utc>, String) {
    match line.split_once(' ') {
        Some((ts, text)) => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => (t.with_timezone(&Utc), text.to_owned()),
            Err(_) => (Utc::now(), line.to_owned()),
        },
        None => (Utc::now(), line.to_owned()),
    }
}

/// The lines of every pod of the function (or of `instance`), merged as they come; with
/// `follow`, until the client goes away or the gateway stops.
pub(super) async fn stream(
    client: &Client,
    query: LogQuery,
    cancel: CancellationToken,
) -> Result<LogStream, GatewayError> {
    let ns = query.namespace.clone();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = format!("{FUNCTION_LABEL}={}", query.name);
    let pods = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error("list", "pods", &ns, e))?;
    let mut names: Vec<String> = pods
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .filter(|p| query.instance.as_ref().is_none_or(|i| i == p))
        .collect();
    names.sort();
    let params = LogParams {
        container: Some(query.name.clone()),
        follow: query.follow,
        tail_lines: query.tail.map(|t| t as i64),
        since_time: query
            .since
            .and_then(|t| Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).ok()),
        timestamps: true,
        ..Default::default()
    };
    let mut streams = Vec::new();
    let mut first_error = None;
    for pod in names {
        match api.log_stream(&pod, &params).await {
            Ok(reader) => {
                let (name, namespace, instance) = (query.name.clone(), ns.clone(), pod.clone());
                let lines = reader.lines().filter_map(move |line| {
                    let message = match line {
                        Ok(line) => {
                            let (timestamp, text) = parse_line(&line);
                            Some(LogMessage {
                                name: name.clone(),
                                namespace: namespace.clone(),
                                instance: instance.clone(),
                                timestamp,
                                text,
                            })
                        }
                        Err(e) => {
                            tracing::debug!(pod = %instance, error = %e, "pod log stream ended");
                            None
                        }
                    };
                    futures::future::ready(message)
                });
                streams.push(lines.boxed());
            }
            Err(e) => {
                tracing::warn!(pod, namespace = %ns, error = %Chain(&e), "kubernetes: reading a pod's log failed");
                first_error.get_or_insert(e);
            }
        }
    }
    if streams.is_empty()
        && let Some(e) = first_error
    {
        return Err(api_error("get", "pods/log", &ns, e));
    }
    Ok(futures::stream::select_all(streams)
        .take_until(cancel.cancelled_owned())
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamped_lines_split_into_time_and_text() {
        let (t, text) = parse_line("2026-11-25T10:00:00.5Z hello world");
        assert_eq!(text, "hello world");
        assert_eq!(t.timestamp_subsec_millis(), 500);
        let (_, text) = parse_line("no timestamp here");
        assert_eq!(text, "no timestamp here");
    }
}
