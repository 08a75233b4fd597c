//! Invocations of a plain-HTTP gateway sent straight on hyper's pooled client
//! ([`PlainHttp`]): the connectors' hot path. Used only where reqwest would add nothing: an
//! `http://` gateway URL without credentials in it, and no proxy in the environment.

use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};

use crate::http::{Answer, PlainHttp};

/// A pooled plain-HTTP client for one gateway.
#[derive(Debug, Clone)]
pub(crate) struct DirectHttp {
    http: PlainHttp,
    authority: Authority,
    /// The base URL's path without its trailing slash (`""` or `/prefix`).
    base_path: String,
}

impl DirectHttp {
    /// A client for `base` whose calls (answer and body) time out after `timeout`; `None` when
    /// reqwest must be used: not `http://`, credentials in the URL, or a proxy configured.
    pub(crate) fn new(
        base: &reqwest::Url,
        timeout: Duration,
        max_idle_per_host: usize,
        user_agent: &str,
    ) -> Option<Self> {
        if base.scheme() != "http" || !base.username().is_empty() {
            return None;
        }
        let host = base.host_str()?;
        let authority = match base.port() {
            Some(port) => Authority::try_from(format!("{host}:{port}")),
            None => Authority::try_from(host),
        }
        .ok()?;
        Some(Self {
            http: PlainHttp::new(timeout, max_idle_per_host, user_agent)?
                .timeout_from("upstream_timeout"),
            authority,
            base_path: base.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `request` (its URI a gateway path) and reads the whole answer; why there is none
    /// otherwise (unreachable, broken connection, timeout), naming the URL.
    pub(crate) async fn send(&self, request: http::Request<Bytes>) -> Result<Answer, String> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().cloned();
        let path = match (self.base_path.as_str(), path) {
            // The usual case (a gateway at the root): the path as it is, not parsed again.
            ("", Some(path)) => path,
            (base, path) => {
                let full = format!("{base}{}", path.as_ref().map_or("/", |p| p.as_str()));
                PathAndQuery::try_from(full.as_str())
                    .map_err(|e| format!("cannot call http://{}{full}: {e}", self.authority))?
            }
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        parts.uri = http::Uri::from_parts(uri)
            .map_err(|e| format!("cannot call http://{}: {e}", self.authority))?;
        self.http.send(http::Request::from_parts(parts, body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http::header::{ACCEPT, USER_AGENT};

    fn direct(base: &str, timeout: Duration) -> Option<DirectHttp> {
        DirectHttp::new(
            &reqwest::Url::parse(base).expect("url"),
            timeout,
            4,
            "test/1",
        )
    }

    #[test]
    fn only_plain_http_without_credentials_goes_direct() {
        assert!(direct("https://gw:8443", Duration::from_secs(1)).is_none());
        assert!(direct("http://u:p@gw:8080", Duration::from_secs(1)).is_none());
        let d = direct("http://gw:8080/prefix/", Duration::from_secs(1)).expect("direct");
        assert_eq!(d.authority.as_str(), "gw:8080");
        assert_eq!(d.base_path, "/prefix");
        let d = direct("http://gw", Duration::from_secs(1)).expect("direct");
        assert_eq!((d.authority.as_str(), d.base_path.as_str()), ("gw", ""));
    }

    /// A real server answering with what it got (method, path and query, headers); `/slow`
    /// answers after 5 s.
    async fn server() -> String {
        use axum::extract::Request;
        let app = axum::Router::new().fallback(|req: Request| async move {
            if req.uri().path().ends_with("/slow") {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let seen = format!(
                "{} {} ua={:?} accept={:?} x={:?}",
                req.method(),
                req.uri(),
                req.headers().get(USER_AGENT),
                req.headers().get(ACCEPT),
                req.headers().get("x-topic"),
            );
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .expect("body");
            (
                StatusCode::ACCEPTED,
                [("x-answer", "yes")],
                format!("{seen} body={}", String::from_utf8_lossy(&body)),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/prefix/")
    }

    #[tokio::test]
    async fn a_direct_call_reaches_the_gateway_path_with_its_headers_and_body() {
        let base = server().await;
        let d = direct(&base, Duration::from_secs(2)).expect("direct");
        let request = http::Request::post("/async-function/echo.dev/a?x=1&y=%20")
            .header("x-topic", "t")
            .body(Bytes::from_static(b"hello"))
            .expect("request");
        let (status, headers, body) = d.send(request).await.expect("answer");
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(headers["x-answer"], "yes");
        assert_eq!(
            String::from_utf8_lossy(&body),
            "POST /prefix/async-function/echo.dev/a?x=1&y=%20 ua=Some(\"test/1\") \
             accept=Some(\"*/*\") x=Some(\"t\") body=hello"
        );
    }

    #[tokio::test]
    async fn unreachable_and_slow_gateways_are_errors_naming_the_url() {
        let base = server().await;
        let d = direct(&base, Duration::from_millis(300)).expect("direct");
        let slow = http::Request::post("/function/f/slow")
            .body(Bytes::new())
            .expect("request");
        let error = d.send(slow).await.expect_err("timed out");
        assert!(error.contains("/prefix/function/f/slow"), "{error}");
        assert!(error.contains("timed out after 300ms"), "{error}");

        // A port bound but not listening: connections are refused.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let port = socket.local_addr().expect("addr").port();
        let d =
            direct(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).expect("direct");
        let request = http::Request::post("/function/f")
            .body(Bytes::new())
            .expect("request");
        let error = d.send(request).await.expect_err("refused");
        assert!(
            error.starts_with(&format!(
                "error sending request for url (http://127.0.0.1:{port}/function/f)"
            )),
            "{error}"
        );
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }
}
