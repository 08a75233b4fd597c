//! The embedded queue's database: its schema, the one connection every operation shares (run
//! on a blocking thread), and the lock file that keeps a second process away.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tributary_core::queue::{BoxError, QueueError};

pub(super) const SCHEMA: &str = "
-- A request's id is its rowid, one more than the largest in the table (no AUTOINCREMENT: its
-- counter row was read and written by every insert). An id may come back once its request is
-- gone, never while it waits, and always above every waiting one (leasing goes in id order); a
-- lease is its id and a random token, so an old lease never settles a new request.
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    meta TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    leased_until INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER NOT NULL DEFAULT 0
);
-- Leasing scans in id order (the oldest due first), so an index on (available_at,
-- leased_until) was never used by it, only written on every insert, lease and delete (a
-- quarter of their cost): files made by earlier versions lose it.
DROP INDEX IF EXISTS requests_due;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL,
    meta TEXT NOT NULL,
    body BLOB NOT NULL
);
";

/// The connection, shared by every operation through [`Db::run`].
pub(super) struct Db {
    pub(super) conn: Mutex<Connection>,
    pub(super) path: PathBuf,
    /// Held (locked) for as long as the queue is open: one process per file.
    pub(super) _lock: std::fs::File,
}

/// An error of the embedded queue at `path`, while doing `what`.
pub(super) fn error(path: &Path, what: &str, source: impl Into<BoxError>) -> QueueError {
    QueueError::Backend {
        queue: format!("embedded queue ({})", path.display()),
        what: what.to_owned(),
        source: source.into(),
    }
}

impl Db {
    /// An error of this queue while doing `what`.
    pub(super) fn err(&self, what: &str, source: impl Into<BoxError>) -> QueueError {
        error(&self.path, what, source)
    }

    /// Runs `f` on the connection in a blocking thread; `what` names it in errors.
    pub(super) async fn run<T, F>(
        self: &Arc<Self>,
        what: &'static str,
        f: F,
    ) -> Result<T, QueueError>
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

/// Runs `f` in one transaction, its BEGIN and COMMIT prepared once and cached (a transaction
/// guard parses them anew each time); on an error it is rolled back, so the connection is free
/// for the next caller and nothing of `f`'s writes is kept.
pub(super) fn transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let done = conn
        .prepare_cached("BEGIN")
        .and_then(|mut begin| begin.execute([]))
        .and_then(|_| f(conn))
        .and_then(|value| {
            conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(value)
        });
    if done.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// Takes `PATH.lock` for this process, or says which process holds it.
pub(super) fn lock(path: &Path) -> Result<std::fs::File, QueueError> {
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
