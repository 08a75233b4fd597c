//! The SQS connector's settings.

use std::time::Duration;

use crate::SqsError;

/// The SQS connector's settings.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    /// Queues to consume (`queue_url`).
    pub queue_urls: Vec<String>,
    /// The topic of each queue (`topic`), in the same order; a missing one defaults to the
    /// queue's name, so a function annotated `topic: my-queue` receives `my-queue`'s messages.
    pub topics: Vec<String>,
    /// Long-polling wait of one receive (`wait_time`, 0-20 s).
    pub wait_time: Duration,
    /// Messages per receive (`max_messages`, 1-10).
    pub max_messages: i32,
    /// Visibility timeout asked on receive and renewed by the heartbeat (`visibility_timeout`).
    pub visibility_timeout: Duration,
    /// Queue that failed messages are sent to (`dead_letter_queue_url`); without one they are
    /// left to the queue's own redrive policy.
    pub dead_letter_queue_url: Option<String>,
    /// AWS region; the standard chain (`AWS_REGION`, profile) when `None`.
    pub region: Option<String>,
    /// Endpoint override for local servers (`endpoint_url`); `AWS_ENDPOINT_URL` works too.
    pub endpoint_url: Option<String>,
    /// How often the queue depth is read for the autoscaler metric.
    pub depth_interval: Duration,
}

impl Default for SqsConfig {
    fn default() -> Self {
        Self {
            queue_urls: Vec::new(),
            topics: Vec::new(),
            wait_time: Duration::from_secs(20),
            max_messages: 10,
            visibility_timeout: Duration::from_secs(30),
            dead_letter_queue_url: None,
            region: None,
            endpoint_url: None,
            depth_interval: Duration::from_secs(10),
        }
    }
}

/// The last path segment of a queue URL: its name.
pub fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// Whether the queue is a FIFO queue (its name ends in `.fifo`).
pub fn is_fifo(url: &str) -> bool {
    queue_name(url).ends_with(".fifo")
}

impl SqsConfig {
    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), SqsError> {
        if self.queue_urls.is_empty() {
            return Err(SqsError::Config(
                "queue_url is empty: give the URL of at least one queue".into(),
            ));
        }
        if let Some(u) = self
            .queue_urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(SqsError::Config(format!(
                "queue_url {u:?} is not a URL: use the QueueUrl SQS gives (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
            )));
        }
        if self.topics.len() > self.queue_urls.len() {
            return Err(SqsError::Config(format!(
                "topic names {} topics for {} queues: give one per queue_url, in the same order",
                self.topics.len(),
                self.queue_urls.len()
            )));
        }
        if self.wait_time > Duration::from_secs(20) {
            return Err(SqsError::Config(
                "wait_time must be at most 20s (the SQS long-polling limit)".into(),
            ));
        }
        if !(1..=10).contains(&self.max_messages) {
            return Err(SqsError::Config(format!(
                "max_messages must be between 1 and 10, not {}",
                self.max_messages
            )));
        }
        if self.visibility_timeout < Duration::from_secs(2)
            || self.visibility_timeout > Duration::from_secs(12 * 3600)
        {
            return Err(SqsError::Config(
                "visibility_timeout must be between 2s and 12h".into(),
            ));
        }
        Ok(())
    }

    /// The topic of queue number `i`.
    pub fn topic(&self, i: usize) -> String {
        self.topics
            .get(i)
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map_or_else(|| queue_name(&self.queue_urls[i]).to_owned(), str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_default_to_queue_names() {
        let c = SqsConfig {
            queue_urls: vec![
                "http://127.0.0.1:5000/123456789012/orders".into(),
                "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo".into(),
            ],
            topics: vec!["".into(), "work".into()],
            ..SqsConfig::default()
        };
        c.validate().unwrap();
        assert_eq!(c.topic(0), "orders");
        assert_eq!(c.topic(1), "work");
        assert!(is_fifo(&c.queue_urls[1]));
        assert!(!is_fifo(&c.queue_urls[0]));
    }

    #[test]
    fn validation_names_the_setting() {
        let mut c = SqsConfig::default();
        assert!(c.validate().unwrap_err().to_string().contains("queue_url"));
        c.queue_urls = vec!["orders".into()];
        assert!(c.validate().unwrap_err().to_string().contains("not a URL"));
        c.queue_urls = vec!["http://x/1/q".into()];
        c.max_messages = 11;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_messages")
        );
        c.max_messages = 10;
        c.wait_time = Duration::from_secs(21);
        assert!(c.validate().unwrap_err().to_string().contains("wait_time"));
    }
}
