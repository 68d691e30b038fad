//! Shared by the end-to-end tests: the checked-in manifests, the CRD, and waiting on the API server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};

pub fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../example").join(path)
}

pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Installs the checked-in CRD with server-side apply and waits until it is established.
pub async fn install_crd(client: &Client) -> Duration {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = load(&example("etcd-crd.yaml"));
    let start = Instant::now();
    crds.patch(&crd.name_any(), &PatchParams::apply("kec-e2e").force(), &Patch::Apply(&crd)).await.unwrap();
    loop {
        let current = crds.get(&crd.name_any()).await.unwrap();
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the CRD was never established");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn clusters(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(proto::cluster::API_GROUP, "v1alpha1", "EtcdCluster");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, "etcdclusters"))
}

/// Polls `check` every 200 ms until it returns `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the test bed's kubectl (`$KUBECTL`, else `kubectl` on the PATH) and returns its output; panics with
/// its output when it fails.
pub fn kubectl(args: &[&str]) -> String {
    let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = std::process::Command::new(&program).args(args).output().expect("running kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "kubectl {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Deletes the namespace `name` if it exists, waits until it is gone, and creates it afresh.
pub async fn fresh_namespace(client: &Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{DeleteParams, PostParams};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
    eventually("the old namespace to go", Duration::from_secs(120), || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt(name).await.unwrap().is_none().then_some(()) }
    })
    .await;
    let ns: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
}

/// A static local PersistentVolume `pv` at `dir` on this node (emptied first), and the claim `claim` in
/// `namespace` bound to it: the test bed has no provisioner.
pub fn local_volume(pv: &str, dir: &Path, namespace: &str, claim: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    // The sidecar runs as an unprivileged user.
    std::process::Command::new("chmod").arg("0777").arg(dir).status().unwrap();
    let _ = kubectl(&["delete", "pv", pv, "--ignore-not-found", "--wait=true"]);
    let manifest = format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{ name: {pv} }}
spec:
  capacity: {{ storage: 1Gi }}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: kec-local
  local: {{ path: {dir} }}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions: [{{ key: kubernetes.io/hostname, operator: Exists }}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{ name: {claim}, namespace: {namespace} }}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: kec-local
  volumeName: {pv}
  resources: {{ requests: {{ storage: 1Gi }} }}
"#,
        dir = dir.display()
    );
    let file = std::env::temp_dir().join(format!("{pv}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    kubectl(&["apply", "-f", file.to_str().unwrap()]);
}

/// `curl` from this host, as a person would; panics with its output when it fails.
pub fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "120"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
