//! The NATS connector: invokes functions for messages on NATS subjects.
//!
//! Two modes:
//! - **core**: a queue-group subscription on each subject in `topics`. Core NATS keeps nothing:
//!   delivery is **at-most-once** (a message in flight when the connector dies is lost).
//! - **jetstream**: a durable pull consumer with explicit acks on a stream holding the subjects.
//!   A message is acked only when the runtime says its outcome is final, `nak`ed (with the delay
//!   asked) to be redelivered, or on dead letter published to `dead_letter_subject` and `term`ed.
//!   While a call runs the connector sends progress signals, so long calls are not redelivered.
//!
//! Subjects may use the wildcards `*` and `>`. A message goes to the functions whose `topic`
//! annotation names its concrete subject **and** to those naming the subscribed pattern it
//! matched (both, each function once). NATS message headers are passed to the functions; when a
//! message has a reply subject, each function's response is published to it.
//!
//! ```no_run
//! use tributary_connector_sdk::{Connector, ControllerConfig, shutdown_signal};
//! use tributary_nats::{Mode, NatsConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NatsConfig { subjects: vec!["orders.>".into()], mode: Mode::Core, ..NatsConfig::default() };
//! let (source, replies) = tributary_nats::connect(config).await?;
//! Connector::new(ControllerConfig::from_env()?)
//!     .with_subscriber(replies)
//!     .run(source, shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```

pub mod config;
mod jetstream;
mod queue_group;
pub mod replies;
pub mod subjects;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use tributary_connector_sdk::{
    Acknowledge, EventInfo, Message, Source, SourceContext, SourceError,
};

pub use config::{Mode, NatsConfig, url_from_broker_host};
pub use replies::Replies;
pub use subjects::subject_matches;

use crate::replies::REPLY_KEY;
use crate::subjects::{headers_of, targets};

/// The connector's name, sent as `X-Connector`.
pub const CONNECTOR_NAME: &str = "nats-connector";

/// Errors setting the connector up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The credentials file cannot be used.
    #[error("nats_creds file {} cannot be used", path.display())]
    Creds {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server could not be reached or refused us.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The server.
        url: String,
        /// What failed.
        #[source]
        source: async_nats::ConnectError,
    },
    /// JetStream setup failed.
    #[error("JetStream {what} cannot be used")]
    JetStream {
        /// The stream or consumer.
        what: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Connects and returns the source and the subscriber that publishes replies.
pub async fn connect(config: NatsConfig) -> Result<(NatsSource, Replies), NatsError> {
    config.validate()?;
    let url = config.url();
    let client = config
        .options()
        .await?
        .connect(url.as_str())
        .await
        .map_err(|source| NatsError::Connect {
            url: url.clone(),
            source,
        })?;
    let subjects = config.subjects();
    tracing::info!(%url, ?subjects, mode = ?config.mode, "connected to NATS");
    Ok((
        NatsSource {
            client: client.clone(),
            subjects,
            config,
        },
        Replies { client },
    ))
}

/// The NATS [`Source`].
pub struct NatsSource {
    client: async_nats::Client,
    subjects: Vec<String>,
    config: NatsConfig,
}

impl NatsSource {
    /// The runtime message for a NATS message on a subject that matched `pattern`.
    fn message(
        &self,
        ctx: &SourceContext,
        m: &async_nats::Message,
        pattern: &str,
        ack: impl Acknowledge,
    ) -> Message {
        let subject = m.subject.to_string();
        let mut context = BTreeMap::from([
            ("nats-subject".to_owned(), subject.clone()),
            ("nats-pattern".to_owned(), pattern.to_owned()),
        ]);
        if let Some(reply) = &m.reply {
            context.insert(REPLY_KEY.to_owned(), reply.to_string());
        }
        let event = EventInfo::new("/nats", "com.tributary.nats.message").with_subject(&subject);
        let mut message = Message::new(subject.clone(), m.payload.clone(), ack)
            .with_targets(targets(&ctx.topic_map(), &subject, pattern))
            .with_header("X-NATS-Subject", subject)
            .with_context(context)
            .with_event(event);
        for (k, v) in headers_of(m) {
            message = message.with_header(k, v);
        }
        message
    }
}

#[async_trait]
impl Source for NatsSource {
    fn name(&self) -> &str {
        CONNECTOR_NAME
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        match self.config.mode {
            Mode::Core => self.run_core(ctx).await,
            Mode::JetStream => self.run_jetstream(ctx).await,
        }
    }
}
