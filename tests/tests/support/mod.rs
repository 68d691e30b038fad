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

/// Ready member pods of `cluster` in the namespace of `pods`: (name, pod IP), by name.
pub async fn ready_members(pods: &kube::Api<k8s_openapi::api::core::v1::Pod>, cluster: &str) -> Vec<(String, String)> {
    let selector = format!("kube-etcd-controller.dev/cluster={cluster},kube-etcd-controller.dev/member");
    let list = pods.list(&kube::api::ListParams::default().labels(&selector)).await.unwrap();
    let mut ready: Vec<(String, String)> = list
        .items
        .iter()
        .filter(|p| controller::observe::pod_state(p) == controller::observe::PodState::Running { ready: true })
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    ready.sort();
    ready
}

/// etcd's own member list through `endpoint`: names of started voting members, if every member is one.
pub async fn voters(endpoint: &str) -> Option<std::collections::BTreeSet<String>> {
    let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
    let list = tokio::time::timeout(Duration::from_secs(3), client.member_list()).await.ok()?.ok()?;
    if list.members().iter().any(|m| m.is_learner() || m.name().is_empty()) {
        return None;
    }
    Some(list.members().iter().map(|m| m.name().to_string()).collect())
}

/// Waits until exactly `size` ready pods of `cluster`, none of them named in `gone`, form one etcd cluster of
/// `size` voting members; returns them (name, pod IP) and how long it took.
pub async fn converged(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    cluster: &str,
    size: usize,
    gone: &[String],
    limit: Duration,
) -> (Vec<(String, String)>, Duration) {
    eventually(&format!("{cluster}: {size} ready voting members"), limit, || async move {
        let ready = ready_members(pods, cluster).await;
        if ready.len() != size || ready.iter().any(|(n, _)| gone.contains(n)) {
            return None;
        }
        let names: std::collections::BTreeSet<String> = ready.iter().map(|(n, _)| n.clone()).collect();
        let listed = voters(&format!("http://{}:2379", ready[0].1)).await?;
        (listed == names).then_some(ready)
    })
    .await
}

/// How many keys under `prefix` etcd at `endpoint` holds.
pub async fn count_keys(endpoint: &str, prefix: &str) -> i64 {
    let mut etcd = etcd_client::Client::connect([endpoint], None).await.unwrap();
    let options = etcd_client::GetOptions::new().with_prefix().with_count_only();
    etcd.get(prefix, Some(options)).await.unwrap().count()
}
