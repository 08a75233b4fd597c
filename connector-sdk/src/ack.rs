//! Acknowledgement handles: how the runtime tells a source a message's outcome, exactly once,
//! and what happens to a handle nobody settled (it nacks, as vector's event finalizers do).

use std::time::Duration;

use async_trait::async_trait;

use crate::invoker::InvocationOutcome;
use crate::message::DeadLetter;

/// What the runtime tells the source about a message once its outcome is final.
///
/// Exactly one of `ack`, `nack` and `dead_letter` is called per message. `ack` means every
/// function succeeded; `nack` means the message was not (fully) delivered and should be
/// redelivered (e.g. at shutdown), after `retry_after` if given; `dead_letter` means retries are
/// exhausted or a failure is permanent. A handle dropped without any of them (its message was
/// dropped, or the task delivering it panicked) is nacked.
#[async_trait]
pub trait Acknowledge: Send + 'static {
    /// Every function succeeded: commit, delete or ack the message.
    async fn ack(self: Box<Self>);
    /// Not delivered: make the message available again.
    async fn nack(self: Box<Self>, retry_after: Option<Duration>);
    /// Failed for good: send it to the dead-letter destination, then acknowledge it.
    async fn dead_letter(self: Box<Self>, letter: DeadLetter);
    /// Sees each function's outcome before the message is settled (e.g. to post the answer
    /// somewhere on `ack`). Does nothing unless a source needs it.
    fn observe(&mut self, _outcome: &InvocationOutcome) {}
}

/// For sources with nothing to acknowledge (cron ticks, NATS core): every call is a no-op.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAck;

#[async_trait]
impl Acknowledge for NoAck {
    async fn ack(self: Box<Self>) {}
    async fn nack(self: Box<Self>, _retry_after: Option<Duration>) {}
    async fn dead_letter(self: Box<Self>, _letter: DeadLetter) {}
}

/// A message's handle until it is settled; dropped unsettled, it nacks.
pub(crate) struct Pending(Option<Box<dyn Acknowledge>>);

impl Pending {
    pub(crate) fn new(ack: impl Acknowledge) -> Self {
        Self(Some(Box::new(ack)))
    }

    pub(crate) fn observe(&mut self, outcome: &InvocationOutcome) {
        if let Some(ack) = &mut self.0 {
            ack.observe(outcome);
        }
    }

    pub(crate) async fn ack(mut self) {
        if let Some(ack) = self.0.take() {
            ack.ack().await;
        }
    }

    pub(crate) async fn nack(mut self, retry_after: Option<Duration>) {
        if let Some(ack) = self.0.take() {
            ack.nack(retry_after).await;
        }
    }

    pub(crate) async fn dead_letter(mut self, letter: DeadLetter) {
        if let Some(ack) = self.0.take() {
            ack.dead_letter(letter).await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(ack) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!("an unsettled message was dropped: nacking it");
                runtime.spawn(ack.nack(None));
            }
            Err(_) => tracing::error!(
                "an unsettled message was dropped outside the async runtime: it cannot be nacked and is left to the broker's redelivery"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    struct Report(mpsc::UnboundedSender<&'static str>);

    #[async_trait]
    impl Acknowledge for Report {
        async fn ack(self: Box<Self>) {
            let _ = self.0.send("ack");
        }
        async fn nack(self: Box<Self>, _: Option<Duration>) {
            let _ = self.0.send("nack");
        }
        async fn dead_letter(self: Box<Self>, _: DeadLetter) {
            let _ = self.0.send("dead_letter");
        }
    }

    #[tokio::test]
    async fn a_dropped_handle_nacks_and_a_settled_one_does_not() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        drop(Pending::new(Report(tx.clone())));
        assert_eq!(rx.recv().await, Some("nack"));
        Pending::new(Report(tx.clone())).ack().await;
        assert_eq!(rx.recv().await, Some("ack"));
        drop(tx);
        assert_eq!(rx.recv().await, None, "settled once, nothing more");
    }

    #[tokio::test]
    async fn a_message_dropped_unsent_nacks() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        drop(crate::Message::new("t", "x", Report(tx)));
        assert_eq!(rx.recv().await, Some("nack"));
    }
}
