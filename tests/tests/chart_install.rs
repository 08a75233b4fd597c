//! The charts on the real Kubernetes API server (tests/src/kube.rs): install, upgrade and
//! uninstall, and the gateway chart's RBAC run for real with its ServiceAccount's token.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use tributary_tests::charts::{
    CONNECTORS, install, password, set, succeeded, test_values, volume_for, wait_available,
};
use tributary_tests::kube::{cluster, helm};
use tributary_tests::{GatewayOptions, eventually};

#[tokio::test]
async fn charts_install_upgrade_and_uninstall_on_the_api_server() {
    let k = cluster();
    let ns = k.namespace("release").await;
    let fns = k.namespace("release-fn").await;
    let state = tempfile::tempdir().unwrap();
    let class = format!("{ns}-state");
    volume_for(&class, state.path());
    let gateway_values = test_values(&[
        &format!("functionNamespace={fns}"),
        &format!("queue.persistence.storageClass={class}"),
    ]);
    install("tributary", "tributary", &ns, &gateway_values, false);
    wait_available(&ns);
    let first = password(&ns).await;
    assert_eq!(first.len(), 32);
    let pvc = succeeded(
        &k.kubectl(&[
            "get",
            "pvc",
            "gateway-state",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.phase}",
        ]),
        "pvc",
    );
    assert_eq!(pvc, "Bound");

    // Each connector next to it, against its Service and its basic-auth Secret.
    for name in CONNECTORS {
        install(
            name,
            name,
            &ns,
            &test_values(&["probes=false", "replicas=2"]),
            false,
        );
    }
    wait_available(&ns);
    let deployments = succeeded(
        &k.kubectl(&[
            "get",
            "deployments",
            "-n",
            &ns,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.availableReplicas} {end}",
        ]),
        "list deployments",
    );
    assert_eq!(
        deployments.trim(),
        "cron-connector=1 gateway=1 kafka-connector=2 nats-connector=2 sqs-connector=2",
        "cron runs one replica whatever the value (two would fire twice)"
    );

    // An upgrade keeps the generated password.
    let mut upgraded = gateway_values.clone();
    upgraded.push("gateway.upstreamTimeout=30s".to_owned());
    install("tributary", "tributary", &ns, &upgraded, true);
    wait_available(&ns);
    assert_eq!(password(&ns).await, first, "helm upgrade kept the password");

    // Uninstalling leaves nothing behind, here or in the function namespace.
    for name in CONNECTORS.into_iter().chain(["tributary"]) {
        succeeded(
            &helm(&["uninstall", name, "--namespace", &ns, "--wait"]),
            "helm uninstall",
        );
    }
    eventually(Duration::from_secs(30), "every object to go", || async {
        let left = k.kubectl(&[
            "get", "deployments,replicasets,services,secrets,serviceaccounts,configmaps,roles,rolebindings,pvc",
            "-n", &ns, "-l", "app.kubernetes.io/managed-by=Helm", "-o", "name",
        ]);
        let roles = k.kubectl(&["get", "roles,rolebindings", "-n", &fns, "-o", "name"]);
        let pods = k.kubectl(&["get", "pods", "-n", &ns, "-o", "name"]);
        [left, roles, pods].iter().all(|o| o.status.success() && o.stdout.is_empty())
    })
    .await;
    let secrets = succeeded(
        &k.kubectl(&["get", "secrets", "-n", &ns, "-o", "name"]),
        "secrets",
    );
    assert!(!secrets.contains("basic-auth"), "{secrets}");
    let pvc = k.kubectl(&["get", "pvc", "-n", &ns, "-o", "name"]);
    assert!(pvc.stdout.is_empty(), "the claim is gone");
}

#[tokio::test]
async fn the_gateway_chart_rbac_is_enough_and_no_more() {
    let k = cluster();
    let ns = k.namespace("chart-rbac").await;
    let fns = k.namespace("chart-rbac-fn").await;
    install(
        "tributary",
        "tributary",
        &ns,
        &test_values(&[
            &format!("functionNamespace={fns}"),
            "queue.persistence.enabled=false",
        ]),
        false,
    );
    // The ServiceAccount's token, as a pod would mount it.
    let api: Api<Secret> = Api::namespaced(k.client().await, &ns);
    let find_token = || async {
        let list = api.list(&Default::default()).await.unwrap();
        list.items.into_iter().find(|s| {
            s.type_.as_deref() == Some("kubernetes.io/service-account-token")
                && s.metadata.annotations.as_ref().is_some_and(|a| {
                    a.get("kubernetes.io/service-account.name")
                        .map(String::as_str)
                        == Some("gateway")
                })
        })
    };
    eventually(
        Duration::from_secs(20),
        "the gateway's token Secret",
        || async { find_token().await.is_some() },
    )
    .await;
    let secret = find_token().await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::copy(&k.kubeconfig, &kubeconfig).unwrap();
    let set_token = std::process::Command::new("kubectl")
        .args([
            "config",
            "set-credentials",
            "admin",
            &format!("--token={token}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    succeeded(&set_token, "kubectl config set-credentials");

    // The provider, run on this machine with exactly the chart's rights.
    let options = GatewayOptions::default().env("KUBECONFIG", kubeconfig.display().to_string());
    let gw = k.gateway(&fns, options).await;
    gw.deploy_ok(json!({"service": "f", "image": "x", "annotations": {"topic": "t"}}))
        .await;
    gw.wait_available("f", 1).await;
    assert_eq!(gw.scale("f", 2).await.status(), 202);
    gw.wait_available("f", 2).await;
    let listed: Value = gw.get_json("/system/functions").await;
    assert_eq!(listed[0]["name"], "f");
    let r = gw
        .http
        .post(gw.url("/system/secrets"))
        .json(&json!({"name": "s", "value": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Logs: the rights are there; only the hollow kubelet cannot serve them.
    let (_, text) = gw.get_text("/system/logs?name=f&tail=1").await;
    assert!(!text.contains("forbidden"), "{text}");
    assert_eq!(gw.remove("f").await.status(), 202);
    let refused = format!("in namespace \"{fns}\" failed; retrying");
    assert!(!gw.logs().contains(&refused), "{}", gw.logs());

    // And no more than that.
    let sa = format!("system:serviceaccount:{ns}:gateway");
    let can = succeeded(
        &k.kubectl(&["auth", "can-i", "--list", "--as", &sa, "-n", &fns]),
        "can-i --list",
    );
    // Rows are `RESOURCE  [URLS]  [NAMES]  [VERBS]`; rows for non-resource URLs start blank, and
    // every authenticated user may review its own access (selfsubject*).
    let granted: BTreeSet<String> = can
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| {
            let resource = l.split_whitespace().next()?;
            let verbs = &l[l.rfind('[')?..];
            Some(format!("{resource} {verbs}"))
        })
        .filter(|l| !l.starts_with("selfsubject"))
        .collect();
    let expected = set(&[
        "deployments.apps [get list watch create update delete]",
        "deployments.apps/scale [get patch update]",
        "endpoints [get list watch]",
        "pods [list]",
        "pods/log [get]",
        "secrets [get list create update delete]",
        "services [get create update delete]",
    ]);
    assert_eq!(granted, expected, "kubectl auth can-i --list:\n{can}");
    for (verb, resource) in [
        ("list", "namespaces"),
        ("create", "pods"),
        ("get", "configmaps"),
        ("create", "deployments"),
    ] {
        let other_ns = k.kubectl(&[
            "auth", "can-i", verb, resource, "--as", &sa, "-n", "default",
        ]);
        assert!(
            !other_ns.status.success(),
            "{verb} {resource} outside the function namespace"
        );
    }
}
