//! Helpers shared by the benchmark binaries: timing a connector process by its own metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), tributary_bench::Error> {
//! let port = tributary_bench::free_port()?;
//! let mut cmd = std::process::Command::new("tributary");
//! cmd.args(["connector", "kafka"]).env("metrics_port", port.to_string());
//! let took = tributary_bench::time_connector(cmd, port, "connector_messages_acked_total", 1000).await?;
//! # let _ = took; Ok(()) }
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The benchmarks' error type.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The sum of every series of metric `name` in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Messages per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Starts the connector `cmd` (serving metrics on `port`) and times it from its first
/// acknowledged message until the metric `done` sums to `n`; kills it afterwards.
pub async fn time_connector(
    mut cmd: Command,
    port: u16,
    done: &str,
    n: usize,
) -> Result<Duration, Error> {
    let mut child = cmd
        .env("print_response", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut started = None;
    let result = loop {
        if Instant::now() > deadline {
            break Err(format!("the connector did not finish {n} messages in time").into());
        }
        let text = match client.get(&metrics).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if metric_sum(&text, "connector_messages_acked_total") >= 1.0 {
            started.get_or_insert_with(Instant::now);
        }
        if metric_sum(&text, done) >= n as f64 {
            break Ok(started.map(|s| s.elapsed()).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Produces `n` JSON records `{"n": i, "pad": ...}` to `topic`, round robin over 3 partitions.
pub async fn kafka_produce(bootstrap: &str, topic: &str, n: usize) -> Result<(), Error> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()?;
    let failed = futures::stream::iter(0..n)
        .map(|i| {
            let producer = &producer;
            async move {
                let payload = format!("{{\"n\":{i},\"pad\":\"0123456789abcdef0123456789abcdef\"}}");
                let p = i32::try_from(i % 3).unwrap_or(0);
                let record: FutureRecord<'_, str, str> = FutureRecord::to(topic)
                    .payload(payload.as_str())
                    .partition(p);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(1000)
        .filter(|f| std::future::ready(*f))
        .count()
        .await;
    if failed > 0 {
        return Err(format!("{failed} records were not produced").into());
    }
    Ok(())
}
