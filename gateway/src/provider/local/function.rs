//! One deployed function: its spec, desired replicas, and the ready endpoints the proxy picks
//! from.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::model::{FunctionDeployment, FunctionStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Http,
    Fork,
}

/// One deployed function and its replicas.
pub(super) struct Function {
    pub(super) spec: FunctionDeployment,
    pub(super) label: String,
    /// Its captured output.
    pub(super) log: std::sync::Arc<super::logs::LogBook>,
    pub(super) argv: Vec<String>,
    pub(super) mode: Mode,
    pub(super) created_at: DateTime<Utc>,
    pub(super) cancel: CancellationToken,
    /// Desired replicas and the supervisors running them (http mode).
    pub(super) replicas: tokio::sync::Mutex<ReplicaSet>,
    pub(super) desired: AtomicU64,
    /// Ready endpoints, for round-robin picking on the hot path.
    pub(super) ready: RwLock<Vec<(u64, SocketAddr)>>,
    pub(super) ready_count: watch::Sender<usize>,
    /// Bumped each time a replica fails to start or crashes.
    pub(super) failures: watch::Sender<u64>,
    pub(super) last_error: Mutex<Option<String>>,
    /// Fork mode: why the command cannot run, if it cannot.
    pub(super) fork_error: Option<String>,
    /// Fork mode: the runs allowed at once (none: no limit).
    pub(super) slots: Option<(std::sync::Arc<tokio::sync::Semaphore>, usize)>,
    pub(super) next: AtomicUsize,
}

#[derive(Default)]
pub(super) struct ReplicaSet {
    pub(super) running: Vec<Replica>,
}

pub(super) struct Replica {
    pub(super) id: u64,
    pub(super) cancel: CancellationToken,
    pub(super) task: JoinHandle<()>,
}

impl Function {
    pub(super) fn key(&self) -> (String, String) {
        (
            self.spec.namespace_or_default().to_owned(),
            self.spec.service.clone(),
        )
    }

    pub(super) fn available(&self) -> u64 {
        match self.mode {
            Mode::Http => *self.ready_count.borrow() as u64,
            Mode::Fork if self.fork_error.is_none() => self.desired.load(Ordering::Relaxed),
            Mode::Fork => 0,
        }
    }

    pub(super) fn set_ready(&self, id: u64, addr: Option<SocketAddr>) {
        let mut ready = self.ready.write().unwrap_or_else(|e| e.into_inner());
        ready.retain(|(rid, _)| *rid != id);
        if let Some(addr) = addr {
            ready.push((id, addr));
        }
        let n = ready.len();
        drop(ready);
        self.ready_count.send_replace(n);
    }

    pub(super) fn record_failure(&self, reason: String) {
        tracing::warn!(function = %self.label, %reason, "function replica failed");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.failures.send_modify(|n| *n += 1);
    }

    pub(super) fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "no replica became ready".to_owned())
    }

    pub(super) fn pick(&self) -> Option<SocketAddr> {
        let ready = self.ready.read().unwrap_or_else(|e| e.into_inner());
        if ready.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        Some(ready[i].1)
    }

    pub(super) fn status(&self) -> FunctionStatus {
        let mut s = FunctionStatus::from_deployment(&self.spec, self.created_at);
        s.replicas = self.desired.load(Ordering::Relaxed);
        s.available_replicas = self.available();
        s
    }
}
