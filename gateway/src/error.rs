//! The gateway's error type and its mapping to HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tributary_core::Chain;
use tributary_core::queue::{BoxError, QueueError};

/// Everything that can go wrong in the gateway, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The named function does not exist.
    #[error("function {name:?} not found in namespace {namespace:?}")]
    FunctionNotFound {
        /// Function name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// A POST named a function that already exists.
    #[error(
        "function {name:?} already exists in namespace {namespace:?}; use PUT /system/functions to update it"
    )]
    AlreadyExists {
        /// Function name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// The named secret does not exist.
    #[error(
        "secret {name:?} not found in namespace {namespace:?}; create it with POST /system/secrets (faas-cli secret create)"
    )]
    SecretNotFound {
        /// Secret name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// A POST named a secret that already exists.
    #[error(
        "secret {name:?} already exists in namespace {namespace:?}; use PUT /system/secrets to update it"
    )]
    SecretExists {
        /// Secret name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// A deployment names secrets that do not exist.
    #[error(
        "function {name:?} names secrets that do not exist in namespace {namespace:?}: {}; create them first (faas-cli secret create)",
        missing.join(", ")
    )]
    MissingSecrets {
        /// Function name.
        name: String,
        /// Namespace.
        namespace: String,
        /// The missing secrets.
        missing: Vec<String>,
    },
    /// The request was malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes (max_body_size)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The function was registered but its process did not start.
    #[error(
        "function {name:?} was deployed but did not start: {reason}; it is retried with backoff, see GET /system/function/{name}"
    )]
    StartFailed {
        /// Function name.
        name: String,
        /// Why it did not start.
        reason: String,
    },
    /// The function is running as many requests as it may (`max_inflight`).
    #[error(
        "function {name:?} is running {limit} requests already (max_inflight): try again later"
    )]
    TooManyRequests {
        /// Function name.
        name: String,
        /// Its limit.
        limit: usize,
    },
    /// The function answered with more than the gateway passes on.
    #[error("function {name:?} answered with more than {limit} bytes (max_body_size)")]
    ResponseTooLarge {
        /// Function name.
        name: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// No replica could take the request in time.
    #[error("no replicas of function {name:?} became ready within {waited_secs:.1}s")]
    NoReplicas {
        /// Function name.
        name: String,
        /// How long the gateway waited.
        waited_secs: f64,
    },
    /// The function did not answer within `upstream_timeout`.
    #[error("function {name:?} did not answer within upstream_timeout ({timeout_secs:.1}s)")]
    UpstreamTimeout {
        /// Function name.
        name: String,
        /// The timeout in seconds.
        timeout_secs: f64,
    },
    /// The function could not be reached, or the connection to it broke.
    #[error("function {name:?} could not be reached")]
    Upstream {
        /// Function name.
        name: String,
        /// What happened.
        #[source]
        source: BoxError,
    },
    /// A fork-mode function's command could not be started.
    #[error("function {name:?}: could not start {program:?}")]
    Spawn {
        /// Function name.
        name: String,
        /// The command.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No dead letter has this id.
    #[error("dead letter {id} not found; list them with GET /system/async-dead-letters")]
    DeadLetterNotFound {
        /// The id asked for.
        id: u64,
    },
    /// The gateway has no async queue.
    #[error(
        "asynchronous invocation needs a queue: run the gateway with the embedded queue (queue_path) or nats_url"
    )]
    NoQueue,
    /// The async queue failed to store or list requests.
    #[error("the asynchronous queue failed")]
    Queue(#[source] QueueError),
    /// A Kubernetes API call failed (the kubernetes provider).
    #[error("kubernetes: {verb} {resource} in namespace {namespace:?} failed: {hint}")]
    Kubernetes {
        /// The verb: get, list, create, update, patch, delete, watch.
        verb: &'static str,
        /// The resource, e.g. `deployments` or `deployments/scale`.
        resource: &'static str,
        /// The namespace (`(cluster scope)` for namespaces).
        namespace: String,
        /// What it means and what to do.
        hint: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// An internal failure.
    #[error("{what}")]
    Internal {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl From<QueueError> for GatewayError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::TooLarge { limit, .. } => Self::PayloadTooLarge { limit },
            e => Self::Queue(e),
        }
    }
}

impl GatewayError {
    /// An internal failure while doing `what`.
    pub fn internal(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::FunctionNotFound { .. }
            | Self::SecretNotFound { .. }
            | Self::DeadLetterNotFound { .. } => StatusCode::NOT_FOUND,
            Self::AlreadyExists { .. } | Self::SecretExists { .. } => StatusCode::CONFLICT,
            Self::BadRequest(_) | Self::MissingSecrets { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::StartFailed { .. }
            | Self::NoQueue
            | Self::Queue(_)
            | Self::Internal { .. }
            | Self::Kubernetes { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NoReplicas { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream { .. } | Self::Spawn { .. } | Self::ResponseTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let text = Chain(&self).to_string();
        if status.is_server_error() {
            tracing::warn!(%status, error = %text, "request failed");
        }
        let mut response = (
            status,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            format!("{text}\n"),
        )
            .into_response();
        if matches!(self, Self::PayloadTooLarge { .. }) {
            // The rest of an oversized body may be unread: the connection cannot carry another
            // request, so the client must not reuse it.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
