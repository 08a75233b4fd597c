//! Captured function output. Each function has a log book: the stdout and stderr lines of its
//! processes, kept in its folder of the state directory (`output.log`, rotated to
//! `output.log.1`, together at most `function_log_size`) and sent live to followers of
//! `/system/logs`. Lines are cut at [`MAX_LINE`] bytes; when the writer falls behind, lines are
//! dropped and counted rather than held in memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

use crate::error::GatewayError;
use crate::model::LogMessage;
use crate::provider::{LogQuery, LogStream};

/// The longest line kept; the rest of a longer line is dropped.
pub(super) const MAX_LINE: usize = 16 * 1024;
/// Lines waiting for the writer before new ones are dropped.
const BACKLOG: usize = 4096;
/// The most lines the writer takes at once before flushing.
const BATCH: usize = 256;

/// One function's captured output.
pub(super) struct LogBook {
    name: String,
    namespace: String,
    lines: mpsc::Sender<(Arc<str>, String)>,
    live: broadcast::Sender<Arc<LogMessage>>,
    files: Files,
    dropped: AtomicU64,
}

#[derive(Debug, Clone)]
struct Files {
    current: PathBuf,
    previous: PathBuf,
    /// The size at which `current` becomes `previous`.
    rotate_at: u64,
}

impl LogBook {
    /// Opens the log book kept in `dir` (creating it) and starts its writer.
    pub(super) fn open(name: &str, namespace: &str, dir: PathBuf, max_bytes: u64) -> Arc<Self> {
        let (lines, rx) = mpsc::channel(BACKLOG);
        let (live, _) = broadcast::channel(BATCH * 4);
        let files = Files {
            current: dir.join("output.log"),
            previous: dir.join("output.log.1"),
            rotate_at: (max_bytes / 2).max(1),
        };
        let book = Arc::new(Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            lines,
            live: live.clone(),
            files: files.clone(),
            dropped: AtomicU64::new(0),
        });
        let writer = Writer {
            name: book.name.clone(),
            namespace: book.namespace.clone(),
            dir,
            files,
            live,
            last: None,
        };
        tokio::spawn(writer.run(rx));
        book
    }

    /// Records one line written by `instance`.
    pub(super) fn line(&self, instance: &Arc<str>, text: String) {
        if self.lines.try_send((instance.clone(), text)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The 1st, 2nd, 4th, 8th … drop: a flood of output does not flood the log.
            if dropped.is_power_of_two() {
                tracing::warn!(function = %self.name, namespace = %self.namespace, dropped, "function output comes faster than it can be kept: lines dropped");
            }
        }
    }

    /// Records every line of `output`, as written by `instance`.
    pub(super) fn lines(&self, instance: &Arc<str>, output: &[u8]) {
        for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.line(instance, lossy_line(&line[..line.len().min(MAX_LINE)]));
        }
    }

    /// The kept lines that match `query`, then (with `follow`) new ones until the book closes.
    pub(super) async fn query(&self, query: LogQuery) -> Result<LogStream, GatewayError> {
        // Subscribe before reading the files, so no line falls between the two; lines in both
        // are told apart by their timestamps, which the writer keeps strictly increasing.
        let live = query.follow.then(|| self.live.subscribe());
        let kept = self.files.read().await?;
        let matches = move |m: &LogMessage| {
            query.instance.as_deref().is_none_or(|i| m.instance == i)
                && query.since.is_none_or(|since| m.timestamp >= since)
        };
        let mut kept: Vec<LogMessage> = kept.into_iter().filter(&matches).collect();
        if let Some(tail) = query.tail {
            let skip = kept.len().saturating_sub(tail);
            kept.drain(..skip);
        }
        let last = kept.last().map(|m| m.timestamp);
        let past = futures::stream::iter(kept);
        let Some(live) = live else {
            return Ok(past.boxed());
        };
        let new = tokio_stream_from(live).filter_map(move |m| {
            let keep = last.is_none_or(|t| m.timestamp > t) && matches(&m);
            futures::future::ready(keep.then(|| LogMessage::clone(&m)))
        });
        Ok(past.chain(new).boxed())
    }
}

impl super::LocalProvider {
    /// The log book of a function, opened on first use.
    pub(super) fn log_book(&self, namespace: &str, name: &str) -> Arc<LogBook> {
        let mut books = self.inner.logs.lock().unwrap_or_else(|e| e.into_inner());
        books
            .entry((namespace.to_owned(), name.to_owned()))
            .or_insert_with(|| {
                LogBook::open(
                    name,
                    namespace,
                    self.inner.state.function(namespace, name),
                    self.inner.config.function_log_size as u64,
                )
            })
            .clone()
    }
}

/// A broadcast receiver as a stream that ends when the sender is gone; a follower too slow to
/// keep up skips what it missed.
fn tokio_stream_from(
    rx: broadcast::Receiver<Arc<LogMessage>>,
) -> impl futures::Stream<Item = Arc<LogMessage>> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(m) => return Some((m, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

impl Files {
    /// Every kept line, oldest first.
    async fn read(&self) -> Result<Vec<LogMessage>, GatewayError> {
        let mut out = Vec::new();
        for path in [&self.previous, &self.current] {
            let bytes = match tokio::fs::read(path).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(GatewayError::internal(
                        format!("cannot read the function log {}", path.display()),
                        e,
                    ));
                }
            };
            out.extend(
                bytes
                    .split(|&b| b == b'\n')
                    .filter_map(|line| serde_json::from_slice::<LogMessage>(line).ok()),
            );
        }
        Ok(out)
    }
}

/// Appends lines to the files and passes them on to followers.
struct Writer {
    name: String,
    namespace: String,
    dir: PathBuf,
    files: Files,
    live: broadcast::Sender<Arc<LogMessage>>,
    last: Option<DateTime<Utc>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<(Arc<str>, String)>) {
        let mut file = None;
        let mut size = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let messages: Vec<LogMessage> = batch.drain(..).map(|l| self.stamp(l)).collect();
            if let Err(e) = self.append(&mut file, &mut size, &messages).await {
                tracing::warn!(function = %self.name, namespace = %self.namespace, error = %e, "cannot keep function output");
                file = None;
            }
            // Only once they are in the file, so a follower that reads the file finds them.
            for m in messages {
                let _ = self.live.send(Arc::new(m));
            }
        }
    }

    /// A message for a line, timestamped strictly after the previous one.
    fn stamp(&mut self, (instance, text): (Arc<str>, String)) -> LogMessage {
        let mut now = Utc::now();
        if let Some(last) = self.last.filter(|last| now <= *last) {
            now = last + TimeDelta::nanoseconds(1);
        }
        self.last = Some(now);
        LogMessage {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            instance: instance.to_string(),
            timestamp: now,
            text,
        }
    }

    async fn append(
        &self,
        file: &mut Option<tokio::io::BufWriter<tokio::fs::File>>,
        size: &mut u64,
        messages: &[LogMessage],
    ) -> std::io::Result<()> {
        let mut line = Vec::new();
        for m in messages {
            line.clear();
            serde_json::to_writer(&mut line, m).map_err(std::io::Error::other)?;
            line.push(b'\n');
            if *size > 0 && *size + line.len() as u64 > self.files.rotate_at {
                if let Some(mut f) = file.take() {
                    f.flush().await?;
                }
                tokio::fs::rename(&self.files.current, &self.files.previous).await?;
                *size = 0;
            }
            let out = match file {
                Some(f) => f,
                None => {
                    let opened = self.open().await?;
                    *size = opened.metadata().await?.len();
                    file.insert(tokio::io::BufWriter::new(opened))
                }
            };
            out.write_all(&line).await?;
            *size += line.len() as u64;
        }
        if let Some(f) = file {
            f.flush().await?;
        }
        Ok(())
    }

    async fn open(&self) -> std::io::Result<tokio::fs::File> {
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .await?;
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.files.current)
            .await
    }
}

/// Reads lines from `reader` (each cut at [`MAX_LINE`] bytes, the rest skipped) and hands each
/// to `each`, until end of file or a read error.
pub(super) async fn read_lines<R: AsyncBufRead + Unpin>(
    mut reader: R,
    mut each: impl FnMut(String),
) {
    let mut line = Vec::new();
    loop {
        let (used, end) = match reader.fill_buf().await {
            Ok([]) | Err(_) => {
                if !line.is_empty() {
                    each(lossy_line(&line));
                }
                return;
            }
            Ok(chunk) => {
                let newline = chunk.iter().position(|&b| b == b'\n');
                let part = &chunk[..newline.unwrap_or(chunk.len())];
                let room = MAX_LINE.saturating_sub(line.len());
                line.extend_from_slice(&part[..part.len().min(room)]);
                (newline.map_or(chunk.len(), |i| i + 1), newline.is_some())
            }
        };
        reader.consume(used);
        if end {
            each(lossy_line(&line));
            line.clear();
        }
    }
}

fn lossy_line(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn query(tail: Option<usize>, follow: bool) -> LogQuery {
        LogQuery {
            name: "f".into(),
            namespace: "ns".into(),
            tail,
            follow,
            ..LogQuery::default()
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn lines_are_kept_bounded_tailed_and_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let book = LogBook::open("f", "ns", tmp.path().join("f"), 4096);
        let a: Arc<str> = Arc::from("f-1");
        for i in 0..200 {
            book.line(&a, format!("line {i}"));
        }
        settle().await;
        let all: Vec<LogMessage> = book
            .query(query(None, false))
            .await
            .expect("reads")
            .collect()
            .await;
        assert!(all.len() < 200, "bounded: {} kept", all.len());
        assert_eq!(all.last().expect("some").text, "line 199");
        assert!(all.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        let files: u64 = ["output.log", "output.log.1"]
            .iter()
            .map(|f| std::fs::metadata(tmp.path().join("f").join(f)).map_or(0, |m| m.len()))
            .sum();
        assert!(files <= 4096 + 200, "{files} bytes on disk");

        let tail: Vec<String> = book
            .query(query(Some(2), false))
            .await
            .expect("reads")
            .map(|m| m.text)
            .collect()
            .await;
        assert_eq!(tail, ["line 198", "line 199"]);

        let mut follow = book.query(query(Some(1), true)).await.expect("reads");
        assert_eq!(follow.next().await.expect("kept").text, "line 199");
        book.line(&Arc::from("f-2"), "new".into());
        let next = tokio::time::timeout(Duration::from_secs(5), follow.next())
            .await
            .expect("in time")
            .expect("a line");
        assert_eq!((next.text.as_str(), next.instance.as_str()), ("new", "f-2"));
    }

    #[tokio::test]
    async fn a_flood_beyond_the_backlog_is_dropped_and_counted_not_queued() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let book = LogBook::open("f", "ns", tmp.path().join("f"), 1 << 20);
        let a: Arc<str> = Arc::from("f-1");
        // On this single-threaded runtime the writer cannot run until the test yields: every
        // line past the backlog is dropped.
        for i in 0..BACKLOG + 100 {
            book.line(&a, format!("line {i}"));
        }
        assert_eq!(book.dropped.load(Ordering::Relaxed), 100);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let kept = loop {
            let kept: Vec<LogMessage> = book
                .query(query(None, false))
                .await
                .expect("reads")
                .collect()
                .await;
            if kept.len() >= BACKLOG || tokio::time::Instant::now() > deadline {
                break kept;
            }
            settle().await;
        };
        assert_eq!(kept.len(), BACKLOG);
        assert_eq!(
            kept.last().expect("some").text,
            format!("line {}", BACKLOG - 1)
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_partial_last_lines_kept() {
        let input = format!("short\r\n{}\nlast", "x".repeat(MAX_LINE * 3));
        let mut seen = Vec::new();
        read_lines(input.as_bytes(), |l| seen.push(l)).await;
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], "short");
        assert_eq!(seen[1].len(), MAX_LINE);
        assert_eq!(seen[2], "last");
    }
}
