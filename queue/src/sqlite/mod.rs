//! The embedded queue: one SQLite database in WAL mode. Accepting a request commits with
//! `synchronous=FULL`, so it survives a crash of the process or the machine; accepts and acks
//! made at the same time share one transaction (group commit); leases, acks and retries commit with
//! `synchronous=NORMAL` (durable across a process crash; after a power loss
//! the worst case is a redelivery, which at-least-once allows). One process owns the file; on
//! open, leases left by a previous (killed) process are released so their requests run again.

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
mod lease;

use commit::GroupCommit;
use db::{Db, SCHEMA, error, lock};
use lease::SqliteLease;

/// How long a lease lasts before another worker may take the request.
const LEASE: Duration = Duration::from_secs(60);
/// The most requests leased in one transaction.
const BATCH: usize = 64;
/// How often waiting workers look for delayed retries coming due.
const POLL: Duration = Duration::from_millis(100);

/// Leases the oldest due requests: `?1` lease end, `?2` token, `?3` now, `?4` how many.
///
/// A plain `LIMIT ?4` would make SQLite re-prepare the statement on every bind (it plans around
/// a bound LIMIT's value): a sixth of the queue's SQLite time under load. The cast keeps the
/// plan independent of the value.
const LEASE_SQL: &str =
    "UPDATE requests SET leased_until = ?1, lease_token = ?2, attempts = attempts + 1
     WHERE id IN (SELECT id FROM requests WHERE available_at <= ?3 AND leased_until <= ?3
                  ORDER BY id LIMIT CAST(?4 AS INTEGER))
     RETURNING id, meta, body, attempts";

/// The embedded durable queue.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Arc<Db>,
    notify: Arc<Notify>,
    commit: GroupCommit,
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
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        let released = conn
            .execute(
                "UPDATE requests SET leased_until = 0 WHERE leased_until > 0",
                [],
            )
            .map_err(fail)?;
        let waiting: i64 = conn
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
            .map_err(fail)?;
        tracing::info!(path = %path.display(), waiting, released, "embedded queue opened");
        let db = Arc::new(Db {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            _lock: lock,
        });
        Ok(Self {
            commit: GroupCommit::new(db.clone()),
            db,
            notify: Arc::new(Notify::new()),
        })
    }

    /// Leases up to `max` due requests in one transaction, oldest first.
    async fn try_lease(&self, max: usize) -> Result<Vec<Leased>, QueueError> {
        let token = fastrand::i64(1..i64::MAX);
        let limit = i64::try_from(max.clamp(1, BATCH)).unwrap_or(1);
        let mut rows = self
            .db
            .run("cannot lease requests", move |conn| {
                let now = now_ms();
                let mut stmt = conn.prepare_cached(LEASE_SQL)?;
                let rows = stmt.query_map(
                    params![now + LEASE.as_millis() as i64, token, now, limit],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, u32>(3)?,
                        ))
                    },
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.sort_by_key(|r| r.0);
        let mut leased = Vec::with_capacity(rows.len());
        for (id, meta, body, attempt) in rows {
            let mut request: QueuedRequest = serde_json::from_str(&meta)
                .map_err(|e| self.db.err(&format!("row {id} is corrupt"), e))?;
            request.body = Bytes::from(body);
            leased.push(Leased {
                request,
                attempt,
                lease: Box::new(SqliteLease {
                    db: self.db.clone(),
                    commit: self.commit.clone(),
                    notify: self.notify.clone(),
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
        self.commit.write(meta, request.body.to_vec()).await?;
        self.notify.notify_one();
        Ok(())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.db
            .run("cannot count the requests", |conn| {
                conn.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get::<_, i64>(0))
            })
            .await
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    async fn depth_by_function(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, QueueError> {
        self.db
            .run("cannot count the requests per function", |conn| {
                let mut stmt = conn.prepare(
                    "SELECT json_extract(meta, '$.function') || '.' || json_extract(meta, '$.namespace'), COUNT(*) FROM requests GROUP BY 1",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                rows.map(|r| r.map(|(f, n)| (f, u64::try_from(n).unwrap_or(0))))
                    .collect::<rusqlite::Result<std::collections::BTreeMap<_, _>>>()
            })
            .await
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
mod tests {
    use super::*;

    fn request(call_id: &str) -> QueuedRequest {
        QueuedRequest {
            call_id: call_id.into(),
            function: "f".into(),
            namespace: "openfaas-fn".into(),
            method: "POST".into(),
            path: "/".into(),
            headers: vec![("x-a".into(), "1".into())],
            callback_url: None,
            enqueued_at_ms: now_ms(),
            body: Bytes::from_static(b"body"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_accepts_are_each_stored_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.db");
        let q = SqliteQueue::open(&path).expect("opens");
        let accepts: Vec<_> = (0..200)
            .map(|i| {
                let q = q.clone();
                tokio::spawn(async move { q.enqueue(request(&format!("c{i}"))).await })
            })
            .collect();
        for a in accepts {
            a.await.expect("joins").expect("stored");
        }
        let by_function = q.depth_by_function().await.expect("depth");
        assert_eq!(by_function.get("f.openfaas-fn"), Some(&200));
        drop(q);
        let reopened = SqliteQueue::open(&path).expect("reopens");
        assert_eq!(reopened.depth().await.expect("depth"), 200);
    }

    #[tokio::test]
    async fn a_failed_group_commit_is_an_error_for_each_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = SqliteQueue::open(&dir.path().join("q.db")).expect("opens");
        q.db.run("break the table", |conn| {
            conn.execute_batch("DROP TABLE requests")
        })
        .await
        .expect("dropped");
        let (a, b) = tokio::join!(q.enqueue(request("a")), q.enqueue(request("b")));
        for e in [a.expect_err("not stored"), b.expect_err("not stored")] {
            let text = tributary_core::Chain(&e).to_string();
            assert!(text.contains("cannot store the request"), "{text}");
            assert!(text.contains("no such table"), "{text}");
        }
        // The writer is free again: a later request is tried (and fails) too, no hang.
        let later = tokio::time::timeout(Duration::from_secs(5), q.enqueue(request("c"))).await;
        assert!(later.expect("answers").is_err());
    }

    #[tokio::test]
    async fn lease_ack_retry_and_dead_letter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.db");
        let q = SqliteQueue::open(&path).expect("opens");
        q.enqueue(request("a")).await.expect("enqueue");
        q.enqueue(request("b")).await.expect("enqueue");
        assert_eq!(q.depth().await.expect("depth"), 2);
        let cancel = CancellationToken::new();
        let one = |max| {
            let q = q.clone();
            let cancel = cancel.clone();
            async move {
                let mut leased = q.lease(max, &cancel).await.expect("lease");
                assert_eq!(leased.len(), 1, "leased exactly one");
                leased.remove(0)
            }
        };
        let a = one(1).await;
        assert_eq!(a.request.call_id, "a");
        assert_eq!(a.request.body, Bytes::from_static(b"body"));
        assert_eq!(a.attempt, 1);
        // Retried with a delay: b comes first, then a again with attempt 2.
        a.lease
            .retry(Duration::from_millis(300))
            .await
            .expect("retry");
        let b = one(1).await;
        assert_eq!(b.request.call_id, "b");
        b.lease.ack().await.expect("ack");
        let a2 = one(5).await;
        assert_eq!((a2.request.call_id.as_str(), a2.attempt), ("a", 2));
        let mut record = DeadLetterRecord {
            id: 0,
            call_id: "a".into(),
            function: "f".into(),
            namespace: "openfaas-fn".into(),
            status: Some(500),
            reason: "gave up".into(),
            attempts: 2,
            failed_at_ms: now_ms(),
            body_bytes: 4,
        };
        a2.lease
            .dead_letter(record.clone())
            .await
            .expect("dead letter");
        assert_eq!(q.depth().await.expect("depth"), 0);
        let listed = q.dead_letters(10).await.expect("list");
        record.id = listed[0].id;
        assert_eq!(listed, vec![record.clone()]);
        let stats = q.stats().await.expect("stats");
        assert_eq!((stats.depth, stats.dead_letters), (0, 1));

        // Redriven: back in the queue as a fresh request (attempt 1), gone from the dead letters.
        assert!(q.redrive(record.id).await.expect("redrive"));
        assert!(
            !q.redrive(record.id).await.expect("second redrive"),
            "only once"
        );
        let stats = q.stats().await.expect("stats");
        assert_eq!((stats.depth, stats.dead_letters), (1, 0));
        assert!(stats.oldest_age_ms.is_some());
        let again = one(1).await;
        assert_eq!((again.request.call_id.as_str(), again.attempt), ("a", 1));
        assert_eq!(again.request.body, Bytes::from_static(b"body"));
        assert_eq!(q.stats().await.expect("stats").in_flight, 1);
        again
            .lease
            .dead_letter(record.clone())
            .await
            .expect("dead letter");
        let id = q.dead_letters(10).await.expect("list")[0].id;
        assert!(q.delete_dead_letter(id).await.expect("delete"));
        assert!(!q.delete_dead_letter(id).await.expect("delete again"));
        assert_eq!(
            q.stats().await.expect("stats"),
            QueueStats {
                backend: "embedded".into(),
                ..QueueStats::default()
            }
        );
    }

    /// A new queue (and its folder) holding `n` requests, `c0` first.
    async fn queue_holding(n: usize) -> (tempfile::TempDir, SqliteQueue) {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = SqliteQueue::open(&dir.path().join("q.db")).expect("opens");
        for i in 0..n {
            q.enqueue(request(&format!("c{i}"))).await.expect("enqueue");
        }
        (dir, q)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_acks_all_commit_and_a_stale_lease_removes_nothing() {
        use crate::backend::Lease;
        let (_dir, q) = queue_holding(50).await;
        let cancel = CancellationToken::new();
        let mut leased = Vec::new();
        while leased.len() < 50 {
            leased.extend(q.lease(50, &cancel).await.expect("lease"));
        }
        // A lease taken over by someone else (a new token) is not ours to remove.
        let stale = SqliteLease {
            db: q.db.clone(),
            commit: q.commit.clone(),
            notify: q.notify.clone(),
            id: 1,
            token: 0,
        };
        stale.ack().await.expect("a stale ack is not an error");
        assert_eq!(q.depth().await.expect("depth"), 50, "and removed nothing");
        let acks: Vec<_> = leased
            .into_iter()
            .map(|l| tokio::spawn(async move { l.lease.ack().await }))
            .collect();
        for a in acks {
            a.await.expect("joins").expect("acked");
        }
        assert_eq!(q.depth().await.expect("depth"), 0);
    }

    #[tokio::test]
    async fn leasing_with_other_batch_sizes_reuses_the_prepared_statement() {
        let (_dir, q) = queue_holding(10).await;
        let cancel = CancellationToken::new();
        for max in [1, 2, 3, 4] {
            assert_eq!(q.lease(max, &cancel).await.expect("lease").len(), max);
        }
        let reprepared =
            q.db.run("read the statement's status", |conn| {
                Ok(conn
                    .prepare_cached(LEASE_SQL)?
                    .get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .expect("status");
        assert_eq!(reprepared, 0, "the lease statement was compiled again");
    }

    #[test]
    fn a_second_opener_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.db");
        let first = SqliteQueue::open(&path).expect("opens");
        let err = SqliteQueue::open(&path).err().expect("refused");
        let text = tributary_core::Chain(&err).to_string();
        assert!(text.contains("in use by another process"), "{text}");
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        drop(first);
        SqliteQueue::open(&path).expect("free again once closed");
    }

    #[tokio::test]
    async fn leases_of_a_killed_process_are_released_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.db");
        {
            let q = SqliteQueue::open(&path).expect("opens");
            q.enqueue(request("x")).await.expect("enqueue");
            let leased = q.lease(10, &CancellationToken::new()).await.expect("lease");
            assert_eq!(leased.len(), 1);
            // Dropped without ack, as if the process died mid-call.
        }
        let q = SqliteQueue::open(&path).expect("reopens");
        let again = q
            .lease(10, &CancellationToken::new())
            .await
            .expect("lease")
            .remove(0);
        assert_eq!((again.request.call_id.as_str(), again.attempt), ("x", 2));
    }
}
