//! Group commit: requests accepted at the same time share one transaction and one fsync
//! (`synchronous=FULL`); each caller hears back only once its own row is durable. The worker's
//! acknowledgements (row deletions) join the same groups: many acks, one transaction (without an
//! fsync of their own when no accept is in the group: after a power loss the worst case is a
//! redelivery, which at-least-once allows).

use std::sync::{Arc, Mutex};

use rusqlite::params;
use tributary_core::queue::{QueueError, now_ms};

use super::db::{Db, transaction};
use super::depths::Depths;

/// A write waiting for the next group commit.
enum Write {
    /// A new request for function `label`.
    Insert {
        meta: String,
        body: Vec<u8>,
        label: String,
    },
    /// A delivered request, removed if its lease is still `token`.
    Ack { id: i64, token: i64, label: String },
}

/// A write and who waits for it.
struct Row {
    write: Write,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Requests waiting to be written, and whether a flush is writing.
#[derive(Default)]
struct Batch {
    rows: Vec<Row>,
    flushing: bool,
}

/// Writes accepted requests in groups.
#[derive(Clone)]
pub(super) struct GroupCommit {
    db: Arc<Db>,
    /// Moved by each committed insert and acknowledgement.
    depths: Depths,
    batch: Arc<Mutex<Batch>>,
}

impl GroupCommit {
    pub(super) fn new(db: Arc<Db>, depths: Depths) -> Self {
        Self {
            db,
            depths,
            batch: Arc::default(),
        }
    }

    /// Stores one request; returns once its row is committed. The first caller to find no
    /// flush running starts one, which takes every row waiting, including those that arrive
    /// while it writes.
    pub(super) async fn write(
        &self,
        meta: String,
        body: Vec<u8>,
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
        let (done, written) = tokio::sync::oneshot::channel();
        let lead = {
            let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.rows.push(Row { write, done });
            !std::mem::replace(&mut batch.flushing, true)
        };
        if lead {
            tokio::spawn(self.clone().flush());
        }
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.db.err(what, e)),
            Err(_) => Err(self
                .db
                .err(what, "the writer stopped before it was committed")),
        }
    }

    /// Group commit: writes everything waiting, in one transaction (with an fsync when it
    /// stores requests), until nothing waits; each caller hears only once its own write is
    /// committed. Runs as a task of its own, so a caller that goes away cannot strand the others.
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
            let (data, waiting): (Vec<Write>, Vec<_>) =
                rows.into_iter().map(|r| (r.write, r.done)).unzip();
            let depths = self.depths.clone();
            let written = self
                .db
                .run("cannot store the requests", move |conn| {
                    commit_group(conn, &data, &depths)
                })
                .await
                .map_err(|e| tributary_core::Chain(&e).to_string());
            for done in waiting {
                let _ = done.send(written.clone());
            }
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

/// Writes one group in one transaction, with an fsync when it stores requests; the depths move
/// once it is committed, in commit order (under the connection's lock). Nothing of a failed
/// group is kept.
fn commit_group(
    conn: &rusqlite::Connection,
    data: &[Write],
    depths: &Depths,
) -> rusqlite::Result<()> {
    let durable = data.iter().any(|w| matches!(w, Write::Insert { .. }));
    // Statements prepared once and cached: parsing the pragmas was a tenth of a group's cost.
    if durable {
        conn.prepare_cached("PRAGMA synchronous = FULL")?
            .execute([])?;
    }
    let committed = transaction(conn, |conn| write_all(conn, data, now_ms()));
    if let Ok(moved) = &committed {
        for (write, by) in data.iter().zip(moved) {
            depths.add(write.label(), *by);
        }
    }
    if durable {
        conn.prepare_cached("PRAGMA synchronous = NORMAL")?
            .execute([])?;
    }
    committed.map(drop)
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
                insert.execute(params![meta, body, now])?;
                1
            }
            // A lease taken over (another token) removes nothing.
            Write::Ack { id, token, .. } => -(delete.execute(params![id, token])? as i64),
        });
    }
    Ok(moved)
}
