//! The Helm charts (charts/) as files: `helm lint --strict` and `helm template`, their env and
//! the settings kept in step, the gateway chart's Role equal to the documented RBAC, and the
//! values tables of their READMEs. chart_install.rs installs them on the API server.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tributary_tests::charts::{
    CONNECTORS, env_names, readme_settings, set, succeeded, template, values_table,
};
use tributary_tests::kube::{chart, helm};
use tributary_tests::workspace_root;

#[test]
fn every_chart_lints_strictly_and_renders() {
    for name in ["tributary"].into_iter().chain(CONNECTORS) {
        let path = chart(name);
        succeeded(
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
