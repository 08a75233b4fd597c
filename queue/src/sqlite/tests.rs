//! The embedded queue against real SQLite files in temporary folders.

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

/// A new queue in a new folder: the folder (removed when dropped), the file, the queue.
fn new_queue() -> (tempfile::TempDir, std::path::PathBuf, SqliteQueue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.db");
    let q = SqliteQueue::open(&path).expect("opens");
    (dir, path, q)
}

/// A lease of request `id` with a token no lease has (one taken over by someone else).
fn stale_lease(q: &SqliteQueue, id: i64) -> SqliteLease {
    SqliteLease {
        db: q.db.clone(),
        commit: q.commit.clone(),
        notify: q.notify.clone(),
        depths: q.depths.clone(),
        label: "f.openfaas-fn".into(),
        id,
        token: 0,
    }
}

/// The dead letter of call `call_id` of function `f` after `attempts` attempts.
fn gave_up(call_id: &str, attempts: u32) -> DeadLetterRecord {
    DeadLetterRecord {
        id: 0,
        call_id: call_id.into(),
        function: "f".into(),
        namespace: "openfaas-fn".into(),
        status: Some(500),
        reason: "gave up".into(),
        attempts,
        failed_at_ms: now_ms(),
        body_bytes: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_are_each_stored_and_survive_a_reopen() {
    let (_dir, path, q) = new_queue();
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
    let (_dir, _, q) = new_queue();
    run_sql(&q, "DROP TABLE requests").await;
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
    let (_dir, _, q) = new_queue();
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
    let mut record = gave_up("a", 2);
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

/// Runs `statements` on the queue's own connection (to break or rig it).
async fn run_sql(q: &SqliteQueue, statements: &'static str) {
    q.db.run("run the test's statements", move |conn| {
        conn.execute_batch(statements)
    })
    .await
    .expect(statements);
}

/// A new queue (and its folder) holding `n` requests, `c0` first.
async fn queue_holding(n: usize) -> (tempfile::TempDir, SqliteQueue) {
    let (dir, _, q) = new_queue();
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
    let stale = stale_lease(&q, 1);
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
async fn the_depth_per_function_follows_accepts_acks_dead_letters_and_redrives() {
    use crate::backend::Lease;
    let (_dir, path, q) = new_queue();
    let depth = |q: &SqliteQueue| {
        let q = q.clone();
        async move { q.depth_by_function().await.expect("depth") }
    };
    for (i, function) in ["f", "f", "f", "g"].into_iter().enumerate() {
        let mut r = request(&format!("c{i}"));
        r.function = function.into();
        q.enqueue(r).await.expect("enqueue");
    }
    let both = |f, g| {
        let mut m = std::collections::BTreeMap::new();
        for (label, n) in [("f.openfaas-fn", f), ("g.openfaas-fn", g)] {
            if n > 0 {
                m.insert(label.to_owned(), n);
            }
        }
        m
    };
    assert_eq!(depth(&q).await, both(3, 1));
    let cancel = CancellationToken::new();
    let mut leased = q.lease(4, &cancel).await.expect("lease");
    assert_eq!(depth(&q).await, both(3, 1), "leased requests still wait");
    let g = leased.pop().expect("g");
    g.lease.ack().await.expect("ack");
    // An acknowledgement of a lease taken over removes nothing, and counts nothing.
    let stale = stale_lease(&q, 1);
    stale.ack().await.expect("a stale ack is not an error");
    assert_eq!(depth(&q).await, both(3, 0));
    let f = leased.pop().expect("f");
    let record = gave_up(&f.request.call_id, 1);
    f.lease.dead_letter(record).await.expect("dead letter");
    assert_eq!(depth(&q).await, both(2, 0));
    let id = q.dead_letters(1).await.expect("list")[0].id;
    assert!(q.redrive(id).await.expect("redrive"));
    assert_eq!(depth(&q).await, both(3, 0));
    drop((leased, g, f, stale, q));
    let reopened = SqliteQueue::open(&path).expect("reopens");
    assert_eq!(depth(&reopened).await, both(3, 0), "counted again on open");
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
                .prepare_cached(DUE_SQL)?
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

#[tokio::test]
async fn a_lease_failing_part_way_takes_nothing() {
    let (_dir, q) = queue_holding(3).await;
    let cancel = CancellationToken::new();
    run_sql(
        &q,
        "CREATE TRIGGER refuse AFTER UPDATE OF lease_token ON requests WHEN NEW.id = 2
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .await;
    let err = q.lease(3, &cancel).await.err().expect("the lease fails");
    assert!(
        tributary_core::Chain(&err)
            .to_string()
            .contains("refused by the test")
    );
    run_sql(&q, "DROP TRIGGER refuse").await;
    let leased = q.lease(3, &cancel).await.expect("lease");
    let attempts: Vec<u32> = leased.iter().map(|l| l.attempt).collect();
    assert_eq!(
        attempts,
        [1, 1, 1],
        "the failed lease was rolled back whole"
    );
}

#[tokio::test]
async fn a_dead_letter_failing_part_way_keeps_the_request_and_its_depth() {
    let (_dir, q) = queue_holding(1).await;
    let cancel = CancellationToken::new();
    let leased = q.lease(1, &cancel).await.expect("lease").remove(0);
    run_sql(
        &q,
        "CREATE TRIGGER refuse BEFORE DELETE ON requests
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .await;
    let err = leased
        .lease
        .dead_letter(gave_up("c0", 1))
        .await
        .expect_err("the dead letter fails");
    assert!(
        tributary_core::Chain(&err)
            .to_string()
            .contains("refused by the test")
    );
    assert!(
        q.dead_letters(10).await.expect("list").is_empty(),
        "its insert was rolled back"
    );
    assert_eq!(
        q.depth().await.expect("depth"),
        1,
        "still waiting, still counted"
    );
    run_sql(&q, "DROP TRIGGER refuse").await;
    leased
        .lease
        .dead_letter(gave_up("c0", 1))
        .await
        .expect("dead letter");
    assert_eq!(q.dead_letters(10).await.expect("list").len(), 1);
    assert_eq!(q.depth().await.expect("depth"), 0);
}

#[test]
fn a_sync_without_a_log_syncs_the_database_and_without_either_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, main) = (dir.path().join("q.db-wal"), dir.path().join("q.db"));
    let missing = commit::sync(&wal, &main).expect_err("neither file exists");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    std::fs::write(&main, b"x").expect("writes");
    commit::sync(&wal, &main).expect("syncs the database");
    std::fs::write(&wal, b"x").expect("writes");
    commit::sync(&wal, &main).expect("syncs the log");
}

#[tokio::test]
async fn an_accepted_request_is_in_the_file_before_the_queue_is_closed() {
    let (_dir, path, q) = new_queue();
    q.enqueue(request("a")).await.expect("stored");
    // The files as they are on disk now, opened elsewhere as after a crash: the queue is still
    // open (holding them exclusively), nothing was checkpointed.
    let copy = tempfile::tempdir().expect("tempdir");
    for suffix in ["db", "db-wal"] {
        std::fs::copy(
            path.with_extension(suffix),
            copy.path().join(format!("q.{suffix}")),
        )
        .expect("copies the file");
    }
    let other = Connection::open(copy.path().join("q.db")).expect("opens the copy");
    let stored: i64 = other
        .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
        .expect("counts");
    assert_eq!(stored, 1);
    assert!(path.with_extension("db-wal").exists(), "the log holds it");
}

#[tokio::test]
async fn the_open_queue_holds_its_database_exclusively() {
    let (_dir, path, q) = new_queue();
    q.enqueue(request("a")).await.expect("stored");
    let other = Connection::open(&path).expect("opens the file");
    other.busy_timeout(Duration::ZERO).expect("no waiting");
    let read = other.query_row("SELECT count(*) FROM requests", [], |r| r.get::<_, i64>(0));
    let e = read.expect_err("another connection cannot read it while the queue is open");
    assert!(e.to_string().contains("locked"), "{e}");
    drop((other, q));
    let reopened = SqliteQueue::open(&path).expect("reopens");
    assert_eq!(reopened.depth().await.expect("depth"), 1);
}

#[tokio::test]
async fn an_id_that_comes_back_is_never_settled_by_its_old_lease() {
    let (_dir, _, q) = new_queue();
    let cancel = CancellationToken::new();
    q.enqueue(request("a")).await.expect("stored");
    let a = q.lease(1, &cancel).await.expect("lease").remove(0);
    a.lease.ack().await.expect("acked");
    q.enqueue(request("b")).await.expect("stored");
    let ids =
        q.db.run("read the ids", |conn| {
            conn.prepare("SELECT id FROM requests")?
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .expect("ids");
    assert_eq!(ids, vec![1], "b took a's id (no AUTOINCREMENT counter)");
    let b = q.lease(1, &cancel).await.expect("lease").remove(0);
    assert_eq!(b.request.call_id, "b");
    // a's lease, settled again (a late duplicate), leaves b alone.
    a.lease.ack().await.expect("a stale ack is not an error");
    a.lease
        .retry(Duration::ZERO)
        .await
        .expect("a stale retry is not an error");
    assert_eq!(q.depth().await.expect("depth"), 1);
    assert!(
        q.try_lease(1).await.expect("lease").is_empty(),
        "b is still leased to its own lease"
    );
    b.lease.ack().await.expect("acked");
    assert_eq!(q.depth().await.expect("depth"), 0);
}

/// Set in the child process of the test below: the file it writes and leaves as if it crashed.
const CRASHED_WRITER: &str = "TRIBUTARY_TEST_CRASHED_WRITER";

#[test]
fn a_file_left_by_a_crashed_writer_of_an_earlier_version_opens_with_every_row() {
    if let Some(path) = std::env::var_os(CRASHED_WRITER) {
        // The child: an earlier version's file (AUTOINCREMENT, SQLite's default shared locking,
        // WAL), rows committed, and an exit without closing (the log and its index stay).
        let conn = Connection::open(&path).expect("opens");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch(&SCHEMA.replace("PRIMARY KEY,", "PRIMARY KEY AUTOINCREMENT,"))
            .expect("schema");
        let meta = serde_json::to_string(&request("old")).expect("encodes");
        for _ in 0..3 {
            conn.execute(
                "INSERT INTO requests (meta, body, available_at, leased_until, lease_token) VALUES (?1, x'00', 0, 9999999999999, 5)",
                params![meta],
            )
            .expect("insert");
        }
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.db");
    let child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "sqlite::tests::a_file_left_by_a_crashed_writer_of_an_earlier_version_opens_with_every_row",
        ])
        .env(CRASHED_WRITER, &path)
        .output()
        .expect("runs the writer");
    assert!(child.status.success(), "{child:?}");
    assert!(path.with_extension("db-wal").exists() && path.with_extension("db-shm").exists());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let q = SqliteQueue::open(&path).expect("opens in exclusive mode");
    rt.block_on(async {
        assert_eq!(q.depth().await.expect("depth"), 3);
        let leased = q
            .lease(8, &CancellationToken::new())
            .await
            .expect("its leases released");
        assert_eq!(leased.len(), 3);
        assert!(leased.iter().all(|l| l.request.call_id == "old"));
    });
}
