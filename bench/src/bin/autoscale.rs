//! Autoscaler benchmark, in one run against one gateway: reaction time (load start → the
//! function's replicas at the target count, then available) for a `capacity` function under 20
//! calls in flight, and the latency of a call to a function at zero replicas (cold) against
//! warm calls of the same function.
//!
//! `autoscale GATEWAY_URL` (run by bench/autoscale.sh, which deploys `cap` and `cold`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tributary_bench::Error;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    replicas: u64,
    available_replicas: u64,
}

async fn status(http: &reqwest::Client, base: &str, name: &str) -> Result<Status, Error> {
    Ok(http
        .get(format!("{base}/system/function/{name}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn wait(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    limit: Duration,
    done: impl Fn(&Status) -> bool,
) -> Result<Duration, Error> {
    let started = Instant::now();
    loop {
        if done(&status(http, base, name).await?) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("{name} did not get there within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn call(http: &reqwest::Client, base: &str, name: &str) -> Result<Duration, Error> {
    let started = Instant::now();
    http.post(format!("{base}/function/{name}"))
        .body("ping")
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let base = std::env::args()
        .nth(1)
        .ok_or("usage: autoscale GATEWAY_URL")?;
    let http = reqwest::Client::new();

    // Reaction: 20 calls of 500 ms each in flight; capacity target 5 → 4 replicas.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..20)
        .map(|_| {
            let (http, url, stop) = (http.clone(), format!("{base}/function/cap"), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = http
                        .post(&url)
                        .header("X-Echo-Sleep-Ms", "500")
                        .send()
                        .await;
                }
            })
        })
        .collect();
    let decided = wait(&http, &base, "cap", Duration::from_secs(60), |s| {
        s.replicas == 4
    })
    .await?;
    let ready = decided
        + wait(&http, &base, "cap", Duration::from_secs(60), |s| {
            s.available_replicas == 4
        })
        .await?;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await?;
    }
    println!(
        "reaction (20 in flight, capacity target 5): replicas 1 -> 4 decided after {:.0} ms, available after {:.0} ms",
        ms(decided),
        ms(ready)
    );

    // Cold start: warm calls, then calls to the function at zero replicas.
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(call(&http, &base, "cold").await?);
    }
    warm.sort();
    let warm_p50 = warm[warm.len() / 2];
    let mut cold = Vec::new();
    for _ in 0..3 {
        wait(&http, &base, "cold", Duration::from_secs(60), |s| {
            s.replicas == 0 && s.available_replicas == 0
        })
        .await?;
        cold.push(call(&http, &base, "cold").await?);
    }
    cold.sort();
    let cold_p50 = cold[cold.len() / 2];
    println!(
        "cold start: call at 0 replicas {:.1} ms (median of 3), warm call {:.2} ms (median of 50): {:.0}x",
        ms(cold_p50),
        ms(warm_p50),
        cold_p50.as_secs_f64() / warm_p50.as_secs_f64()
    );
    Ok(())
}
