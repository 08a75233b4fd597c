//! Request/reply: each function's response is published to the message's reply subject.

use tributary_connector_sdk::{Delivery, InvocationOutcome, ResponseSubscriber};
use tributary_core::Chain;

/// The context key holding a message's reply subject.
pub(crate) const REPLY_KEY: &str = "nats-reply";

/// Publishes each function's response to the message's reply subject.
pub struct Replies {
    pub(crate) client: async_nats::Client,
}

impl ResponseSubscriber for Replies {
    fn response(&self, outcome: &InvocationOutcome) {
        let Some(reply) = outcome.context.get(REPLY_KEY).cloned() else {
            return;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Function-Name", outcome.function.as_str());
        headers.insert(
            "X-Function-Status",
            outcome.status.unwrap_or(502).to_string().as_str(),
        );
        if outcome.delivery != Delivery::Delivered
            && let Some(e) = &outcome.error
        {
            headers.insert("X-Function-Error", e.as_str());
        }
        let client = self.client.clone();
        let body = outcome.body.clone();
        tokio::spawn(async move {
            if let Err(e) = client.publish_with_headers(reply, headers, body).await {
                tracing::warn!(error = %Chain(&e), "cannot publish the reply");
            }
        });
    }
}
