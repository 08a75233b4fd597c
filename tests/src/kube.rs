//! A real Kubernetes 1.20 control plane for the kubernetes provider's tests (etcd,
//! kube-apiserver, controller-manager, scheduler and a kubemark hollow node; see scripts/k8s/).
//!
//! `scripts/test` starts one for the whole run and names its folder in
//! `TRIBUTARY_TEST_KUBE_DIR`; without it, the first test to ask starts one with `scripts/k8s/up`
//! (the binaries must have been built by `scripts/k8s/build`) and a watchdog stops it when the
//! test process exits. A cluster that cannot start fails the test with the reason.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::{GatewayOptions, GatewayProcess, workspace_root};

/// A running control plane.
pub struct KubeCluster {
    /// Its state folder.
    pub dir: PathBuf,
    /// Admin credentials (system:masters).
    pub kubeconfig: PathBuf,
    /// User `limited`: authenticated, with no rights until a test binds some.
    pub limited_kubeconfig: PathBuf,
    /// User `deployer`: the same, for a second set of rights.
    pub deployer_kubeconfig: PathBuf,
}

static CLUSTER: OnceLock<KubeCluster> = OnceLock::new();

/// The test cluster, started on first use.
pub fn cluster() -> &'static KubeCluster {
    CLUSTER.get_or_init(|| {
        let dir = match std::env::var_os("TRIBUTARY_TEST_KUBE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => start_own(),
        };
        let cluster = KubeCluster {
            kubeconfig: dir.join("kubeconfig"),
            limited_kubeconfig: dir.join("limited.kubeconfig"),
            deployer_kubeconfig: dir.join("deployer.kubeconfig"),
            dir,
        };
        assert!(
            cluster.kubeconfig.is_file(),
            "no Kubernetes test cluster at {}: start one with scripts/k8s/up DIR and set TRIBUTARY_TEST_KUBE_DIR=DIR, or run scripts/test",
            cluster.dir.display()
        );
        cluster
    })
}

fn start_own() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("tributary-k8s-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let scripts = workspace_root().join("scripts/k8s");
    let out = Command::new("bash")
        .arg(scripts.join("up"))
        .arg(&dir)
        .output()
        .expect("run scripts/k8s/up");
    assert!(
        out.status.success(),
        "the Kubernetes test cluster did not start (build it first with scripts/k8s/build):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Stopped when this test process exits, however it exits.
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; exec bash {down} {dir}",
        pid = std::process::id(),
        down = scripts.join("down").display(),
        dir = dir.display()
    );
    // `setsid -f` forks the watchdog into its own session and returns at once.
    let started = Command::new("setsid")
        .args(["-f", "bash", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the cluster's watchdog");
    assert!(started.success(), "setsid failed: {started}");
    dir
}

impl KubeCluster {
    /// An admin client.
    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }

    /// Runs the real kubectl as admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl as admin with `stdin` as its input (e.g. `apply -f -`).
    pub fn kubectl_with_input(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write kubectl's input");
        child.wait_with_output().expect("kubectl output")
    }

    /// The API server's port.
    pub fn api_port(&self) -> u16 {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("read kubeconfig");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("the kubeconfig names a 127.0.0.1 server")
    }

    /// A copy of the admin kubeconfig in `dir` that points at `port` instead of the API server.
    pub fn kubeconfig_at_port(&self, dir: &std::path::Path, port: u16) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("read kubeconfig");
        let from = format!("server: https://127.0.0.1:{}", self.api_port());
        let to = format!("server: https://127.0.0.1:{port}");
        let path = dir.join("moved.kubeconfig");
        std::fs::write(&path, text.replace(&from, &to)).expect("write kubeconfig");
        path
    }

    /// Creates a namespace `PREFIX-RANDOM` labelled `openfaas: "1"` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{:08x}", fastrand::u32(..));
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("openfaas".to_owned(), "1".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        name
    }

    /// A gateway on the kubernetes provider whose function namespace is `namespace`, with
    /// probes off (the hollow node never passes them), as admin unless `options` set KUBECONFIG.
    pub async fn gateway(&self, namespace: &str, options: GatewayOptions) -> GatewayProcess {
        let mut options = options
            .arg("--provider")
            .arg("kubernetes")
            .arg("--function-namespace")
            .arg(namespace)
            .arg("--http-probe")
            .arg("false")
            .env("RUST_LOG", "info");
        if !options.env.iter().any(|(k, _)| k == "KUBECONFIG") {
            options = options.env("KUBECONFIG", self.kubeconfig.display().to_string());
        }
        GatewayProcess::start_with(options).await
    }
}

/// The helm binary scripts/helm-install put in its cache (or `HELM_BIN`).
pub fn helm_bin() -> PathBuf {
    let dir = std::env::var_os("HELM_BIN").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/tributary-helm/bin"),
        PathBuf::from,
    );
    let helm = dir.join("helm");
    assert!(
        helm.is_file(),
        "helm is not installed at {}: run scripts/helm-install (scripts/setup does)",
        helm.display()
    );
    helm
}

/// Runs helm (against the test cluster, as admin).
pub fn helm(args: &[&str]) -> Output {
    Command::new(helm_bin())
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("tributary-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("tributary-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("tributary-helm-data"),
        )
        .output()
        .expect("run helm")
}

/// A chart of charts/, its shared library fetched (`helm dependency update`, once per test
/// process: helm reading a chart while another update rewrites it fails), ready to lint,
/// template or install. Safe to call from tests running at once.
pub fn chart(name: &str) -> PathBuf {
    static UPDATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut updated = UPDATED.lock().unwrap_or_else(|e| e.into_inner());
    let path = workspace_root().join("charts").join(name);
    if updated.iter().any(|n| n == name) {
        return path;
    }
    let out = Command::new(helm_bin())
        .args(["dependency", "update", "--skip-refresh"])
        .arg(&path)
        .output()
        .expect("run helm dependency update");
    assert!(
        out.status.success(),
        "helm dependency update {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    updated.push(name.to_owned());
    path
}

/// A minimal deployment of a function named `name`.
pub fn function(name: &str) -> Value {
    json!({ "service": name, "image": format!("ghcr.io/acme/{name}:1.0") })
}

/// A function's Deployment as the API server has it.
pub async fn deployment(ns: &str, name: &str) -> Option<Deployment> {
    let api: Api<Deployment> = Api::namespaced(cluster().client().await, ns);
    api.get_opt(name).await.expect("get the Deployment")
}

/// Waits until a function's Deployment asks for `replicas` (what the gateway or its autoscaler
/// decided, as the API server has it).
pub async fn wait_replicas(ns: &str, name: &str, replicas: i32, limit: std::time::Duration) {
    crate::eventually(
        limit,
        &format!("{name}'s Deployment at {replicas} replicas"),
        || async {
            deployment(ns, name)
                .await
                .is_some_and(|d| d.spec.replicas == Some(replicas))
        },
    )
    .await;
}

/// A client for a kubeconfig file.
pub async fn client_for(path: &std::path::Path) -> Client {
    // The AWS SDK enables a second TLS backend: pick ring, as the gateway does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("kube client")
}
