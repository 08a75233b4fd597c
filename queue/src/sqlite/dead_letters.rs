//! The embedded queue's dead letters and figures: list, redrive, delete, stats.

use rusqlite::{OptionalExtension, params};
use tributary_core::queue::{DeadLetterRecord, QueueError, QueueStats, now_ms};

use super::SqliteQueue;
use super::db::transaction;
use super::depths::LABEL_SQL;

impl SqliteQueue {
    /// The newest dead letters, at most `limit`, each with its row id.
    pub(super) async fn list_dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<DeadLetterRecord>, QueueError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .run("cannot list the dead letters", move |conn| {
                let mut stmt =
                    conn.prepare("SELECT id, record FROM dead_letters ORDER BY id DESC LIMIT ?1")?;
                let rows = stmt.query_map([limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.iter()
            .map(|(id, r)| {
                let mut record: DeadLetterRecord = serde_json::from_str(r)
                    .map_err(|e| self.db.err(&format!("dead letter {id} is corrupt"), e))?;
                record.id = u64::try_from(*id).unwrap_or(0);
                Ok(record)
            })
            .collect()
    }

    /// Moves dead letter `id` back into the queue, due now with no attempts made.
    pub(super) async fn redrive_dead_letter(&self, id: u64) -> Result<bool, QueueError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        let depths = self.depths.clone();
        let moved = self
            .db
            .run("cannot redrive the dead letter", move |conn| {
                let label: Option<String> = transaction(conn, |conn| {
                    let label = conn
                        .query_row(
                            &format!(
                                "INSERT INTO requests (meta, body, available_at)
                                 SELECT meta, body, ?1 FROM dead_letters WHERE id = ?2
                                 RETURNING {LABEL_SQL}"
                            ),
                            params![now_ms(), id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    conn.execute("DELETE FROM dead_letters WHERE id = ?1", [id])?;
                    Ok(label)
                })?;
                if let Some(label) = &label {
                    depths.add(label, 1);
                }
                Ok(label.is_some())
            })
            .await?;
        if moved {
            self.notify.notify_one();
        }
        Ok(moved)
    }

    /// Removes dead letter `id`.
    pub(super) async fn remove_dead_letter(&self, id: u64) -> Result<bool, QueueError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        self.db
            .run("cannot delete the dead letter", move |conn| {
                conn.execute("DELETE FROM dead_letters WHERE id = ?1", [id])
            })
            .await
            .map(|n| n > 0)
    }

    /// Depth, leased now, oldest age and dead letters, read in one go.
    pub(super) async fn read_stats(&self) -> Result<QueueStats, QueueError> {
        let (depth, in_flight, oldest, dead) = self
            .db
            .run("cannot read the queue's figures", |conn| {
                let now = now_ms();
                let (depth, in_flight) = conn.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(leased_until > ?1), 0) FROM requests",
                    [now],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?;
                let oldest = conn
                    .query_row(
                        "SELECT json_extract(meta, '$.enqueued_at_ms') FROM requests ORDER BY id LIMIT 1",
                        [],
                        |r| r.get::<_, Option<i64>>(0),
                    )
                    .optional()?
                    .flatten();
                let dead =
                    conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get::<_, i64>(0))?;
                Ok((depth, in_flight, oldest.map(|t| now - t), dead))
            })
            .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(QueueStats {
            backend: "embedded".into(),
            depth: count(depth),
            in_flight: count(in_flight),
            oldest_age_ms: oldest.map(count),
            dead_letters: count(dead),
        })
    }
}
