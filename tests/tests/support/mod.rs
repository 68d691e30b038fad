//! Shared by the end-to-end tests: the test bed's client (and the refusal to run anywhere else), the in-process
//! controller (and the guarantee that no other one acts), the checked-in manifests, the CRD, and waiting on the
//! API server.
#![allow(dead_code)]

pub mod rbac;

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
/// making sure no other controller runs, with the shipped permissions: the RBAC of example/etcd-controller.yaml
/// installed, and a client that acts as its ServiceAccount. It elects its leader with the Lease
/// `rbac::lease_name(namespace)` in the controller's own namespace, the only place that RBAC allows one. The
/// controller never returns on its own: if it does, the test process exits at once with its error, instead of
/// failing later on some timeout.
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

/// How long the test bed's kubelets take to put a Secret's new contents into pods (they sync every 10 s,
/// tests/e2e/node.sh), as the in-process controllers are told (`--secret-propagation`).
pub const SECRET_PROPAGATION: Duration = Duration::from_secs(30);

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
    rbac::install_rbac(client).await;
    let args = controller::run::RunArgs {
        namespace: Some(namespace.into()),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        etcd_timeout,
        resync,
        secret_propagation: SECRET_PROPAGATION,
        instance: instance.into(),
        sidecar_image: sidecar_image(),
        leader_elect: true,
        lease_namespace: Some(rbac::NAMESPACE.into()),
        // In-process, outside the cluster: the NetworkPolicies name no controller namespace.
        controller_namespace: None,
        lease_name: rbac::lease_name(namespace),
    };
    let as_controller = rbac::as_controller().await;
    let instance = instance.to_string();
    tokio::spawn(async move {
        let result = controller::run::run_with_client(as_controller, args, hooks).await;
        eprintln!("the in-process controller {instance} stopped on its own: {result:?}");
        std::process::exit(101);
    })
}

/// Kills an in-process controller watching `namespace` as a crash would (it releases nothing), then deletes the
/// Lease it held, so that the suite's next controller leads at once instead of waiting the lease out (15 s): the
/// suites that start one controller after another test what the next one does, not the lease, which
/// `e2e_leader` and `e2e_nodes` test with real processes.
pub async fn kill_controller(client: &kube::Client, namespace: &str, running: tokio::task::JoinHandle<()>) {
    use k8s_openapi::api::coordination::v1::Lease;
    running.abort();
    let _ = running.await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), rbac::NAMESPACE);
    let _ = leases.delete(&rbac::lease_name(namespace), &kube::api::DeleteParams::default()).await;
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

/// Runs Helm (`HELM_BIN`, from scripts/install-deps.sh) against the test bed with `args`; panics with its output
/// unless it succeeds; returns its standard output.
pub fn helm(args: &[&str]) -> String {
    let program = std::env::var("HELM_BIN").expect("HELM_BIN (eval \"$(scripts/install-deps.sh)\")");
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG must point at the test bed");
    let out = std::process::Command::new(&program)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("running helm");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "helm {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Runs the kubectl plugin (`kubectl-etcd`: `KUBECTL_ETCD`, else this workspace's debug build) with `args` against
/// the test bed: whether it succeeded, its standard output and its standard error.
pub fn kubectl_etcd(args: &[&str]) -> (bool, String, String) {
    let program = std::env::var("KUBECTL_ETCD")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/kubectl-etcd").to_string());
    assert!(std::path::Path::new(&program).exists(), "{program}: cargo build -p kubectl-etcd");
    let out = std::process::Command::new(&program).args(args).output().expect("running kubectl-etcd");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    println!("$ kubectl etcd {}\n{stdout}{stderr}", args.join(" "));
    (out.status.success(), stdout, stderr)
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

/// Deletes the namespace `name` if it exists, waits until it is gone, and creates it afresh. The Lease of the
/// suites' controllers for it (`rbac::lease_name`, in the controller's own namespace) goes with it, so that an
/// earlier run's leader that never released it (killed, aborted) does not hold up this one's.
pub async fn fresh_namespace(client: &Client, name: &str) {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{DeleteParams, PostParams};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), rbac::NAMESPACE);
    let _ = leases.delete(&rbac::lease_name(name), &DeleteParams::default()).await;
    // A pod left by an earlier run on a node that was powered off and on may never be confirmed gone by its
    // kubelet: after a while the ones still there are deleted without waiting for it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
    let started = Instant::now();
    eventually("the old namespace to go", Duration::from_secs(120), || {
        let (namespaces, pods) = (namespaces.clone(), pods.clone());
        async move {
            if started.elapsed() > Duration::from_secs(30) {
                for pod in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
                    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                    let _ = pods.delete(&pod.name_any(), &now).await;
                }
            }
            namespaces.get_opt(name).await.unwrap().is_none().then_some(())
        }
    })
    .await;
    // Every suite's clusters run where the `restricted` Pod Security Standard is enforced: the API server refuses a
    // member pod, an init container or a sidecar that runs as root, keeps a capability or lacks a seccomp profile.
    let labels = serde_json::json!({ "pod-security.kubernetes.io/enforce": "restricted" });
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": name, "labels": labels } })).unwrap();
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
    eventually(&format!("{cluster}: {size} ready voting members"), limit, || converged_now(pods, cluster, size, gone))
        .await
}

/// Whether exactly `size` ready pods of `cluster`, none of them named in `gone`, form one etcd cluster of `size`
/// voting members right now: them (name, pod IP), or None.
pub async fn converged_now(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    cluster: &str,
    size: usize,
    gone: &[String],
) -> Option<Vec<(String, String)>> {
    let ready = ready_members(pods, cluster).await;
    if ready.len() != size || ready.iter().any(|(n, _)| gone.contains(n)) {
        return None;
    }
    let names: std::collections::BTreeSet<String> = ready.iter().map(|(n, _)| n.clone()).collect();
    let listed = voters(&format!("http://{}:2379", ready[0].1)).await?;
    (listed == names).then_some(ready)
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
        Self::outgoing_of(process_with(args), ip)
    }

    /// As [`Cut::outgoing`], for process `pid`.
    pub fn outgoing_of(pid: u32, ip: &str) -> Self {
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
    let found = processes_with(args);
    assert_eq!(found.len(), 1, "one process with {args:?}: {found:?}");
    found[0]
}

/// The PIDs of every process of this machine whose command line holds every one of `args`.
pub fn processes_with(args: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let have: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().all(|want| have.iter().any(|a| a == want)) {
            found.push(pid);
        }
    }
    found
}

/// The sidecar of `cluster` in `namespace` once it answers: its base URL, the `Authorization` header with its
/// token (read from its Secret, as a person would), and the curl options that reach it: when it serves HTTPS (as
/// its Deployment says), its certificate checked against the `ca.crt` of its serving Secret for its Service's
/// `.svc` name, dialled at the Service's cluster IP.
async fn sidecar_access(client: &Client, namespace: &str, cluster: &str) -> (String, String, Vec<String>) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Secret, Service};
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let ((base, auth, options), _) =
        eventually("the backup sidecar's service and token", Duration::from_secs(60), || {
            let (services, secrets, deployments) = (services.clone(), secrets.clone(), deployments.clone());
            async move {
                let name = format!("{cluster}-backup");
                let service = services.get_opt(&name).await.unwrap()?;
                let secret = secrets.get_opt(&format!("{cluster}-backup-token")).await.unwrap()?;
                let token = String::from_utf8(secret.data?.get("token")?.0.clone()).ok()?;
                let ip = service.spec?.cluster_ip?;
                let auth = format!("Authorization: Bearer {token}");
                let deployment = deployments.get_opt(&name).await.unwrap()?;
                let Some(serving) = controller::backup::serving_secret(&deployment) else {
                    return Some((format!("http://{ip}:19999"), auth, Vec::new()));
                };
                let ca = secrets.get_opt(&serving).await.unwrap()?.data?.get("ca.crt")?.0.clone();
                let file = std::env::temp_dir().join(format!("kec-e2e-{namespace}-{cluster}-backup-ca.crt"));
                std::fs::write(&file, ca).unwrap();
                let host = format!("{name}.{namespace}.svc");
                let options = vec![
                    "--cacert".to_string(),
                    file.display().to_string(),
                    "--resolve".into(),
                    format!("{host}:19999:{ip}"),
                ];
                Some((format!("https://{host}:19999"), auth, options))
            }
        })
        .await;
    eventually("the sidecar to be ready", Duration::from_secs(90), || {
        let (base, options) = (base.clone(), options.clone());
        async move {
            let out = std::process::Command::new("curl")
                .args(&options)
                .args(["-sf", &format!("{base}/readyz")])
                .output()
                .ok()?;
            out.status.success().then_some(())
        }
    })
    .await;
    (base, auth, options)
}

/// Takes a backup of `cluster` in `namespace` through its sidecar's API with curl, as a person would, once the
/// sidecar answers; the backup then appears first in the sidecar's list.
pub async fn take_backup(client: &Client, namespace: &str, cluster: &str) -> proto::backup::BackupInfo {
    let (base, auth, options) = sidecar_access(client, namespace, cluster).await;
    let url = format!("{base}/v1/backups");
    // The sidecar reaches etcd through the cluster's client Service, whose endpoints (and every node's kube-proxy
    // rules) trail the member pods' readiness by a moment: right after a cluster converged, the sidecar answers
    // 503 etcd_unreachable, as it should. A person retries; so does this, for that answer only.
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let out = std::process::Command::new("curl")
            .args(&options)
            .args(["-sS", "--fail-with-body", "--max-time", "120", "-X", "POST", "-H", &auth, &url])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break body;
        }
        assert!(
            body.contains("etcd_unreachable") && Instant::now() < deadline,
            "curl -X POST {url}: {body}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let taken: proto::backup::BackupInfo = serde_json::from_str(&answer).unwrap();
    let listed = list_backups(client, namespace, cluster).await;
    assert_eq!(listed.backups.first().map(|b| b.name.as_str()), Some(taken.name.as_str()), "newest first");
    taken
}

/// The backups of `cluster` in `namespace`, as its sidecar lists them (newest first).
pub async fn list_backups(client: &Client, namespace: &str, cluster: &str) -> proto::backup::BackupList {
    let (base, auth, options) = sidecar_access(client, namespace, cluster).await;
    let mut args: Vec<&str> = options.iter().map(String::as_str).collect();
    let url = format!("{base}/v1/backups");
    args.extend(["-H", &auth, &url]);
    serde_json::from_str(&curl(&args)).unwrap()
}

/// Whether `cluster`'s sidecar in `namespace` serves its API over HTTPS only: it answers `/readyz` over HTTPS,
/// and takes a plain HTTP connection without answering it (not a refused or timed-out connection: the sidecar is
/// there).
pub async fn sidecar_refuses_plain_http(client: &Client, namespace: &str, cluster: &str) -> bool {
    let (base, _, options) = sidecar_access(client, namespace, cluster).await;
    assert!(base.starts_with("https://"), "{base}");
    let ip = options.last().and_then(|resolve| resolve.rsplit(':').next()).unwrap().to_string();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://{ip}:19999/readyz")])
        .output()
        .unwrap();
    // curl: 7 could not connect, 28 timed out; 1, 52 or 56: connected, and no HTTP answer.
    let code = out.status.code();
    !out.status.success() && code != Some(7) && code != Some(28)
}

/// A node fault of the test bed (tests/e2e/fault.sh), undone when dropped, so that a failing test leaves every
/// node powered on and whole for the suites after it.
pub struct NodeFault {
    node: String,
    undo: &'static str,
}

impl NodeFault {
    /// Powers node kec-`node` off (`fault.sh poweroff`); dropping it powers the node on again.
    pub fn power_off(node: &str) -> Self {
        fault(&["poweroff", node]);
        Self { node: node.into(), undo: "poweron" }
    }

    /// Partitions node kec-`node` from `from` (`fault.sh partition`: a comma list of nodes, a, b, c, apiserver,
    /// host, all); dropping it heals the partition.
    pub fn partition(node: &str, from: &str) -> Self {
        fault(&["partition", node, from]);
        Self { node: node.into(), undo: "heal" }
    }
}

impl Drop for NodeFault {
    fn drop(&mut self) {
        fault(&[self.undo, &self.node]);
    }
}

/// Runs tests/e2e/fault.sh with `args`; panics when it fails.
pub fn fault(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/fault.sh");
    let status = std::process::Command::new(script).args(args).status().unwrap();
    assert!(status.success(), "fault.sh {args:?}: {status}");
}

/// The node a pod runs on (`spec.nodeName`).
pub async fn node_of(pods: &Api<Pod>, pod: &str) -> String {
    pods.get(pod).await.unwrap().spec.and_then(|s| s.node_name).unwrap_or_default()
}

/// A writer that puts `<prefix><n>` for n = 1, 2, ... until stopped, through `endpoints` (each request with a
/// 2 s timeout; a failed one is retried as the next n after 100 ms), optionally from inside the network namespace
/// of a test-bed node (`/run/netns/<netns>`: its own thread and runtime, so only its sockets live there). It
/// records which writes etcd acknowledged and the longest time without one.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::mpsc::Receiver<Written>,
    prefix: String,
}

/// What a writer did.
pub struct Written {
    /// The numbers of the writes etcd acknowledged.
    pub acked: Vec<u64>,
    /// When each of them was acknowledged (same order).
    pub acked_at: Vec<Instant>,
    /// How many it tried.
    pub tried: u64,
    /// The longest time between two acknowledged writes.
    pub longest_gap: Duration,
    /// When the writer stopped.
    pub stopped_at: Instant,
}

impl Written {
    /// How many writes were acknowledged at or after `since`.
    pub fn acked_since(&self, since: Instant) -> usize {
        self.acked_at.iter().filter(|at| **at >= since).count()
    }

    /// How many writes were acknowledged between `from` and `to`.
    pub fn acked_between(&self, from: Instant, to: Instant) -> usize {
        self.acked_at.iter().filter(|at| **at >= from && **at <= to).count()
    }

    /// The longest time without an acknowledged write that overlaps `[from, to]`: measured from the last
    /// acknowledgement before `from` (or `from`) to the first after `to` (or when the writer stopped), so an
    /// outage that starts before the window or outlasts it counts whole, and a window with no acknowledgement at
    /// all counts as one gap.
    pub fn longest_gap_within(&self, from: Instant, to: Instant) -> Duration {
        let before = self.acked_at.iter().copied().filter(|at| *at < from).max().unwrap_or(from);
        let after = self.acked_at.iter().copied().filter(|at| *at > to).min().unwrap_or(self.stopped_at.max(to));
        let mut points = vec![before];
        points.extend(self.acked_at.iter().copied().filter(|at| *at >= from && *at <= to));
        points.push(after);
        points.windows(2).map(|w| w[1].saturating_duration_since(w[0])).max().unwrap_or_default()
    }
}

impl Writer {
    pub fn start(endpoints: Vec<String>, prefix: &str, netns: Option<&str>) -> Self {
        Self::start_with(endpoints, prefix, netns, None)
    }

    /// [`Writer::start`], over TLS with `tls` when given.
    pub fn start_with(
        endpoints: Vec<String>,
        prefix: &str,
        netns: Option<&str>,
        tls: Option<etcd_client::TlsOptions>,
    ) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (send, done) = std::sync::mpsc::channel();
        let (flag, prefix_owned, netns) = (stop.clone(), prefix.to_string(), netns.map(String::from));
        std::thread::spawn(move || {
            if let Some(netns) = netns {
                // Only this thread moves: the sockets its runtime opens live in the node's network.
                let file = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {netns}: {e}"));
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let written = runtime.block_on(async move {
                // Keepalives, and a new client after three failures in a row: a connection through a Service
                // stays on the endpoint it was made to, and one to a member that went silent (a powered-off or
                // partitioned node) would otherwise time out for as long as the fault lasts.
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(2))
                    .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
                    .with_keep_alive_while_idle(true);
                let options = match tls {
                    Some(tls) => options.with_tls(tls),
                    None => options,
                };
                // Bounded as a whole: the connect timeout covers TCP only, and a TLS handshake with a member that
                // accepted the connection but does not serve yet (starting, or catching up) would wait forever.
                let connect = || async {
                    loop {
                        let attempt = etcd_client::Client::connect(endpoints.clone(), Some(options.clone()));
                        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                            Ok(Ok(client)) => break client,
                            _ => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                };
                let mut client = connect().await;
                let (mut acked, mut acked_at, mut tried, mut failed_in_a_row) = (Vec::new(), Vec::new(), 0u64, 0);
                let (mut last, mut longest_gap) = (Instant::now(), Duration::ZERO);
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    tried += 1;
                    if client.put(format!("{prefix_owned}{tried:08}"), "v", None).await.is_ok() {
                        acked.push(tried);
                        longest_gap = longest_gap.max(last.elapsed());
                        last = Instant::now();
                        acked_at.push(last);
                        failed_in_a_row = 0;
                    } else {
                        failed_in_a_row += 1;
                        if failed_in_a_row >= 3 {
                            client = connect().await;
                            failed_in_a_row = 0;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Written { acked, acked_at, tried, longest_gap, stopped_at: Instant::now() }
            });
            let _ = send.send(written);
        });
        Self { stop, done, prefix: prefix.to_string() }
    }

    /// Stops the writer and returns what it did.
    pub fn stop(self) -> Written {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.done.recv_timeout(Duration::from_secs(30)).expect("the writer stops within 30 s")
    }

    /// The prefix of its keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The acknowledged writes of `written` (keys `<prefix><n>`) that etcd at `endpoint` does not hold.
pub async fn lost_writes(endpoint: &str, prefix: &str, written: &Written) -> Vec<u64> {
    let mut etcd = etcd_client::Client::connect([endpoint], None).await.unwrap();
    let stored = etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let stored: std::collections::BTreeSet<String> =
        stored.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
    written.acked.iter().copied().filter(|n| !stored.contains(&format!("{prefix}{n:08}"))).collect()
}

/// The address of `cluster`'s client Service in `namespace` (`http://<cluster IP>:2379`).
pub async fn client_service(client: &Client, namespace: &str, cluster: &str) -> String {
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), namespace);
    let service = services.get(&format!("{cluster}-client")).await.unwrap();
    format!("http://{}:2379", service.spec.unwrap().cluster_ip.unwrap())
}

/// The release binary of this build: built first when the sources changed since (see `controller_release_bin`).
pub fn controller_binary() -> PathBuf {
    system_tests::sidecar::controller_release_bin()
}

/// An `etcd-controller run --namespace NAMESPACE` process of the release binary (identity `instance`, resync 3 s,
/// the suites' sidecar image), optionally inside a test-bed node's network namespace (`/run/netns/<netns>`, as a
/// controller running on that node: it dies when the node is powered off); killed if the test ends first. It runs
/// with the shipped permissions: the RBAC of example/etcd-controller.yaml installed, and a kubeconfig that acts as
/// its ServiceAccount.
pub struct ControllerProcess {
    child: std::process::Child,
    /// The kubeconfig it runs with (`rbac::controller_kubeconfig`), removed once the process is gone.
    _kubeconfig: tempfile::NamedTempFile,
}

impl ControllerProcess {
    /// Unless `args` name the Lease (`--lease-name`, `--lease-namespace`), it elects its leader with
    /// `rbac::lease_name(namespace)` in the controller's own namespace, as the in-process controllers do, the only
    /// place the shipped RBAC allows a Lease.
    pub async fn start(namespace: &str, args: &[&str], instance: &str, netns: Option<&str>) -> Self {
        let admin = testbed().await;
        rbac::install_rbac(&admin).await;
        let kubeconfig = rbac::controller_kubeconfig();
        let names = |flag: &str| args.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        let mut lease = Vec::new();
        if !names("--lease-namespace") {
            lease.extend(["--lease-namespace".to_string(), rbac::NAMESPACE.into()]);
        }
        if !names("--lease-name") {
            lease.extend(["--lease-name".to_string(), rbac::lease_name(namespace)]);
        }
        let mut command = match netns {
            Some(netns) => {
                let mut command = std::process::Command::new("nsenter");
                command.arg(format!("--net=/run/netns/{netns}")).arg(controller_binary());
                command
            }
            None => std::process::Command::new(controller_binary()),
        };
        let child = command
            .args(["run", "--namespace", namespace, "--metrics-listen", "127.0.0.1:0", "--resync", "3s"])
            .args(["--sidecar-image", &sidecar_image()])
            .args(lease)
            .args(args)
            .env("KUBECONFIG", kubeconfig.path())
            .env("POD_NAME", instance)
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap();
        Self { child, _kubeconfig: kubeconfig }
    }

    /// Sends SIGTERM and returns the exit status, once it exited (at most 30 s later).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "etcd-controller did not exit within 30 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes 1 MiB values through `etcd` until it refuses one for its space quota (64 MiB quotas fill in seconds);
/// panics unless the refusal is etcd's "database space exceeded".
pub async fn fill_to_quota(etcd: &mut etcd_client::Client) {
    let value = vec![b'x'; 1024 * 1024];
    let mut refused = None;
    for i in 0..200 {
        if let Err(error) = etcd.put(format!("/big/{i:03}"), value.clone(), None).await {
            refused = Some(error.to_string());
            break;
        }
    }
    let refused = refused.expect("etcd refused writes past its 64 MiB quota");
    assert!(refused.contains("database space exceeded"), "{refused}");
}

/// Client TLS from a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`) in `namespace`, checking the
/// members' certificates against `server_name` (members are dialled at their pod addresses, which no certificate
/// names). `with_certificate: false` trusts the CA but presents no client certificate.
pub async fn tls_from_secret(
    client: &Client,
    namespace: &str,
    secret: &str,
    server_name: &str,
    with_certificate: bool,
) -> etcd_client::TlsOptions {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
    let data = secrets.get(secret).await.unwrap().data.unwrap();
    let key = |k: &str| data.get(k).unwrap_or_else(|| panic!("{secret} has no {k}")).0.clone();
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(key("ca.crt")))
        .domain_name(server_name);
    if with_certificate { tls.identity(etcd_client::Identity::from_pem(key("tls.crt"), key("tls.key"))) } else { tls }
}

/// An etcd client at `endpoint` over `tls` (3 s to connect and per request).
pub async fn tls_client(
    endpoint: &str,
    tls: etcd_client::TlsOptions,
) -> Result<etcd_client::Client, etcd_client::Error> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(3))
        .with_tls(tls);
    // Bounded as a whole: the connect timeout covers TCP only, not the TLS handshake.
    match tokio::time::timeout(Duration::from_secs(5), etcd_client::Client::connect([endpoint], Some(options))).await {
        Ok(connected) => connected,
        Err(_) => Err(etcd_client::Error::InvalidArgs(format!("{endpoint}: no TLS connection within 5 s"))),
    }
}

/// An EtcdCluster named `name` with `spec`, to create.
pub fn etcd_cluster(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap()
}

/// The status of EtcdCluster `name`.
pub async fn status_of(api: &Api<DynamicObject>, name: &str) -> serde_json::Value {
    api.get(name).await.unwrap().data["status"].clone()
}

/// The condition `kind` of `status` (`null` when it has none).
pub fn condition(status: &serde_json::Value, kind: &str) -> serde_json::Value {
    status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == kind).cloned()).unwrap_or_default()
}

/// Waits until pod `name` (deleted a moment ago, its UID `uid`) exists again as a new pod.
pub async fn recreated(pods: &Api<Pod>, name: &str, uid: Option<String>) {
    eventually(&format!("pod {name} created again"), Duration::from_secs(120), || {
        let pods = pods.clone();
        let uid = uid.clone();
        async move { (pods.get_opt(name).await.ok()??.metadata.uid != uid).then_some(()) }
    })
    .await;
}
