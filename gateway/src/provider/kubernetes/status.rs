//! A function's status read back from its Deployment (the reverse of [`super::objects`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::objects::{FPROCESS, secrets_volume};
use crate::model::{FunctionResources, FunctionStatus};

/// The desired replicas of a Deployment.
pub(super) fn desired_replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

fn to_chrono(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

fn read_resources(list: Option<&BTreeMap<String, Quantity>>) -> Option<FunctionResources> {
    let list = list?;
    let r = FunctionResources {
        memory: list.get("memory").map(|q| q.0.clone()),
        cpu: list.get("cpu").map(|q| q.0.clone()),
    };
    (r.memory.is_some() || r.cpu.is_some()).then_some(r)
}

/// A function's status read from its Deployment; `None` for a Deployment that is not a
/// function's (no container) or is being deleted.
pub(super) fn status(dep: &Deployment) -> Option<FunctionStatus> {
    if dep.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = dep.metadata.name.clone()?;
    let spec = &dep.spec;
    let template = spec.template.metadata.clone().unwrap_or_default();
    let pod = spec.template.spec.as_ref()?;
    let container = pod.containers.first()?;
    let mut env_process = None;
    let mut env_vars = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = var.value.clone().unwrap_or_default();
        if var.name == FPROCESS {
            env_process = Some(value);
        } else {
            env_vars.insert(var.name.clone(), value);
        }
    }
    let volume = secrets_volume(&name);
    let mut secrets: Vec<String> = pod
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .chain(
            pod.volumes
                .iter()
                .flatten()
                .filter(|v| v.name == volume)
                .filter_map(|v| v.projected.as_ref()?.sources.clone())
                .flatten()
                .filter_map(|p| p.secret.map(|s| s.name)),
        )
        .collect();
    secrets.sort();
    let resources = container.resources.as_ref();
    Some(FunctionStatus {
        name,
        namespace: dep.metadata.namespace.clone().unwrap_or_default(),
        image: container.image.clone().unwrap_or_default(),
        env_process,
        env_vars,
        constraints: pod
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        secrets,
        labels: template.labels,
        annotations: template.annotations,
        limits: read_resources(resources.and_then(|r| r.limits.as_ref())),
        requests: read_resources(resources.and_then(|r| r.requests.as_ref())),
        read_only_root_filesystem: container
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        invocation_count: 0.0,
        replicas: desired_replicas(dep).max(0) as u64,
        available_replicas: dep
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
            .max(0) as u64,
        created_at: dep
            .metadata
            .creation_timestamp
            .as_ref()
            .map(to_chrono)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::kubernetes::KubernetesConfig;
    use crate::provider::kubernetes::objects::deployment;
    use crate::provider::kubernetes::objects::tests::{sample, secret};

    #[test]
    fn status_reads_back_what_deployment_wrote() {
        let spec = sample();
        let d = deployment(
            &spec,
            "fns",
            &[secret("api-key")],
            3,
            &KubernetesConfig::default(),
        );
        let s = status(&d).expect("a function");
        assert_eq!(s.name, "resize");
        assert_eq!(s.namespace, "fns");
        assert_eq!(s.image, spec.image);
        assert_eq!(s.env_process, spec.env_process);
        assert_eq!(s.env_vars, spec.env_vars);
        assert_eq!(s.secrets, vec!["api-key".to_owned()]);
        assert_eq!(s.limits, spec.limits);
        assert_eq!(s.requests, spec.requests);
        assert!(s.read_only_root_filesystem);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.available_replicas, 0);
        assert_eq!(s.annotation("topic"), Some("images"));
        assert_eq!(s.label("team"), Some("media"));
        assert_eq!(
            s.constraints,
            vec!["disktype=ssd".to_owned(), "zone=a".to_owned()]
        );
    }
}
