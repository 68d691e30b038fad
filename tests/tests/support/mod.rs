//! Shared by the end-to-end tests: the test bed's client (and the refusal to run anywhere else), the in-process
//! controller (and the guarantee that no other one acts), the checked-in manifests, the CRD, and waiting on the
//! API server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};

pub fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../example").join(path)
}

pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The test bed's API server (tests/e2e/up.sh): an address that exists only on this machine's own bridge.
pub const TESTBED_API: &str = "https://10.213.0.1:6443";

/// A client of the test bed. Panics unless `KUBECONFIG` is set and names the test bed's API server, and that
/// server carries the marker up.sh writes (`kube-system/kec-testbed`): the suites delete namespaces and volumes,
/// so they never run against another cluster.
pub async fn testbed() -> kube::Client {
    let path = std::env::var("KUBECONFIG")
        .expect("KUBECONFIG must point at the test bed: eval \"$(tests/e2e/up.sh)\" (scripts/test.sh does)");
    let config = kube::Config::infer().await.unwrap_or_else(|e| panic!("reading KUBECONFIG={path}: {e}"));
    let url = config.cluster_url.to_string();
    assert_eq!(url.trim_end_matches('/'), TESTBED_API, "KUBECONFIG={path} is not the test bed's API server");
    let client = kube::Client::try_from(config).unwrap();
    let marker: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let found = marker.get_opt("kec-testbed").await.unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(found.is_some(), "{url} has no kube-system/kec-testbed: not a test bed made by tests/e2e/up.sh");
    client
}

/// The sidecar image the in-process controllers run: this build's (`KEC_SIDECAR_IMAGE`, from
/// tests/e2e/app-images.sh), else the release default.
pub fn sidecar_image() -> String {
    std::env::var("KEC_SIDECAR_IMAGE").unwrap_or_else(|_| controller::run::DEFAULT_SIDECAR_IMAGE.into())
}

/// The deployed controller (example/etcd-controller.yaml) is removed, and no other controller pod runs anywhere:
/// an in-process controller must be the only one acting on its test's namespace.
pub async fn no_other_controller(client: &kube::Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "etcd-controller");
    if deployments.get_opt("etcd-controller").await.unwrap().is_some() {
        println!("removing the deployed controller: this suite runs its own");
        let _ = deployments.delete("etcd-controller", &kube::api::DeleteParams::background()).await;
    }
    let pods: Api<Pod> = Api::all(client.clone());
    eventually("no controller pod to run", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await.unwrap();
            let controllers: Vec<String> = list
                .items
                .iter()
                .filter(|p| {
                    p.spec.as_ref().is_some_and(|s| {
                        s.containers.iter().any(|c| {
                            c.image.as_deref().is_some_and(|i| i.starts_with("kube-etcd-controller/etcd-controller"))
                        })
                    })
                })
                .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                .collect();
            if !controllers.is_empty() {
                println!("still running: {controllers:?}");
            }
            controllers.is_empty().then_some(())
        }
    })
    .await;
}

/// Runs the controller in-process (its library's `run`, as `etcd-controller run --namespace NS` would) after
/// making sure no other controller runs. The controller never returns on its own: if it does, the test process
/// exits at once with its error, instead of failing later on some timeout.
pub async fn start_controller(
    client: &kube::Client,
    namespace: &str,
    instance: &str,
    resync: Duration,
    etcd_timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    start_controller_with(client, namespace, instance, resync, etcd_timeout, controller::reconcile::Hooks::default())
        .await
}

/// As `start_controller`, with hooks (see `stop_after`).
pub async fn start_controller_with(
    client: &kube::Client,
    namespace: &str,
    instance: &str,
    resync: Duration,
    etcd_timeout: Duration,
    hooks: controller::reconcile::Hooks,
) -> tokio::task::JoinHandle<()> {
    no_other_controller(client).await;
    let args = controller::run::RunArgs {
        namespace: Some(namespace.into()),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        etcd_timeout,
        resync,
        instance: instance.into(),
        sidecar_image: sidecar_image(),
        leader_elect: true,
        lease_namespace: None,
    };
    let instance = instance.to_string();
    tokio::spawn(async move {
        let result = controller::run::run_with(args, hooks).await;
        eprintln!("the in-process controller {instance} stopped on its own: {result:?}");
        std::process::exit(101);
    })
}

/// Hooks that freeze the controller right after it carried out the first step of `cluster` for which `point`
/// holds (before it writes status), and the notification that it got there: the test then kills it, as a crash
/// at exactly that point would.
pub fn stop_after(
    cluster: &str,
    point: fn(&controller::plan::Action) -> bool,
) -> (controller::reconcile::Hooks, std::sync::Arc<tokio::sync::Notify>) {
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let (cluster, notify) = (cluster.to_string(), reached.clone());
    let after_step: controller::reconcile::StepHook = std::sync::Arc::new(move |name, action| {
        if name == cluster && point(action) {
            println!("controller frozen after {action:?}");
            notify.notify_one();
            Box::pin(std::future::pending())
        } else {
            Box::pin(std::future::ready(()))
        }
    });
    (controller::reconcile::Hooks { after_step: Some(after_step) }, reached)
}

/// A directory of this machine's own for one suite's volume (`/var/tmp/kec-e2e-<name>-XXXX`), removed when
/// dropped: no two suites or runs share a host path.
pub fn host_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("kec-e2e-{name}-")).tempdir_in("/var/tmp").unwrap()
}

/// Installs the checked-in CRD with server-side apply and waits until it is established.
pub async fn install_crd(client: &Client) -> Duration {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = load(&example("etcd-crd.yaml"));
    let start = Instant::now();
    crds.patch(&crd.name_any(), &PatchParams::apply("kec-e2e").force(), &Patch::Apply(&crd)).await.unwrap();
    crd_established(client).await;
    start.elapsed()
}

/// Waits until the EtcdCluster CRD is established; a CRD with no status or conditions yet is simply not yet.
pub async fn crd_established(client: &Client) -> Duration {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = format!("etcdclusters.{}", proto::cluster::API_GROUP);
    let (_, took) = eventually("the CRD to be established", Duration::from_secs(60), || {
        let (crds, name) = (crds.clone(), name.clone());
        async move {
            let current = crds.get_opt(&name).await.unwrap()?;
            let conditions = current.status?.conditions?;
            conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        }
    })
    .await;
    took
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

/// Runs the test bed's kubectl (`$KUBECTL`, else `kubectl` on the PATH) against `$KUBECONFIG` and returns its
/// output; panics with its output when it fails.
pub fn kubectl(args: &[&str]) -> String {
    kubectl_with_input(args, "")
}

/// As `kubectl`, with `input` on its standard input (`-f -`).
pub fn kubectl_with_input(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG must point at the test bed");
    let mut child = std::process::Command::new(&program)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
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

/// A static local PersistentVolume `pv` at `dir` on this node (a `host_dir`), and the claim `claim` in
/// `namespace` bound to it: the test bed has no provisioner.
pub fn local_volume(pv: &str, dir: &Path, namespace: &str, claim: &str) {
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
    kubectl_with_input(&["apply", "-f", "-"], &manifest);
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

/// Every member pod of `cluster` in the namespace of `pods`, ready or not, by name.
pub async fn member_pods(pods: &Api<Pod>, cluster: &str) -> Vec<String> {
    let selector = format!("kube-etcd-controller.dev/cluster={cluster},kube-etcd-controller.dev/member");
    let mut names: Vec<String> =
        pods.list(&ListParams::default().labels(&selector)).await.unwrap().items.iter().map(|p| p.name_any()).collect();
    names.sort();
    names
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

/// Kills (SIGKILL) the etcd process of member `member` of cluster `cluster` in `namespace`, as the kernel's OOM
/// killer would: the test bed's containers are processes of this machine, found by their command line. Returns
/// its PID; panics when there is no such process.
pub fn kill_member_etcd(namespace: &str, cluster: &str, member: &str) -> u32 {
    let name = format!("--name={member}");
    let advertised = format!("//{member}.{cluster}.{namespace}.svc:2379");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_etcd = args.first().is_some_and(|a| a == "etcd" || a.ends_with("/etcd"));
        if is_etcd && args.contains(&name) && args.iter().any(|a| a.contains(&advertised)) {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "one etcd process of {member} in {namespace}: {found:?}");
    let status = std::process::Command::new("kill").args(["-KILL", &found[0].to_string()]).status().unwrap();
    assert!(status.success(), "kill -KILL {}", found[0]);
    found[0]
}

/// A cut in the network, made with iptables inside the network namespace of a process of this machine (a pod's
/// container: the test bed's pods are processes here); undone when dropped.
pub struct Cut {
    pid: u32,
    rule: Vec<String>,
}

impl Cut {
    /// Refuses every TCP connection that the one process whose command line holds all of `args` opens to `ip`
    /// (a reset, so the caller fails at once instead of waiting out a timeout).
    pub fn outgoing(args: &[&str], ip: &str) -> Self {
        let pid = process_with(args);
        let rule: Vec<String> =
            ["OUTPUT", "-d", ip, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"].map(String::from).into();
        let cut = Self { pid, rule };
        cut.iptables("-I");
        cut
    }

    fn iptables(&self, op: &str) {
        let pid = self.pid.to_string();
        let mut command = std::process::Command::new("nsenter");
        command.args(["-t", &pid, "-n", "iptables", op]).args(&self.rule);
        let status = command.status().unwrap();
        assert!(status.success(), "{command:?}");
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.iptables("-D");
    }
}

/// The PID of the one process of this machine whose command line holds every one of `args`.
pub fn process_with(args: &[&str]) -> u32 {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let have: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().all(|want| have.iter().any(|a| a == want)) {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "one process with {args:?}: {found:?}");
    found[0]
}
