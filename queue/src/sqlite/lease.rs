//! One leased request of the embedded queue and what the worker does with it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use tokio::sync::Notify;
use tributary_core::queue::{DeadLetterRecord, QueueError, now_ms};

use super::LEASE;
use super::commit::GroupCommit;
use super::db::{Db, transaction};
use super::depths::Depths;
use crate::backend::Lease;

/// A leased request: ack, retry, dead-letter or extend it, if the lease is still ours
/// (`lease_token`).
pub(super) struct SqliteLease {
    pub(super) db: Arc<Db>,
    /// Acknowledgements go through the group commit.
    pub(super) commit: GroupCommit,
    pub(super) notify: Arc<Notify>,
    /// Moved when a dead letter takes the request out.
    pub(super) depths: Depths,
    /// The request's function (`name.namespace`).
    pub(super) label: String,
    pub(super) id: i64,
    pub(super) token: i64,
}

#[async_trait]
impl Lease for SqliteLease {
    async fn ack(&self) -> Result<(), QueueError> {
        self.commit
            .ack(self.id, self.token, self.label.clone())
            .await
    }

    async fn retry(&self, delay: Duration) -> Result<(), QueueError> {
        let (id, token) = (self.id, self.token);
        self.db
            .run("cannot put the request back", move |conn| {
                conn.execute(
                    "UPDATE requests SET available_at = ?1, leased_until = 0 WHERE id = ?2 AND lease_token = ?3",
                    params![now_ms() + delay.as_millis() as i64, id, token],
                )
            })
            .await?;
        if delay.is_zero() {
            self.notify.notify_one();
        }
        Ok(())
    }

    async fn dead_letter(&self, record: DeadLetterRecord) -> Result<(), QueueError> {
        let (id, token, depths, label) =
            (self.id, self.token, self.depths.clone(), self.label.clone());
        let record = serde_json::to_string(&record)
            .map_err(|e| self.db.err("cannot encode the dead letter", e))?;
        self.db
            .run("cannot store the dead letter", move |conn| {
                let moved = transaction(conn, |conn| {
                    let moved = conn.execute(
                        "INSERT INTO dead_letters (record, meta, body)
                         SELECT ?1, meta, body FROM requests WHERE id = ?2 AND lease_token = ?3",
                        params![record, id, token],
                    )?;
                    conn.execute(
                        "DELETE FROM requests WHERE id = ?1 AND lease_token = ?2",
                        params![id, token],
                    )?;
                    Ok(moved)
                })?;
                depths.add(&label, -(moved as i64));
                Ok(moved)
            })
            .await
            .map(drop)
    }

    async fn extend(&self) -> Result<(), QueueError> {
        let (id, token) = (self.id, self.token);
        self.db
            .run("cannot extend the lease", move |conn| {
                conn.execute(
                    "UPDATE requests SET leased_until = ?1 WHERE id = ?2 AND lease_token = ?3",
                    params![now_ms() + LEASE.as_millis() as i64, id, token],
                )
            })
            .await
            .map(drop)
    }
}
