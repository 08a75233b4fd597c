//! Fork mode, as the classic OpenFaaS watchdog: every request runs the function's command with
//! the body on stdin, and stdout is the answer. The request is also described in env vars
//! (`Http_Method`, `Http_Path`, `Http_Query`, `Http_<Header>`). A non-zero exit is a 500; stderr
//! goes to the log, never to the caller.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::Inner;
use super::function::Function;
use crate::error::GatewayError;
use crate::provider::process::{isolate, signal_group};
use crate::proxy::is_length_limit;

/// Runs one request through the function's command.
pub(super) async fn invoke(
    inner: &Inner,
    function: &Function,
    request: Request<Body>,
) -> Result<Response<Body>, GatewayError> {
    let name = &function.spec.service;
    let _slot =
        match &function.slots {
            Some((slots, limit)) => Some(slots.clone().try_acquire_owned().map_err(|_| {
                GatewayError::TooManyRequests {
                    name: name.clone(),
                    limit: *limit,
                }
            })?),
            None => None,
        };
    let (parts, body) = request.into_parts();
    let mut child =
        command(inner, function, &parts)
            .spawn()
            .map_err(|source| GatewayError::Spawn {
                name: name.clone(),
                program: function.argv[0].clone(),
                source,
            })?;
    // Whatever happens (an answer, a timeout, the client going away), nothing the command
    // started outlives the request.
    let pid = child.id().unwrap_or_default();
    let _group = KillGroup(child.id());
    let exchanged = tokio::time::timeout(
        inner.upstream_timeout,
        exchange(&mut child, body, inner.max_body_size),
    )
    .await
    .map_err(|_| GatewayError::UpstreamTimeout {
        name: name.clone(),
        timeout_secs: inner.upstream_timeout.as_secs_f64(),
    })?;
    match exchanged {
        Ok(output) => respond(function, &parts, output, pid),
        Err(Stop::Feed(e)) if is_length_limit(&e) => Err(GatewayError::PayloadTooLarge {
            limit: inner.max_body_size,
        }),
        Err(Stop::Feed(e)) => Err(GatewayError::BadRequest(format!(
            "reading the request body failed: {e}"
        ))),
        Err(Stop::TooLarge) => Err(GatewayError::ResponseTooLarge {
            name: name.clone(),
            limit: inner.max_body_size,
        }),
        Err(Stop::Io(what, e)) => Err(GatewayError::internal(format!("{what} {name}"), e)),
    }
}

/// SIGKILLs a process group when dropped.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The command with the function's environment and the request described in `Http_*` vars.
fn command(inner: &Inner, function: &Function, parts: &Parts) -> Command {
    let mut cmd = inner.command(function);
    cmd.env("Http_Method", parts.method.as_str())
        .env("Http_Path", parts.uri.path())
        .env("Http_Query", parts.uri.query().unwrap_or(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in &parts.headers {
        if let Ok(v) = v.to_str() {
            cmd.env(header_env_name(k.as_str()), v);
        }
    }
    isolate(&mut cmd);
    cmd
}

/// What one run of the command produced.
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: ExitStatus,
}

/// Why a run stopped before the command finished.
enum Stop {
    /// The request body could not be read (e.g. it was over the size limit).
    Feed(axum::Error),
    /// The command wrote more than the limit.
    TooLarge,
    /// Talking to the process failed.
    Io(&'static str, std::io::Error),
}

/// Feeds the body to stdin while reading stdout (at most `limit` bytes) and stderr, until the
/// process exits; stops at the first failure.
async fn exchange(child: &mut Child, body: Body, limit: usize) -> Result<Output, Stop> {
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Stop::Io(
            "creating the pipes of",
            std::io::Error::other("missing child pipe"),
        ));
    };
    let feed = async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Stop::Feed)?;
            if stdin.write_all(&chunk).await.is_err() {
                // The function stopped reading its input; what it wrote still counts.
                break;
            }
        }
        drop(stdin);
        Ok::<(), Stop>(())
    };
    let read_out = async move {
        let mut out = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        stdout
            .take(cap)
            .read_to_end(&mut out)
            .await
            .map_err(|e| Stop::Io("reading the output of", e))?;
        if out.len() > limit {
            return Err(Stop::TooLarge);
        }
        Ok(out)
    };
    let read_err = async move {
        let mut out = Vec::new();
        let _ = (&mut stderr).take(STDERR_CAP).read_to_end(&mut out).await;
        // Keep the pipe drained so a chatty command does not block on it.
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        Ok::<Vec<u8>, Stop>(out)
    };
    let wait = async { child.wait().await.map_err(|e| Stop::Io("waiting for", e)) };
    let ((), stdout, stderr, status) = tokio::try_join!(feed, read_out, read_err, wait)?;
    Ok(Output {
        stdout,
        stderr,
        status,
    })
}

/// The most of a run's stderr kept for the log.
const STDERR_CAP: u64 = 64 * 1024;

/// The HTTP answer for a finished run.
fn respond(
    function: &Function,
    parts: &Parts,
    output: Output,
    pid: u32,
) -> Result<Response<Body>, GatewayError> {
    let name = &function.spec.service;
    let Output {
        stdout: out,
        stderr,
        status,
    } = output;
    if !stderr.is_empty() {
        function
            .log
            .lines(&Arc::from(format!("{name}-{pid}")), &stderr);
        let text = String::from_utf8_lossy(&stderr);
        if status.success() {
            tracing::debug!(function = %function.label, stderr = %text.trim_end(), "function stderr");
        } else {
            tracing::warn!(function = %function.label, %status, stderr = %text.trim_end(), "function failed");
        }
    }
    if !status.success() {
        return Ok(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("function {name:?} failed: {status}\n"),
        ));
    }
    let content_type = function
        .spec
        .env_vars
        .get("content_type")
        .and_then(|v| HeaderValue::from_str(v).ok())
        .or_else(|| parts.headers.get(header::CONTENT_TYPE).cloned())
        .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
    let mut response = Response::new(Body::from(Bytes::from(out)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    Ok(response)
}

/// The classic watchdog's name for a request header in the environment (`X-Foo` → `Http_X_Foo`).
fn header_env_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 5);
    out.push_str("Http_");
    let mut upper = true;
    for c in name.chars() {
        if c == '-' {
            out.push('_');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_map_like_the_classic_watchdog() {
        assert_eq!(header_env_name("x-call-id"), "Http_X_Call_Id");
        assert_eq!(header_env_name("content-type"), "Http_Content_Type");
    }
}
