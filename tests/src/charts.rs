//! Helpers of the Helm chart tests: rendering charts, reading settings tables, installing on
//! the test cluster.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};

use crate::kube::{chart, cluster, helm};
use crate::workspace_root;

/// The connector charts.
pub const CONNECTORS: [&str; 4] = [
    "kafka-connector",
    "sqs-connector",
    "cron-connector",
    "nats-connector",
];

/// The output of a command that must have succeeded (else the test fails with it).
pub fn succeeded(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// Every rendered object of a chart, as JSON.
pub fn template(chart_name: &str, set: &[&str]) -> Vec<Value> {
    let path = chart(chart_name);
    let mut args = vec![
        "template",
        "t",
        path.to_str().expect("as the chart tests expect"),
        "--namespace",
        "ns",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    let text = succeeded(&helm(&args), &format!("helm template {chart_name}"));
    text.split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The env var names of every container of every Deployment.
pub fn env_names(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("as the chart tests expect")
                .clone()
        })
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            e["name"]
                .as_str()
                .expect("as the chart tests expect")
                .to_owned()
        })
        .collect()
}

/// The env var names of one settings table of the README (generated from the settings' own
/// declarations; tributary-cli's readme_settings test keeps the two equal).
pub fn readme_settings(section: &str) -> BTreeSet<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))
        .expect("as the chart tests expect");
    let start = readme
        .find(&format!("<!-- settings:{section} -->"))
        .expect("as the chart tests expect");
    let end = readme[start..]
        .find(&format!("<!-- /settings:{section} -->"))
        .expect("as the chart tests expect");
    readme[start..start + end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// A set of strings.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The values table of a chart's README, from the `# --` comments of its values.yaml (a comment
/// continues on the `#` lines after it) and the defaults they document.
pub fn values_table(chart_name: &str) -> String {
    let dir = workspace_root().join("charts").join(chart_name);
    let text = std::fs::read_to_string(dir.join("values.yaml")).expect("as the chart tests expect");
    let values: Value = serde_yaml_ng::from_str(&text).expect("as the chart tests expect");
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

/// The values the tests install with: probes off (no container runs on the hollow node).
pub fn test_values(extra: &[&str]) -> Vec<String> {
    ["httpProbe=false", "faasnetes.httpProbe=false"]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
}

/// `helm install` (or `upgrade`) a chart as `release` in `ns` with `--set` values, waiting for it.
pub fn install(
    release: &str,
    chart_name: &str,
    ns: &str,
    values: &[String],
    upgrade: bool,
) -> String {
    let path = chart(chart_name);
    let verb = if upgrade { "upgrade" } else { "install" };
    let mut args = vec![
        verb,
        release,
        path.to_str().expect("as the chart tests expect"),
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "120s",
    ];
    for v in values {
        args.extend(["--set", v.as_str()]);
    }
    succeeded(&helm(&args), &format!("helm {verb} {chart_name}"))
}

/// Waits until every Deployment of `ns` is Available.
pub fn wait_available(ns: &str) {
    let k = cluster();
    succeeded(
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
pub fn volume_for(class: &str, dir: &Path) {
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": class},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "hostPath": {"path": dir.display().to_string()}
        }
    });
    succeeded(
        &cluster().kubectl_with_input(&["apply", "-f", "-"], &pv.to_string()),
        "create a PersistentVolume",
    );
}

/// The password of the `basic-auth` Secret in `ns`.
pub async fn password(ns: &str) -> Vec<u8> {
    let api: Api<Secret> = Api::namespaced(cluster().client().await, ns);
    api.get("basic-auth")
        .await
        .expect("as the chart tests expect")
        .data
        .expect("as the chart tests expect")["basic-auth-password"]
        .0
        .clone()
}
