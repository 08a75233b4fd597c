//! SDK dispatch benchmark: messages/s from an in-memory source through the connector runtime
//! to a function via the gateway, against the same HTTP client settings calling the gateway
//! directly at the same concurrency, in the same process. Rounds alternate so both see the
//! same machine state; the median of each is compared.
//!
//! `dispatch GATEWAY_URL FUNCTION [MESSAGES] [CONCURRENCY]` (run by bench/dispatch.sh).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tributary_connector_sdk::{
    Acknowledge, Connector, ControllerConfig, DeadLetter, Message, Source, SourceContext,
    SourceError,
};

/// Counts acknowledgements and dead letters.
#[derive(Clone, Default)]
struct Tally {
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

struct Count(Tally);

#[async_trait::async_trait]
impl Acknowledge for Count {
    async fn ack(self: Box<Self>) {
        self.0.acked.fetch_add(1, Ordering::Relaxed);
    }
    async fn nack(self: Box<Self>, _: Option<Duration>) {
        self.0.failed.fetch_add(1, Ordering::Relaxed);
    }
    async fn dead_letter(self: Box<Self>, _: DeadLetter) {
        self.0.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Produces `n` small messages as fast as the runtime takes them, then ends.
struct Burst {
    n: usize,
    tally: Tally,
}

#[async_trait::async_trait]
impl Source for Burst {
    fn name(&self) -> &str {
        "bench-connector"
    }

    async fn run(self, ctx: SourceContext) -> Result<(), SourceError> {
        for i in 0..self.n {
            ctx.send(Message::new(
                "bench",
                format!("message {i}"),
                Count(self.tally.clone()),
            ))
            .await?;
        }
        Ok(())
    }
}

fn config(
    gateway: &str,
    concurrency: usize,
) -> Result<ControllerConfig, Box<dyn std::error::Error>> {
    Ok(ControllerConfig::builder()
        .gateway_url(gateway.to_owned())
        .max_inflight(concurrency)
        .print_response(false)
        .metrics_port(0u16)
        .build()?)
}

async fn through_sdk(
    gateway: &str,
    concurrency: usize,
    n: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let tally = Tally::default();
    let source = Burst {
        n,
        tally: tally.clone(),
    };
    let connector = Connector::new(config(gateway, concurrency)?);
    let started = Instant::now();
    connector.run(source, CancellationToken::new()).await?;
    let took = started.elapsed();
    let (acked, failed) = (
        tally.acked.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    if acked != n as u64 || failed != 0 {
        return Err(format!("SDK run acked {acked} and failed {failed} of {n}").into());
    }
    Ok(n as f64 / took.as_secs_f64())
}

async fn direct(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    n: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let results: Vec<bool> = futures::stream::iter(0..n)
        .map(|i| {
            let request = client
                .post(url)
                .header("X-Topic", "bench")
                .header("X-Connector", "bench-direct")
                .header("Content-Type", "text/plain")
                .body(format!("message {i}"));
            async move {
                match request.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = started.elapsed();
    let failed = results.iter().filter(|ok| !**ok).count();
    if failed != 0 {
        return Err(format!("direct run: {failed} of {n} calls failed").into());
    }
    Ok(n as f64 / took.as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let gateway = args
        .get(1)
        .ok_or("usage: dispatch GATEWAY_URL FUNCTION [MESSAGES] [CONCURRENCY]")?;
    let function = args
        .get(2)
        .ok_or("usage: dispatch GATEWAY_URL FUNCTION [MESSAGES] [CONCURRENCY]")?;
    let n: usize = args.get(3).map_or(Ok(20_000), |s| s.parse())?;
    let concurrency: usize = args.get(4).map_or(Ok(64), |s| s.parse())?;
    // The same client settings the SDK's invoker uses.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(concurrency.max(8))
        .tcp_nodelay(true)
        .build()?;
    let url = format!("{gateway}/function/{function}");

    println!("warming up");
    direct(&client, &url, concurrency, n / 10).await?;
    through_sdk(gateway, concurrency, n / 10).await?;

    let (mut d, mut s) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        let rd = direct(&client, &url, concurrency, n).await?;
        let rs = through_sdk(gateway, concurrency, n).await?;
        println!("round {round}: direct {rd:>8.0} msg/s   sdk {rs:>8.0} msg/s");
        d.push(rd);
        s.push(rs);
    }
    let (d, s) = (median(d), median(s));
    println!();
    println!("messages per round: {n}, concurrency (max_inflight): {concurrency}");
    println!("direct client -> gateway:           {d:>8.0} msg/s (median of 3)");
    println!("in-memory source -> SDK -> gateway: {s:>8.0} msg/s (median of 3)");
    println!("ratio sdk/direct: {:.2}x   (target >= 0.80x)", s / d);
    Ok(())
}
