//! Kubernetes API failures as gateway errors that name the verb, resource and namespace.

use crate::error::GatewayError;

/// The API server's HTTP status for a failed call, if it answered.
pub(super) fn api_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A failed call as a [`GatewayError`]: a rejected object (422) is the caller's bad request;
/// anything else names what failed and what to do.
pub(super) fn api_error(
    verb: &'static str,
    resource: &'static str,
    namespace: &str,
    e: kube::Error,
) -> GatewayError {
    let hint = match &e {
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
            return GatewayError::BadRequest(format!(
                "kubernetes rejected the {resource}: {}",
                status.message
            ));
        }
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden ({}): grant the gateway's service account `{verb}` on `{resource}` (see the README's RBAC for the kubernetes provider)",
            status.message
        ),
        kube::Error::Api(status) if status.code == 401 => format!(
            "unauthorized ({}): the gateway's Kubernetes credentials were refused",
            status.message
        ),
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            "the API server could not be reached; try again (the gateway keeps serving from its cache and reconnects)".to_owned()
        }
        other => other.to_string(),
    };
    GatewayError::Kubernetes {
        verb,
        resource,
        namespace: namespace.to_owned(),
        hint,
        source: Box::new(e),
    }
}
