//! What connectors report waiting on their topics (`POST /system/lag`), kept with each report's
//! age: a connector that stops reporting (stopped, or on a machine that lost the gateway) stops
//! counting after [`STALE_AFTER`], so it cannot pin replicas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::LagReport;

/// How long a report counts.
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// (connector, topic) → (messages waiting, when reported).
type Latest = HashMap<(String, String), (u64, Instant)>;

/// The latest report of each connector and topic.
#[derive(Clone, Default)]
pub struct LagReports {
    inner: Arc<Mutex<Latest>>,
}

impl LagReports {
    /// Records a connector's report.
    pub fn record(&self, report: &LagReport) {
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, lag) in &report.topics {
            map.insert((report.connector.clone(), topic.clone()), (*lag, now));
        }
        map.retain(|_, (_, at)| now.duration_since(*at) < STALE_AFTER * 4);
    }

    /// Messages waiting on `topics`, from every connector's fresh reports.
    pub fn waiting(&self, topics: &[String]) -> u64 {
        let now = Instant::now();
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((_, topic), (_, at))| {
                topics.contains(topic) && now.duration_since(*at) < STALE_AFTER
            })
            .map(|(_, (lag, _))| *lag)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_add_up_per_topic_across_connectors() {
        let lag = LagReports::default();
        let report = |connector: &str, pairs: &[(&str, u64)]| LagReport {
            connector: connector.into(),
            topics: pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect(),
        };
        lag.record(&report("kafka-a", &[("orders", 10), ("refunds", 1)]));
        lag.record(&report("kafka-b", &[("orders", 5)]));
        assert_eq!(lag.waiting(&["orders".to_owned()]), 15);
        assert_eq!(
            lag.waiting(&["orders".to_owned(), "refunds".to_owned()]),
            16
        );
        lag.record(&report("kafka-a", &[("orders", 0)]));
        assert_eq!(lag.waiting(&["orders".to_owned()]), 5);
        assert_eq!(lag.waiting(&["other".to_owned()]), 0);
    }
}
