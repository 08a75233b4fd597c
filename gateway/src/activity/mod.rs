//! Recent traffic as the dashboard shows it, kept in memory: per-function rates, error rates,
//! latency percentiles and trends; per connector, topic and function flows (from the
//! `X-Connector` and `X-Topic` headers connectors send, so nothing registers); and the last calls.
//! Served by `GET /system/activity`.

mod series;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use series::{SLOT, SLOTS, Series, Summary};

/// Calls kept in the recent list.
const RECENT: usize = 100;
/// Connector flows kept; past this, new (connector, topic, function) triples are not tracked.
const MAX_FLOWS: usize = 1_000;
/// Functions tracked; past this, new names are not tracked.
const MAX_FUNCTIONS: usize = 10_000;

/// One finished call, as [`Activity::record`] takes it.
pub struct Call<'a> {
    /// `name.namespace` (kept in the recent list).
    pub function: String,
    /// The answer's status.
    pub status: u16,
    /// How long it took.
    pub took: Duration,
    /// `X-Call-Id`.
    pub call_id: &'a str,
    /// `X-Connector`, when a connector sent it.
    pub connector: Option<&'a str>,
    /// `X-Topic`, when a connector sent it.
    pub topic: Option<&'a str>,
    /// `X-Delivery-Attempt` (1 for a first try), when a connector sent it.
    pub attempt: Option<u32>,
}

/// A call in the recent list.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentCall {
    /// Unix milliseconds when it finished.
    pub at_ms: i64,
    /// `name.namespace`.
    pub function: String,
    /// Status code.
    pub status: u16,
    /// Duration in ms.
    pub duration_ms: f64,
    /// `X-Call-Id`.
    pub call_id: String,
    /// The connector, when one sent it.
    pub connector: Option<String>,
    /// The topic, when a connector sent it.
    pub topic: Option<String>,
}

/// Calls from one connector on one topic to one function.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    /// `X-Connector`.
    pub connector: String,
    /// `X-Topic`.
    pub topic: String,
    /// `name.namespace`.
    pub function: String,
    /// Calls, failures, rate and latency.
    pub summary: Summary,
    /// Calls that were retries (`X-Delivery-Attempt` above 1).
    pub retries: u64,
    /// Unix milliseconds of the last call.
    pub last_at_ms: i64,
}

#[derive(Default)]
struct FlowState {
    series: Series,
    retries: u64,
    last_at_ms: i64,
}

type FlowKey = (String, String, String);

/// Everything [`Activity`] knows, as `GET /system/activity` answers it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Seconds per trend point.
    pub slot_seconds: u64,
    /// Per `name.namespace`.
    pub functions: std::collections::BTreeMap<String, Summary>,
    /// Connector flows, busiest first.
    pub flows: Vec<Flow>,
    /// The last calls, newest first.
    pub recent: Vec<RecentCall>,
}

/// The gateway's recent traffic; cheap to clone.
#[derive(Clone, Default)]
pub struct Activity {
    functions: Arc<RwLock<HashMap<String, Arc<Mutex<Series>>>>>,
    flows: Arc<Mutex<HashMap<FlowKey, FlowState>>>,
    recent: Arc<Mutex<VecDeque<RecentCall>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Activity {
    /// Records one finished call.
    pub fn record(&self, call: Call<'_>) {
        let now = SystemTime::now();
        let epoch = series::epoch_of(now);
        let failed = !(200..400).contains(&call.status);
        if let Some(series) = self.series(&call.function) {
            lock(&series).record(epoch, call.took, failed);
        }
        // One clock read for both (a call's bookkeeping reads the clock often enough).
        let at_ms = tributary_core::queue::unix_ms(now);
        if let (Some(connector), Some(topic)) = (call.connector, call.topic) {
            let mut flows = lock(&self.flows);
            let key = (
                connector.to_owned(),
                topic.to_owned(),
                call.function.to_owned(),
            );
            let known = flows.contains_key(&key);
            if known || flows.len() < MAX_FLOWS {
                let flow = flows.entry(key).or_default();
                flow.series.record(epoch, call.took, failed);
                flow.retries += u64::from(call.attempt.is_some_and(|a| a > 1));
                flow.last_at_ms = at_ms;
            }
        }
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_back();
        }
        recent.push_front(RecentCall {
            at_ms,
            function: call.function,
            status: call.status,
            duration_ms: (call.took.as_secs_f64() * 1e6).round() / 1e3,
            call_id: call.call_id.to_owned(),
            connector: call.connector.map(str::to_owned),
            topic: call.topic.map(str::to_owned),
        });
    }

    fn series(&self, function: &str) -> Option<Arc<Mutex<Series>>> {
        let read = self.functions.read().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = read.get(function) {
            return Some(s.clone());
        }
        drop(read);
        let mut write = self.functions.write().unwrap_or_else(|e| e.into_inner());
        if write.len() >= MAX_FUNCTIONS && !write.contains_key(function) {
            return None;
        }
        Some(write.entry(function.to_owned()).or_default().clone())
    }

    /// Forgets a removed function's figures (its flows age out of the window).
    pub fn forget(&self, function: &str) {
        self.functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function);
        lock(&self.flows).retain(|(_, _, f), _| f != function);
    }

    /// What is known now.
    pub fn snapshot(&self) -> Snapshot {
        let now = series::epoch_of(SystemTime::now());
        let functions = self
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, s)| (name.clone(), lock(s).summary(now)))
            .collect();
        let mut flows: Vec<Flow> = lock(&self.flows)
            .iter()
            .map(|((connector, topic, function), state)| Flow {
                connector: connector.clone(),
                topic: topic.clone(),
                function: function.clone(),
                summary: state.series.summary(now),
                retries: state.retries,
                last_at_ms: state.last_at_ms,
            })
            .collect();
        flows.sort_by(|a, b| {
            b.summary.total.cmp(&a.summary.total).then_with(|| {
                (&a.connector, &a.topic, &a.function).cmp(&(&b.connector, &b.topic, &b.function))
            })
        });
        Snapshot {
            slot_seconds: SLOT.as_secs(),
            functions,
            flows,
            recent: lock(&self.recent).iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(function: &str, status: u16, connector: Option<&'a str>, attempt: u32) -> Call<'a> {
        Call {
            function: function.to_owned(),
            status,
            took: Duration::from_millis(3),
            call_id: "id",
            connector,
            topic: connector.map(|_| "orders"),
            attempt: Some(attempt),
        }
    }

    #[test]
    fn flows_come_from_connector_headers_and_count_failures_and_retries() {
        let a = Activity::default();
        a.record(call("f.fn", 200, None, 1));
        a.record(call("f.fn", 500, Some("kafka-connector"), 1));
        a.record(call("f.fn", 200, Some("kafka-connector"), 2));
        a.record(call("g.fn", 200, Some("kafka-connector"), 1));
        let s = a.snapshot();
        assert_eq!(s.functions["f.fn"].total, 3);
        assert_eq!(s.functions["f.fn"].total_errors, 1);
        assert_eq!(s.flows.len(), 2);
        let f = &s.flows[0];
        assert_eq!((f.function.as_str(), f.topic.as_str()), ("f.fn", "orders"));
        assert_eq!(
            (f.summary.total, f.summary.total_errors, f.retries),
            (2, 1, 1)
        );
        assert_eq!(s.recent.len(), 4);
        assert_eq!(s.recent[0].function, "g.fn", "newest first");
        a.forget("f.fn");
        let s = a.snapshot();
        assert!(!s.functions.contains_key("f.fn"));
        assert_eq!(s.flows.len(), 1);
    }

    #[test]
    fn the_recent_list_is_bounded() {
        let a = Activity::default();
        for _ in 0..(RECENT + 20) {
            a.record(call("f.fn", 200, None, 1));
        }
        assert_eq!(a.snapshot().recent.len(), RECENT);
    }
}
