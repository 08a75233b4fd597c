//! Which offsets may be committed: per partition, everything below the lowest message that is
//! not final yet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A topic and partition.
pub type Partition = (String, i32);

/// One assigned partition's bookkeeping.
#[derive(Debug)]
struct PartitionState {
    /// Bumped on every assignment, so acks from an earlier assignment are told apart.
    epoch: u64,
    /// Offsets handed to the runtime whose outcome is not final yet.
    in_flight: BTreeSet<i64>,
    /// One past the highest offset taken from the broker.
    next: Option<i64>,
    /// The last offset committed (or handed to the committer).
    committed: Option<i64>,
    /// Revocation started: take no more messages of this partition.
    revoked: bool,
}

impl PartitionState {
    /// The next offset to consume after a restart: the lowest in-flight offset, or one past
    /// the highest taken when nothing is in flight.
    fn commit_point(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }
}

/// Offsets taken and finished, per assigned partition. Shared between the consumer thread
/// (takes, assigns, revokes) and the runtime's acknowledgements (finishes).
#[derive(Debug, Default)]
pub struct Tracker {
    state: Mutex<TrackerState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct TrackerState {
    partitions: HashMap<Partition, PartitionState>,
    epochs: u64,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The partition is now ours; returns its epoch.
    pub fn assign(&self, partition: Partition) -> u64 {
        let mut s = self.lock();
        s.epochs += 1;
        let epoch = s.epochs;
        s.partitions.insert(
            partition,
            PartitionState {
                epoch,
                in_flight: BTreeSet::new(),
                next: None,
                committed: None,
                revoked: false,
            },
        );
        epoch
    }

    /// Records that `offset` was taken; returns the epoch to finish it with, or `None` when
    /// the partition is not assigned (or being revoked) and the message must not be delivered.
    pub fn take(&self, partition: &Partition, offset: i64) -> Option<u64> {
        let mut s = self.lock();
        let p = s.partitions.get_mut(partition)?;
        if p.revoked {
            return None;
        }
        p.in_flight.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(p.epoch)
    }

    /// Where to read `partition` again from after a message of it was handed back under
    /// `epoch`: its lowest unfinished offset (so no handed-back message is skipped, whatever
    /// was read since); `None` when the partition is no longer ours under that epoch.
    pub fn rewind_point(&self, partition: &Partition, epoch: u64) -> Option<i64> {
        let s = self.lock();
        let p = s
            .partitions
            .get(partition)
            .filter(|p| p.epoch == epoch && !p.revoked)?;
        p.in_flight.first().copied()
    }

    /// Marks `offset` final (delivered or dead-lettered). Acks from an earlier assignment are
    /// ignored: that assignment's offsets were committed or abandoned at revocation.
    pub fn finish(&self, partition: &Partition, epoch: u64, offset: i64) {
        let mut s = self.lock();
        if let Some(p) = s.partitions.get_mut(partition).filter(|p| p.epoch == epoch) {
            p.in_flight.remove(&offset);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Commit points that moved since the last call, marked as committed.
    pub fn due(&self) -> Vec<(Partition, i64)> {
        let mut s = self.lock();
        let mut out = Vec::new();
        for (k, p) in &mut s.partitions {
            if let Some(point) = p.commit_point().filter(|c| Some(*c) != p.committed) {
                p.committed = Some(point);
                out.push((k.clone(), point));
            }
        }
        out
    }

    /// The current commit point of every assigned partition that has one.
    pub fn commit_points(&self) -> Vec<(Partition, i64)> {
        let s = self.lock();
        s.partitions
            .iter()
            .filter_map(|(k, p)| p.commit_point().map(|c| (k.clone(), c)))
            .collect()
    }

    /// Waits until `pending` (messages still in flight, of some partitions) is zero or
    /// `deadline` passes; returns the guard and what is still pending.
    fn wait_settled<'a>(
        &'a self,
        mut s: MutexGuard<'a, TrackerState>,
        deadline: Instant,
        pending: impl Fn(&TrackerState) -> usize,
    ) -> (MutexGuard<'a, TrackerState>, usize) {
        loop {
            let n = pending(&s);
            let left = deadline.saturating_duration_since(Instant::now());
            if n == 0 || left.is_zero() {
                return (s, n);
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops taking messages of `partitions`, waits up to `grace` for their in-flight messages
    /// to become final, then forgets them. Returns the commit point of each (to commit before
    /// the partition is released) and how many messages were still in flight.
    pub fn revoke(
        &self,
        partitions: &[Partition],
        grace: Duration,
    ) -> (Vec<(Partition, i64)>, usize) {
        let deadline = Instant::now() + grace;
        let mut s = self.lock();
        for k in partitions {
            if let Some(p) = s.partitions.get_mut(k) {
                p.revoked = true;
            }
        }
        let (mut s, unfinished) = self.wait_settled(s, deadline, |s| {
            partitions
                .iter()
                .filter_map(|k| s.partitions.get(k))
                .map(|p| p.in_flight.len())
                .sum()
        });
        let points = partitions
            .iter()
            .filter_map(|k| {
                let p = s.partitions.remove(k)?;
                p.commit_point().map(|c| (k.clone(), c))
            })
            .collect();
        (points, unfinished)
    }

    /// Waits up to `grace` for every in-flight message to become final; returns how many are
    /// still in flight (`Duration::ZERO` just counts them).
    pub fn drain(&self, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        self.wait_settled(self.lock(), deadline, |s| {
            s.partitions.values().map(|p| p.in_flight.len()).sum()
        })
        .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("t".to_owned(), n)
    }

    #[test]
    fn commits_only_below_the_lowest_unfinished_offset() {
        let t = Tracker::default();
        let e = t.assign(p(0));
        for o in 10..15 {
            assert_eq!(t.take(&p(0), o), Some(e));
        }
        // Nothing final yet: the commit point is the first in-flight offset.
        assert_eq!(t.due(), vec![(p(0), 10)]);
        t.finish(&p(0), e, 12);
        t.finish(&p(0), e, 11);
        assert!(t.due().is_empty(), "10 is unfinished, so nothing moves");
        t.finish(&p(0), e, 10);
        assert_eq!(t.due(), vec![(p(0), 13)]);
        t.finish(&p(0), e, 14);
        t.finish(&p(0), e, 13);
        assert_eq!(t.due(), vec![(p(0), 15)]);
        assert!(t.due().is_empty());
    }

    #[test]
    fn rewinds_go_to_the_lowest_unfinished_offset() {
        let t = Tracker::default();
        let e = t.assign(p(0));
        for o in 0..6 {
            t.take(&p(0), o);
        }
        t.finish(&p(0), e, 0);
        // 1 and 4 were handed back; 2 and 3 are still running.
        assert_eq!(t.rewind_point(&p(0), e), Some(1));
        t.finish(&p(0), e, 1);
        t.finish(&p(0), e, 2);
        t.finish(&p(0), e, 3);
        assert_eq!(t.rewind_point(&p(0), e), Some(4));
        assert_eq!(t.rewind_point(&p(0), e + 1), None, "another assignment");
    }

    #[test]
    fn stale_acks_and_unassigned_partitions_are_ignored() {
        let t = Tracker::default();
        assert_eq!(t.take(&p(1), 0), None);
        let old = t.assign(p(1));
        t.take(&p(1), 5);
        let new = t.assign(p(1));
        t.take(&p(1), 5);
        t.finish(&p(1), old, 5);
        assert_eq!(t.drain(Duration::ZERO), 1);
        t.finish(&p(1), new, 5);
        assert_eq!(t.drain(Duration::ZERO), 0);
        assert_eq!(t.commit_points(), vec![(p(1), 6)]);
    }

    #[test]
    fn revoke_waits_for_in_flight_messages_then_forgets() {
        let t = std::sync::Arc::new(Tracker::default());
        let e = t.assign(p(2));
        t.take(&p(2), 7);
        t.take(&p(2), 8);
        let t2 = t.clone();
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t2.finish(&p(2), e, 7);
            t2.finish(&p(2), e, 8);
        });
        let (points, unfinished) = t.revoke(&[p(2)], Duration::from_secs(5));
        finisher.join().unwrap();
        assert_eq!(points, vec![(p(2), 9)]);
        assert_eq!(unfinished, 0);
        assert_eq!(t.take(&p(2), 9), None, "revoked partitions take nothing");
    }

    #[test]
    fn revoke_gives_up_after_the_grace_and_commits_below_the_unfinished() {
        let t = Tracker::default();
        let e = t.assign(p(3));
        t.take(&p(3), 1);
        t.take(&p(3), 2);
        t.finish(&p(3), e, 2);
        let (points, unfinished) = t.revoke(&[p(3)], Duration::from_millis(20));
        assert_eq!(points, vec![(p(3), 1)]);
        assert_eq!(unfinished, 1);
        assert_eq!(t.drain(Duration::from_millis(1)), 0);
    }
}
