//! Group commit: requests accepted at the same time share one transaction and one fsync
//! (`synchronous=FULL`); each caller hears back only once its own row is durable.

use std::sync::{Arc, Mutex};

use rusqlite::params;
use tributary_core::queue::{QueueError, now_ms};

use super::db::Db;

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

/// Writes accepted requests in groups.
#[derive(Clone)]
pub(super) struct GroupCommit {
    db: Arc<Db>,
    batch: Arc<Mutex<Batch>>,
}

impl GroupCommit {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self {
            db,
            batch: Arc::default(),
        }
    }

    /// Stores one request; returns once its row is committed. The first caller to find no
    /// flush running starts one, which takes every row waiting, including those that arrive
    /// while it writes.
    pub(super) async fn write(&self, meta: String, body: Vec<u8>) -> Result<(), QueueError> {
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
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.db.err("cannot store the request", e)),
            Err(_) => Err(self.db.err(
                "cannot store the request",
                "the writer stopped before it was durable",
            )),
        }
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
}
