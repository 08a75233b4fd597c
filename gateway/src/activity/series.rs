//! A ring of short time slots holding call counts and a latency histogram, for rates, error
//! rates, percentiles and trend lines over the last minutes without a time-series database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The length of one slot.
pub const SLOT: Duration = Duration::from_secs(2);
/// Slots kept: two minutes.
pub const SLOTS: usize = 60;
/// Latency buckets: the first ends at 0.1 ms, each next one √2 times wider (the last ~74 s+).
const BUCKETS: usize = 40;

/// The upper bound of bucket `i`, in milliseconds.
fn bucket_bound_ms(i: usize) -> f64 {
    0.1 * std::f64::consts::SQRT_2.powi(i32::try_from(i).unwrap_or(i32::MAX))
}

fn bucket_of(took: Duration) -> usize {
    let ms = took.as_secs_f64() * 1000.0;
    (0..BUCKETS)
        .find(|&i| ms <= bucket_bound_ms(i))
        .unwrap_or(BUCKETS - 1)
}

/// The slot number of a moment (its epoch).
pub fn epoch_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / SLOT.as_secs())
}

#[derive(Clone, Copy)]
struct Slot {
    epoch: u64,
    calls: u32,
    errors: u32,
    latency: [u32; BUCKETS],
}

impl Slot {
    const EMPTY: Slot = Slot {
        epoch: 0,
        calls: 0,
        errors: 0,
        latency: [0; BUCKETS],
    };
}

/// Calls, errors and latencies per slot for the last [`SLOTS`] slots.
pub struct Series {
    slots: Box<[Slot; SLOTS]>,
    total: u64,
    total_errors: u64,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            slots: Box::new([Slot::EMPTY; SLOTS]),
            total: 0,
            total_errors: 0,
        }
    }
}

/// What a [`Series`] says about a window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Calls since the gateway started.
    pub total: u64,
    /// Failed calls since the gateway started.
    pub total_errors: u64,
    /// Calls per second over the last 10 s.
    pub rate: f64,
    /// Failed calls as a share of calls over the last minute (0 to 1).
    pub error_rate: f64,
    /// Median latency over the last minute, in ms (a bucket's upper bound, within √2).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency over the last minute, in ms.
    pub p99_ms: Option<f64>,
    /// Calls per slot, oldest first, for a trend line.
    pub calls_trend: Vec<u32>,
    /// p99 latency per slot in ms (0 for a slot without calls), oldest first.
    pub p99_trend: Vec<f64>,
}

impl Series {
    /// Counts one call at `epoch`.
    pub fn record(&mut self, epoch: u64, took: Duration, failed: bool) {
        let slot = &mut self.slots[usize::try_from(epoch % SLOTS as u64).unwrap_or(0)];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::EMPTY
            };
        }
        slot.calls = slot.calls.saturating_add(1);
        self.total += 1;
        if failed {
            slot.errors = slot.errors.saturating_add(1);
            self.total_errors += 1;
        }
        let b = bucket_of(took);
        slot.latency[b] = slot.latency[b].saturating_add(1);
    }

    /// Adds `other`'s calls to these (another thread's record of the same calls' window).
    pub fn add(&mut self, other: &Series) {
        for (mine, theirs) in self.slots.iter_mut().zip(other.slots.iter()) {
            if theirs.epoch > mine.epoch {
                *mine = *theirs;
            } else if theirs.epoch == mine.epoch {
                mine.calls = mine.calls.saturating_add(theirs.calls);
                mine.errors = mine.errors.saturating_add(theirs.errors);
                for (sum, n) in mine.latency.iter_mut().zip(theirs.latency) {
                    *sum = sum.saturating_add(n);
                }
            }
        }
        self.total += other.total;
        self.total_errors += other.total_errors;
    }

    /// The slot for `epoch` if it holds that epoch's calls.
    fn slot(&self, epoch: u64) -> Option<&Slot> {
        let slot = &self.slots[usize::try_from(epoch % SLOTS as u64).unwrap_or(0)];
        (slot.epoch == epoch).then_some(slot)
    }

    /// Rates, percentiles and trends as of `now` (an epoch).
    pub fn summary(&self, now: u64) -> Summary {
        let window = |n: u64| (now.saturating_sub(n - 1)..=now).filter_map(|e| self.slot(e));
        let recent_calls: u32 = window(5).map(|s| s.calls).sum();
        let minute_slots = 60 / SLOT.as_secs();
        let (mut calls, mut errors, mut latency) = (0u64, 0u64, [0u64; BUCKETS]);
        for s in window(minute_slots) {
            calls += u64::from(s.calls);
            errors += u64::from(s.errors);
            for (sum, n) in latency.iter_mut().zip(s.latency) {
                *sum += u64::from(n);
            }
        }
        let history = (now.saturating_sub(SLOTS as u64 - 1)..=now).map(|e| self.slot(e));
        let (calls_trend, p99_trend) = history
            .map(|s| match s {
                Some(s) => (
                    s.calls,
                    percentile(&s.latency.map(u64::from), 0.99).unwrap_or(0.0),
                ),
                None => (0, 0.0),
            })
            .unzip();
        Summary {
            total: self.total,
            total_errors: self.total_errors,
            rate: f64::from(recent_calls) / (5.0 * SLOT.as_secs_f64()),
            error_rate: if calls == 0 {
                0.0
            } else {
                errors as f64 / calls as f64
            },
            p50_ms: percentile(&latency, 0.5),
            p99_ms: percentile(&latency, 0.99),
            calls_trend,
            p99_trend,
        }
    }
}

/// The upper bound of the bucket holding quantile `q`, or `None` without calls.
fn percentile(latency: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in latency.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some((bucket_bound_ms(i) * 1000.0).round() / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_errors_and_percentiles_over_the_window() {
        let mut s = Series::default();
        let now = 1_000_000;
        for i in 0..98 {
            s.record(now - (i % 5), Duration::from_millis(2), false);
        }
        s.record(now, Duration::from_millis(500), true);
        s.record(now, Duration::from_millis(500), true);
        let sum = s.summary(now);
        assert_eq!((sum.total, sum.total_errors), (100, 2));
        assert!((sum.rate - 10.0).abs() < 1e-9, "{}", sum.rate);
        assert!((sum.error_rate - 0.02).abs() < 1e-9);
        let p50 = sum.p50_ms.expect("p50");
        assert!(
            (2.0..2.0 * std::f64::consts::SQRT_2).contains(&p50),
            "{p50}"
        );
        let p99 = sum.p99_ms.expect("p99");
        assert!(
            (500.0..500.0 * std::f64::consts::SQRT_2).contains(&p99),
            "{p99}"
        );
        assert_eq!(sum.calls_trend.len(), SLOTS);
        assert_eq!(sum.calls_trend[SLOTS - 1], 22);
        assert!(sum.p99_trend[SLOTS - 1] >= 500.0);
    }

    #[test]
    fn old_slots_fall_out_and_are_reused() {
        let mut s = Series::default();
        s.record(10, Duration::from_millis(1), true);
        let later = 10 + SLOTS as u64;
        assert_eq!(s.summary(later).rate, 0.0);
        assert_eq!(s.summary(later).p99_ms, None);
        assert_eq!(s.summary(later).calls_trend.iter().sum::<u32>(), 0);
        s.record(later, Duration::from_millis(1), false);
        let sum = s.summary(later);
        assert_eq!(
            sum.calls_trend.iter().sum::<u32>(),
            1,
            "the reused slot was reset"
        );
        assert_eq!(sum.error_rate, 0.0);
        assert_eq!((sum.total, sum.total_errors), (2, 1));
    }

    #[test]
    fn added_series_sum_their_current_slots_and_keep_the_newer_of_two_epochs() {
        let (mut a, mut b) = (Series::default(), Series::default());
        a.record(100, Duration::from_millis(1), false);
        b.record(100, Duration::from_millis(300), true);
        b.record(101, Duration::from_millis(1), false);
        // Same ring position, older epoch: replaced by b's newer slot at that position.
        a.record(101 - SLOTS as u64, Duration::from_millis(1), false);
        a.add(&b);
        let sum = a.summary(101);
        assert_eq!((sum.total, sum.total_errors), (4, 1));
        assert_eq!(&sum.calls_trend[SLOTS - 2..], &[2, 1]);
        assert_eq!(
            sum.calls_trend.iter().sum::<u32>(),
            3,
            "the stale slot is gone"
        );
        assert!(sum.p99_ms.expect("p99") >= 300.0);
    }

    #[test]
    fn latencies_past_the_last_bucket_land_in_it() {
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        assert_eq!(bucket_of(Duration::ZERO), 0);
    }
}
