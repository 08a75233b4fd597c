//! Group commit in two stages, each on a thread of its own: the committer writes every waiting
//! row in one transaction (without an fsync), then the syncer makes the write-ahead log durable
//! with one `fdatasync` for every group committed meanwhile. While one group's log is being
//! synced the next group is already being written, and an accept hears back only once its own row
//! is on disk. The worker's acknowledgements (row deletions) join the same groups and hear back
//! at once after the commit: after a power loss the worst case is a redelivery, which
//! at-least-once allows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use bytes::Bytes;
use rusqlite::params;
use tributary_core::queue::{QueueError, now_ms};

use super::db::{Db, transaction};
use super::depths::Depths;

/// The most rows written in one transaction.
const MAX_GROUP: usize = 1024;

/// A write waiting for the next group commit.
enum Write {
    /// A new request for function `label`.
    Insert {
        meta: String,
        body: Bytes,
        label: String,
    },
    /// A delivered request, removed if its lease is still `token`.
    Ack { id: i64, token: i64, label: String },
}

/// Who waits for a write: told `Ok` once it is committed (and durable, for an insert).
type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A write and who waits for it.
struct Row {
    write: Write,
    done: Done,
}

/// Writes rows in groups; shared by the queue and its leases.
#[derive(Clone)]
pub(super) struct GroupCommit {
    inner: Arc<Inner>,
}

/// The committer's inbox and the two threads, stopped and joined when the last handle goes.
struct Inner {
    db: Arc<Db>,
    /// The committer's inbox; taken (closed) when the queue is dropped.
    rows: Option<Sender<Row>>,
    threads: Vec<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the committer and the syncer of the queue in `db`; `depths` move with each
    /// committed insert and acknowledgement.
    pub(super) fn start(db: Arc<Db>, depths: Depths) -> Result<Self, QueueError> {
        let (rows, inbox) = channel::<Row>();
        let (committed, to_sync) = channel::<Vec<Done>>();
        let (committer_db, wal) = (db.clone(), wal_path(&db.path));
        let main = db.path.clone();
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(run)
                .map_err(|e| db.err("cannot start its writer thread", e))
        };
        let threads = vec![
            spawn(
                "queue-commit",
                Box::new(move || commit_loop(&committer_db, &depths, &inbox, &committed)),
            )?,
            spawn(
                "queue-sync",
                Box::new(move || sync_loop(&wal, &main, &to_sync)),
            )?,
        ];
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                rows: Some(rows),
                threads,
            }),
        })
    }

    /// Stores one request; returns once its row is committed and on disk.
    pub(super) async fn write(
        &self,
        meta: String,
        body: Bytes,
        label: String,
    ) -> Result<(), QueueError> {
        self.join(
            Write::Insert { meta, body, label },
            "cannot store the request",
        )
        .await
    }

    /// Removes a delivered request of function `label` (if its lease is still `token`);
    /// returns once committed.
    pub(super) async fn ack(&self, id: i64, token: i64, label: String) -> Result<(), QueueError> {
        self.join(Write::Ack { id, token, label }, "cannot remove the request")
            .await
    }

    /// Queues `write` for the next group and waits until it is committed.
    async fn join(&self, write: Write, what: &'static str) -> Result<(), QueueError> {
        let db = &self.inner.db;
        let stopped = || db.err(what, "the queue's writer thread stopped");
        let (done, written) = tokio::sync::oneshot::channel();
        let sent = self
            .inner
            .rows
            .as_ref()
            .map(|rows| rows.send(Row { write, done }));
        if !matches!(sent, Some(Ok(()))) {
            return Err(stopped());
        }
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(db.err(what, e)),
            Err(_) => Err(stopped()),
        }
    }
}

impl Drop for Inner {
    /// Closes the committer's inbox and waits for both threads to finish what they hold, so
    /// the database (and its lock) is released when the queue is.
    fn drop(&mut self) {
        drop(self.rows.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Write {
    /// The function it is for.
    fn label(&self) -> &str {
        match self {
            Write::Insert { label, .. } | Write::Ack { label, .. } => label,
        }
    }
}

/// The committer: takes every row waiting (up to [`MAX_GROUP`]), writes them in one
/// transaction, answers the acknowledgements and hands the inserts' callers to the syncer.
/// Returns when every sender is gone.
fn commit_loop(db: &Db, depths: &Depths, inbox: &Receiver<Row>, synced: &Sender<Vec<Done>>) {
    while let Ok(first) = inbox.recv() {
        let group = std::iter::once(first).chain(inbox.try_iter().take(MAX_GROUP - 1));
        let (data, waiting): (Vec<Write>, Vec<Done>) =
            group.map(|row| (row.write, row.done)).unzip();
        let committed = {
            let conn = db.conn.lock().unwrap_or_else(|e| e.into_inner());
            commit_group(&conn, &data, depths)
        };
        if let Err(e) = committed {
            let e = tributary_core::Chain(&e).to_string();
            for done in waiting {
                let _ = done.send(Err(e.clone()));
            }
            continue;
        }
        let mut inserts = Vec::new();
        for (write, done) in data.iter().zip(waiting) {
            match write {
                Write::Insert { .. } => inserts.push(done),
                Write::Ack { .. } => {
                    let _ = done.send(Ok(()));
                }
            }
        }
        // A syncer gone (it cannot be, short of a panic) drops the callers: they hear an error.
        if !inserts.is_empty() {
            let _ = synced.send(inserts);
        }
    }
}

/// The syncer: one `fdatasync` of the write-ahead log for every group committed since the last
/// one, then their callers hear back. Returns when the committer is gone.
fn sync_loop(wal: &Path, main: &Path, committed: &Receiver<Vec<Done>>) {
    while let Ok(mut waiting) = committed.recv() {
        for more in committed.try_iter() {
            waiting.extend(more);
        }
        let synced = sync(wal, main).map_err(|e| format!("cannot sync {}: {e}", wal.display()));
        for done in waiting {
            let _ = done.send(synced.clone());
        }
    }
}

/// The write-ahead log beside the database at `path` (SQLite's own name for it).
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Makes everything committed so far durable: `fdatasync` of the write-ahead log (opened anew,
/// so it is always the current file). Without a log (SQLite removes it only once every row is
/// checkpointed into the database), the database file itself.
pub(super) fn sync(wal: &Path, main: &Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::File::open(main)?.sync_data()
        }
        Err(e) => Err(e),
    }
}

/// Writes one group in one transaction (`synchronous=NORMAL`: no fsync, the syncer makes it
/// durable); the depths move once it is committed, in commit order (under the connection's
/// lock). Nothing of a failed group is kept.
fn commit_group(
    conn: &rusqlite::Connection,
    data: &[Write],
    depths: &Depths,
) -> rusqlite::Result<()> {
    let moved = transaction(conn, |conn| write_all(conn, data, now_ms()))?;
    for (write, by) in data.iter().zip(moved) {
        depths.add(write.label(), by);
    }
    Ok(())
}

/// Writes one group's rows inside its transaction; how each moves its function's depth.
fn write_all(conn: &rusqlite::Connection, data: &[Write], now: i64) -> rusqlite::Result<Vec<i64>> {
    let mut insert =
        conn.prepare_cached("INSERT INTO requests (meta, body, available_at) VALUES (?1, ?2, ?3)")?;
    let mut delete =
        conn.prepare_cached("DELETE FROM requests WHERE id = ?1 AND lease_token = ?2")?;
    let mut moved = Vec::with_capacity(data.len());
    for write in data {
        moved.push(match write {
            Write::Insert { meta, body, .. } => {
                insert.execute(params![meta, &body[..], now])?;
                1
            }
            // A lease taken over (another token) removes nothing.
            Write::Ack { id, token, .. } => -(delete.execute(params![id, token])? as i64),
        });
    }
    Ok(moved)
}
