//! Kafka connector benchmark, three measurements of the same topic and function in one run:
//! (a) the raw rdkafka consume rate of the topic (a bare consumer, no work per message);
//! (b) HTTP load on the function through the gateway's `/function/NAME` (the path the
//!     connector calls), at the connector's concurrency, once before and once after (c): the
//!     machine's speed drifts within a run, and the two bracket the connector's run;
//! (c) the connector: `tributary-kafka-connector` from the first to the last acknowledged
//!     message, read off its metrics.
//! It prints messages/s for each and the connector's ratio to the lower of (a) and (b), and the
//! connector's resident memory idle (subscribed, a new group starting at the end of the topic)
//! and after the run.
//!
//! With the broker's process id (`BROKER_PID`), it also prints the broker's CPU per message
//! while the connector reads the topic: a cost the HTTP load does not have.
//!
//! `kafka_throughput BOOTSTRAP GATEWAY_URL FUNCTION CONNECTOR_BIN [MESSAGES] [CONCURRENCY] [ORDER] [BROKER_PID]`
//! (run by bench/kafka.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use tributary_bench::{
    Error, cpu_time, free_port, idle_rss_kb, kafka_produce as produce, micros_per,
    print_connector_rss, rate, time_connector,
};

/// (a) A bare consumer group reading the whole topic.
fn raw_consume(bootstrap: &str, topic: &str, n: usize) -> Result<Duration, Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("raw-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0usize;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < n {
        if Instant::now() > deadline {
            return Err(format!("raw consumer saw {seen} of {n}").into());
        }
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}

/// (b) HTTP load through the gateway: how long it took and the CPU time this process (the
/// load's client) used meanwhile.
async fn http_load(url: &str, n: usize, concurrency: usize) -> Result<(Duration, Duration), Error> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let cpu = cpu_time(None)?;
    let failed = futures::stream::iter(0..n)
        .map(|i| {
            let req = client
                .post(url)
                .header("Content-Type", "text/plain")
                .body(format!(
                    "{{\"n\":{i},\"pad\":\"0123456789abcdef0123456789abcdef\"}}"
                ));
            async move {
                match req.send().await {
                    Ok(r) => !r.status().is_success() || r.bytes().await.is_err(),
                    Err(_) => true,
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|f| std::future::ready(*f))
        .count()
        .await;
    if failed > 0 {
        return Err(format!("{failed} of {n} HTTP requests failed").into());
    }
    Ok((started.elapsed(), cpu_time(None)?.saturating_sub(cpu)))
}

/// What the connector runs with.
struct Setup<'a> {
    bin: &'a str,
    bootstrap: &'a str,
    gateway: &'a str,
    topic: &'a str,
    concurrency: usize,
    order: &'a str,
}

/// The connector's command in a new consumer group, serving metrics on `port`; `from_end`
/// starts the group at the end of the topic (the idle run) instead of its start.
fn connector_cmd(s: &Setup<'_>, from_end: bool, port: u16) -> Command {
    let Setup {
        bin,
        bootstrap,
        gateway,
        topic,
        concurrency,
        order,
    } = *s;
    let start = if from_end { "newest" } else { "oldest" };
    let group = format!("bench-{order}-{start}-{}", std::process::id());
    let mut cmd = Command::new(bin);
    cmd.env("broker_hosts", bootstrap)
        .env("gateway_url", gateway)
        .env("topics", topic)
        .env("group", group)
        .env("order", order)
        .env("max_inflight", concurrency.to_string())
        .env("metrics_port", port.to_string())
        .env(
            "kafka_options",
            "session.timeout.ms=6000,heartbeat.interval.ms=500,fetch.wait.max.ms=10",
        )
        .env("initial_offset", start);
    cmd
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: kafka_throughput BOOTSTRAP GATEWAY_URL FUNCTION CONNECTOR_BIN [MESSAGES] [CONCURRENCY] [ORDER] [BROKER_PID]";
    let bootstrap = args.get(1).ok_or(usage)?.clone();
    let gateway = args.get(2).ok_or(usage)?.trim_end_matches('/').to_owned();
    let function = args.get(3).ok_or(usage)?.clone();
    let bin = args.get(4).ok_or(usage)?.clone();
    let n: usize = args.get(5).map_or(Ok(20_000), |s| s.parse())?;
    let concurrency: usize = args.get(6).map_or(Ok(64), |s| s.parse())?;
    let order = args.get(7).cloned().unwrap_or_else(|| "none".to_owned());
    let broker: Option<u32> = args.get(8).map(|p| p.parse()).transpose()?;
    let topic = "bench";

    produce(&bootstrap, topic, n).await?;
    let raw = {
        let (b, t) = (bootstrap.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || raw_consume(&b, &t, n)).await??
    };
    let url = format!("{gateway}/function/{function}");
    let (http_before, cpu_before) = http_load(&url, n, concurrency).await?;
    let setup = Setup {
        bin: &bin,
        bootstrap: &bootstrap,
        gateway: &gateway,
        topic,
        concurrency,
        order: &order,
    };
    let port = free_port()?;
    let idle = idle_rss_kb(connector_cmd(&setup, true, port), port).await?;
    // (c) The connector, timed from its first to its last acknowledgement.
    let port = free_port()?;
    let broker_cpu = broker.map(|pid| cpu_time(Some(pid))).transpose()?;
    let run = time_connector(
        connector_cmd(&setup, false, port),
        port,
        "connector_messages_acked_total",
        n,
    )
    .await?;
    let (http_after, cpu_after) = http_load(&url, n, concurrency).await?;
    // The two HTTP runs' mean time and CPU for n requests.
    let (http, http_cpu) = ((http_before + http_after) / 2, (cpu_before + cpu_after) / 2);

    let (raw_r, http_r, conn_r) = (rate(n, raw), rate(n, http), rate(n, run.took));
    let lower = raw_r.min(http_r);
    println!("messages: {n}, concurrency: {concurrency}, order: {order}");
    println!("(a) raw rdkafka consume        {raw_r:>10.0} msg/s");
    println!(
        "(b) HTTP via gateway /function {http_r:>10.0} msg/s (before (c) {:.0}, after {:.0})",
        rate(n, http_before),
        rate(n, http_after)
    );
    println!("(c) connector, Kafka->function {conn_r:>10.0} msg/s");
    println!("connector / raw consume:  {:.2}x", conn_r / raw_r);
    println!("connector / HTTP load:    {:.2}x", conn_r / http_r);
    println!(
        "connector / lower of (a),(b): {:.2}x (target >= 0.90x)",
        conn_r / lower
    );
    println!(
        "CPU per message: connector {:.1} us, the HTTP load's client {:.1} us",
        micros_per(run.cpu, n),
        micros_per(http_cpu, n)
    );
    println!(
        "connector CPU per message / the HTTP client's: {:.2}x",
        run.cpu.as_secs_f64() / http_cpu.as_secs_f64().max(1e-9)
    );
    if let (Some(pid), Some(before)) = (broker, broker_cpu) {
        // The whole connector run (group join and settling included): an upper bound.
        let used = cpu_time(Some(pid))?.saturating_sub(before);
        println!(
            "CPU per message: the broker while the connector reads {:.1} us",
            micros_per(used, n)
        );
    }
    print_connector_rss(idle, &run);
    Ok(())
}
