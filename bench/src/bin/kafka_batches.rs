//! Batch benchmark: messages/s from a 3-partition Kafka topic to one function (the built-in echo)
//! with `com.tributary.batch.size` 1, 10 and 100, each read by a fresh connector (its own
//! consumer group) in the same run, printed as ratios to batch size 1.
//!
//! `kafka_batches BOOTSTRAP GATEWAY_URL FUNCTION CONNECTOR_BIN [MESSAGES]` (run by
//! bench/batch.sh).

use std::process::Command;

use tributary_bench::{Error, free_port, kafka_produce, rate, time_connector};

/// Sets the function's batch size (the connector reads it when it starts).
async fn set_batch(gateway: &str, function: &str, size: usize) -> Result<(), Error> {
    let deployment = format!(
        r#"{{"service":"{function}","image":"bench/echo","envProcess":"tributary echo","envVars":{{"mode":"http"}},"annotations":{{"topic":"bench","com.tributary.batch.size":"{size}","com.tributary.batch.window":"50ms"}}}}"#
    );
    let r = reqwest::Client::new()
        .put(format!("{gateway}/system/functions"))
        .body(deployment)
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("updating {function}: {} {}", r.status(), r.text().await?).into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: kafka_batches BOOTSTRAP GATEWAY_URL FUNCTION CONNECTOR_BIN [MESSAGES]";
    let bootstrap = args.get(1).ok_or(usage)?.clone();
    let gateway = args.get(2).ok_or(usage)?.trim_end_matches('/').to_owned();
    let function = args.get(3).ok_or(usage)?.clone();
    let bin = args.get(4).ok_or(usage)?.clone();
    let n: usize = args.get(5).map_or(Ok(20_000), |s| s.parse())?;
    kafka_produce(&bootstrap, "bench", n).await?;
    let mut rates = Vec::new();
    for size in [1usize, 10, 100] {
        set_batch(&gateway, &function, size).await?;
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.env("broker_hosts", &bootstrap)
            .env("gateway_url", &gateway)
            .env("topics", "bench")
            .env("group", format!("batch-{size}-{}", std::process::id()))
            .env("order", "none")
            .env("max_inflight", (2 * size).max(64).to_string())
            .env("metrics_port", port.to_string())
            .env(
                "kafka_options",
                "session.timeout.ms=6000,heartbeat.interval.ms=500,fetch.wait.max.ms=10",
            );
        let run = time_connector(cmd, port, "connector_messages_acked_total", n).await?;
        rates.push((size, rate(n, run.took)));
    }
    println!("messages: {n}, Kafka -> one function, batch window 50ms");
    let base = rates[0].1;
    for (size, r) in &rates {
        println!(
            "batch size {size:>3}: {r:>10.0} msg/s  ({:.2}x batch size 1)",
            r / base
        );
    }
    Ok(())
}
