//! Recent traffic as the dashboard shows it, kept in memory: per-function rates, error rates,
//! latency percentiles and trends; per connector, topic and function flows (from the
//! `X-Connector` and `X-Topic` headers connectors send, so nothing registers); and the last calls.
//! Served by `GET /system/activity`.

mod series;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use thread_local::ThreadLocal;

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
#[derive(Debug, Clone, Default, Serialize)]
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

/// What one thread recorded. Each thread that records calls has its own shard, so the hot path
/// takes an uncontended lock, touches no other core's cache lines and allocates nothing for a
/// function or flow it has seen; a snapshot merges the shards.
#[derive(Default)]
struct Shard {
    functions: HashMap<String, Series>,
    /// Keyed by [`write_flow_key`].
    flows: HashMap<String, FlowState>,
    /// The flow key being looked up, kept to reuse its allocation.
    key: String,
    /// Newest first.
    recent: VecDeque<RecentCall>,
}

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

/// The gateway's recent traffic; cheap to clone. The bounds ([`MAX_FUNCTIONS`], [`MAX_FLOWS`],
/// [`RECENT`]) hold per recording thread.
#[derive(Clone, Default)]
pub struct Activity {
    shards: Arc<ThreadLocal<Mutex<Shard>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Text of an optional header value, reusing `into`'s allocation.
fn refill(into: &mut Option<String>, from: Option<&str>) {
    match (into.as_mut(), from) {
        (Some(old), Some(new)) => {
            old.clear();
            old.push_str(new);
        }
        (_, new) => *into = new.map(str::to_owned),
    }
}

/// `key`'s entry, made if `map` holds fewer than `bound` entries (none past the bound).
fn bounded<'m, V: Default>(
    map: &'m mut HashMap<String, V>,
    key: &str,
    bound: usize,
) -> Option<&'m mut V> {
    if !map.contains_key(key) && map.len() < bound {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key)
}

/// Writes a flow's key, `connector\ntopic\nfunction`, into `key` (none of the three can hold a
/// line break: header values are visible ASCII, function names are validated).
fn write_flow_key(key: &mut String, connector: &str, topic: &str, function: &str) {
    key.clear();
    for (i, part) in [connector, topic, function].into_iter().enumerate() {
        if i > 0 {
            key.push('\n');
        }
        key.push_str(part);
    }
}

/// A flow key's connector, topic and function.
fn flow_parts(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.splitn(3, '\n');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

impl Activity {
    /// Records one finished call.
    pub fn record(&self, call: Call<'_>) {
        let now = SystemTime::now();
        let epoch = series::epoch_of(now);
        let failed = !(200..400).contains(&call.status);
        let mut guard = lock(self.shards.get_or_default());
        let shard = &mut *guard;
        if let Some(series) = bounded(&mut shard.functions, &call.function, MAX_FUNCTIONS) {
            series.record(epoch, call.took, failed);
        }
        // One clock read for both (a call's bookkeeping reads the clock often enough).
        let at_ms = tributary_core::queue::unix_ms(now);
        if let (Some(connector), Some(topic)) = (call.connector, call.topic) {
            write_flow_key(&mut shard.key, connector, topic, &call.function);
            if let Some(flow) = bounded(&mut shard.flows, &shard.key, MAX_FLOWS) {
                flow.series.record(epoch, call.took, failed);
                flow.retries += u64::from(call.attempt.is_some_and(|a| a > 1));
                flow.last_at_ms = at_ms;
            }
        }
        // The oldest entry's call id, connector and topic strings are reused for the newest.
        let mut entry = match shard.recent.len() {
            RECENT.. => shard.recent.pop_back(),
            _ => None,
        }
        .unwrap_or_default();
        entry.at_ms = at_ms;
        entry.function = call.function;
        entry.status = call.status;
        entry.duration_ms = (call.took.as_secs_f64() * 1e6).round() / 1e3;
        entry.call_id.clear();
        entry.call_id.push_str(call.call_id);
        refill(&mut entry.connector, call.connector);
        refill(&mut entry.topic, call.topic);
        shard.recent.push_front(entry);
    }

    /// Forgets a removed function's figures (its flows age out of the window).
    pub fn forget(&self, function: &str) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.functions.remove(function);
            shard
                .flows
                .retain(|key, _| flow_parts(key).map(|(_, _, f)| f) != Some(function));
        }
    }

    /// What is known now.
    pub fn snapshot(&self) -> Snapshot {
        let now = series::epoch_of(SystemTime::now());
        let mut functions: HashMap<String, Series> = HashMap::new();
        let mut flows: HashMap<String, FlowState> = HashMap::new();
        let mut recent = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (name, series) in &shard.functions {
                functions.entry(name.clone()).or_default().add(series);
            }
            for (key, state) in &shard.flows {
                let merged = flows.entry(key.clone()).or_default();
                merged.series.add(&state.series);
                merged.retries += state.retries;
                merged.last_at_ms = merged.last_at_ms.max(state.last_at_ms);
            }
            recent.extend(shard.recent.iter().cloned());
        }
        let mut flows: Vec<Flow> = flows
            .into_iter()
            .filter_map(|(key, state)| {
                let (connector, topic, function) = flow_parts(&key)?;
                Some(Flow {
                    connector: connector.to_owned(),
                    topic: topic.to_owned(),
                    function: function.to_owned(),
                    summary: state.series.summary(now),
                    retries: state.retries,
                    last_at_ms: state.last_at_ms,
                })
            })
            .collect();
        flows.sort_by(|a, b| {
            b.summary.total.cmp(&a.summary.total).then_with(|| {
                (&a.connector, &a.topic, &a.function).cmp(&(&b.connector, &b.topic, &b.function))
            })
        });
        // Each shard's list is newest first; a stable sort keeps that order within a millisecond.
        recent.sort_by_key(|call| std::cmp::Reverse(call.at_ms));
        recent.truncate(RECENT);
        Snapshot {
            slot_seconds: SLOT.as_secs(),
            functions: functions
                .into_iter()
                .map(|(name, s)| (name, s.summary(now)))
                .collect(),
            flows,
            recent,
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
    fn a_snapshot_merges_what_each_thread_recorded() {
        let a = Activity::default();
        a.record(call("f.fn", 200, Some("kafka-connector"), 1));
        let other = a.clone();
        std::thread::spawn(move || {
            other.record(call("f.fn", 500, Some("kafka-connector"), 2));
            other.record(call("g.fn", 200, None, 1));
        })
        .join()
        .expect("recording thread");
        std::thread::sleep(Duration::from_millis(2));
        a.record(call("g.fn", 200, None, 1));
        let s = a.snapshot();
        assert_eq!(
            (s.functions["f.fn"].total, s.functions["f.fn"].total_errors),
            (2, 1)
        );
        assert_eq!(s.functions["g.fn"].total, 2);
        assert_eq!(s.flows.len(), 1, "one flow, recorded on two threads");
        assert_eq!((s.flows[0].summary.total, s.flows[0].retries), (2, 1));
        assert_eq!(s.recent.len(), 4);
        assert_eq!(s.recent[0].function, "g.fn", "newest first across threads");
        assert_eq!(s.recent[3].function, "f.fn");
        a.forget("f.fn");
        let s = a.snapshot();
        assert!(
            !s.functions.contains_key("f.fn"),
            "forgotten on every thread"
        );
        assert!(s.flows.is_empty());
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
