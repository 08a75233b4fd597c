//! Fork mode, as the classic OpenFaaS watchdog: every request runs the function's command with
//! the body on stdin, and stdout is the answer. The request is also described in env vars
//! (`Http_Method`, `Http_Path`, `Http_Query`, `Http_<Header>`). A non-zero exit is a 500; stderr
//! goes to the log, never to the caller.

use std::process::{ExitStatus, Stdio};

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
    let (parts, body) = request.into_parts();
    let mut child =
        command(inner, function, &parts)
            .spawn()
            .map_err(|source| GatewayError::Spawn {
                name: name.clone(),
                program: function.argv[0].clone(),
                source,
            })?;
    let pid = child.id();
    let exchanged = tokio::time::timeout(inner.upstream_timeout, exchange(&mut child, body)).await;
    // Whatever happened, nothing the command started outlives the request.
    if let Some(pid) = pid {
        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let output = match exchanged {
        Ok(output) => output?,
        Err(_) => {
            return Err(GatewayError::UpstreamTimeout {
                name: name.clone(),
                timeout_secs: inner.upstream_timeout.as_secs_f64(),
            });
        }
    };
    respond(inner, function, &parts, output)
}

/// The command with the function's environment and the request described in `Http_*` vars.
fn command(inner: &Inner, function: &Function, parts: &Parts) -> Command {
    let mut cmd = Command::new(&function.argv[0]);
    cmd.args(&function.argv[1..])
        .current_dir(&inner.work_dir)
        .env("PATH", &inner.path_var)
        .envs(&function.spec.env_vars)
        .env("Http_Method", parts.method.as_str())
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
    /// Feeding the body failed (e.g. it was over the size limit).
    fed: Result<(), axum::Error>,
    stdout: std::io::Result<Vec<u8>>,
    stderr: Vec<u8>,
    status: std::io::Result<ExitStatus>,
}

/// Feeds the body to stdin while reading stdout and stderr, until the process exits.
async fn exchange(child: &mut Child, body: Body) -> Result<Output, GatewayError> {
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(GatewayError::internal(
            "the function's pipes were not created",
            std::io::Error::other("missing child pipe"),
        ));
    };
    let feed = async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if stdin.write_all(&chunk).await.is_err() {
                // The function stopped reading its input; what it wrote still counts.
                break;
            }
        }
        drop(stdin);
        Ok::<(), axum::Error>(())
    };
    let read_out = async move {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.map(|_| out)
    };
    let read_err = async move {
        let mut out = Vec::new();
        let _ = stderr.read_to_end(&mut out).await;
        out
    };
    let (fed, stdout, stderr, status) = tokio::join!(feed, read_out, read_err, child.wait());
    Ok(Output {
        fed,
        stdout,
        stderr,
        status,
    })
}

/// The HTTP answer for a finished run.
fn respond(
    inner: &Inner,
    function: &Function,
    parts: &Parts,
    output: Output,
) -> Result<Response<Body>, GatewayError> {
    let name = &function.spec.service;
    if let Err(e) = output.fed {
        if is_length_limit(&e) {
            return Err(GatewayError::PayloadTooLarge {
                limit: inner.max_body_size,
            });
        }
        return Err(GatewayError::BadRequest(format!(
            "reading request body failed: {e}"
        )));
    }
    let status = output
        .status
        .map_err(|e| GatewayError::internal(format!("waiting for {name}"), e))?;
    let out = output
        .stdout
        .map_err(|e| GatewayError::internal(format!("reading the output of {name}"), e))?;
    if !output.stderr.is_empty() {
        let text = String::from_utf8_lossy(&output.stderr);
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
