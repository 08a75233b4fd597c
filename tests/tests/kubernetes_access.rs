//! Access to the API server from the kubernetes provider: a verb its credentials lack fails
//! naming the verb, resource and namespace; the documented RBAC is enough; an unreachable API
//! server is reported and reconnected; the real faas-cli manages functions through it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::kube::{cluster, deployment, function};
use tributary_tests::{GatewayOptions, eventually};

#[tokio::test]
async fn a_forbidden_verb_names_the_verb_resource_and_namespace() {
    let k = cluster();
    let ns = k.namespace("rbac").await;
    // User `limited` may read the namespace's Deployments and Endpoints, and nothing else.
    let out = k.kubectl(&[
        "create",
        "role",
        "reader",
        "-n",
        &ns,
        "--verb=get,list,watch",
        "--resource=deployments,endpoints",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = k.kubectl(&[
        "create",
        "rolebinding",
        "reader",
        "-n",
        &ns,
        "--role=reader",
        "--user=limited",
    ]);
    assert!(out.status.success(), "{out:?}");
    let options =
        GatewayOptions::default().env("KUBECONFIG", k.limited_kubeconfig.display().to_string());
    let gw = k.gateway(&ns, options).await;

    // What it may do works; listing namespaces (cluster scope) is not allowed, so only the
    // function namespace is served.
    let listed: Value = gw.get_json("/system/functions").await;
    assert_eq!(listed, json!([]));
    let namespaces: Vec<String> = gw.get_json("/system/namespaces").await;
    assert_eq!(namespaces, vec![ns.clone()]);
    gw.wait_for_log(
        "list/watch namespaces (cluster scope) failed",
        Duration::from_secs(5),
    )
    .await;

    let r = gw.deploy(function("f")).await;
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!(
            "create deployments in namespace \"{ns}\" failed: forbidden"
        )),
        "{text}"
    );
    assert!(text.contains("RBAC"), "{text}");
    let r = gw.http.get(gw.url("/system/secrets")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("list secrets in namespace")
    );
}

#[tokio::test]
async fn faas_cli_manages_functions_on_the_kubernetes_provider() {
    let Some(cli) = tributary_tests::openfaas_program("faas-cli") else {
        return;
    };
    let k = cluster();
    let ns = k.namespace("faascli").await;
    let gw = k.gateway(&ns, GatewayOptions::default()).await;
    let home = tempfile::tempdir().unwrap();
    let password = gw.credentials().unwrap().password.clone();
    let run = |args: &[&str], stdin: &str| {
        let out = tributary_tests::faas_cli(&cli, home.path(), &gw.base, args, stdin);
        (out.status.success(), tributary_tests::output_text(&out))
    };
    let (ok, text) = run(
        &["login", "--username", "admin", "--password-stdin"],
        &password,
    );
    assert!(ok, "{text}");
    let (ok, text) = run(
        &[
            "deploy",
            "--image",
            "ghcr.io/acme/figlet:1",
            "--name",
            "figlet",
            "--label",
            "team=cli",
            "--annotation",
            "topic=banners",
            "--env",
            "MODE=big",
        ],
        "",
    );
    assert!(ok, "{text}");
    let d = deployment(&ns, "figlet")
        .await
        .expect("faas-cli deployed it");
    assert_eq!(
        d.spec.template.metadata.unwrap().annotations.unwrap()["topic"],
        "banners"
    );
    let (ok, text) = run(&["ready", "figlet", "--attempts", "30"], "");
    assert!(ok, "{text}");
    assert_eq!(gw.scale("figlet", 3).await.status(), 202);
    gw.wait_available("figlet", 3).await;
    let (ok, text) = run(&["list", "--verbose"], "");
    assert!(
        ok && text.contains("figlet") && text.contains("ghcr.io/acme/figlet:1"),
        "{text}"
    );
    let (ok, text) = run(&["describe", "figlet"], "");
    assert!(ok, "{text}");
    assert!(text.contains("ghcr.io/acme/figlet:1"), "{text}");
    assert!(text.contains('3'), "replicas: {text}");
    let (ok, text) = run(&["remove", "figlet"], "");
    assert!(ok, "{text}");
    assert!(deployment(&ns, "figlet").await.is_none());
}

#[tokio::test]
async fn the_documented_rbac_is_enough() {
    let k = cluster();
    let ns = k.namespace("rbac-doc").await;
    let rbac = std::fs::read_to_string(
        tributary_tests::workspace_root().join("deploy/kubernetes-rbac.yaml"),
    )
    .unwrap()
    .replace("FUNCTION_NAMESPACE", &ns)
    .replace(
        "- SUBJECT",
        "- {kind: User, name: deployer, apiGroup: rbac.authorization.k8s.io}",
    );
    let out = k.kubectl_with_input(&["apply", "-f", "-"], &rbac);
    assert!(out.status.success(), "{out:?}");
    let options =
        GatewayOptions::default().env("KUBECONFIG", k.deployer_kubeconfig.display().to_string());
    let gw = k.gateway(&ns, options).await;
    let r = gw
        .http
        .post(gw.url("/system/secrets"))
        .json(&json!({"name": "token", "value": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    gw.deploy_ok(json!({"service": "f", "image": "x", "secrets": ["token"]}))
        .await;
    gw.wait_available("f", 1).await;
    assert_eq!(gw.scale("f", 2).await.status(), 202);
    gw.wait_available("f", 2).await;
    let r = gw
        .http
        .put(gw.url("/system/functions"))
        .json(&json!({"service": "f", "image": "y", "secrets": ["token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let namespaces: Vec<String> = gw.get_json("/system/namespaces").await;
    assert!(namespaces.contains(&ns), "{namespaces:?}");
    let secrets: Value = gw.get_json("/system/secrets").await;
    assert_eq!(secrets[0]["name"], "token");
    assert_eq!(gw.remove("f").await.status(), 202);
    let r = gw
        .http
        .delete(gw.url("/system/secrets"))
        .json(&json!({"name": "token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Other tests' function namespaces are refused (the Role is in this one only); none of
    // this namespace's watches is.
    let refused = format!("in namespace \"{ns}\" failed; retrying");
    assert!(!gw.logs().contains(&refused), "{}", gw.logs());
}

/// Forwards TCP connections on `listener` to `target` (a stand-in for the API server coming
/// back on its address).
async fn forward(listener: tokio::net::TcpListener, target: u16) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test]
async fn an_unreachable_api_server_is_reported_then_reconnected() {
    let k = cluster();
    let ns = k.namespace("offline").await;
    let dir = tempfile::tempdir().unwrap();
    // Bound but not listening: connections to it are refused, and no other process can take the
    // port before the API server "comes back" on it (a freed port could be reused meanwhile).
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .unwrap();
    let port = reserved.local_addr().unwrap().port();
    let kubeconfig = k.kubeconfig_at_port(dir.path(), port);
    let options = GatewayOptions::default().env("KUBECONFIG", kubeconfig.display().to_string());
    // The gateway starts and serves what it can: health, and clear errors.
    let gw = k.gateway(&ns, options).await;
    let r = gw.deploy(function("f")).await;
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("could not be reached") && text.contains(&format!("namespace \"{ns}\"")),
        "{text}"
    );
    let (status, text) = gw.get_text("/system/functions").await;
    assert_eq!(status, 500);
    assert!(
        text.contains(&format!("list deployments in namespace \"{ns}\" failed")),
        "{text}"
    );
    gw.wait_for_log("list/watch deployments", Duration::from_secs(5))
        .await;

    // The API server comes back on that address: the watches reconnect on their own.
    let listener = reserved.listen(128).unwrap();
    tokio::spawn(forward(listener, k.api_port()));
    eventually(
        Duration::from_secs(30),
        "the gateway to reconnect",
        || async { gw.get_code("/system/functions").await == 200 },
    )
    .await;
    gw.deploy_ok(function("f")).await;
    gw.wait_for_log("kubernetes watch recovered", Duration::from_secs(5))
        .await;
}
