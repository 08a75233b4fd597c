//! Helpers shared by the benchmark binaries: timing a connector process by its own metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), tributary_bench::Error> {
//! let port = tributary_bench::free_port()?;
//! let mut cmd = std::process::Command::new("tributary");
//! cmd.args(["connector", "kafka"]).env("metrics_port", port.to_string());
//! let run = tributary_bench::time_connector(cmd, port, "connector_messages_acked_total", 1000).await?;
//! println!("{:.0} msg/s, {} KiB resident", tributary_bench::rate(1000, run.took), run.rss_kb);
//! # Ok(()) }
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

/// What [`time_connector`] measured.
pub struct Run {
    /// From the first acknowledged message to the last.
    pub took: Duration,
    /// The connector's resident set size (VmRSS) once it had done them all, in KiB.
    pub rss_kb: u64,
    /// Its resident set size [`SETTLE`] later, with nothing more to do, in KiB.
    pub settled_rss_kb: u64,
    /// The most it was ever resident (VmHWM), in KiB.
    pub peak_rss_kb: u64,
    /// The CPU time it used from the first acknowledged message to the last (every thread).
    pub cpu: Duration,
}

/// How long after a load a process is measured as "settled" (idle again): a few quiet seconds,
/// as a connector between bursts.
pub const SETTLE: Duration = Duration::from_secs(3);

/// How long after its metrics first answer a connector is measured as idle: started,
/// connected and subscribed, with nothing to do.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

/// The resident set size (VmRSS) of process `pid`, in KiB.
pub async fn rss_kb(pid: u32) -> Result<u64, Error> {
    status_kb(pid, "VmRSS:").await
}

/// A `kB` figure of `/proc/PID/status` (`VmRSS:`, `VmHWM:`).
async fn status_kb(pid: u32, field: &str) -> Result<u64, Error> {
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status")).await?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} for process {pid}").into())
}

/// The CPU time (user and system, every thread) process `pid` has used; `None` for this
/// process.
pub fn cpu_time(pid: Option<u32>) -> Result<Duration, Error> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(&path)?;
    // Fields after the command name (which may hold spaces) in parentheses: state is the 3rd
    // field, utime and stime the 14th and 15th, in clock ticks (100 per second on Linux).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("no ) in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .ok_or("stat too short")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// Prints a connector's memory figures (idle, then after `run`) as one line bench/ratios.py
/// collects.
pub fn print_connector_rss(idle_kb: u64, run: &Run) {
    println!(
        "connector RSS: idle {:.1} MB, after load {:.1} MB, settled {:.1} MB, peak {:.1} MB (targets < 10 MB idle, < 20 MB after load)",
        mb(idle_kb),
        mb(run.rss_kb),
        mb(run.settled_rss_kb),
        mb(run.peak_rss_kb)
    );
}

/// CPU microseconds per message.
pub fn micros_per(cpu: Duration, n: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// Kibibytes as megabytes, for printing.
pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn spawn_quiet(cmd: &mut Command) -> Result<std::process::Child, Error> {
    Ok(cmd
        .env("print_response", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?)
}

/// Starts the connector `cmd` (serving metrics on `port`) with nothing to do, and reads its
/// resident set size [`IDLE_AFTER`] its metrics first answer; kills it afterwards.
pub async fn idle_rss_kb(mut cmd: Command, port: u16) -> Result<u64, Error> {
    let mut child = spawn_quiet(&mut cmd)?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let mut answered = false;
    for _ in 0..300 {
        if client.get(&metrics).send().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(IDLE_AFTER).await;
    let rss = rss_kb(child.id()).await;
    let _ = child.kill();
    let _ = child.wait();
    if !answered {
        return Err("the idle connector's metrics never answered".into());
    }
    rss
}

/// Starts the connector `cmd` (serving metrics on `port`) and times it from its first
/// acknowledged message until the metric `done` sums to `n`, then reads its resident set size;
/// kills it afterwards.
pub async fn time_connector(
    mut cmd: Command,
    port: u16,
    done: &str,
    n: usize,
) -> Result<Run, Error> {
    let mut child = spawn_quiet(&mut cmd)?;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let pid = child.id();
    let mut started = None;
    let result = loop {
        if Instant::now() > deadline {
            break Err(format!("the connector did not finish {n} messages in time").into());
        }
        let text = match client.get(&metrics).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if started.is_none() && metric_sum(&text, "connector_messages_acked_total") >= 1.0 {
            match cpu_time(Some(pid)) {
                Ok(cpu) => started = Some((Instant::now(), cpu)),
                Err(e) => break Err(e),
            }
        }
        if metric_sum(&text, done) >= n as f64 {
            let (at, cpu_at) = started.unwrap_or((Instant::now(), Duration::ZERO));
            let took = at.elapsed();
            break match cpu_time(Some(pid)) {
                Ok(cpu) => settle(pid, took, cpu.saturating_sub(cpu_at)).await,
                Err(e) => Err(e),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The memory figures of a connector that just finished its load in `took` using `cpu`: now,
/// [`SETTLE`] later, and its peak.
async fn settle(pid: u32, took: Duration, cpu: Duration) -> Result<Run, Error> {
    let rss_kb = rss_kb(pid).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(Run {
        took,
        rss_kb,
        settled_rss_kb: self::rss_kb(pid).await?,
        peak_rss_kb: status_kb(pid, "VmHWM:").await?,
        cpu,
    })
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
