//! How many requests wait per function, kept in memory: counted once when the queue opens,
//! then moved by each committed insert, acknowledgement, dead letter and redrive. The
//! autoscaler reads it every interval, `/system/info` its total; counting with SQL meant parsing every waiting row's
//! JSON while holding the connection every accept waits for (O(depth), every 2 s).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

/// A row's function label (`name.namespace`) in SQL.
pub(super) const LABEL_SQL: &str =
    "json_extract(meta, '$.function') || '.' || json_extract(meta, '$.namespace')";

/// Waiting requests per function label (`name.namespace`).
#[derive(Clone, Default)]
pub(super) struct Depths(Arc<Mutex<BTreeMap<String, u64>>>);

impl Depths {
    /// Counts the requests in the database (once, when it opens).
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {LABEL_SQL}, COUNT(*) FROM requests GROUP BY 1"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let counts = rows
            .map(|r| r.map(|(label, n)| (label, u64::try_from(n).unwrap_or(0))))
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
        Ok(Self(Arc::new(Mutex::new(counts))))
    }

    /// Moves `label`'s count by `by` (a function whose count reaches 0 is forgotten).
    pub(super) fn add(&self, label: &str, by: i64) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.get(label).copied().unwrap_or(0);
        let moved = count.saturating_add_signed(by);
        if moved == 0 {
            counts.remove(label);
        } else {
            counts.insert(label.to_owned(), moved);
        }
    }

    /// How many requests wait, all functions together.
    pub(super) fn total(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// The counts now.
    pub(super) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_and_functions_at_zero_are_forgotten() {
        let depths = Depths::default();
        depths.add("f.fn", 2);
        depths.add("g.fn", 1);
        depths.add("f.fn", -1);
        depths.add("g.fn", -1);
        depths.add("h.fn", -1);
        assert_eq!(depths.snapshot(), BTreeMap::from([("f.fn".to_owned(), 1)]));
        assert_eq!(depths.total(), 1);
        depths.add("g.fn", 3);
        assert_eq!(depths.total(), 4);
    }
}
