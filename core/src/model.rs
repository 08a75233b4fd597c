//! OpenFaaS REST API types, with JSON field names exactly as OpenFaaS spells them.
//!
//! A deployment (`POST /system/functions`) and a status (`GET /system/functions`) share most of
//! their fields; [`function_fields!`] writes those once and both structs take them, so the two
//! cannot drift apart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The namespace functions go to when a request names none, as in OpenFaaS.
pub const DEFAULT_NAMESPACE: &str = "openfaas-fn";
/// The annotation naming the topics a function subscribes to.
pub const TOPIC_ANNOTATION: &str = "topic";
/// The label with a function's minimum (and initial) replica count.
pub const SCALE_MIN_LABEL: &str = "com.openfaas.scale.min";
/// The label with a function's maximum replica count.
pub const SCALE_MAX_LABEL: &str = "com.openfaas.scale.max";

/// A connector's report of the messages waiting on its topics (`POST /system/lag`): Kafka
/// consumer lag, SQS messages visible, JetStream pending. The gateway's autoscaler scales the
/// functions subscribed to those topics on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagReport {
    /// Which connector (its kind and instance, e.g. `kafka` or `kafka-7f3a`).
    pub connector: String,
    /// Messages waiting per topic.
    pub topics: BTreeMap<String, u64>,
}

/// Memory and CPU figures for a function (`limits` / `requests`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionResources {
    /// Memory, e.g. `128Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU, e.g. `100m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

/// `null` reads as the empty value, as Go's `omitempty` peers may send either.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Declares a struct with the fields every OpenFaaS function description carries (image,
/// command, environment, placement, secrets, labels, annotations, resources) after its own.
macro_rules! function_fields {
    ($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($own)*
            /// Container image; informational for the local provider.
            #[serde(default)]
            pub image: String,
            /// The command that runs the function (OpenFaaS `fprocess`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub env_process: Option<String>,
            /// Environment variables of the function.
            #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
            pub env_vars: BTreeMap<String, String>,
            /// Placement constraints (provider specific).
            #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
            pub constraints: Vec<String>,
            /// Names of secrets made available to the function.
            #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
            pub secrets: Vec<String>,
            /// Labels, e.g. `com.openfaas.scale.min`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub labels: Option<BTreeMap<String, String>>,
            /// Annotations, e.g. `topic`, `schedule`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub annotations: Option<BTreeMap<String, String>>,
            /// Resource limits.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub limits: Option<FunctionResources>,
            /// Resource requests.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub requests: Option<FunctionResources>,
            /// Whether the root filesystem is read-only (provider specific).
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub read_only_root_filesystem: bool,
        }

        impl $name {
            /// The value of one label, if set.
            pub fn label(&self, key: &str) -> Option<&str> {
                self.labels.as_ref()?.get(key).map(String::as_str)
            }

            /// The value of one annotation, if set.
            pub fn annotation(&self, key: &str) -> Option<&str> {
                self.annotations.as_ref()?.get(key).map(String::as_str)
            }
        }
    };
}

function_fields! {
    /// A request to create or update a function (`POST`/`PUT /system/functions`).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FunctionDeployment {
        /// The function's name.
        pub service: String,
        /// Namespace; `openfaas-fn` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace: Option<String>,
    }
}

function_fields! {
    /// A function as listed by `GET /system/functions` and `GET /system/function/{name}`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FunctionStatus {
        /// The function's name.
        pub name: String,
        /// Namespace.
        #[serde(default)]
        pub namespace: String,
        /// Invocations served through this gateway since it started.
        #[serde(default)]
        pub invocation_count: f64,
        /// Desired replicas.
        #[serde(default)]
        pub replicas: u64,
        /// Replicas ready to serve.
        #[serde(default)]
        pub available_replicas: u64,
        /// When the function was created.
        #[serde(default = "epoch")]
        pub created_at: DateTime<Utc>,
    }
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

impl FunctionDeployment {
    /// The namespace this deployment targets, defaulting to `openfaas-fn`.
    pub fn namespace_or_default(&self) -> &str {
        match self.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => DEFAULT_NAMESPACE,
        }
    }
}

impl FunctionStatus {
    /// A status carrying the deployment's fields, with counters left at zero.
    pub fn from_deployment(d: &FunctionDeployment, created_at: DateTime<Utc>) -> Self {
        Self {
            name: d.service.clone(),
            namespace: d.namespace_or_default().to_owned(),
            invocation_count: 0.0,
            replicas: 0,
            available_replicas: 0,
            created_at,
            image: d.image.clone(),
            env_process: d.env_process.clone(),
            env_vars: d.env_vars.clone(),
            constraints: d.constraints.clone(),
            secrets: d.secrets.clone(),
            labels: d.labels.clone(),
            annotations: d.annotations.clone(),
            limits: d.limits.clone(),
            requests: d.requests.clone(),
            read_only_root_filesystem: d.read_only_root_filesystem,
        }
    }

    /// How to address it on `/function/`: `name`, or `name.namespace` outside `openfaas-fn`.
    pub fn address(&self) -> String {
        if self.namespace.is_empty() || self.namespace == DEFAULT_NAMESPACE {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.namespace)
        }
    }

    /// The topics in the `topic` annotation, split on `delimiter` and trimmed.
    pub fn topics(&self, delimiter: &str) -> Vec<String> {
        self.annotation(TOPIC_ANNOTATION)
            .map(|t| {
                t.split(delimiter)
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Splits a function address (`name` or `name.namespace`) into name and namespace.
pub fn split_address(address: &str) -> (&str, &str) {
    match address.split_once('.') {
        Some((name, ns)) if !ns.is_empty() => (name, ns),
        Some((name, _)) => (name, DEFAULT_NAMESPACE),
        None => (address, DEFAULT_NAMESPACE),
    }
}

/// Body of `POST /system/scale-function/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleServiceRequest {
    /// The function to scale; the path's name wins when both are given and agree.
    #[serde(default)]
    pub service_name: String,
    /// Namespace; `openfaas-fn` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Desired replicas.
    pub replicas: u64,
}

/// Body of `DELETE /system/functions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteFunctionRequest {
    /// The function to remove.
    pub function_name: String,
    /// Namespace; also accepted as the `namespace` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A version pair as in OpenFaaS `/system/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Release, e.g. `0.1.0`.
    pub release: String,
    /// Commit SHA, empty when unknown.
    pub sha: String,
    /// Commit message (gateway version only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_message: Option<String>,
}

/// Provider section of `/system/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Provider name, e.g. `tributary-local`.
    pub provider: String,
    /// Orchestration, e.g. `process` or `kubernetes`.
    pub orchestration: String,
    /// Provider version.
    pub version: VersionInfo,
}

/// Body of `GET /system/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// The provider behind the gateway.
    pub provider: ProviderInfo,
    /// The gateway's own version.
    pub version: VersionInfo,
    /// CPU architecture.
    pub arch: String,
}

/// A secret as `/system/secrets` takes it (faas-provider's `Secret`): `value` as text or
/// `rawValue` as base64 bytes. Listings carry names only. Its `Debug` never shows the value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Secret name (the file name a function reads it from).
    pub name: String,
    /// Namespace; the default one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value as bytes (base64 in JSON); wins over `value`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    pub raw_value: Option<Vec<u8>>,
}

impl Secret {
    /// The secret's content: `rawValue` when given, else `value`, else nothing.
    pub fn content(&self) -> &[u8] {
        match (&self.raw_value, &self.value) {
            (Some(raw), _) => raw,
            (None, Some(text)) => text.as_bytes(),
            (None, None) => &[],
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// `Option<Vec<u8>>` as a base64 string, as Go encodes `[]byte`.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => STANDARD
                .decode(text.as_bytes())
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("rawValue must be base64: {e}"))),
            None => Ok(None),
        }
    }
}

/// One line of a function's output, as `/system/logs` streams it (faas-provider's `Message`),
/// one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    /// Function name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The replica (process) that wrote it.
    pub instance: String,
    /// When it was captured.
    pub timestamp: DateTime<Utc>,
    /// The line, without its newline.
    pub text: String,
}

/// Checks a secret name: a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most
/// 253, starting and ending with a letter or digit), as Kubernetes requires; it is also a safe
/// file name.
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name {name:?} is invalid: use 1-253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Checks a function or namespace name the way OpenFaaS does (a DNS-1123 label).
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?} is invalid: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_take_text_or_base64_bytes_and_never_show_their_value() {
        let s: Secret = serde_json::from_str(r#"{"name":"k","value":"v"}"#).expect("parses");
        assert_eq!(s.content(), b"v");
        let s: Secret =
            serde_json::from_str(r#"{"name":"k","value":"v","rawValue":"AAEC"}"#).expect("parses");
        assert_eq!(s.content(), [0, 1, 2]);
        assert!(!format!("{s:?}").contains("AAEC") && !format!("{s:?}").contains("\"v\""));
        let listed = Secret {
            name: "k".into(),
            namespace: Some("openfaas-fn".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&listed).expect("json"),
            r#"{"name":"k","namespace":"openfaas-fn"}"#
        );
        let err =
            serde_json::from_str::<Secret>(r#"{"name":"k","rawValue":"!!"}"#).expect_err("bad");
        assert!(err.to_string().contains("base64"), "{err}");
        assert!(validate_secret_name("api.key-1").is_ok());
        for bad in ["", "../x", "a/b", ".x", "x.", "A", "a b"] {
            assert!(validate_secret_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deployment_uses_openfaas_field_names() {
        let json = r#"{"service":"figlet","image":"ghcr.io/openfaas/figlet:latest","namespace":"openfaas-fn",
            "envProcess":"figlet","envVars":{"a":"b"},"labels":{"com.openfaas.scale.min":"2"},
            "annotations":{"topic":"payments"},"secrets":["s"],"constraints":["c"],
            "limits":{"memory":"128Mi"},"requests":{"cpu":"100m"},"readOnlyRootFilesystem":true}"#;
        let d: FunctionDeployment = serde_json::from_str(json).expect("parses");
        assert_eq!(d.env_process.as_deref(), Some("figlet"));
        assert_eq!(d.label("com.openfaas.scale.min"), Some("2"));
        assert!(d.read_only_root_filesystem);
        let back = serde_json::to_value(&d).expect("serializes");
        assert_eq!(back["envVars"]["a"], "b");
        assert_eq!(back["readOnlyRootFilesystem"], true);
        assert_eq!(back["requests"]["cpu"], "100m");
    }

    #[test]
    fn status_serializes_counters_and_created_at() {
        let d = FunctionDeployment {
            service: "x".into(),
            annotations: Some(BTreeMap::from([("topic".into(), "a, b,,".into())])),
            ..Default::default()
        };
        let s = FunctionStatus::from_deployment(&d, epoch());
        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!(v["namespace"], DEFAULT_NAMESPACE);
        assert_eq!(v["availableReplicas"], 0);
        assert_eq!(v["invocationCount"], 0.0);
        assert_eq!(v["createdAt"], "1970-01-01T00:00:00Z");
        assert_eq!(s.topics(","), ["a", "b"]);
        assert_eq!(s.address(), "x");
    }

    #[test]
    fn status_from_other_gateways_tolerates_nulls_and_go_zero_times() {
        let json = r#"{"name":"f","namespace":"dev","envVars":null,"secrets":null,"labels":null,
            "createdAt":"0001-01-01T00:00:00Z","invocationCount":3,"replicas":1}"#;
        let s: FunctionStatus = serde_json::from_str(json).expect("parses");
        assert!(s.env_vars.is_empty() && s.secrets.is_empty());
        assert_eq!(s.address(), "f.dev");
        assert_eq!(split_address("f.dev"), ("f", "dev"));
        assert_eq!(split_address("f"), ("f", DEFAULT_NAMESPACE));
    }

    #[test]
    fn names_follow_dns_labels() {
        assert!(validate_name("function", "figlet-2").is_ok());
        for bad in ["", "Figlet", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(validate_name("function", bad).is_err(), "{bad}");
        }
    }
}
