//! The cron connector: invokes functions on the schedules in their annotations.
//!
//! A function is scheduled when its `topic` annotation contains `cron-function` (split on the
//! topic delimiter, unlike OpenFaaS CE which needs the whole value to equal it) and it has a
//! `schedule` annotation (see [`schedule`] for the syntax). Schedules follow deploys, updates and
//! removals within one rebuild interval. Each firing calls the function with `X-Topic:
//! cron-function`, `X-Connector: cron-connector` and `X-Scheduled-Time` (RFC 3339). While a
//! function's previous firing is still running, a new one is skipped and counted, unless
//! overlap is allowed.
//!
//! ```no_run
//! use tributary_connector_sdk::{ControllerConfig, shutdown_signal};
//! use tributary_cron::{CronConfig, CronSource};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ControllerConfig::from_env()?;
//! let source = CronSource::new(tributary_core::settings::from_env::<CronConfig>()?);
//! tributary_connector_sdk::run(config, source, shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub use tributary_schedule as schedule;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::builder::BoolishValueParser;
use prometheus::{IntCounterVec, IntGauge};
use tributary_connector_sdk::{
    Acknowledge, DeadLetter, EventInfo, Message, Source, SourceContext, SourceError, TopicMap,
};
use tributary_core::Chain;
use tributary_core::metrics::Registrar;

use crate::schedule::Schedule;

pub use tributary_schedule::{CRON_TOPIC, SCHEDULE_ANNOTATION, TIMEZONE_ANNOTATION};
/// The connector's name, sent as `X-Connector`.
pub const CONNECTOR_NAME: &str = "cron-connector";

fn parse_timezone(name: &str) -> Result<Tz, String> {
    schedule::parse_tz(name).map_err(|e| format!("cron_timezone: {e}"))
}

/// Cron connector settings.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct CronConfig {
    /// Fire even while the previous run of the same function is still in flight.
    #[arg(long, env = "allow_overlap", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_overlap: bool,
    /// Time zone of schedules without CRON_TZ= or a timezone annotation (IANA name).
    #[arg(long = "cron-timezone", alias = "timezone", env = "cron_timezone", default_value = "UTC", value_parser = parse_timezone)]
    pub default_timezone: Tz,
    /// Separator of topics in the `topic` annotation (the connector's `topic_delimiter`).
    #[arg(skip = String::from(","))]
    pub topic_delimiter: String,
}

impl Default for CronConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
    }
}

/// The cron [`Source`].
pub struct CronSource {
    config: CronConfig,
}

impl CronSource {
    /// A cron source with the given settings.
    pub fn new(config: CronConfig) -> Self {
        Self { config }
    }
}

struct Metrics {
    firings: IntCounterVec,
    skipped: IntCounterVec,
    errors: IntCounterVec,
    scheduled: IntGauge,
}

impl Metrics {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let r = Registrar(registry);
        let f = &["function"];
        Ok(Self {
            firings: r.counter_vec(
                "cron_firings_total",
                "Schedule firings sent to the runtime",
                f,
            )?,
            skipped: r.counter_vec(
                "cron_skipped_total",
                "Firings skipped because the previous run was still in flight",
                f,
            )?,
            errors: r.counter_vec(
                "cron_schedule_errors_total",
                "Invalid schedule annotations seen",
                f,
            )?,
            scheduled: r.int_gauge(
                "cron_scheduled_functions",
                "Functions with a valid schedule",
            )?,
        })
    }
}

/// One scheduled function.
struct Entry {
    /// The annotation values it was built from, to notice updates.
    spec: (String, Option<String>),
    schedules: Vec<Schedule>,
    next: Vec<Option<DateTime<Utc>>>,
    anchor: DateTime<Utc>,
    in_flight: Arc<AtomicBool>,
}

impl Entry {
    fn earliest(&self) -> Option<DateTime<Utc>> {
        self.next.iter().flatten().min().copied()
    }
}

/// Clears the function's in-flight flag when the runtime is done with a firing.
struct Firing(Arc<AtomicBool>);

#[async_trait]
impl Acknowledge for Firing {
    async fn ack(self: Box<Self>) {
        self.0.store(false, Ordering::Release);
    }
    async fn nack(self: Box<Self>, _retry_after: Option<Duration>) {
        self.0.store(false, Ordering::Release);
    }
    async fn dead_letter(self: Box<Self>, _letter: DeadLetter) {
        self.0.store(false, Ordering::Release);
    }
}

struct Scheduler {
    config: CronConfig,
    entries: HashMap<String, Entry>,
    /// Bad schedules already reported, so each is logged once.
    reported: HashSet<(String, String)>,
    metrics: Metrics,
}

impl Scheduler {
    /// Brings the entries in line with the topic map.
    fn reconcile(&mut self, map: &TopicMap, now: DateTime<Utc>) {
        let mut seen = HashSet::new();
        for f in map.functions() {
            if !f
                .topics(&self.config.topic_delimiter)
                .iter()
                .any(|t| t == CRON_TOPIC)
            {
                continue;
            }
            let address = f.address();
            let schedule = f.annotation(SCHEDULE_ANNOTATION).unwrap_or("").to_owned();
            let tz_name = f.annotation(TIMEZONE_ANNOTATION).map(str::to_owned);
            let spec = (schedule.clone(), tz_name.clone());
            if self.entries.get(&address).is_some_and(|e| e.spec == spec) {
                seen.insert(address);
                continue;
            }
            let parsed = match &tz_name {
                Some(name) => schedule::parse_tz(name),
                None => Ok(self.config.default_timezone),
            }
            .and_then(|tz| schedule::parse(&schedule, tz));
            match parsed {
                Ok(schedules) => {
                    let next: Vec<_> = schedules.iter().map(|s| s.next_after(now, now)).collect();
                    tracing::info!(
                        function = %address,
                        schedule = %schedule,
                        next = next.iter().flatten().min().map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).as_deref(),
                        "function scheduled"
                    );
                    let in_flight = self
                        .entries
                        .get(&address)
                        .map_or_else(Arc::default, |e| e.in_flight.clone());
                    self.entries.insert(
                        address.clone(),
                        Entry {
                            spec,
                            schedules,
                            next,
                            anchor: now,
                            in_flight,
                        },
                    );
                    seen.insert(address);
                }
                Err(e) => {
                    if self.entries.remove(&address).is_some() {
                        tracing::info!(function = %address, "function unscheduled: its new schedule is invalid");
                    }
                    if self.reported.insert((address.clone(), schedule.clone())) {
                        tracing::error!(function = %address, schedule = %schedule, error = %Chain(&e), "invalid schedule; this function is not scheduled until it is fixed");
                        self.metrics.errors.with_label_values(&[&address]).inc();
                    }
                }
            }
        }
        self.entries.retain(|address, _| {
            let keep = seen.contains(address);
            if !keep {
                tracing::info!(function = %address, "function unscheduled");
            }
            keep
        });
        self.metrics
            .scheduled
            .set(i64::try_from(self.entries.len()).unwrap_or(i64::MAX));
    }

    fn earliest(&self) -> Option<DateTime<Utc>> {
        self.entries.values().filter_map(Entry::earliest).min()
    }

    /// Firings due at `now`: (function, scheduled time, in-flight flag), schedules advanced.
    fn due(&mut self, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>, Arc<AtomicBool>)> {
        let mut out = Vec::new();
        for (address, entry) in &mut self.entries {
            let mut fired: Option<DateTime<Utc>> = None;
            for (schedule, next) in entry.schedules.iter().zip(entry.next.iter_mut()) {
                let Some(at) = *next else { continue };
                if at > now {
                    continue;
                }
                fired = Some(fired.map_or(at, |f| f.min(at)));
                // Advance past now: missed firings are not replayed.
                *next = schedule.next_after(now.max(at), entry.anchor);
            }
            if let Some(at) = fired {
                out.push((address.clone(), at, entry.in_flight.clone()));
            }
        }
        out
    }
}

#[async_trait]
impl Source for CronSource {
    fn name(&self) -> &str {
        CONNECTOR_NAME
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        let cancel = ctx.cancelled();
        let mut topics = ctx.topic_changes();
        let mut scheduler = Scheduler {
            config: self.config,
            entries: HashMap::new(),
            reported: HashSet::new(),
            metrics: Metrics::register(ctx.registry())
                .map_err(|e| SourceError::caused("cannot register the cron metrics", e))?,
        };
        let initial = topics.borrow_and_update().clone();
        scheduler.reconcile(&initial, Utc::now());
        loop {
            let wait = scheduler
                .earliest()
                .map_or(Duration::from_secs(3600), |at| {
                    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                });
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                changed = topics.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let map = topics.borrow_and_update().clone();
                    scheduler.reconcile(&map, Utc::now());
                }
                _ = tokio::time::sleep(wait) => {
                    for (function, at, in_flight) in scheduler.due(Utc::now()) {
                        let running = in_flight.swap(true, Ordering::AcqRel);
                        if running && !scheduler.config.allow_overlap {
                            tracing::info!(%function, scheduled = %at.to_rfc3339(), "previous run still in flight; firing skipped");
                            scheduler.metrics.skipped.with_label_values(&[&function]).inc();
                            continue;
                        }
                        scheduler.metrics.firings.with_label_values(&[&function]).inc();
                        let time = at.to_rfc3339_opts(SecondsFormat::Millis, true);
                        let event = EventInfo::new(format!("/cron/{function}"), "com.tributary.cron.fired")
                            .with_id(format!("cron:{function}:{time}"))
                            .with_subject(function.clone())
                            .with_time(time.clone());
                        let message = Message::new(CRON_TOPIC, Vec::new(), Firing(in_flight))
                            .with_targets(vec![function.clone()])
                            .with_header("X-Scheduled-Time", time)
                            .with_event(event);
                        if ctx.send(message).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tributary_connector_sdk::FunctionStatus;

    fn function(name: &str, topic: &str, schedule: Option<&str>) -> FunctionStatus {
        let mut a = BTreeMap::from([("topic".to_owned(), topic.to_owned())]);
        if let Some(s) = schedule {
            a.insert(SCHEDULE_ANNOTATION.into(), s.into());
        }
        FunctionStatus {
            name: name.into(),
            namespace: "openfaas-fn".into(),
            annotations: Some(a),
            ..FunctionStatus::default()
        }
    }

    fn scheduler() -> Scheduler {
        Scheduler {
            config: CronConfig::default(),
            entries: HashMap::new(),
            reported: HashSet::new(),
            metrics: Metrics::register(&prometheus::Registry::new()).expect("metrics"),
        }
    }

    #[test]
    fn schedules_follow_the_topic_map() {
        let mut s = scheduler();
        let now = Utc::now();
        let map = TopicMap::build(
            vec![
                function("a", "cron-function", Some("* * * * * *")),
                function("b", "payments, cron-function", Some("@every 1h")),
                function("c", "payments", Some("* * * * *")),
                function("d", "cron-function", Some("garbage")),
                function("e", "cron-function", None),
            ],
            ",",
        );
        s.reconcile(&map, now);
        let mut names: Vec<_> = s.entries.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.metrics.errors.with_label_values(&["d"]).get(), 1);
        assert_eq!(s.metrics.errors.with_label_values(&["e"]).get(), 1);
        // Reported once, however many rebuilds.
        s.reconcile(&map, now);
        assert_eq!(s.metrics.errors.with_label_values(&["d"]).get(), 1);
        // Removal unschedules.
        s.reconcile(
            &TopicMap::build(
                vec![function("a", "cron-function", Some("* * * * * *"))],
                ",",
            ),
            now,
        );
        assert_eq!(s.entries.len(), 1);
    }

    #[test]
    fn due_firings_advance_and_are_not_replayed() {
        let mut s = scheduler();
        let start = Utc::now();
        s.reconcile(
            &TopicMap::build(
                vec![function("a", "cron-function", Some("* * * * * *"))],
                ",",
            ),
            start,
        );
        let later = start + chrono::Duration::seconds(5);
        let due = s.due(later);
        assert_eq!(due.len(), 1, "one firing, however many seconds were missed");
        assert!(s.earliest().expect("next") > later);
        assert!(s.due(later).is_empty());
    }
}
