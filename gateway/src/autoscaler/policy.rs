//! A function's scaling policy from OpenFaaS's labels, and the decision it makes from a load.
//!
//! desired = ceil(load / (target × target-proportion)), bounded by `min` and `max`; scaling up
//! is immediate, scaling down takes the highest desired count of the stabilisation window; a
//! function with `com.openfaas.scale.zero=true` idle for `zero-duration` goes to zero.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use tributary_core::model::{SCALE_MAX_LABEL, SCALE_MIN_LABEL};
use tributary_core::units::parse_duration;

const TYPE: &str = "com.openfaas.scale.type";
const TARGET: &str = "com.openfaas.scale.target";
const PROPORTION: &str = "com.openfaas.scale.target-proportion";
const ZERO: &str = "com.openfaas.scale.zero";
const ZERO_DURATION: &str = "com.openfaas.scale.zero-duration";
const DOWN_WINDOW: &str = "com.openfaas.scale.down.window";
/// The label of the CE alert scaling step, in percent of `max`.
pub(crate) const FACTOR: &str = "com.openfaas.scale.factor";

/// What load a function scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleType {
    /// Requests per second.
    Rps,
    /// Requests in flight.
    Capacity,
    /// Messages waiting: its queued async calls and the lag connectors report on its topics.
    Queue,
}

/// A function's scaling policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    pub(crate) kind: ScaleType,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) target: f64,
    pub(crate) proportion: f64,
    pub(crate) zero_after: Option<Duration>,
    pub(crate) down_window: Duration,
}

fn parse<T: std::str::FromStr>(
    labels: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, String> {
    labels
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|_| format!("label {key}={v:?} is not valid"))
        })
        .transpose()
}

impl Policy {
    /// The policy a function's labels ask for; `None` for functions that do not opt in (no
    /// `type`, `target` or `zero` label), which keep the replicas they are given.
    pub(crate) fn from_labels(
        labels: &BTreeMap<String, String>,
        max_replicas: u64,
        down_window: Duration,
    ) -> Result<Option<Self>, String> {
        if ![TYPE, TARGET, ZERO].iter().any(|k| labels.contains_key(*k)) {
            return Ok(None);
        }
        let kind = match labels.get(TYPE).map(|t| t.trim()) {
            None | Some("rps") => ScaleType::Rps,
            Some("capacity") => ScaleType::Capacity,
            Some("queue") => ScaleType::Queue,
            Some(other) => {
                return Err(format!(
                    "label {TYPE}={other:?}: use rps, capacity or queue"
                ));
            }
        };
        let min = parse::<u64>(labels, SCALE_MIN_LABEL)?.unwrap_or(1);
        let max = parse::<u64>(labels, SCALE_MAX_LABEL)?
            .unwrap_or(max_replicas)
            .min(max_replicas);
        let target = parse::<f64>(labels, TARGET)?.unwrap_or(50.0);
        let proportion = parse::<f64>(labels, PROPORTION)?.unwrap_or(0.9);
        if !(target > 0.0 && proportion > 0.0 && target.is_finite() && proportion.is_finite()) {
            return Err(format!("labels {TARGET} and {PROPORTION} must be above 0"));
        }
        let zero = parse::<bool>(labels, ZERO)?.unwrap_or(false);
        let zero_after = match labels.get(ZERO_DURATION) {
            Some(v) => Some(parse_duration(v).map_err(|e| format!("label {ZERO_DURATION}: {e}"))?),
            None => Some(Duration::from_secs(15 * 60)),
        }
        .filter(|_| zero);
        let down_window = match labels.get(DOWN_WINDOW) {
            Some(v) => parse_duration(v).map_err(|e| format!("label {DOWN_WINDOW}: {e}"))?,
            None => down_window,
        };
        Ok(Some(Self {
            kind,
            min: min.max(1).min(max.max(1)),
            max: max.max(1),
            target,
            proportion,
            zero_after,
            down_window,
        }))
    }
}

/// Why replicas change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Load above what the replicas serve.
    ScaleUp,
    /// Load below, for the whole stabilisation window.
    ScaleDown,
    /// Idle for `zero-duration`.
    ToZero,
}

impl Reason {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ScaleUp => "scale_up",
            Self::ScaleDown => "scale_down",
            Self::ToZero => "to_zero",
        }
    }
}

/// What the autoscaler remembers of one function between ticks.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// (when, invocations started so far), for the request rate.
    started: VecDeque<(Instant, u64)>,
    /// (when, desired replicas), for the stabilisation window.
    desired: VecDeque<(Instant, u64)>,
    /// When an invocation last started (or the function was first seen).
    last_active: Option<Instant>,
}

/// How far back the request rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl History {
    /// Records the invocations started so far; returns the request rate over the last seconds.
    pub(crate) fn observe(&mut self, now: Instant, started: u64) -> f64 {
        if self.started.back().is_none_or(|(_, n)| *n != started) {
            self.last_active = Some(now);
        }
        self.last_active.get_or_insert(now);
        self.started.push_back((now, started));
        while self
            .started
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            && self.started.len() > 2
        {
            self.started.pop_front();
        }
        match (self.started.front(), self.started.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                n1.saturating_sub(*n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Marks the function busy now (work is waiting for it).
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_active = Some(now);
    }

    /// How long no invocation has started.
    pub(crate) fn idle(&self, now: Instant) -> Duration {
        self.last_active
            .map_or(Duration::ZERO, |t| now.duration_since(t))
    }

    /// The replicas the policy wants for `load`, given `current`; `None` when they stay.
    pub(crate) fn decide(
        &mut self,
        policy: &Policy,
        load: f64,
        current: u64,
        now: Instant,
    ) -> Option<(u64, Reason)> {
        if let Some(after) = policy.zero_after
            && load <= 0.0
            && self.idle(now) >= after
        {
            self.desired.clear();
            return (current != 0).then_some((0, Reason::ToZero));
        }
        let raw = (load / (policy.target * policy.proportion)).ceil();
        let wanted = (raw.max(0.0) as u64).clamp(policy.min, policy.max);
        self.desired.push_back((now, wanted));
        while self
            .desired
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > policy.down_window)
        {
            self.desired.pop_front();
        }
        // Down only as far as the highest count wanted within the window.
        let stable = self.desired.iter().map(|(_, d)| *d).max().unwrap_or(wanted);
        match stable.cmp(&current) {
            std::cmp::Ordering::Greater => Some((stable, Reason::ScaleUp)),
            std::cmp::Ordering::Less if current > 0 => Some((stable, Reason::ScaleDown)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn policy(pairs: &[(&str, &str)]) -> Policy {
        Policy::from_labels(&labels(pairs), 20, Duration::from_secs(30))
            .expect("valid")
            .expect("opted in")
    }

    #[test]
    fn functions_without_scaling_labels_are_left_alone() {
        let p = Policy::from_labels(&labels(&[(SCALE_MIN_LABEL, "2")]), 20, Duration::ZERO);
        assert_eq!(p, Ok(None));
        assert!(
            Policy::from_labels(&labels(&[(TYPE, "cpu")]), 20, Duration::ZERO)
                .expect_err("unknown type")
                .contains("rps, capacity or queue")
        );
    }

    #[test]
    fn capacity_20_in_flight_at_target_5_wants_4() {
        let p = policy(&[
            (TYPE, "capacity"),
            (TARGET, "5"),
            (PROPORTION, "1.0"),
            (SCALE_MAX_LABEL, "10"),
        ]);
        let mut h = History::default();
        let now = Instant::now();
        assert_eq!(h.decide(&p, 20.0, 1, now), Some((4, Reason::ScaleUp)));
        // The default proportion (0.9) leaves headroom: 20 / 4.5 → 5.
        let p = policy(&[(TYPE, "capacity"), (TARGET, "5")]);
        assert_eq!(
            History::default().decide(&p, 20.0, 1, now),
            Some((5, Reason::ScaleUp))
        );
        // Bounded by max.
        let p = policy(&[(TYPE, "capacity"), (TARGET, "1"), (SCALE_MAX_LABEL, "3")]);
        assert_eq!(
            History::default().decide(&p, 50.0, 1, now),
            Some((3, Reason::ScaleUp))
        );
    }

    #[test]
    fn scaling_down_waits_for_the_window() {
        let p = policy(&[
            (TYPE, "capacity"),
            (TARGET, "5"),
            (PROPORTION, "1"),
            (DOWN_WINDOW, "10s"),
        ]);
        let mut h = History::default();
        let t0 = Instant::now();
        assert_eq!(h.decide(&p, 20.0, 1, t0), Some((4, Reason::ScaleUp)));
        assert_eq!(h.decide(&p, 0.0, 4, t0 + Duration::from_secs(5)), None);
        assert_eq!(
            h.decide(&p, 0.0, 4, t0 + Duration::from_secs(11)),
            Some((1, Reason::ScaleDown))
        );
    }

    #[test]
    fn rate_is_measured_over_the_last_seconds() {
        let mut h = History::default();
        let t0 = Instant::now();
        assert_eq!(h.observe(t0, 0), 0.0);
        let rate = h.observe(t0 + Duration::from_secs(2), 100);
        assert!((rate - 50.0).abs() < 0.01, "{rate}");
        assert_eq!(h.idle(t0 + Duration::from_secs(3)), Duration::from_secs(1));
    }

    #[test]
    fn idle_functions_with_zero_go_to_zero() {
        let p = policy(&[(ZERO, "true"), (ZERO_DURATION, "2s")]);
        assert_eq!(p.zero_after, Some(Duration::from_secs(2)));
        let mut h = History::default();
        let t0 = Instant::now();
        h.observe(t0, 5);
        assert_eq!(h.decide(&p, 0.0, 1, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            h.decide(&p, 0.0, 1, t0 + Duration::from_secs(3)),
            Some((0, Reason::ToZero))
        );
        assert_eq!(h.decide(&p, 0.0, 0, t0 + Duration::from_secs(4)), None);
        // Without the label, never below min.
        let p = policy(&[(TYPE, "rps")]);
        assert_eq!(p.zero_after, None);
    }
}
