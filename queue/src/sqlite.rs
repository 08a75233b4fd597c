//! The embedded queue: one SQLite database in WAL mode. Accepting a request commits with
//! `synchronous=FULL`, so it survives a crash of the process or the machine; leases, acks and
//! retries commit with `synchronous=NORMAL` (durable across a process crash; after a power loss
//! the worst case is a redelivery, which at-least-once allows). One process owns the file; on
//! open, leases left by a previous (killed) process are released so their requests run again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, params};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tributary_core::queue::{
    AsyncQueue, BoxError, DeadLetterRecord, QueueError, QueuedRequest, now_ms,
};

use crate::backend::{Backend, Lease, Leased};

/// How long a lease lasts before another worker may take the request.
const LEASE: Duration = Duration::from_secs(60);
/// The most requests leased in one transaction.
const BATCH: usize = 64;
/// How often waiting workers look for delayed retries coming due.
const POLL: Duration = Duration::from_millis(100);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    meta TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    leased_until INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_due ON requests (available_at, leased_until);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL,
    meta TEXT NOT NULL,
    body BLOB NOT NULL
);
";

struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Held (locked) for as long as the queue is open: one process per file.
    _lock: std::fs::File,
}

/// An error of the embedded queue at `path`, while doing `what`.
fn error(path: &Path, what: &str, source: impl Into<BoxError>) -> QueueError {
    QueueError::Backend {
        queue: format!("embedded queue ({})", path.display()),
        what: what.to_owned(),
        source: source.into(),
    }
}

impl Db {
    fn err(&self, what: &str, source: impl Into<BoxError>) -> QueueError {
        error(&self.path, what, source)
    }

    /// Runs `f` on the connection in a blocking thread; `what` names it in errors.
    async fn run<T, F>(self: &Arc<Self>, what: &'static str, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn).map_err(|e| db.err(what, e))
        })
        .await
        .map_err(|e| self.err(what, e))?
    }
}

/// Takes `PATH.lock` for this process, or says which process holds it.
fn lock(path: &Path) -> Result<std::fs::File, QueueError> {
    use std::io::{Read, Seek, Write};
    let lock_path = path.with_extension("db.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| error(path, "cannot create its lock file", e))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(error(
                path,
                "refusing to start",
                format!(
                    "it is in use by another process (pid {}): each gateway needs its own queue_path or state_dir",
                    holder.trim()
                ),
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(error(path, "cannot lock it", e)),
    }
}

/// A request waiting for the next group commit.
struct Row {
    meta: String,
    body: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Requests waiting to be written, and whether a flush is writing.
#[derive(Default)]
struct Batch {
    rows: Vec<Row>,
    flushing: bool,
}

/// The embedded durable queue.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Arc<Db>,
    notify: Arc<Notify>,
    batch: Arc<Mutex<Batch>>,
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
        Ok(Self {
            db: Arc::new(Db {
                conn: Mutex::new(conn),
                path: path.to_owned(),
                _lock: lock,
            }),
            notify: Arc::new(Notify::new()),
            batch: Arc::default(),
        })
    }

    /// Group commit: writes every request waiting, in one transaction and one fsync, until none
    /// waits; each caller hears only once its own row is durable. Runs as a task of its own,
    /// so a caller that goes away cannot strand the others.
    async fn flush(self) {
        loop {
            let rows = {
                let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
                if batch.rows.is_empty() {
                    batch.flushing = false;
                    return;
                }
                std::mem::take(&mut batch.rows)
            };
            let (data, waiting): (Vec<(String, Vec<u8>)>, Vec<_>) =
                rows.into_iter().map(|r| ((r.meta, r.body), r.done)).unzip();
            let written = self
                .db
                .run("cannot store the requests", move |conn| {
                    conn.pragma_update(None, "synchronous", "FULL")?;
                    let now = now_ms();
                    let tx = conn.transaction()?;
                    {
                        let mut insert = tx.prepare_cached(
                            "INSERT INTO requests (meta, body, available_at) VALUES (?1, ?2, ?3)",
                        )?;
                        for (meta, body) in &data {
                            insert.execute(params![meta, body, now])?;
                        }
                    }
                    let committed = tx.commit();
                    conn.pragma_update(None, "synchronous", "NORMAL")?;
                    committed
                })
                .await
                .map_err(|e| tributary_core::Chain(&e).to_string());
            for done in waiting {
                let _ = done.send(written.clone());
            }
        }
    }

    /// Leases up to `max` due requests in one transaction, oldest first.
    async fn try_lease(&self, max: usize) -> Result<Vec<Leased>, QueueError> {
        let token = fastrand::i64(1..i64::MAX);
        let limit = i64::try_from(max.clamp(1, BATCH)).unwrap_or(1);
        let mut rows = self
            .db
            .run("cannot lease requests", move |conn| {
                let now = now_ms();
                let mut stmt = conn.prepare_cached(
                    "UPDATE requests SET leased_until = ?1, lease_token = ?2, attempts = attempts + 1
                     WHERE id IN (SELECT id FROM requests WHERE available_at <= ?3 AND leased_until <= ?3
                                  ORDER BY id LIMIT ?4)
                     RETURNING id, meta, body, attempts",
                )?;
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
        let body = request.body.to_vec();
        let (done, written) = tokio::sync::oneshot::channel();
        let lead = {
            let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.rows.push(Row { meta, body, done });
            !std::mem::replace(&mut batch.flushing, true)
        };
        if lead {
            tokio::spawn(self.clone().flush());
        }
        match written.await {
            Ok(Ok(())) => {
                self.notify.notify_one();
                Ok(())
            }
            Ok(Err(e)) => Err(self.db.err("cannot store the request", e)),
            Err(_) => Err(self.db.err(
                "cannot store the request",
                "the writer stopped before it was durable",
            )),
        }
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .run("cannot list the dead letters", move |conn| {
                let mut stmt =
                    conn.prepare("SELECT record FROM dead_letters ORDER BY id DESC LIMIT ?1")?;
                let rows = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r).map_err(|e| self.db.err("a dead letter is corrupt", e))
            })
            .collect()
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

struct SqliteLease {
    db: Arc<Db>,
    notify: Arc<Notify>,
    id: i64,
    token: i64,
}

#[async_trait]
impl Lease for SqliteLease {
    async fn ack(&self) -> Result<(), QueueError> {
        let (id, token) = (self.id, self.token);
        self.db
            .run("cannot remove the request", move |conn| {
                conn.execute(
                    "DELETE FROM requests WHERE id = ?1 AND lease_token = ?2",
                    params![id, token],
                )
            })
            .await
            .map(drop)
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
        let (id, token) = (self.id, self.token);
        let record = serde_json::to_string(&record)
            .map_err(|e| self.db.err("cannot encode the dead letter", e))?;
        self.db
            .run("cannot store the dead letter", move |conn| {
                let tx = conn.transaction()?;
                let moved = tx.execute(
                    "INSERT INTO dead_letters (record, meta, body)
                     SELECT ?1, meta, body FROM requests WHERE id = ?2 AND lease_token = ?3",
                    params![record, id, token],
                )?;
                tx.execute(
                    "DELETE FROM requests WHERE id = ?1 AND lease_token = ?2",
                    params![id, token],
                )?;
                tx.commit()?;
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
        let record = DeadLetterRecord {
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
        assert_eq!(q.dead_letters(10).await.expect("list"), vec![record]);
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
