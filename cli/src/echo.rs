//! The built-in echo function, for examples, tests and benchmarks.
//!
//! It answers every request with the request body, streamed, plus `X-Echo-Method`,
//! `X-Echo-Uri`, `X-Echo-Pid` and a copy of each `X-` request header as `X-Echo-<name>`.
//! Two request headers steer it: `X-Echo-Status` sets the status code and `X-Echo-Sleep-Ms`
//! delays the answer.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Echo server settings.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Port to listen on (the local provider sets `PORT`).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
}

async fn handle(req: Request<Incoming>) -> Result<Response<Incoming>, Infallible> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("x-echo-sleep-ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header("x-echo-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        "x-echo-method",
        HeaderValue::from_str(parts.method.as_str()).unwrap_or(HeaderValue::from_static("?")),
    );
    if let Ok(v) = HeaderValue::from_str(&parts.uri.to_string()) {
        headers.insert("x-echo-uri", v);
    }
    headers.insert("x-echo-pid", HeaderValue::from(std::process::id()));
    if let Some(host) = parts.headers.get(hyper::header::HOST) {
        headers.insert("x-echo-host", host.clone());
    }
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n.starts_with("x-")
            && !n.starts_with("x-echo-")
            && let Ok(echoed) = HeaderName::try_from(format!("x-echo-{n}"))
        {
            headers.insert(echoed, value.clone());
        }
    }
    if let Some(ct) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        headers.insert(hyper::header::CONTENT_TYPE, ct.clone());
    }
    Ok(response)
}

/// Serves the echo function until SIGINT/SIGTERM.
pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let cancel = tributary_core::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("echo: cannot listen on port {}", args.port))?;
    tracing::info!(
        port = args.port,
        pid = std::process::id(),
        "echo function listening"
    );
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => return Ok(()),
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
