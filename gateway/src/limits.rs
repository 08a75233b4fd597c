//! What a deployment may ask for: names, values a process environment can hold, and replica
//! counts within `max_replicas` (and the function's own `com.openfaas.scale.max`).

use crate::error::GatewayError;
use crate::model::{FunctionDeployment, SCALE_MAX_LABEL, SCALE_MIN_LABEL, validate_name};

fn bad(message: String) -> GatewayError {
    GatewayError::BadRequest(message)
}

/// A whole-number label, if set.
pub fn count_label(
    labels: Option<&std::collections::BTreeMap<String, String>>,
    key: &str,
) -> Result<Option<u64>, GatewayError> {
    match labels.and_then(|l| l.get(key)) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(format!("label {key}={v:?} must be a whole number"))),
    }
}

/// The most replicas a function with `labels` may have.
pub fn replica_cap(
    labels: Option<&std::collections::BTreeMap<String, String>>,
    max_replicas: u64,
) -> Result<u64, GatewayError> {
    Ok(count_label(labels, SCALE_MAX_LABEL)?.map_or(max_replicas, |m| m.min(max_replicas)))
}

/// A namespace as asked for: `default` (`function_namespace`) when absent or empty, else a
/// checked name.
pub fn resolve_namespace(ns: Option<&str>, default: &str) -> Result<String, GatewayError> {
    match ns {
        None | Some("") => Ok(default.to_owned()),
        Some(ns) => {
            validate_name("namespace", ns).map_err(GatewayError::BadRequest)?;
            Ok(ns.to_owned())
        }
    }
}

/// Checks a deployment from any source (the API, a stack file) and sets its namespace: its
/// names, what a process environment cannot hold (NUL bytes, `=` in names) and replica labels
/// within the caps.
pub fn validate_deployment(
    d: &mut FunctionDeployment,
    max_replicas: u64,
    default_namespace: &str,
) -> Result<(), GatewayError> {
    validate_name("function", &d.service).map_err(|e| bad(format!("field `service`: {e}")))?;
    let ns = resolve_namespace(d.namespace.as_deref(), default_namespace)
        .map_err(|e| bad(format!("field `namespace`: {e}")))?;
    d.namespace = Some(ns);
    check_deployment(d, max_replicas)
}

fn check_deployment(d: &FunctionDeployment, max_replicas: u64) -> Result<(), GatewayError> {
    if d.env_process.as_deref().is_some_and(|c| c.contains('\0')) {
        return Err(bad("field `envProcess` must not contain NUL bytes".into()));
    }
    for (k, v) in &d.env_vars {
        if k.is_empty() || k.contains(['\0', '=']) {
            return Err(bad(format!(
                "field `envVars`: {k:?} is not a variable name (no '=', no NUL bytes, not empty)"
            )));
        }
        if v.contains('\0') {
            return Err(bad(format!(
                "field `envVars.{k}` must not contain NUL bytes"
            )));
        }
    }
    let cap = replica_cap(d.labels.as_ref(), max_replicas)?;
    if let Some(min) = count_label(d.labels.as_ref(), SCALE_MIN_LABEL)?
        && min > cap
    {
        return Err(bad(format!(
            "label {SCALE_MIN_LABEL}={min} is above the most replicas allowed ({cap}: max_replicas, or {SCALE_MAX_LABEL})"
        )));
    }
    Ok(())
}

/// Checks a scale request against the function's cap.
pub fn check_scale(
    replicas: u64,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    max_replicas: u64,
) -> Result<(), GatewayError> {
    let cap = replica_cap(labels, max_replicas)?;
    if replicas > cap {
        return Err(bad(format!(
            "{replicas} replicas is above the most allowed for this function ({cap}: max_replicas, or {SCALE_MAX_LABEL})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with_labels(labels: &[(&str, &str)]) -> FunctionDeployment {
        FunctionDeployment {
            service: "f".into(),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..FunctionDeployment::default()
        }
    }

    #[test]
    fn replicas_stay_within_the_caps() {
        assert!(check_deployment(&with_labels(&[(SCALE_MIN_LABEL, "1000000")]), 20).is_err());
        assert!(check_deployment(&with_labels(&[(SCALE_MIN_LABEL, "3")]), 20).is_ok());
        let capped = with_labels(&[(SCALE_MIN_LABEL, "3"), (SCALE_MAX_LABEL, "2")]);
        assert!(check_deployment(&capped, 20).is_err());
        assert!(check_scale(100, None, 20).is_err());
        assert!(check_scale(20, None, 20).is_ok());
        assert!(check_scale(3, capped.labels.as_ref(), 20).is_err());
        assert!(check_deployment(&with_labels(&[(SCALE_MAX_LABEL, "many")]), 20).is_err());
    }

    #[test]
    fn environments_hold_no_nul_bytes() {
        let mut d = with_labels(&[]);
        d.env_process = Some("cat\0rm".into());
        assert!(check_deployment(&d, 20).is_err());
        d.env_process = Some("cat".into());
        d.env_vars = BTreeMap::from([("A".into(), "x\0y".into())]);
        assert!(check_deployment(&d, 20).is_err());
        d.env_vars = BTreeMap::from([("A=B".into(), "x".into())]);
        assert!(check_deployment(&d, 20).is_err());
    }
}
