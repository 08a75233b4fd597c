//! Core NATS: a queue-group subscription per subject. Core NATS keeps nothing, so delivery is
//! at-most-once: a message in flight when the connector dies is lost.

use futures::StreamExt;
use tributary_connector_sdk::{NoAck, SourceContext, SourceError};

use crate::NatsSource;

impl NatsSource {
    pub(crate) async fn run_core(self, ctx: SourceContext) -> Result<(), SourceError> {
        let mut subscriptions = Vec::new();
        for subject in &self.subjects {
            let sub = self
                .client
                .queue_subscribe(subject.clone(), self.config.queue_group.clone())
                .await
                .map_err(|e| SourceError::caused(format!("cannot subscribe to {subject}"), e))?;
            let pattern = subject.clone();
            subscriptions.push(sub.map(move |m| (pattern.clone(), m)).boxed());
        }
        tracing::info!(subjects = ?self.subjects, queue_group = %self.config.queue_group, "subscribed (core NATS, at-most-once)");
        let mut all = futures::stream::select_all(subscriptions);
        let cancel = ctx.cancelled();
        loop {
            let next = tokio::select! {
                n = all.next() => n,
                _ = cancel.cancelled() => return Ok(()),
            };
            let Some((pattern, m)) = next else {
                return Err(SourceError::new("the NATS subscriptions ended"));
            };
            let message = self.message(&ctx, &m, &pattern, NoAck);
            ctx.send(message).await?;
        }
    }
}
