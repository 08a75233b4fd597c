//! A function as Kubernetes objects, the way faas-netes writes them: a Deployment and a Service
//! named after the function, and the reverse (a Deployment read back as a [`FunctionStatus`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, KeyToPath,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, Secret, SecretProjection, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::KubernetesConfig;
use crate::model::{FunctionDeployment, FunctionResources};

/// The label that ties a Deployment, its pods and its Service to a function.
pub(super) const FUNCTION_LABEL: &str = "faas_function";
/// Where a function's secrets are mounted (the watchdog's `secret_mount_path`).
pub(super) const SECRETS_MOUNT: &str = "/var/openfaas/secrets";
/// The port the function's watchdog listens on.
pub(super) const WATCHDOG_PORT: i32 = 8080;
/// The variable the watchdog reads the function's process from.
pub(super) const FPROCESS: &str = "fprocess";
/// faas-netes' non-root user id.
const NON_ROOT_UID: i64 = 12000;
const SCRAPE_ANNOTATION: &str = "prometheus.io.scrape";
const DOCKER_CONFIG_TYPES: [&str; 2] =
    ["kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"];

pub(super) fn secrets_volume(name: &str) -> String {
    format!("{name}-projected-secrets")
}

/// The annotations faas-netes puts on the Deployment, its pods and the Service.
fn annotations(d: &FunctionDeployment) -> BTreeMap<String, String> {
    let mut a = d.annotations.clone().unwrap_or_default();
    a.entry(SCRAPE_ANNOTATION.to_owned())
        .or_insert_with(|| "false".to_owned());
    a
}

fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(FUNCTION_LABEL.to_owned(), name.to_owned())])
}

fn resources(d: &FunctionDeployment) -> ResourceRequirements {
    fn list(r: Option<&FunctionResources>) -> Option<BTreeMap<String, Quantity>> {
        let r = r?;
        let mut m = BTreeMap::new();
        if let Some(memory) = r.memory.as_deref().filter(|v| !v.is_empty()) {
            m.insert("memory".to_owned(), Quantity(memory.to_owned()));
        }
        if let Some(cpu) = r.cpu.as_deref().filter(|v| !v.is_empty()) {
            m.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
        }
        (!m.is_empty()).then_some(m)
    }
    ResourceRequirements {
        limits: list(d.limits.as_ref()),
        requests: list(d.requests.as_ref()),
        ..Default::default()
    }
}

fn probe(config: &KubernetesConfig) -> Option<Probe> {
    config.http_probe.then(|| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/_/health".to_owned()),
            port: IntOrString::Int(WATCHDOG_PORT),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(config.readiness_probe_initial_delay_seconds as i32),
        period_seconds: Some(config.readiness_probe_period_seconds as i32),
        timeout_seconds: Some(config.readiness_probe_timeout_seconds as i32),
        ..Default::default()
    })
}

fn env(d: &FunctionDeployment) -> Vec<EnvVar> {
    let process = d
        .env_process
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| (FPROCESS, p));
    let mut vars: Vec<EnvVar> = process
        .chain(d.env_vars.iter().map(|(k, v)| (k.as_str(), v)))
        .map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: Some(value.clone()),
            ..Default::default()
        })
        .collect();
    vars.sort_by(|a, b| a.name.cmp(&b.name));
    vars
}

/// `constraints` entries `key=value` (or `key==value`, as swarm wrote them) as a nodeSelector.
fn node_selector(d: &FunctionDeployment) -> Option<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = d
        .constraints
        .iter()
        .filter_map(|c| {
            let (k, v) = c.split_once("==").or_else(|| c.split_once('='))?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    (!m.is_empty()).then_some(m)
}

/// Secrets: pull secrets for registry credentials, the others projected as files at
/// [`SECRETS_MOUNT`], one file per key.
fn mount_secrets(name: &str, secrets: &[Secret], pod: &mut PodSpec, container: &mut Container) {
    let mut sources = Vec::new();
    for s in secrets {
        let secret_name = s.metadata.name.clone().unwrap_or_default();
        if s.type_
            .as_deref()
            .is_some_and(|t| DOCKER_CONFIG_TYPES.contains(&t))
        {
            pod.image_pull_secrets
                .get_or_insert_with(Vec::new)
                .push(LocalObjectReference { name: secret_name });
            continue;
        }
        let items = s
            .data
            .iter()
            .flat_map(|d| d.keys())
            .chain(s.string_data.iter().flat_map(|d| d.keys()))
            .map(|key| KeyToPath {
                key: key.clone(),
                path: key.clone(),
                ..Default::default()
            })
            .collect();
        sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                name: secret_name,
                items: Some(items),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if sources.is_empty() {
        return;
    }
    let volume = secrets_volume(name);
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: volume.clone(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..Default::default()
        }),
        ..Default::default()
    });
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: volume,
            mount_path: SECRETS_MOUNT.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
}

/// The Deployment for a function: `secrets` are the Secrets it names, fetched; `replicas` its
/// desired count.
pub(super) fn deployment(
    d: &FunctionDeployment,
    namespace: &str,
    secrets: &[Secret],
    replicas: i32,
    config: &KubernetesConfig,
) -> Deployment {
    let name = &d.service;
    let annotations = annotations(d);
    // The user's labels, and the selector's, which they may not change.
    let mut labels = d.labels.clone().unwrap_or_default();
    labels.extend(selector(name));
    let pod_labels = labels.clone();
    let mut container = Container {
        name: name.clone(),
        image: Some(d.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: WATCHDOG_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        env: Some(env(d)),
        resources: Some(resources(d)),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        liveness_probe: probe(config),
        readiness_probe: probe(config),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(d.read_only_root_filesystem),
            allow_privilege_escalation: Some(false),
            run_as_user: config.set_nonroot_user.then_some(NON_ROOT_UID),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod = PodSpec {
        node_selector: node_selector(d),
        restart_policy: Some("Always".to_owned()),
        dns_policy: Some("ClusterFirst".to_owned()),
        security_context: config.set_nonroot_user.then(|| PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    if d.read_only_root_filesystem {
        // A writable /tmp, as faas-netes gives read-only functions.
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "temp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: "temp".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..Default::default()
            });
    }
    mount_secrets(name, secrets, &mut pod, &mut container);
    pod.containers = vec![container];
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(name)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            revision_history_limit: Some(10),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The Service for a function: ClusterIP, port 8080 to the watchdog.
pub(super) fn service(d: &FunctionDeployment, namespace: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(d.service.clone()),
            namespace: Some(namespace.to_owned()),
            annotations: Some(annotations(d)),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector(&d.service)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                protocol: Some("TCP".to_owned()),
                port: WATCHDOG_PORT,
                target_port: Some(IntOrString::Int(WATCHDOG_PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    pub(crate) fn sample() -> FunctionDeployment {
        serde_json::from_value(serde_json::json!({
            "service": "resize",
            "image": "ghcr.io/acme/resize:1.0",
            "envProcess": "python index.py",
            "envVars": {"B": "2", "A": "1"},
            "constraints": ["disktype=ssd", "zone == a"],
            "secrets": ["api-key"],
            "labels": {"team": "media", "com.openfaas.scale.min": "2"},
            "annotations": {"topic": "images"},
            "limits": {"memory": "128Mi", "cpu": "500m"},
            "requests": {"memory": "64Mi"},
            "readOnlyRootFilesystem": true
        }))
        .expect("valid deployment")
    }

    pub(crate) fn secret(name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                name.to_owned(),
                ByteString(b"s3cret".to_vec()),
            )])),
            type_: Some("Opaque".to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn deployment_carries_the_faas_netes_fields() {
        let d = deployment(
            &sample(),
            "fns",
            &[secret("api-key")],
            2,
            &KubernetesConfig::default(),
        );
        let v = serde_json::to_value(&d).expect("serialises");
        assert_eq!(v["metadata"]["labels"]["faas_function"], "resize");
        assert_eq!(v["metadata"]["labels"]["team"], "media");
        assert_eq!(v["metadata"]["annotations"]["topic"], "images");
        assert_eq!(
            v["metadata"]["annotations"]["prometheus.io.scrape"],
            "false"
        );
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(
            v["spec"]["selector"]["matchLabels"],
            serde_json::json!({"faas_function": "resize"})
        );
        let pod = &v["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["team"], "media");
        assert_eq!(pod["metadata"]["annotations"]["topic"], "images");
        assert_eq!(
            pod["spec"]["nodeSelector"],
            serde_json::json!({"disktype": "ssd", "zone": "a"})
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["name"], "resize");
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        assert_eq!(
            c["env"],
            serde_json::json!([
                {"name": "A", "value": "1"},
                {"name": "B", "value": "2"},
                {"name": "fprocess", "value": "python index.py"}
            ])
        );
        assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
        assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/_/health");
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        assert!(mounts.iter().any(|m| m["mountPath"] == "/tmp"));
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"] == SECRETS_MOUNT && m["readOnly"] == true)
        );
        let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
        let projected = volumes
            .iter()
            .find(|v| v["name"] == "resize-projected-secrets")
            .expect("secrets volume");
        assert_eq!(
            projected["projected"]["sources"][0]["secret"],
            serde_json::json!({"name": "api-key", "items": [{"key": "api-key", "path": "api-key"}]})
        );
    }

    #[test]
    fn probes_can_be_turned_off_and_pull_secrets_are_not_mounted() {
        let config = KubernetesConfig {
            http_probe: false,
            ..Default::default()
        };
        let mut pull = secret("registry");
        pull.type_ = Some("kubernetes.io/dockerconfigjson".to_owned());
        let d = deployment(&sample(), "fns", &[pull], 1, &config);
        let pod = d.spec.template.spec.expect("pod");
        assert!(pod.containers[0].readiness_probe.is_none());
        assert!(pod.containers[0].liveness_probe.is_none());
        assert_eq!(
            pod.image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "registry".into()
            }])
        );
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .all(|v| v.name != "resize-projected-secrets")
        );
    }

    #[test]
    fn service_points_at_the_watchdog() {
        let s = service(&sample(), "fns");
        let v = serde_json::to_value(&s).expect("serialises");
        assert_eq!(v["spec"]["selector"]["faas_function"], "resize");
        assert_eq!(v["spec"]["ports"][0]["port"], 8080);
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(v["spec"]["type"], "ClusterIP");
    }
}
