//! The embedded queue: one SQLite database in WAL mode, committed with `synchronous=NORMAL`.
//! An accepted request is answered only once the write-ahead log holding it is synced, so it
//! survives a crash of the process or the machine; accepts and acks made at the same time share
//! one transaction, and the accepts of every group committed meanwhile one `fdatasync` (group
//! commit). Leases, acks and retries are not synced themselves (durable across a process
//! crash; after a power loss the worst case is a redelivery, which at-least-once allows). One
//! process owns the file (a lock file beside it), and its connection holds the database in
//! SQLite's exclusive locking mode: no lock taken and released per transaction and no
//! shared-memory index (their `fcntl` calls were a seventh of the queue's SQLite time); no
//! other process can read the database while it is open. A file left by a crashed process,
//! whatever its locking mode, opens with every committed row; leases it held are released so
//! their requests run again.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, params};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tributary_core::queue::{
    AsyncQueue, DeadLetterRecord, QueueError, QueueStats, QueuedRequest, now_ms,
};

use crate::backend::{Backend, Leased};

mod commit;
mod db;
mod dead_letters;
mod depths;
mod lease;

use commit::GroupCommit;
use db::{Db, SCHEMA, error, lock, transaction};
use depths::Depths;
use lease::SqliteLease;

/// How long a lease lasts before another worker may take the request.
const LEASE: Duration = Duration::from_secs(60);
/// The most requests leased in one transaction.
const BATCH: usize = 64;
/// How often waiting workers look for delayed retries coming due.
const POLL: Duration = Duration::from_millis(100);

/// The oldest due requests not leased: `?1` now, `?2` how many.
///
/// A plain `LIMIT ?2` would make SQLite re-prepare the statement on every bind (it plans around
/// a bound LIMIT's value): a sixth of the queue's SQLite time under load. The cast keeps the
/// plan independent of the value.
const DUE_SQL: &str = "SELECT id, meta, body, attempts FROM requests
     WHERE available_at <= ?1 AND leased_until <= ?1 ORDER BY id LIMIT CAST(?2 AS INTEGER)";

/// Leases one request: `?1` lease end, `?2` token, `?3` id. Selecting then updating by id in one
/// transaction costs a third less than one `UPDATE ... WHERE id IN (SELECT ...) RETURNING`, which
/// builds and drops two temporary tables for each lease.
const TAKE_SQL: &str = "UPDATE requests SET leased_until = ?1, lease_token = ?2, attempts = attempts + 1 WHERE id = ?3";

/// The embedded durable queue.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Arc<Db>,
    notify: Arc<Notify>,
    commit: GroupCommit,
    /// Waiting requests per function.
    depths: Depths,
}

impl SqliteQueue {
    /// Opens (or creates) the queue database at `path`. Blocking: call it before serving.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| error(path, "cannot create its folder", e))?;
        }
        let lock = lock(path)?;
        let fail = |e: rusqlite::Error| error(path, "cannot open it", e);
        let conn = Connection::open(path).map_err(fail)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        let released = conn
            .execute(
                "UPDATE requests SET leased_until = 0 WHERE leased_until > 0",
                [],
            )
            .map_err(fail)?;
        let depths = Depths::load(&conn).map_err(fail)?;
        let waiting = depths.total();
        tracing::info!(path = %path.display(), waiting, released, "embedded queue opened");
        let db = Arc::new(Db {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            _lock: lock,
        });
        Ok(Self {
            commit: GroupCommit::start(db.clone(), depths.clone())?,
            db,
            notify: Arc::new(Notify::new()),
            depths,
        })
    }

    /// Leases up to `max` due requests in one transaction, oldest first.
    async fn try_lease(&self, max: usize) -> Result<Vec<Leased>, QueueError> {
        let token = fastrand::i64(1..i64::MAX);
        let limit = i64::try_from(max.clamp(1, BATCH)).unwrap_or(1);
        let rows = self
            .db
            .run("cannot lease requests", move |conn| {
                transaction(conn, |conn| {
                    let now = now_ms();
                    let mut rows = conn
                        .prepare_cached(DUE_SQL)?
                        .query_map(params![now, limit], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, Vec<u8>>(2)?,
                                r.get::<_, u32>(3)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let mut take = conn.prepare_cached(TAKE_SQL)?;
                    let until = now + LEASE.as_millis() as i64;
                    for (id, _, _, attempts) in &mut rows {
                        take.execute(params![until, token, *id])?;
                        *attempts += 1;
                    }
                    Ok(rows)
                })
            })
            .await?;
        let mut leased = Vec::with_capacity(rows.len());
        for (id, meta, body, attempt) in rows {
            let mut request: QueuedRequest = serde_json::from_str(&meta)
                .map_err(|e| self.db.err(&format!("row {id} is corrupt"), e))?;
            request.body = Bytes::from(body);
            let label = request.label();
            leased.push(Leased {
                request,
                attempt,
                lease: Box::new(SqliteLease {
                    db: self.db.clone(),
                    commit: self.commit.clone(),
                    notify: self.notify.clone(),
                    depths: self.depths.clone(),
                    label,
                    id,
                    token,
                }),
            });
        }
        Ok(leased)
    }
}

#[async_trait]
impl AsyncQueue for SqliteQueue {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn enqueue(&self, request: QueuedRequest) -> Result<(), QueueError> {
        let meta = serde_json::to_string(&request)
            .map_err(|e| self.db.err("cannot encode the request", e))?;
        self.commit
            .write(meta, request.body.clone(), request.label())
            .await?;
        self.notify.notify_one();
        Ok(())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.depths.total())
    }

    async fn depth_by_function(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, QueueError> {
        Ok(self.depths.snapshot())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterRecord>, QueueError> {
        self.list_dead_letters(limit).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.read_stats().await
    }

    async fn redrive(&self, id: u64) -> Result<bool, QueueError> {
        self.redrive_dead_letter(id).await
    }

    async fn delete_dead_letter(&self, id: u64) -> Result<bool, QueueError> {
        self.remove_dead_letter(id).await
    }
}

#[async_trait]
impl Backend for SqliteQueue {
    async fn lease(
        &self,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Leased>, QueueError> {
        loop {
            let notified = self.notify.notified();
            let leased = self.try_lease(max).await?;
            if !leased.is_empty() {
                return Ok(leased);
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(Vec::new()),
                _ = notified => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    fn lease_refresh(&self) -> Duration {
        LEASE / 3
    }
}

#[cfg(test)]
mod tests;
