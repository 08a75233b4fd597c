//! The kubernetes provider against a real Kubernetes 1.20 API server (tests/src/kube.rs): the
//! gateway's REST API writes Deployments and Services as faas-netes does, reads them back
//! through its watch cache, scales through the scale subresource, keeps secrets as Secrets,
//! invokes at the Service's endpoints (holding calls while there are none) and reports
//! failures of the API server by verb, resource and namespace.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tributary_connector_sdk::{ConnectorMetrics, TopicMapSync};
use tributary_tests::kube::cluster;
use tributary_tests::{GatewayOptions, eventually};

fn function(name: &str) -> Value {
    json!({ "service": name, "image": format!("ghcr.io/acme/{name}:1.0") })
}

async fn deployment(ns: &str, name: &str) -> Option<Deployment> {
    let api: Api<Deployment> = Api::namespaced(cluster().client().await, ns);
    api.get_opt(name).await.unwrap()
}

#[tokio::test]
async fn deploy_writes_the_faas_netes_objects_and_replicas_become_available() {
    let k = cluster();
    let ns = k.namespace("deploy").await;
    let gw = k.gateway(&ns, GatewayOptions::default()).await;
    let out = k.kubectl(&["label", "nodes", "--all", "disktype=ssd", "--overwrite"]);
    assert!(out.status.success(), "{out:?}");
    let r = gw
        .http
        .post(gw.url("/system/secrets"))
        .json(&json!({"name": "api-key", "value": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    gw.deploy_ok(json!({
        "service": "resize",
        "image": "ghcr.io/acme/resize:1.0",
        "envProcess": "python index.py",
        "envVars": {"MODE": "fast"},
        "secrets": ["api-key"],
        "constraints": ["disktype=ssd"],
        "labels": {"team": "media", "com.openfaas.scale.min": "2"},
        "annotations": {"topic": "images"},
        "limits": {"memory": "128Mi", "cpu": "10m"},
        "requests": {"memory": "64Mi"},
        "readOnlyRootFilesystem": true
    }))
    .await;

    let d = serde_json::to_value(deployment(&ns, "resize").await.expect("deployment")).unwrap();
    assert_eq!(d["metadata"]["labels"]["faas_function"], "resize");
    assert_eq!(d["metadata"]["labels"]["team"], "media");
    assert_eq!(d["metadata"]["annotations"]["topic"], "images");
    assert_eq!(d["spec"]["replicas"], 2, "com.openfaas.scale.min");
    let pod = &d["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["faas_function"], "resize");
    assert_eq!(pod["metadata"]["annotations"]["topic"], "images");
    assert_eq!(pod["spec"]["nodeSelector"]["disktype"], "ssd");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/acme/resize:1.0");
    assert_eq!(
        c["env"],
        json!([{"name": "MODE", "value": "fast"}, {"name": "fprocess", "value": "python index.py"}])
    );
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(c["resources"]["limits"]["cpu"], "10m");
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c["readinessProbe"].is_null(), "http_probe=false");
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/var/openfaas/secrets"),
        "{c}"
    );
    let svc: Api<Service> = Api::namespaced(k.client().await, &ns);
    let svc = serde_json::to_value(svc.get("resize").await.unwrap()).unwrap();
    assert_eq!(svc["spec"]["selector"]["faas_function"], "resize");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);

    // The hollow node runs the pods: availableReplicas follows.
    gw.wait_available("resize", 2).await;
    let status = gw.status("resize").await;
    assert_eq!(status["replicas"], 2);
    assert_eq!(status["secrets"], json!(["api-key"]));
    assert_eq!(status["envProcess"], "python index.py");
    assert_eq!(status["limits"]["memory"], "128Mi");
    assert!(status["createdAt"].as_str().unwrap().starts_with("20"));

    // A second deploy of the same name conflicts; a missing secret or a bad quantity is a 400.
    assert_eq!(gw.deploy(function("resize")).await.status(), 409);
    let r = gw
        .deploy(json!({"service": "nosecret", "image": "x", "secrets": ["ghost"]}))
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("ghost"));
    let r = gw
        .deploy(json!({"service": "badmem", "image": "x", "limits": {"memory": "lots"}}))
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("kubernetes rejected"));
    assert!(deployment(&ns, "badmem").await.is_none());
}

#[tokio::test]
async fn scale_update_kubectl_and_delete_are_seen_through_the_watch() {
    let k = cluster();
    let ns = k.namespace("scale").await;
    let gw = k.gateway(&ns, GatewayOptions::default()).await;
    gw.deploy_ok(function("api")).await;
    gw.wait_available("api", 1).await;

    assert_eq!(gw.scale("api", 3).await.status(), 202);
    assert_eq!(gw.status("api").await["replicas"], 3);
    gw.wait_available("api", 3).await;
    assert_eq!(gw.scale("api", 0).await.status(), 202);
    assert_eq!(gw.status("api").await["replicas"], 0);
    gw.wait_available("api", 0).await;

    // A change made outside the gateway is seen within 2 s.
    let out = k.kubectl(&["scale", "deployment/api", "-n", &ns, "--replicas=2"]);
    assert!(out.status.success(), "{out:?}");
    let seen = Instant::now();
    eventually(Duration::from_secs(2), "kubectl scale seen", || async {
        gw.client
            .function("api", None)
            .await
            .is_ok_and(|f| f.replicas == 2)
    })
    .await;
    println!(
        "kubectl scale seen by the gateway after {:?}",
        seen.elapsed()
    );

    // Update keeps the replica count and changes the spec.
    let r = gw
        .http
        .put(gw.url("/system/functions"))
        .json(&json!({"service": "api", "image": "ghcr.io/acme/api:2.0", "annotations": {"topic": "v2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let status = gw.status("api").await;
    assert_eq!(status["image"], "ghcr.io/acme/api:2.0");
    assert_eq!(status["replicas"], 2);
    assert_eq!(status["annotations"]["topic"], "v2");
    let d = deployment(&ns, "api").await.unwrap();
    assert_eq!(d.spec.replicas, Some(2));

    // An update of an unknown function is a 404, as is its scale.
    let r = gw
        .http
        .put(gw.url("/system/functions"))
        .json(&function("ghost"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(gw.scale("ghost", 1).await.status(), 404);

    // kubectl delete is seen too; the gateway's delete removes both objects.
    gw.deploy_ok(function("gone")).await;
    let out = k.kubectl(&["delete", "deployment/gone", "-n", &ns]);
    assert!(out.status.success(), "{out:?}");
    eventually(Duration::from_secs(2), "kubectl delete seen", || async {
        gw.get_code("/system/function/gone").await == 404
    })
    .await;
    assert_eq!(gw.remove("api").await.status(), 202);
    assert_eq!(gw.get_code("/system/function/api").await, 404);
    assert!(deployment(&ns, "api").await.is_none());
    let svc: Api<Service> = Api::namespaced(k.client().await, &ns);
    assert!(svc.get_opt("api").await.unwrap().is_none());
    assert_eq!(gw.remove("api").await.status(), 404);
}

#[tokio::test]
async fn secrets_are_kubernetes_secrets() {
    let k = cluster();
    let ns = k.namespace("secrets").await;
    let gw = k.gateway(&ns, GatewayOptions::default()).await;
    let url = gw.url("/system/secrets");
    let send = |method: reqwest::Method, body: Value| {
        let r = gw.http.request(method, &url).json(&body);
        async move { r.send().await.unwrap() }
    };
    let r = send(reqwest::Method::POST, json!({"name": "db", "value": "pw1"})).await;
    assert_eq!(r.status(), 201);
    let r = send(reqwest::Method::POST, json!({"name": "db", "value": "pw1"})).await;
    assert_eq!(r.status(), 409);
    let r = send(
        reqwest::Method::POST,
        json!({"name": "cert", "rawValue": "AAEC/w=="}),
    )
    .await;
    assert_eq!(r.status(), 201);

    let api: Api<Secret> = Api::namespaced(k.client().await, &ns);
    let db = api.get("db").await.unwrap();
    assert_eq!(
        db.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "openfaas"
    );
    assert_eq!(db.data.as_ref().unwrap()["db"].0, b"pw1");
    assert_eq!(
        api.get("cert").await.unwrap().data.unwrap()["cert"].0,
        vec![0, 1, 2, 255]
    );

    let listed: Value = gw.get_json("/system/secrets").await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cert", "db"]);
    assert!(
        listed.to_string().find("pw1").is_none(),
        "values are never listed"
    );

    let r = send(reqwest::Method::PUT, json!({"name": "db", "value": "pw2"})).await;
    assert_eq!(r.status(), 202);
    assert_eq!(api.get("db").await.unwrap().data.unwrap()["db"].0, b"pw2");
    let r = send(reqwest::Method::PUT, json!({"name": "nope", "value": "x"})).await;
    assert_eq!(r.status(), 404);
    let r = send(reqwest::Method::DELETE, json!({"name": "db"})).await;
    assert_eq!(r.status(), 202);
    assert!(api.get_opt("db").await.unwrap().is_none());
    let r = send(reqwest::Method::DELETE, json!({"name": "db"})).await;
    assert_eq!(r.status(), 404);
}

/// A stand-in for a function's pod (no container runs on the hollow node): an HTTP server that
/// answers `pod says: BODY`, on this machine's own address (Endpoints may not be loopback).
async fn pod_server() -> std::net::SocketAddr {
    // Which address routes out; no packet is sent.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("192.0.2.254:9").unwrap();
    let ip = probe.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address: {ip}"
    );
    let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
        format!("pod says: {}", String::from_utf8_lossy(&body))
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Points a function's Service at `pod`, as the endpoints controller would at a ready pod. The
/// Service loses its selector so the controller leaves these Endpoints alone.
async fn endpoints_at(ns: &str, name: &str, pod: Option<std::net::SocketAddr>) {
    let client = cluster().client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": null}})),
        )
        .await
        .unwrap();
    let subsets = match pod {
        Some(pod) => json!([{
            "addresses": [{"ip": pod.ip().to_string()}],
            "ports": [{"name": "http", "port": pod.port(), "protocol": "TCP"}]
        }]),
        None => Value::Null,
    };
    let endpoints: Api<Endpoints> = Api::namespaced(client, ns);
    let body = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns},
        "subsets": subsets
    });
    endpoints
        .patch(
            name,
            &PatchParams::apply("tributary-tests").force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn invocations_go_to_the_endpoints_and_wait_for_one_at_zero() {
    let k = cluster();
    let ns = k.namespace("invoke").await;
    let gw = k.gateway(&ns, GatewayOptions::default()).await;
    let pod = pod_server().await;
    gw.deploy_ok(function("web")).await;
    endpoints_at(&ns, "web", Some(pod)).await;
    eventually(
        Duration::from_secs(5),
        "a call reaches the endpoint",
        || async {
            match gw.invoke("web", "first").await {
                r if r.status() == 200 => r.text().await.unwrap() == "pod says: first",
                _ => false,
            }
        },
    )
    .await;

    // At zero replicas with no endpoint, a call is held: the gateway scales the function to 1
    // and forwards the call once an endpoint is ready.
    assert_eq!(gw.scale("web", 0).await.status(), 202);
    endpoints_at(&ns, "web", None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let call = gw
        .http
        .post(gw.url(&format!("/function/web.{ns}/any/path")))
        .body("held")
        .send();
    let ready_later = async {
        eventually(
            Duration::from_secs(5),
            "the gateway to scale web from zero",
            || async {
                deployment(&ns, "web")
                    .await
                    .is_some_and(|d| d.spec.replicas == Some(1))
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        endpoints_at(&ns, "web", Some(pod)).await;
    };
    let (response, ()) = tokio::join!(call, ready_later);
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(response.text().await.unwrap(), "pod says: held");

    // An unknown function is a 404, before any wait.
    let r = gw.invoke("ghost", "x").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn namespaces_logs_and_the_connector_topic_map() {
    let k = cluster();
    let ns = k.namespace("topics").await;
    let other = k.namespace("topics-extra").await;
    let gw = k.gateway(&ns, GatewayOptions::default()).await;
    gw.deploy_ok(json!({"service": "a", "image": "x", "annotations": {"topic": "orders,refunds"}}))
        .await;
    gw.deploy_ok(json!({"service": "b", "image": "x", "namespace": other, "annotations": {"topic": "orders"}}))
        .await;
    gw.deploy_ok(json!({"service": "c", "image": "x"})).await;

    let namespaces: Vec<String> = gw.get_json("/system/namespaces").await;
    assert!(
        namespaces.contains(&ns) && namespaces.contains(&other),
        "{namespaces:?}"
    );
    let listed: Value = gw
        .get_json(&format!("/system/functions?namespace={other}"))
        .await;
    assert_eq!(listed[0]["name"], "b");
    let r = gw
        .http
        .get(gw.url("/system/functions?namespace=kube-system"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "only function namespaces are served");

    // The connector SDK's topic map, built as every connector builds it.
    let config = gw.connector_config().build().unwrap();
    let sync = TopicMapSync::new(&config, ConnectorMetrics::new()).unwrap();
    let map = sync.sync().await.unwrap();
    // Other tests' namespaces are function namespaces too: look at this test's only.
    let ours = |topic: &str| {
        let mut fns: Vec<String> = map
            .functions_for(topic)
            .iter()
            .filter(|f| f.ends_with(&format!(".{ns}")) || f.ends_with(&format!(".{other}")))
            .cloned()
            .collect();
        fns.sort();
        fns
    };
    assert_eq!(ours("orders"), [format!("a.{ns}"), format!("b.{other}")]);
    assert_eq!(ours("refunds"), [format!("a.{ns}")]);

    // Pod logs: kubemark serves its kubelet over plain HTTP and the API server asks over
    // HTTPS, so the hollow node's logs cannot be read; the failure names what failed.
    gw.wait_available("c", 1).await;
    let r = gw
        .http
        .get(gw.url("/system/logs?name=c&tail=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("get pods/log in namespace \"{ns}\" failed")),
        "{text}"
    );
    assert_eq!(gw.get_code("/system/logs?name=ghost").await, 404);
}

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
        use std::io::Write;
        let mut child = std::process::Command::new(&cli)
            .args(args)
            .args(["--gateway", &gw.base])
            .env("HOME", home.path())
            .env_remove("OPENFAAS_URL")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
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
    let port = tributary_tests::free_port();
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
    let r = gw
        .http
        .get(gw.url("/system/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("list deployments in namespace \"{ns}\" failed")),
        "{text}"
    );
    gw.wait_for_log("list/watch deployments", Duration::from_secs(5))
        .await;

    // The API server comes back on that address: the watches reconnect on their own.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
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
