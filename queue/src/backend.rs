//! What the worker needs from a queue backend beyond what the gateway uses: leasing requests,
//! and settling each lease (done, again later, dead letter) or keeping it alive.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tributary_core::queue::{AsyncQueue, DeadLetterRecord, QueueError, QueuedRequest};

/// A request taken from the queue, invisible to other workers while its lease lasts.
pub struct Leased {
    /// The request.
    pub request: QueuedRequest,
    /// 1 for the first delivery, 2 for the second, ...
    pub attempt: u32,
    /// What to do with it when done.
    pub lease: Box<dyn Lease>,
}

/// The worker's answer for a leased request.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Done: remove it from the queue.
    async fn ack(&self) -> Result<(), QueueError>;
    /// Deliver it again after `delay`.
    async fn retry(&self, delay: Duration) -> Result<(), QueueError>;
    /// Give up: store it as a dead letter and remove it from the queue.
    async fn dead_letter(&self, record: DeadLetterRecord) -> Result<(), QueueError>;
    /// Still working on it: keep it leased (JetStream `in_progress`, a longer SQLite lease).
    async fn extend(&self) -> Result<(), QueueError>;
}

/// A durable queue the worker takes requests from.
#[async_trait]
pub trait Backend: AsyncQueue {
    /// Waits for deliverable requests and leases up to `max` of them (at least one); an empty
    /// list once `cancel` fires.
    async fn lease(
        &self,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Leased>, QueueError>;
    /// How often a lease must be extended while its call runs.
    fn lease_refresh(&self) -> Duration;
    /// Hands what is still buffered (acknowledgements sent without waiting) to the backend;
    /// the worker calls it when it stops.
    async fn flush(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
