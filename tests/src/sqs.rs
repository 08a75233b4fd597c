//! A real SQS endpoint for tests: moto's server (PyPI `moto[server]`, which `scripts/setup`
//! installs) on a free port, killed on drop; plus an aws-sdk-sqs client with fake credentials.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};

use crate::free_port;

/// A moto server.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`, for `endpoint_url`.
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    /// Body.
    pub body: String,
    /// String message attributes.
    pub attributes: Vec<(String, String)>,
}

impl MotoServer {
    /// Starts moto and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts moto with extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0` to check
    /// credentials).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("moto.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("python3 -m moto.server (scripts/setup installs moto[server])");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The server's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client with fake static credentials.
    pub fn client(&self) -> Client {
        let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests");
        let config = aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&self.endpoint)
            .build();
        Client::from_conf(config)
    }

    /// Environment for an SQS connector on this server.
    pub fn connector_env(&self) -> Vec<(String, String)> {
        vec![
            ("endpoint_url".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// Creates a queue (FIFO when the name ends in `.fifo`) and returns its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        let mut req = self.client().create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            req = req
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
        }
        req.send()
            .await
            .expect("create queue")
            .queue_url()
            .expect("queue url")
            .to_owned()
    }

    /// Sends `body` with string attributes (and a group for FIFO queues).
    pub async fn send(
        &self,
        queue: &str,
        body: &str,
        attributes: &[(&str, &str)],
        group: Option<&str>,
    ) {
        let mut req = self
            .client()
            .send_message()
            .queue_url(queue)
            .message_body(body);
        for (k, v) in attributes {
            req = req.message_attributes(
                *k,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(*v)
                    .build()
                    .expect("attribute"),
            );
        }
        if let Some(g) = group {
            req = req.message_group_id(g);
        }
        req.send().await.expect("send message");
    }

    /// Sends `n` messages `prefix-0 .. prefix-(n-1)` in batches of ten.
    pub async fn send_many(&self, queue: &str, prefix: &str, n: usize) {
        let client = self.client();
        for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
            let entries = chunk
                .iter()
                .map(|i| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(format!("{prefix}-{i}"))
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = client
                .send_message_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send batch");
            assert!(out.failed().is_empty(), "{:?}", out.failed());
        }
    }

    /// Receives (and deletes) what is in `queue`, waiting up to `limit` for `n` messages.
    pub async fn drain(&self, queue: &str, n: usize, limit: Duration) -> Vec<Received> {
        let client = self.client();
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            let got = client
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive");
            for m in got.messages() {
                let mut attributes: Vec<(String, String)> = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| {
                                (k.clone(), v.string_value().unwrap_or_default().to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                attributes.sort();
                out.push(Received {
                    body: m.body().unwrap_or_default().to_owned(),
                    attributes,
                });
                client
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
        out
    }

    /// Messages in the queue: visible plus in flight.
    pub async fn depth(&self, queue: &str) -> u64 {
        let out = self
            .client()
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        let attrs = out.attributes().cloned().unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|k| attrs.get(k)?.parse::<u64>().ok())
        .sum()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
