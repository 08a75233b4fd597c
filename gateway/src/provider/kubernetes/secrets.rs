//! `/system/secrets` as Kubernetes Secrets, labelled as faas-netes labels them; the value is
//! kept under a key named after the secret, so it is mounted as `/var/openfaas/secrets/NAME`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

use super::error::{api_error, api_status};
use crate::error::GatewayError;
use crate::model::Secret;

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const MANAGED_BY_VALUE: &str = "openfaas";

fn not_found(name: &str, namespace: &str) -> GatewayError {
    GatewayError::SecretNotFound {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
    }
}

/// The function secrets of one namespace, names only (values are never read here).
pub(super) async fn list(client: &Client, namespace: &str) -> Result<Vec<Secret>, GatewayError> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE}"));
    let list = api
        .list_metadata(&params)
        .await
        .map_err(|e| api_error("list", "secrets", namespace, e))?;
    let mut names: Vec<Secret> = list
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .map(|name| Secret {
            name,
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        })
        .collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(names)
}

fn data(secret: &Secret) -> BTreeMap<String, ByteString> {
    BTreeMap::from([(secret.name.clone(), ByteString(secret.content().to_vec()))])
}

/// Creates a labelled Opaque Secret.
pub(super) async fn create(client: &Client, secret: Secret) -> Result<(), GatewayError> {
    let namespace = secret.namespace.clone().unwrap_or_default();
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), &namespace);
    let object = KubeSecret {
        metadata: ObjectMeta {
            name: Some(secret.name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.to_owned(),
                MANAGED_BY_VALUE.to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data(&secret)),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(e) if api_status(&e) == Some(409) => Err(GatewayError::SecretExists {
            name: secret.name,
            namespace,
        }),
        Err(e) => Err(api_error("create", "secrets", &namespace, e)),
    }
}

/// Replaces a Secret's value (the kubelet updates mounted copies).
pub(super) async fn update(client: &Client, secret: Secret) -> Result<(), GatewayError> {
    let namespace = secret.namespace.clone().unwrap_or_default();
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), &namespace);
    let mut found = match api.get(&secret.name).await {
        Ok(found) => found,
        Err(e) if api_status(&e) == Some(404) => return Err(not_found(&secret.name, &namespace)),
        Err(e) => return Err(api_error("get", "secrets", &namespace, e)),
    };
    found.data = Some(data(&secret));
    found.string_data = None;
    api.replace(&secret.name, &PostParams::default(), &found)
        .await
        .map_err(|e| api_error("update", "secrets", &namespace, e))?;
    Ok(())
}

/// Removes a Secret.
pub(super) async fn delete(
    client: &Client,
    name: &str,
    namespace: &str,
) -> Result<(), GatewayError> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if api_status(&e) == Some(404) => Err(not_found(name, namespace)),
        Err(e) => Err(api_error("delete", "secrets", namespace, e)),
    }
}

/// The Secrets a deployment names, fetched (to mount their keys); missing ones are reported
/// together.
pub(super) async fn fetch(
    client: &Client,
    function: &str,
    names: &[String],
    namespace: &str,
) -> Result<Vec<KubeSecret>, GatewayError> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match api.get(name).await {
            Ok(s) => found.push(s),
            Err(e) if api_status(&e) == Some(404) => missing.push(name.clone()),
            Err(e) => return Err(api_error("get", "secrets", namespace, e)),
        }
    }
    if !missing.is_empty() {
        return Err(GatewayError::MissingSecrets {
            name: function.to_owned(),
            namespace: namespace.to_owned(),
            missing,
        });
    }
    Ok(found)
}
