//! The SQS connector's settings.

use std::time::Duration;

use tributary_core::units::parse_duration;

use crate::SqsError;

/// The SQS connector's settings; region and credentials come from the standard AWS chain.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SqsConfig {
    /// Queue URL(s), comma separated.
    #[arg(long = "queue-url", env = "queue_url", value_delimiter = ',')]
    pub queue_urls: Vec<String>,
    /// Topic of each queue, comma separated in queue_url's order (default: the queue's name,
    /// so a function annotated `topic: my-queue` receives my-queue's messages).
    #[arg(long = "topic", env = "topic", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Long-polling wait of one receive (at most 20s).
    #[arg(long, env = "wait_time", default_value = "20s", value_parser = parse_duration)]
    pub wait_time: Duration,
    /// Messages per receive (1-10).
    #[arg(long, env = "max_messages", default_value = "10")]
    pub max_messages: i32,
    /// Visibility timeout asked on receive and renewed while a message is in the connector.
    #[arg(long, env = "visibility_timeout", default_value = "30s", value_parser = parse_duration)]
    pub visibility_timeout: Duration,
    /// Queue failed messages go to; without it the queue's own redrive policy applies.
    #[arg(long, env = "dead_letter_queue_url")]
    pub dead_letter_queue_url: Option<String>,
    /// AWS region (default: the standard chain, then us-east-1).
    #[arg(long = "aws-region", env = "AWS_REGION")]
    pub region: Option<String>,
    /// Endpoint override for SQS-compatible servers (e.g. http://127.0.0.1:5000);
    /// AWS_ENDPOINT_URL works too.
    #[arg(long, env = "endpoint_url")]
    pub endpoint_url: Option<String>,
    /// How often the queue depth is read for the metrics and the gateway's autoscaler.
    #[arg(skip = Duration::from_secs(5))]
    pub depth_interval: Duration,
}

impl Default for SqsConfig {
    fn default() -> Self {
        tributary_core::settings::defaults()
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
    /// The settings with list entries trimmed and empty ones dropped.
    pub fn normalized(mut self) -> Self {
        let trim = |v: &mut Vec<String>| {
            for x in v.iter_mut() {
                *x = x.trim().to_owned();
            }
        };
        trim(&mut self.queue_urls);
        self.queue_urls.retain(|u| !u.is_empty());
        trim(&mut self.topics);
        for field in [
            &mut self.dead_letter_queue_url,
            &mut self.region,
            &mut self.endpoint_url,
        ] {
            if field.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *field = None;
            }
        }
        self
    }

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
