//! Async queue benchmark: end-to-end messages/s through `/async-function` (accepted, stored,
//! taken by the queue worker, function invoked, result posted to a callback counted here)
//! against synchronous `/function` calls of the same function at the same concurrency, in the
//! same run. The callback makes the async path do one more HTTP request per message than the
//! function call itself, so the ratio is, if anything, pessimistic.
//!
//! Given processes as `NAME=PID,...` (the gateway, the function, the broker), it also prints
//! the CPU time per call of each and of this process (the load's client and the callback
//! server) in each phase.
//!
//! `async_queue GATEWAY_URL FUNCTION [MESSAGES] [CONCURRENCY] [NAME=PID,...]` (run by
//! bench/async.sh).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;
use tributary_bench::{cpu_time, micros_per};

async fn fire(
    client: &reqwest::Client,
    urls: impl Fn(usize) -> reqwest::RequestBuilder,
    n: usize,
    concurrency: usize,
    expect: u16,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let failed = futures::stream::iter(0..n)
        .map(|i| {
            let req = urls(i);
            async move {
                match req.send().await {
                    Ok(r) => r.status().as_u16() != expect || r.bytes().await.is_err(),
                    Err(_) => true,
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let _ = client;
    if failed > 0 {
        return Err(format!("{failed} of {n} requests failed").into());
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: async_queue GATEWAY_URL FUNCTION [MESSAGES] [CONCURRENCY] [NAME=PID,...]";
    let gateway = args.get(1).ok_or(usage)?.trim_end_matches('/').to_owned();
    let function = args.get(2).ok_or(usage)?.clone();
    let n: usize = args.get(3).map_or(Ok(5_000), |s| s.parse())?;
    let concurrency: usize = args.get(4).map_or(Ok(32), |s| s.parse())?;
    let mut processes: Vec<(String, Option<u32>)> = Vec::new();
    for named in args
        .get(5)
        .map_or("", String::as_str)
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let (name, pid) = named.split_once('=').ok_or(usage)?;
        processes.push((name.to_owned(), Some(pid.parse()?)));
    }
    processes.push(("this client (and callback server)".to_owned(), None));
    // CPU time of each process.
    let cpu = || -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
        processes
            .iter()
            .map(|(_, pid)| cpu_time(*pid).map_err(|e| e.to_string().into()))
            .collect()
    };
    // Callback receiver.
    let received = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let (r, d) = (received.clone(), done.clone());
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(move || {
            let (r, d) = (r.clone(), d.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                d.notify_one();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback = format!("http://{}/cb", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let sync_url = format!("{gateway}/function/{function}");
    let async_url = format!("{gateway}/async-function/{function}");

    let sync_run = |n: usize| {
        let (client, url) = (client.clone(), sync_url.clone());
        async move {
            fire(
                &client,
                |i| client.post(&url).body(format!("message {i}")),
                n,
                concurrency,
                200,
            )
            .await
        }
    };
    let async_run = |n: usize| {
        let (client, url, callback) = (client.clone(), async_url.clone(), callback.clone());
        let (received, done) = (received.clone(), done.clone());
        async move {
            let base = received.load(Ordering::SeqCst);
            let started = Instant::now();
            let accept = fire(
                &client,
                |i| {
                    client
                        .post(&url)
                        .header("X-Callback-Url", &callback)
                        .body(format!("message {i}"))
                },
                n,
                concurrency,
                202,
            )
            .await?;
            while received.load(Ordering::SeqCst) < base + n {
                tokio::time::timeout(Duration::from_secs(60), done.notified())
                    .await
                    .map_err(|_| {
                        format!(
                            "only {} of {n} callbacks within 60s",
                            received.load(Ordering::SeqCst) - base
                        )
                    })?;
            }
            Ok::<_, Box<dyn std::error::Error>>((accept, started.elapsed()))
        }
    };

    sync_run(n / 10).await?;
    async_run(n / 10).await?;
    let c0 = cpu()?;
    let sync = sync_run(n).await?;
    let c1 = cpu()?;
    let (accept, end_to_end) = async_run(n).await?;
    let c2 = cpu()?;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("messages: {n}, concurrency: {concurrency}");
    println!(
        "sync  /function:                  {:>8.0} msg/s",
        rate(sync)
    );
    println!(
        "async accepted (202 + stored):     {:>8.0} msg/s",
        rate(accept)
    );
    println!(
        "async end to end (to callback):    {:>8.0} msg/s",
        rate(end_to_end)
    );
    println!(
        "ratio async accepted / sync: {:.2}x",
        sync.as_secs_f64() / accept.as_secs_f64()
    );
    println!(
        "ratio async end-to-end / sync: {:.2}x",
        sync.as_secs_f64() / end_to_end.as_secs_f64()
    );
    if processes.len() > 1 {
        for (i, (name, _)) in processes.iter().enumerate() {
            println!(
                "CPU per call, {name}: sync {:.1} us, async {:.1} us",
                micros_per(c1[i].saturating_sub(c0[i]), n),
                micros_per(c2[i].saturating_sub(c1[i]), n)
            );
        }
    }
    Ok(())
}
