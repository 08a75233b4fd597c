//! Lag reports: a source tells how many messages wait on each topic
//! ([`SourceContext::report_lag`](crate::SourceContext::report_lag)), and the runtime sends the
//! latest figures to the gateway (`POST /system/lag`) every couple of seconds, where the
//! autoscaler scales the functions subscribed to those topics (and wakes them from zero).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tributary_core::Chain;
use tributary_core::client::GatewayClient;
use tributary_core::model::LagReport;

/// How often the latest figures go to the gateway (it forgets them after 15 s without one).
pub const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// The latest messages waiting per topic, as the source last measured them.
#[derive(Clone, Default)]
pub struct LagFigures {
    topics: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl LagFigures {
    /// Records how many messages wait on `topic`.
    pub fn set(&self, topic: &str, waiting: u64) {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned(), waiting);
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends the figures every [`LAG_REPORT_INTERVAL`] until `cancel`; a gateway without the
    /// route (OpenFaaS's) is told once in the log and then left alone.
    pub(crate) async fn report(
        self,
        client: GatewayClient,
        connector: String,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(LAG_REPORT_INTERVAL);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let topics = self.snapshot();
            if topics.is_empty() {
                continue;
            }
            let report = LagReport {
                connector: connector.clone(),
                topics,
            };
            match client.report_lag(&report).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::info!(error = %Chain(&e), "cannot report topic lag to the gateway (its autoscaler will not see it); retrying quietly");
                }
                Err(_) => {}
            }
        }
    }
}
