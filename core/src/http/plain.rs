//! Plain-HTTP requests sent straight on hyper over per-thread pooled connections
//! ([`super::pool`]): the hot paths (connector invocations, async callbacks) without reqwest's
//! per-request work (URL conversion, client clone, boxed futures, extensions, a task per call
//! in its pool). Only where reqwest would add nothing: an `http://` URL without credentials in
//! it, and no proxy in the environment (reqwest would honour `HTTP_PROXY`); callers keep
//! reqwest for everything else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full};

use super::pool::Pools;
use crate::Chain;

/// Env vars that make reqwest send plain-HTTP requests through a proxy.
const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// What a request answered: status, headers and the whole body.
pub type Answer = (StatusCode, HeaderMap, Bytes);

/// A pooled plain-HTTP client.
#[derive(Debug, Clone)]
pub struct PlainHttp {
    pools: Arc<Pools<Authority, Full<Bytes>>>,
    timeout: Duration,
    /// The setting the timeout comes from, named when a call times out.
    timeout_setting: Option<&'static str>,
    user_agent: HeaderValue,
}

impl PlainHttp {
    /// A client whose calls (answer and body) time out after `timeout`, keeping up to
    /// `max_idle_per_host` idle connections per host (and thread) and sending `user_agent`
    /// unless a request has its own; `None` when a proxy is configured (reqwest must be used
    /// then).
    pub fn new(timeout: Duration, max_idle_per_host: usize, user_agent: &str) -> Option<Self> {
        let proxied = PROXY_VARS
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        if proxied {
            return None;
        }
        Some(Self {
            pools: Pools::new(super::POOL_IDLE_TIMEOUT, max_idle_per_host),
            timeout,
            timeout_setting: None,
            user_agent: HeaderValue::from_str(user_agent).ok()?,
        })
    }

    /// Names the setting the timeout comes from in the error of a call that times out.
    pub fn timeout_from(mut self, setting: &'static str) -> Self {
        self.timeout_setting = Some(setting);
        self
    }

    /// Whether `uri` can go this way: absolute `http://`, no credentials in it.
    pub fn takes(uri: &Uri) -> bool {
        uri.scheme() == Some(&http::uri::Scheme::HTTP)
            && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
    }

    /// Sends `request` (its URI absolute, see [`Self::takes`]) and reads the whole answer; why
    /// there is none otherwise (unreachable, broken connection, timeout), naming the URL.
    pub async fn send(&self, request: http::Request<Bytes>) -> Result<Answer, String> {
        let (mut parts, body) = request.into_parts();
        // Named only in errors: formatted then, not on every call.
        let url = parts.uri.clone();
        let to = url
            .authority()
            .cloned()
            .ok_or_else(|| format!("cannot send a request to {url}: not an absolute URL"))?;
        parts
            .headers
            .entry(USER_AGENT)
            .or_insert_with(|| self.user_agent.clone());
        parts
            .headers
            .entry(ACCEPT)
            .or_insert_with(|| HeaderValue::from_static("*/*"));
        let call = async {
            let request = http::Request::from_parts(parts, Full::new(body));
            let response = self
                .pools
                .send(&to, request)
                .await
                .map_err(|e| format!("error sending request for url ({url}): {}", Chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading the response of {url} failed: {}", Chain(&e)))?;
            Ok((parts.status, parts.headers, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                let setting = self
                    .timeout_setting
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                Err(format!(
                    "error sending request for url ({url}): timed out after {:?}{setting}",
                    self.timeout
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_plain_http_without_credentials_is_taken() {
        let takes = |u: &str| PlainHttp::takes(&u.parse::<Uri>().expect("uri"));
        assert!(takes("http://gw:8080/function/f"));
        assert!(takes("http://127.0.0.1/cb?x=1"));
        assert!(!takes("https://gw:8443/"));
        assert!(!takes("http://u:p@gw:8080/"));
        assert!(!takes("/function/f"));
    }
}
