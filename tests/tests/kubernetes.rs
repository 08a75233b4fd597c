//! The kubernetes provider against a real Kubernetes 1.20 API server (tests/src/kube.rs): the
//! gateway's REST API writes Deployments and Services as faas-netes does, reads them back
//! through its watch cache, scales through the scale subresource, keeps secrets as Secrets,
//! invokes at the Service's endpoints (holding calls while there are none) and reports
//! failures of the API server by verb, resource and namespace.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tributary_connector_sdk::{ConnectorMetrics, TopicMapSync};
use tributary_tests::kube::{cluster, deployment, function, wait_replicas};
use tributary_tests::{CallLoad, GatewayOptions, eventually};

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
/// answers `pod says: BODY` (after `X-Echo-Sleep-Ms` milliseconds when asked, as the echo function), on this machine's own
/// address (Endpoints may not be loopback).
async fn pod_server() -> std::net::SocketAddr {
    // Which address routes out; no packet is sent.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("192.0.2.254:9").unwrap();
    let ip = probe.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address: {ip}"
    );
    let app = axum::Router::new().fallback(
        |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
            let sleep = headers
                .get("x-echo-sleep-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(sleep)).await;
            format!("pod says: {}", String::from_utf8_lossy(&body))
        },
    );
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
        wait_replicas(&ns, "web", 1, Duration::from_secs(5)).await;
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
    let (status, text) = gw.get_text("/system/logs?name=c&tail=5").await;
    assert_eq!(status, 500);
    assert!(
        text.contains(&format!("get pods/log in namespace \"{ns}\" failed")),
        "{text}"
    );
    assert_eq!(gw.get_code("/system/logs?name=ghost").await, 404);
}

#[tokio::test]
async fn the_autoscaler_scales_deployments_through_the_provider() {
    let k = cluster();
    let ns = k.namespace("autoscale").await;
    let gw = k
        .gateway(
            &ns,
            GatewayOptions::default().env("autoscaler_interval", "500ms"),
        )
        .await;
    gw.deploy_ok(json!({
        "service": "idle", "image": "x",
        "labels": {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "1s"}
    }))
    .await;
    gw.deploy_ok(
        json!({"service": "alerted", "image": "x", "labels": {"com.openfaas.scale.max": "10"}}),
    )
    .await;
    // Idle: the Deployment goes to zero.
    wait_replicas(&ns, "idle", 0, Duration::from_secs(10)).await;
    gw.wait_available("idle", 0).await;
    // An Alertmanager webhook: + 20 % of 10, through the scale subresource.
    let r = gw
        .http
        .post(gw.url("/system/alert"))
        .json(&json!({"status": "firing", "alerts": [{"status": "firing",
            "labels": {"alertname": "APIHighRequestRate", "function_name": format!("alerted.{ns}")}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        deployment(&ns, "alerted").await.unwrap().spec.replicas,
        Some(3)
    );
    gw.wait_available("alerted", 3).await;

    // Capacity: 6 slow calls in flight to the function's endpoint, target 2 → 3 replicas.
    gw.deploy_ok(json!({"service": "busy", "image": "x", "labels": {
        "com.openfaas.scale.type": "capacity", "com.openfaas.scale.target": "2",
        "com.openfaas.scale.target-proportion": "1.0", "com.openfaas.scale.max": "4"
    }}))
    .await;
    let pod = pod_server().await;
    endpoints_at(&ns, "busy", Some(pod)).await;
    let load = CallLoad::start(&gw, "busy", 6, 500, Duration::ZERO);
    wait_replicas(&ns, "busy", 3, Duration::from_secs(15)).await;
    let (calls, failed) = load.stop().await;
    assert_eq!(failed, 0, "of {calls} calls");
}
