//! A typed client for an OpenFaaS-compatible gateway (Tributary's or OpenFaaS' own): namespaces,
//! functions, deploy, update, delete, scale and invocation, with basic auth.

mod direct;

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use self::direct::DirectHttp;
use crate::Chain;
use crate::auth::{BasicAuth, SecretError};
pub use crate::http::Answer;
use crate::http::{HttpClientError, http_client};
use crate::model::{
    DeleteFunctionRequest, FunctionDeployment, FunctionStatus, ScaleServiceRequest,
};

/// Why a gateway call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an http(s) URL.
    #[error(
        "gateway_url {url:?} must be an http:// or https:// URL, e.g. http://gateway.openfaas:8080"
    )]
    BadUrl {
        /// The URL given.
        url: String,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Http(#[from] HttpClientError),
    /// The gateway could not be reached, or the connection broke.
    #[error("gateway {url} is unreachable")]
    Unreachable {
        /// What was requested.
        url: String,
        /// The connection error.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway refused the credentials.
    #[error(
        "gateway {url} answered 401 Unauthorized: set basic_auth=true and put basic-auth-user and basic-auth-password in secret_mount_path"
    )]
    Unauthorized {
        /// What was requested.
        url: String,
    },
    /// The gateway answered with an unexpected status.
    #[error("gateway {url} answered {status}: {body}")]
    Status {
        /// What was requested.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The gateway's JSON could not be read.
    #[error("gateway {url} sent JSON that cannot be read")]
    BadJson {
        /// What was requested.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Basic-auth credentials could not be read.
    #[error("basic_auth is on but its credentials cannot be read")]
    Credentials(#[from] SecretError),
    /// A setting sent as a header on every call is not a valid header value.
    #[error("{setting} {value:?} cannot be sent as an HTTP header value: use visible ASCII")]
    HeaderValue {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: String,
    },
}

impl ClientError {
    /// The HTTP status the gateway answered, when that is what failed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }
}

/// How the client authenticates on `/system/*`.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// Fixed credentials.
    Basic(BasicAuth),
    /// `basic-auth-user` and `basic-auth-password` in this folder (`secret_mount_path`), read
    /// on every call so rotated secrets are picked up.
    SecretMount(PathBuf),
}

/// Synchronous (`/function/NAME`) or asynchronous (`/async-function/NAME`) invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Invocation {
    /// `/function/NAME`: the answer is the function's.
    #[default]
    Sync,
    /// `/async-function/NAME`: queued, 202 Accepted.
    Async,
}

/// The gateway path invoking `function` (`name` or `name.namespace`) at its own `path` (`""`
/// or `/sub/path?query`): `/function/NAME{path}` or `/async-function/NAME{path}`.
pub fn invocation_path(kind: Invocation, function: &str, path: &str) -> String {
    let route = match kind {
        Invocation::Sync => "function",
        Invocation::Async => "async-function",
    };
    format!("/{route}/{function}{path}")
}

/// A gateway called in-process instead of over HTTP (the queue worker built into the gateway
/// calls functions through it): takes a request whose URI is a gateway path
/// ([`invocation_path`]) and answers as the gateway would.
pub type Loopback = std::sync::Arc<
    dyn Fn(
            http::Request<bytes::Bytes>,
        ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<bytes::Bytes>> + Send>>
        + Send
        + Sync,
>;

/// A client for one gateway.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    /// `base` parsed once: invocations only set its path and query (no host re-parsing per
    /// call).
    base_url: reqwest::Url,
    auth: Auth,
    /// Invocations straight on hyper (see [`Self::with_direct_invocations`]).
    direct: Option<DirectHttp>,
}

/// The most of an error body kept in [`ClientError::Status`].
const BODY_EXCERPT: usize = 200;

impl GatewayClient {
    /// A client for the gateway at `base_url`, whose calls time out after `timeout`.
    pub fn new(base_url: &str, auth: Auth, timeout: Duration) -> Result<Self, ClientError> {
        let http = http_client(
            concat!("tributary/", env!("CARGO_PKG_VERSION")),
            Some(timeout),
            8,
        )?;
        Self::with_http(base_url, auth, http)
    }

    /// A client for the gateway at `base_url` sending through `http`.
    pub fn with_http(
        base_url: &str,
        auth: Auth,
        http: reqwest::Client,
    ) -> Result<Self, ClientError> {
        let base = check_url(base_url)?;
        let parsed = reqwest::Url::parse(&base).map_err(|_| ClientError::BadUrl {
            url: base_url.to_owned(),
        })?;
        Ok(Self {
            http,
            base,
            base_url: parsed,
            auth,
            direct: None,
        })
    }

    /// Sends [`Self::call_invocation`]s straight on a pooled hyper client (timing out after
    /// `timeout`, keeping up to `max_idle_per_host` idle connections, sending `user_agent`)
    /// when reqwest would add nothing: an `http://` gateway without credentials in its URL and
    /// no proxy in the environment. Otherwise they keep going through reqwest.
    pub fn with_direct_invocations(
        mut self,
        timeout: Duration,
        max_idle_per_host: usize,
        user_agent: &str,
    ) -> Self {
        self.direct = DirectHttp::new(&self.base_url, timeout, max_idle_per_host, user_agent);
        self
    }

    /// Sends `request` (its URI a gateway path, see [`invocation_path`]) and reads the whole
    /// answer: status, headers and body, or why there is none.
    pub async fn call_invocation(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<Answer, String> {
        if let Some(direct) = &self.direct {
            return direct.send(request).await;
        }
        let response = self
            .send_invocation(request)
            .send()
            .await
            .map_err(|e| Chain(&e).to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(body) => Ok((status, headers, body)),
            Err(e) => Err(format!("reading the response failed: {}", Chain(&e))),
        }
    }

    /// The gateway's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A URL on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn credentials(&self) -> Result<Option<BasicAuth>, ClientError> {
        Ok(match &self.auth {
            Auth::None => None,
            Auth::Basic(b) => Some(b.clone()),
            Auth::SecretMount(dir) => Some(BasicAuth::read(dir).await?),
        })
    }

    /// Sends a `/system` request with the credentials; answers other than 2xx are errors.
    async fn system(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(path);
        let mut request = self.http.request(method, &url);
        if let Some(auth) = self.credentials().await? {
            request = request.basic_auth(auth.user, Some(auth.password));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        match response.status().as_u16() {
            200..=299 => Ok(response),
            401 => Err(ClientError::Unauthorized { url }),
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(ClientError::Status {
                    url,
                    status,
                    body: body.trim().chars().take(BODY_EXCERPT).collect(),
                })
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.system(reqwest::Method::GET, path, None).await?;
        let url = self.url(path);
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::BadJson { url, source })
    }

    /// `GET /system/namespaces`; `None` when the gateway has no namespace support (404).
    pub async fn namespaces(&self) -> Result<Option<Vec<String>>, ClientError> {
        match self.get_json("/system/namespaces").await {
            Ok(ns) => Ok(Some(ns)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /system/functions`, in `namespace` or the gateway's default one.
    pub async fn functions(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<FunctionStatus>, ClientError> {
        self.get_json(&with_namespace("/system/functions", namespace))
            .await
    }

    /// `GET /system/function/NAME`.
    pub async fn function(
        &self,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<FunctionStatus, ClientError> {
        self.get_json(&with_namespace(
            &format!("/system/function/{name}"),
            namespace,
        ))
        .await
    }

    /// `POST /system/functions`: deploys a new function.
    pub async fn deploy(&self, deployment: &FunctionDeployment) -> Result<(), ClientError> {
        self.send_json(reqwest::Method::POST, "/system/functions", deployment)
            .await
    }

    /// `PUT /system/functions`: replaces an existing function's spec.
    pub async fn update(&self, deployment: &FunctionDeployment) -> Result<(), ClientError> {
        self.send_json(reqwest::Method::PUT, "/system/functions", deployment)
            .await
    }

    /// `DELETE /system/functions`.
    pub async fn delete(&self, name: &str, namespace: Option<&str>) -> Result<(), ClientError> {
        let body = DeleteFunctionRequest {
            function_name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
        };
        self.send_json(reqwest::Method::DELETE, "/system/functions", &body)
            .await
    }

    /// `POST /system/scale-function/NAME`.
    pub async fn scale(
        &self,
        name: &str,
        namespace: Option<&str>,
        replicas: u64,
    ) -> Result<(), ClientError> {
        let body = ScaleServiceRequest {
            service_name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
            replicas,
        };
        self.send_json(
            reqwest::Method::POST,
            &format!("/system/scale-function/{name}"),
            &body,
        )
        .await
    }

    /// `POST /system/lag`: the messages waiting on a connector's topics.
    pub async fn report_lag(&self, report: &crate::model::LagReport) -> Result<(), ClientError> {
        self.send_json(reqwest::Method::POST, "/system/lag", report)
            .await
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(), ClientError> {
        let json = serde_json::to_value(body).map_err(|source| ClientError::BadJson {
            url: self.url(path),
            source,
        })?;
        self.system(method, path, Some(json)).await.map(drop)
    }

    /// A request invoking `function` (`name` or `name.namespace`) at its path `path` (`""` or
    /// `/sub/path?query`), to send with the caller's headers and body. No credentials: function
    /// routes are open, as in OpenFaaS.
    pub fn invocation(
        &self,
        kind: Invocation,
        method: reqwest::Method,
        function: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(
            method,
            format!("{}{}", self.base, invocation_path(kind, function, path)),
        )
    }

    /// `request`, whose URI is a gateway path (see [`invocation_path`]), sent to this gateway
    /// with its method, headers and body. No credentials, as [`GatewayClient::invocation`].
    pub fn send_invocation(&self, request: http::Request<bytes::Bytes>) -> reqwest::RequestBuilder {
        let (parts, body) = request.into_parts();
        let mut url = self.base_url.clone();
        let path = format!("{}{}", url.path().trim_end_matches('/'), parts.uri.path());
        url.set_path(&path);
        url.set_query(parts.uri.query());
        self.http
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
    }

    /// `POST /function/NAME` with `body`; the function's answer, whatever its status.
    pub async fn invoke(
        &self,
        function: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<reqwest::Response, ClientError> {
        self.invocation(Invocation::Sync, reqwest::Method::POST, function, "")
            .body(body)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.url(&format!("/function/{function}")),
                source,
            })
    }
}

fn with_namespace(path: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{path}?namespace={ns}"),
        _ => path.to_owned(),
    }
}

/// Checks a gateway base URL and drops its trailing slashes.
pub fn check_url(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim().trim_end_matches('/');
    let ok = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
        && reqwest::Url::parse(trimmed).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()));
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(ClientError::BadUrl {
            url: url.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_keep_the_base_path_and_the_query() {
        for base in ["http://gw:8080/prefix/", "http://gw:8080/prefix"] {
            let client = GatewayClient::new(base, Auth::None, Duration::from_secs(1)).expect("ok");
            let request = http::Request::post(invocation_path(
                Invocation::Async,
                "echo.dev",
                "/a/b?x=1&y=%20",
            ))
            .body(bytes::Bytes::new())
            .expect("request");
            let sent = client.send_invocation(request).build().expect("built");
            assert_eq!(
                sent.url().as_str(),
                "http://gw:8080/prefix/async-function/echo.dev/a/b?x=1&y=%20"
            );
            assert_eq!(sent.method(), http::Method::POST);
        }
    }

    #[test]
    fn urls_are_checked_and_trimmed() {
        assert_eq!(
            check_url("http://gateway.openfaas:8080/").expect("ok"),
            "http://gateway.openfaas:8080"
        );
        for bad in ["gateway:8080", "ftp://x", "http://", ""] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(with_namespace("/p", Some("dev")), "/p?namespace=dev");
        assert_eq!(with_namespace("/p", None), "/p");
    }
}
