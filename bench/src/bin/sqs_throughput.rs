//! SQS connector benchmark against the raw receive+delete rate of the same server, in one run:
//! two queues get the same number of messages; one is drained by a bare client loop
//! (ReceiveMessage of 10, DeleteMessageBatch), the other by `tributary-sqs-connector`
//! invoking a mode=http function (timed from its first acknowledgement to its last delete).
//! It also prints the connector's resident memory idle (on an empty queue) and after the run.
//!
//! `sqs_throughput ENDPOINT GATEWAY_URL CONNECTOR_BIN [MESSAGES]` (run by bench/sqs.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};

use tributary_bench::{Error, free_port, idle_rss_kb, print_connector_rss, rate, time_connector};

fn client(endpoint: &str) -> Client {
    let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "bench");
    Client::from_conf(
        aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(endpoint)
            .build(),
    )
}

async fn fill(c: &Client, name: &str, n: usize) -> Result<String, Error> {
    let url = c
        .create_queue()
        .queue_name(name)
        .send()
        .await?
        .queue_url()
        .ok_or("no queue url")?
        .to_owned();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("{{\"n\":{i}}}"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        c.send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(url)
}

async fn raw(c: &Client, url: &str, n: usize) -> Result<Duration, Error> {
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let got = c
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let entries = got
            .messages()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            continue;
        }
        done += entries.len();
        c.delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(started.elapsed())
}

/// The connector's command on queue `url`, serving metrics on `port`.
fn connector_cmd(bin: &str, endpoint: &str, gateway: &str, url: &str, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("queue_url", url)
        .env("topic", "bench")
        .env("endpoint_url", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("gateway_url", gateway)
        .env("wait_time", "1s")
        .env("metrics_port", port.to_string());
    cmd
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: sqs_throughput ENDPOINT GATEWAY_URL CONNECTOR_BIN [MESSAGES]";
    let endpoint = args.get(1).ok_or(usage)?.clone();
    let gateway = args.get(2).ok_or(usage)?.clone();
    let bin = args.get(3).ok_or(usage)?.clone();
    let n: usize = args.get(4).map_or(Ok(300), |s| s.parse())?;
    let c = client(&endpoint);
    let raw_url = fill(&c, "bench-raw", n).await?;
    let conn_url = fill(&c, "bench-connector", n).await?;
    let raw_d = raw(&c, &raw_url, n).await?;
    let idle_url = fill(&c, "bench-idle", 0).await?;
    let port = free_port()?;
    let idle = idle_rss_kb(
        connector_cmd(&bin, &endpoint, &gateway, &idle_url, port),
        port,
    )
    .await?;
    // The connector, timed from its first acknowledgement to its last delete.
    let port = free_port()?;
    let run = time_connector(
        connector_cmd(&bin, &endpoint, &gateway, &conn_url, port),
        port,
        "sqs_messages_deleted_total",
        n,
    )
    .await?;
    let conn_d = run.took;
    let rate = |d: Duration| rate(n, d);
    println!("messages: {n} per queue");
    println!(
        "raw receive+delete (one client)   {:>8.1} msg/s",
        rate(raw_d)
    );
    println!(
        "connector, SQS->function->delete {:>8.1} msg/s",
        rate(conn_d)
    );
    println!("connector / raw: {:.2}x", rate(conn_d) / rate(raw_d));
    print_connector_rss(idle, &run);
    Ok(())
}
