//! The Helm charts (charts/): lint and template, install, upgrade and uninstall on the real
//! Kubernetes API server (tests/src/kube.rs), the gateway chart's RBAC run for real with its
//! ServiceAccount's token, and charts and settings kept in step.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use tributary_tests::kube::{chart, cluster, helm};
use tributary_tests::{GatewayOptions, eventually, workspace_root};

const CONNECTORS: [&str; 4] = [
    "kafka-connector",
    "sqs-connector",
    "cron-connector",
    "nats-connector",
];

fn ok(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// Every rendered object of a chart, as JSON.
fn template(chart_name: &str, set: &[&str]) -> Vec<Value> {
    let path = chart(chart_name);
    let mut args = vec!["template", "t", path.to_str().unwrap(), "--namespace", "ns"];
    for s in set {
        args.extend(["--set", s]);
    }
    let text = ok(&helm(&args), &format!("helm template {chart_name}"));
    text.split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The env var names of every container of every Deployment.
fn env_names(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .clone()
        })
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The env var names of one settings table of the README (generated from the settings' own
/// declarations; tributary-cli's readme_settings test keeps the two equal).
fn readme_settings(section: &str) -> BTreeSet<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find(&format!("<!-- settings:{section} -->"))
        .unwrap();
    let end = readme[start..]
        .find(&format!("<!-- /settings:{section} -->"))
        .unwrap();
    readme[start..start + end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_chart_lints_strictly_and_renders() {
    for name in ["tributary"].into_iter().chain(CONNECTORS) {
        let path = chart(name);
        ok(
            &helm(&["lint", "--strict", path.to_str().unwrap()]),
            &format!("helm lint --strict {name}"),
        );
        let objects = template(name, &[]);
        assert!(
            objects.iter().any(|o| o["kind"] == "Deployment"),
            "{name} renders a Deployment"
        );
        for d in objects.iter().filter(|o| o["kind"] == "Deployment") {
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            for c in pod["containers"].as_array().unwrap() {
                assert_eq!(
                    c["securityContext"]["readOnlyRootFilesystem"], true,
                    "{name}"
                );
                assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
            }
            assert_eq!(
                d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
                "true"
            );
        }
    }
    // The gateway with an external NATS: a queue worker of its own, no volume claim.
    let objects = template(
        "tributary",
        &[
            "nats.external.enabled=true",
            "nats.external.url=nats://nats:4222",
            "gateway.replicas=2",
        ],
    );
    let names: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gateway", "queue-worker"]);
    assert!(!objects.iter().any(|o| o["kind"] == "PersistentVolumeClaim"));
    let gateway = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "gateway")
        .unwrap();
    assert_eq!(gateway["spec"]["replicas"], 2);
    // Only clusterRole=true reaches beyond the namespaces: reading namespaces, nothing else.
    assert!(
        !template("tributary", &[])
            .iter()
            .any(|o| o["kind"] == "ClusterRole")
    );
    let objects = template("tributary", &["clusterRole=true"]);
    let cluster_role = objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    assert_eq!(
        cluster_role["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}])
    );
}

#[test]
fn chart_values_and_settings_agree() {
    // Settings a chart fixes or does not use, and why.
    let gateway_not_in_chart = set(&[
        // The local provider's: the chart runs the kubernetes provider.
        "startup_timeout",
        "work_dir",
        "fork_max_inflight",
        "function_log_size",
    ]);
    let gateway = env_names(&template("tributary", &[]));
    let expected: BTreeSet<String> = readme_settings("gateway")
        .union(&readme_settings("global"))
        .cloned()
        .collect();
    assert_eq!(
        gateway,
        expected
            .difference(&gateway_not_in_chart)
            .cloned()
            .collect(),
        "the gateway chart's env and the gateway's settings differ"
    );
    let worker = env_names(&template(
        "tributary",
        &[
            "nats.external.enabled=true",
            "nats.external.url=nats://n:4222",
        ],
    ));
    for name in readme_settings("queue-worker") {
        assert!(
            worker.contains(&name),
            "queue-worker setting {name} is not in the chart"
        );
    }
    let connector = readme_settings("connector")
        .union(&readme_settings("global"))
        .cloned()
        .collect::<BTreeSet<_>>();
    for (chart_name, section, aliases, with) in [
        (
            "kafka-connector",
            "kafka",
            &["broker_host"][..],
            &["saslAuth=true", "caSecret=ca", "certSecret=cert"][..],
        ),
        (
            "sqs-connector",
            "sqs",
            &[][..],
            &["awsCredentialsSecret=aws"][..],
        ),
        ("cron-connector", "cron", &[][..], &[][..]),
        (
            "nats-connector",
            "nats",
            &["broker_host"][..],
            &["authSecret=auth", "tlsSecret=tls"][..],
        ),
    ] {
        let rendered = env_names(&template(chart_name, with));
        let mut expected: BTreeSet<String> = readme_settings(section)
            .union(&connector)
            .cloned()
            .collect();
        // An older alias of a setting the chart sets (broker_hosts, nats_url).
        for a in aliases {
            expected.remove(*a);
        }
        // The AWS SDK's own variables, from the credentials Secret.
        let extra: BTreeSet<String> = rendered
            .difference(&expected)
            .filter(|n| !n.starts_with("AWS_"))
            .cloned()
            .collect();
        assert!(
            extra.is_empty(),
            "{chart_name} sets env that is no setting: {extra:?}"
        );
        let missing: BTreeSet<&String> = expected.difference(&rendered).collect();
        assert!(
            missing.is_empty(),
            "{chart_name} has no value for {missing:?}"
        );
    }
}

#[test]
fn the_chart_role_is_the_documented_rbac() {
    let rules = |objects: &[Value]| -> Value {
        objects
            .iter()
            .find(|o| o["kind"] == "Role")
            .map(|r| r["rules"].clone())
            .unwrap()
    };
    let chart_rules = rules(&template("tributary", &[]));
    let text =
        std::fs::read_to_string(workspace_root().join("deploy/kubernetes-rbac.yaml")).unwrap();
    let documented: Vec<Value> = text
        .split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .collect();
    assert_eq!(chart_rules, rules(&documented));
}

/// The values the tests install with: probes off (no container runs on the hollow node).
fn test_values(extra: &[&str]) -> Vec<String> {
    ["httpProbe=false", "faasnetes.httpProbe=false"]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
}

fn install(release: &str, chart_name: &str, ns: &str, values: &[String], upgrade: bool) -> String {
    let path = chart(chart_name);
    let verb = if upgrade { "upgrade" } else { "install" };
    let mut args = vec![
        verb,
        release,
        path.to_str().unwrap(),
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "120s",
    ];
    for v in values {
        args.extend(["--set", v.as_str()]);
    }
    ok(&helm(&args), &format!("helm {verb} {chart_name}"))
}

fn wait_available(ns: &str) {
    let k = cluster();
    ok(
        &k.kubectl(&[
            "wait",
            "--for=condition=Available",
            "deployment",
            "--all",
            "-n",
            ns,
            "--timeout=90s",
        ]),
        "every Deployment Available",
    );
}

/// A hostPath PersistentVolume of a class of its own, for the embedded queue's claim (the
/// test cluster has no volume provisioner).
fn volume_for(class: &str, dir: &Path) {
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": class},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "hostPath": {"path": dir.display().to_string()}
        }
    });
    ok(
        &cluster().kubectl_with_input(&["apply", "-f", "-"], &pv.to_string()),
        "create a PersistentVolume",
    );
}

async fn password(ns: &str) -> Vec<u8> {
    let api: Api<Secret> = Api::namespaced(cluster().client().await, ns);
    api.get("basic-auth").await.unwrap().data.unwrap()["basic-auth-password"]
        .0
        .clone()
}

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
    let pvc = ok(
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
    let deployments = ok(
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
        ok(
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
    let secrets = ok(
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
    ok(&set_token, "kubectl config set-credentials");

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
    let r = gw
        .http
        .get(gw.url("/system/logs?name=f&tail=1"))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("forbidden"), "{text}");
    assert_eq!(gw.remove("f").await.status(), 202);
    let refused = format!("in namespace \"{fns}\" failed; retrying");
    assert!(!gw.logs().contains(&refused), "{}", gw.logs());

    // And no more than that.
    let sa = format!("system:serviceaccount:{ns}:gateway");
    let can = ok(
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

/// The values table of a chart's README, from the `# --` comments of its values.yaml (a comment
/// continues on the `#` lines after it) and the defaults they document.
fn values_table(chart_name: &str) -> String {
    let dir = workspace_root().join("charts").join(chart_name);
    let text = std::fs::read_to_string(dir.join("values.yaml")).unwrap();
    let values: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut rows = vec![
        "| value | default | meaning |".to_owned(),
        "|---|---|---|".to_owned(),
    ];
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut comment: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(c) = trimmed.strip_prefix("# -- ") {
            comment = Some(c.to_owned());
            continue;
        }
        if let (Some(c), Some(more)) = (comment.as_mut(), trimmed.strip_prefix("# ")) {
            c.push(' ');
            c.push_str(more);
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            comment = None;
            continue;
        };
        if trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        while path.last().is_some_and(|(i, _)| *i >= indent) {
            path.pop();
        }
        path.push((indent, key.to_owned()));
        if let Some(c) = comment.take() {
            let dotted: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
            let default = dotted.iter().fold(&values, |v, k| &v[*k]);
            let default = match default {
                Value::String(s) if s.is_empty() => "`\"\"`".to_owned(),
                Value::String(s) => format!("`{s}`"),
                other => format!("`{other}`"),
            };
            rows.push(format!(
                "| `{}` | {} | {} |",
                dotted.join("."),
                default.replace('|', "\\|"),
                c.replace('|', "\\|")
            ));
        }
    }
    rows.join("\n")
}

#[test]
fn chart_readmes_list_every_value() {
    let bless = std::env::var_os("TRIBUTARY_BLESS").is_some();
    for name in ["tributary"].into_iter().chain(CONNECTORS) {
        let path = workspace_root().join("charts").join(name).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (start, end) = ("<!-- values -->\n", "\n<!-- /values -->");
        let from = readme.find(start).expect("a values marker") + start.len();
        let to = readme.find(end).expect("a values end marker");
        let table = values_table(name);
        if bless {
            std::fs::write(
                &path,
                format!("{}{}{}", &readme[..from], table, &readme[to..]),
            )
            .unwrap();
        } else {
            assert_eq!(
                readme[from..to],
                table,
                "{}: the values table is stale; run TRIBUTARY_BLESS=1 cargo test -p tributary-tests --test charts chart_readmes",
                path.display()
            );
        }
    }
}
