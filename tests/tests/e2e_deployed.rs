//! End-to-end with the controller deployed exactly as a user deploys it (`helm install` of
//! charts/kube-etcd-controller as the README says: two replicas electing a leader, the shipped RBAC; images built
//! from the release binaries), on the test bed's real nodes: the example cluster comes up; a `helm upgrade` to
//! another image restarts nothing but the controller; the cluster heals with its controller scaled to zero and
//! back, resizes 3 → 5 → 3 without ever losing quorum, and is destroyed; a cluster with backups on a PVC runs its
//! sidecar, takes a backup triggered with curl that restores with `etcdctl snapshot restore` to the same keys,
//! rides out a blind controller, upgrades, recovers from lost quorum, and its backups outlive it.
//! The controller deployed is this build: the chart's image tag `<version>` and the build tag
//! `<version>-<hash>` (tests/e2e/app-images.sh) both name this build's binary, and after the upgrade the running
//! controller's `etcd_controller_build_info` must name that binary and this commit.
//! Needs `--features e2e`, `KUBECONFIG`, `KUBECTL`, `HELM_BIN` and the image variables (scripts/test.sh sets them).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, ListParams};
use support::{
    clusters, converged, converged_now, count_keys, crd_established, curl, eventually, example, fresh_namespace, helm,
    host_dir, kubectl, kubectl_etcd, kubectl_with_input, local_volume, member_pods, ready_members, testbed, voters,
};

const NS: &str = "e2e-deployed";
const CLUSTER: &str = "example-etcd-cluster";
const BACKED_UP: &str = "example-etcd-cluster-backup";

async fn service_url(client: &Client, name: &str, port: u16) -> String {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let service = services.get(name).await.unwrap();
    format!("http://{}:{port}", service.spec.unwrap().cluster_ip.unwrap())
}

/// Counts the moments in which no member of `cluster` could serve a linearizable read (quorum lost), sampling
/// every 300 ms until stopped.
fn watch_quorum(pods: Api<Pod>, cluster: &'static str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = tokio::spawn(async move {
        let mut outages = 0;
        while !stopped.load(Ordering::Relaxed) {
            // Quorum is there when any member serves a linearizable read; a member being removed may refuse.
            let mut served = false;
            for (_, ip) in ready_members(&pods, cluster).await {
                let read = async {
                    let mut etcd = etcd_client::Client::connect([format!("http://{ip}:2379")], None).await.ok()?;
                    etcd.get("/quorum-probe", None).await.ok()
                };
                if tokio::time::timeout(Duration::from_secs(3), read).await.ok().flatten().is_some() {
                    served = true;
                    break;
                }
            }
            if !served {
                outages += 1;
                println!("quorum probe: no member served a linearizable read");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        outages
    });
    (stop, handle)
}

/// The chart, as the README installs it.
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/kube-etcd-controller");
const RELEASE: &str = "etcd-controller";
const CONTROLLER_NS: &str = "etcd-controller";

/// This build's images (tests/e2e/app-images.sh): the controller's build tag, and the sidecar's.
fn build_images() -> (String, String) {
    let image =
        std::env::var("KEC_CONTROLLER_IMAGE").expect("KEC_CONTROLLER_IMAGE (eval \"$(tests/e2e/app-images.sh)\")");
    let sidecar = std::env::var("KEC_SIDECAR_IMAGE").expect("KEC_SIDECAR_IMAGE (eval \"$(tests/e2e/app-images.sh)\")");
    (image, sidecar)
}

/// Installs the chart as the README says: the namespace made and labelled restricted, then `helm install` with
/// the chart's own image (`kube-etcd-controller/etcd-controller:<appVersion>`, which app-images.sh tags on this
/// build too) and this build's sidecar. A CRD left by the suites that apply example/etcd-crd.yaml themselves is
/// adopted as the README's "from the plain manifests to the chart" says.
fn helm_install(sidecar: &str) {
    // What an earlier run left (the demo's release), and what the suites that run their own controller apply with
    // kubectl (the namespace, ServiceAccount and roles of example/etcd-controller.yaml): not Helm's to take over,
    // so removed first, as a user moving from the plain manifests does (the CRD stays, so no cluster goes).
    if helm(&["list", "-n", CONTROLLER_NS, "-q"]).lines().any(|l| l == RELEASE) {
        helm(&["uninstall", RELEASE, "-n", CONTROLLER_NS, "--wait", "--timeout", "120s"]);
    }
    let manifest = example("etcd-controller.yaml");
    kubectl(&["delete", "-f", manifest.to_str().unwrap(), "--ignore-not-found", "--wait=true", "--timeout=180s"]);
    kubectl_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {CONTROLLER_NS}\n  labels:\n    \
             pod-security.kubernetes.io/enforce: restricted\n"
        ),
    );
    let crd = "customresourcedefinition/etcdclusters.kube-etcd-controller.dev";
    if !kubectl(&["get", crd, "--ignore-not-found", "-o", "name"]).trim().is_empty() {
        kubectl(&["label", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite"]);
        let (name, namespace) =
            (format!("meta.helm.sh/release-name={RELEASE}"), format!("meta.helm.sh/release-namespace={CONTROLLER_NS}"));
        kubectl(&["annotate", crd, &name, &namespace, "--overwrite"]);
    }
    let sidecar = format!("sidecarImage={sidecar}");
    helm(&["install", RELEASE, CHART, "-n", CONTROLLER_NS, "--set", &sidecar, "--wait", "--timeout", "180s"]);
}

/// Scrapes each of `urls` every 2 s until stopped: every metric name seen, and for per-cluster series only those labelled
/// with this suite's namespace and a cluster.
fn scrape_names(urls: Vec<String>) -> (Arc<AtomicBool>, tokio::task::JoinHandle<BTreeSet<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let http = reqwest::Client::new();
        while !stopped.load(Ordering::Relaxed) {
            for url in &urls {
                let Ok(response) = http.get(url).timeout(Duration::from_secs(5)).send().await else { continue };
                let Ok(text) = response.text().await else { continue };
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    let name = line.split(['{', ' ']).next().unwrap_or_default();
                    let per_cluster = line.contains("cluster=\"");
                    if !per_cluster || line.contains(&format!("namespace=\"{NS}\"")) {
                        seen.insert(name.to_string());
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        seen
    });
    (stop, handle)
}

/// Deletes the deployed controller when the test ends, passed or failed: the suites that run their own
/// controller must find none. (The CRD stays, as `helm uninstall` leaves it.)
struct RemoveController;

impl Drop for RemoveController {
    fn drop(&mut self) {
        let helm = std::env::var("HELM_BIN").unwrap_or_else(|_| "helm".into());
        let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_default();
        let _ = std::process::Command::new(helm)
            .args(["--kubeconfig", &kubeconfig, "uninstall", RELEASE, "-n", CONTROLLER_NS, "--wait"])
            .args(["--timeout", "120s"])
            .status();
        let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let _ = std::process::Command::new(program)
            .args(["delete", "namespace", CONTROLLER_NS, "--ignore-not-found", "--wait=true", "--timeout=120s"])
            .status();
    }
}

/// The running controller pod (exactly one, Ready).
/// `cluster`'s member pods with their UIDs: a pod replaced under its old name would have a new one.
async fn member_uids(pods: &Api<Pod>, cluster: &str) -> Vec<(String, String)> {
    let selector = format!("kube-etcd-controller.dev/cluster={cluster},kube-etcd-controller.dev/member");
    let listed = pods.list(&ListParams::default().labels(&selector)).await.unwrap().items;
    listed.into_iter().map(|p| (p.metadata.name.unwrap(), p.metadata.uid.unwrap())).collect()
}

/// The controller pod that leads (holds the Lease, its identity being `<pod name>_<suffix>`), Ready, beside
/// `replicas` Ready replicas in all.
async fn controller_pod(client: &Client, replicas: usize) -> Pod {
    let (pod, _) = eventually("the leading controller pod", Duration::from_secs(120), || {
        let controllers: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NS);
        let leases: Api<Lease> = Api::namespaced(client.clone(), CONTROLLER_NS);
        async move {
            let mut list = controllers.list(&ListParams::default()).await.unwrap().items;
            list.retain(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && controller::observe::pod_state(p) == controller::observe::PodState::Running { ready: true }
            });
            let lease = leases.get_opt(controller::run::LEASE_NAME).await.unwrap()?;
            let holder = lease.spec?.holder_identity?;
            let (leader, _) = holder.rsplit_once('_')?;
            let at = list.iter().position(|p| p.metadata.name.as_deref() == Some(leader))?;
            (list.len() == replicas).then(|| list.remove(at))
        }
    })
    .await;
    pod
}

/// The value of the sample `name{labels}` in a Prometheus text exposition, if it is there.
fn sample<'a>(metrics: &'a str, series: &str) -> Option<&'a str> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

fn git_commit() -> String {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "git rev-parse: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn published_manifests(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn deployed_as_a_user_deploys_it_the_controller_runs_the_examples() {
    let client = testbed().await;
    let _remove = RemoveController;

    // 1. Installed as the README says (`helm install`, the chart's defaults: two replicas, one leading), with the
    //    chart's image tag; this build's tag comes with the `helm upgrade` of step 4.
    let start = Instant::now();
    let (build_image, sidecar_image) = build_images();
    helm_install(&sidecar_image);
    crd_established(&client).await;
    println!("deploy: helm install done {:.1} s after it started", start.elapsed().as_secs_f64());
    let running = controller_pod(&client, 2).await;
    let running_image = running.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(running_image, format!("kube-etcd-controller/etcd-controller:{version}"), "the chart's image");
    let metrics_url = format!("http://{}:8080/metrics", running.status.as_ref().unwrap().pod_ip.as_ref().unwrap());

    fresh_namespace(&client, NS).await;
    let backups = host_dir("deployed");
    local_volume("kec-e2e-backups", backups.path(), NS, "etcd-backups");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // 2. The example cluster, and the one with backups beside it.
    let created = Instant::now();
    kubectl(&["-n", NS, "apply", "-f", example("example-etcd-cluster.yaml").to_str().unwrap()]);
    kubectl(&["-n", NS, "apply", "-f", example("example-etcd-cluster-backup.yaml").to_str().unwrap()]);
    let (members, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(120)).await;
    println!("create: 3 ready voting members {:.1} s after kubectl apply (goal: under 30 s)", took.as_secs_f64());
    assert_eq!(
        members.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["example-etcd-cluster-0000", "example-etcd-cluster-0001", "example-etcd-cluster-0002"]
    );
    // `kubectl wait` on the Ready condition, as a person or a GitOps tool waits for it.
    kubectl(&["-n", NS, "wait", "--for=condition=Ready", &format!("etcd/{CLUSTER}"), "--timeout=60s"]);
    // 3. The controller's metrics say what it sees, labelled by namespace and cluster.
    let key = format!("namespace=\"{NS}\",cluster=\"{CLUSTER}\"");
    let (scraped, _) = eventually("the controller's metrics to show the cluster", Duration::from_secs(60), || {
        let (url, key) = (metrics_url.clone(), key.clone());
        async move {
            let text = curl(&[&url]);
            let members = sample(&text, &format!("etcd_controller_cluster_members{{{key}}}"))?;
            let ready = sample(&text, &format!("etcd_controller_cluster_ready_members{{{key}}}"))?;
            let running = sample(&text, &format!("etcd_controller_cluster_phase{{{key},phase=\"Running\"}}"))?;
            let leader = sample(&text, &format!("etcd_controller_cluster_leader{{{key}}}"))?;
            (members == "3" && ready == "3" && running == "1" && leader == "1").then_some(text)
        }
    })
    .await;
    let reconciles: u64 = sample(&scraped, "etcd_controller_reconciles_total").unwrap().parse().unwrap();
    assert!(reconciles > 0, "{scraped}");
    let creating = sample(&scraped, &format!("etcd_controller_cluster_phase{{{key},phase=\"Creating\"}}"));
    assert_eq!(creating, Some("0"), "one phase at a time");
    assert_eq!(sample(&scraped, &format!("etcd_controller_cluster_quorum{{{key}}}")), Some("2"), "{scraped}");
    assert_eq!(sample(&scraped, &format!("etcd_controller_cluster_quota_bytes{{{key}}}")), Some("2147483648"));
    let available = format!("etcd_controller_cluster_condition{{{key},type=\"Available\",status=\"True\"}}");
    assert_eq!(sample(&scraped, &available), Some("1"), "{scraped}");
    for (member, _) in &members {
        let series = format!("etcd_controller_member_db_size_bytes{{{key},member=\"{member}\"}}");
        let size: i64 = sample(&scraped, &series).unwrap_or_else(|| panic!("{series} in {scraped}")).parse().unwrap();
        assert!(size > 0, "{series} {size}");
    }

    // The NetworkPolicies, written with the shipped RBAC: peers from members only, clients and the sidecar's API
    // from the controller's namespace (the pod's own, from the downward API) among others.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), NS);
    let (members_policy, _) = eventually("the clusters' NetworkPolicies", Duration::from_secs(60), || {
        let policies = policies.clone();
        async move {
            let members = policies.get_opt(&format!("{CLUSTER}-members")).await.ok()??;
            policies.get_opt(&format!("{BACKED_UP}-backup")).await.ok()??;
            Some(members)
        }
    })
    .await;
    let rendered = serde_json::to_string(&members_policy.spec).unwrap();
    assert!(rendered.contains(r#""kubernetes.io/metadata.name":"etcd-controller""#), "{rendered}");
    assert!(policies.get_opt(&format!("{CLUSTER}-backup")).await.unwrap().is_none(), "no sidecar, no sidecar policy");
    let policy_version = members_policy.metadata.resource_version.clone();

    let service = service_url(&client, &format!("{CLUSTER}-client"), 2379).await;
    let mut etcd = etcd_client::Client::connect([service.as_str()], None).await.unwrap();
    for i in 0..200 {
        etcd.put(format!("/e2e/{i:03}"), format!("value {i}"), None).await.unwrap();
    }

    // 4. `helm upgrade` to this build's image tag while both clusters serve: the controller's replicas roll, one
    //    at a time, and lead in turn; no member pod is replaced or restarted, and the new leader has looked at both
    //    clusters since (their last-observed time in its metrics is later than the upgrade).
    converged(&pods, BACKED_UP, 3, &[], Duration::from_secs(120)).await;
    let members_of_both = || {
        let pods = pods.clone();
        async move {
            let selector = format!("{},{}", controller::labels::CLUSTER_LABEL, controller::labels::MEMBER_LABEL);
            let mut listed: Vec<(String, String, i32)> = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| {
                    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
                    let restarts = statuses.iter().find(|c| c.name == "etcd").map_or(0, |c| c.restart_count);
                    (p.metadata.name.clone().unwrap(), p.metadata.uid.clone().unwrap(), restarts)
                })
                .collect();
            listed.sort();
            listed
        }
    };
    let before_helm = members_of_both().await;
    assert_eq!(before_helm.len(), 6, "{before_helm:?}");
    let upgrade_started = k8s_openapi::jiff::Timestamp::now().as_second();
    let tag = format!("image.tag={}", build_image.rsplit_once(':').unwrap().1);
    helm(&[
        "upgrade",
        RELEASE,
        CHART,
        "-n",
        CONTROLLER_NS,
        "--reuse-values",
        "--set",
        &tag,
        "--wait",
        "--timeout",
        "180s",
    ]);
    let (running, took) = eventually("the new controller pods to lead", Duration::from_secs(120), || {
        let (client, image) = (client.clone(), build_image.clone());
        async move {
            let pod = controller_pod(&client, 2).await;
            let running = pod.spec.as_ref()?.containers[0].image.clone()?;
            (running == image).then_some(pod)
        }
    })
    .await;
    println!("helm upgrade: a controller of the new image leads {:.1} s after the upgrade", took.as_secs_f64());
    let metrics_url = format!("http://{}:8080/metrics", running.status.as_ref().unwrap().pod_ip.as_ref().unwrap());
    let metrics = curl(&[&metrics_url]);
    let (_, hash) = build_image.rsplit_once('-').unwrap();
    let commit = git_commit();
    let build =
        format!("etcd_controller_build_info{{version=\"{version}\",commit=\"{commit}\",binary_sha256=\"{hash}\"}}");
    assert_eq!(sample(&metrics, &build), Some("1"), "the controller reports this build ({build}):\n{metrics}");
    println!("deploy: the controller reports {build}");
    eventually("the new leader to look at both clusters", Duration::from_secs(90), || {
        let url = metrics_url.clone();
        async move {
            let text = curl(&[&url]);
            [CLUSTER, BACKED_UP].iter().all(|cluster| {
                let series = format!(
                    "etcd_controller_cluster_last_observed_timestamp_seconds{{namespace=\"{NS}\",cluster=\"{cluster}\"}}"
                );
                sample(&text, &series).and_then(|v| v.parse::<i64>().ok()).is_some_and(|at| at > upgrade_started)
            })
            .then_some(())
        }
    })
    .await;
    assert_eq!(members_of_both().await, before_helm, "a helm upgrade restarts nothing but the controller");

    // 5. Controller recovery: with the controller scaled to zero a deleted member stays down; scaled up again,
    //    the controller brings it back on its volume (the example cluster has spec.storage): the same name, a new
    //    pod.
    kubectl(&["-n", CONTROLLER_NS, "scale", "deployment", RELEASE, "--replicas", "0"]);
    eventually("the controller's pods to go", Duration::from_secs(60), || async {
        let controllers: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NS);
        controllers.list(&ListParams::default()).await.unwrap().items.is_empty().then_some(())
    })
    .await;
    kubectl(&["-n", NS, "delete", "pod", "example-etcd-cluster-0001", "--wait=true"]);
    // Longer than a live controller takes to replace a member (8-12 s); every member pod counts, ready or not.
    let watched = Instant::now();
    let left = ["example-etcd-cluster-0000".to_string(), "example-etcd-cluster-0002".to_string()];
    while watched.elapsed() < Duration::from_secs(25) {
        assert_eq!(member_pods(&pods, CLUSTER).await, left, "nothing replaces a member while the controller is away");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recreated = Instant::now();
    kubectl(&["-n", CONTROLLER_NS, "scale", "deployment", RELEASE, "--replicas", "2"]);
    let (healed, _) =
        eventually("the member back on its volume by the controller back", Duration::from_secs(120), || {
            let pods = pods.clone();
            async move {
                let ready = ready_members(&pods, CLUSTER).await;
                let names: BTreeSet<String> = ready.iter().map(|(n, _)| n.clone()).collect();
                if ready.len() != 3 || !names.contains("example-etcd-cluster-0001") {
                    return None;
                }
                let listed = voters(&format!("http://{}:2379", ready[0].1)).await?;
                (listed == names).then_some(ready)
            }
        })
        .await;
    println!(
        "controller recovery: healed {:.1} s after the controller was scaled up again",
        recreated.elapsed().as_secs_f64()
    );
    let names: Vec<&str> = healed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["example-etcd-cluster-0000", "example-etcd-cluster-0001", "example-etcd-cluster-0002"],
        "the same member, on its claim"
    );
    assert_eq!(count_keys(&format!("http://{}:2379", healed[0].1), "/e2e/").await, 200);

    // 6. Resize 3 → 5 → 3 through the scale subresource, never without quorum.
    let (stop, probe) = watch_quorum(pods.clone(), CLUSTER);
    let resize = Instant::now();
    kubectl(&["-n", NS, "scale", "etcd", CLUSTER, "--replicas", "5"]);
    let (grown, took) = converged(&pods, CLUSTER, 5, &[], Duration::from_secs(180)).await;
    println!("resize: 3 → 5 voting members in {:.1} s", took.as_secs_f64());
    kubectl(&["-n", NS, "scale", "etcd", CLUSTER, "--replicas", "3"]);
    let (shrunk, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(180)).await;
    println!(
        "resize: 5 → 3 voting members in {:.1} s (both ways {:.1} s)",
        took.as_secs_f64(),
        resize.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(probe.await.unwrap(), 0, "a linearizable read was served throughout the resize");
    assert_eq!(grown.len(), 5);
    assert_eq!(count_keys(&format!("http://{}:2379", shrunk[0].1), "/e2e/").await, 200, "data intact after resize");
    let policy = policies.get(&format!("{CLUSTER}-members")).await.unwrap();
    assert_eq!(policy.metadata.resource_version, policy_version, "a policy as wanted is not written again");

    // 7. Backups on a PVC: the sidecar runs, reports BackupReady, and takes a backup triggered with curl.
    let (backup_members, _) = converged(&pods, BACKED_UP, 3, &[], Duration::from_secs(120)).await;
    let endpoint = format!("http://{}:2379", backup_members[0].1);
    let mut etcd = etcd_client::Client::connect([endpoint.as_str()], None).await.unwrap();
    for i in 0..50 {
        etcd.put(format!("/backed-up/{i:03}"), format!("value {i}"), None).await.unwrap();
    }
    let api = clusters(&client, NS);
    let last_seen = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        eventually("BackupReady", Duration::from_secs(180), || {
            let (api, last_seen) = (api.clone(), last_seen.clone());
            async move {
                let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
                let ready = status["conditions"].as_array()?.iter().find(|c| c["type"] == "BackupReady")?.clone();
                *last_seen.lock().unwrap() = ready.clone();
                (ready["status"] == "True").then(|| ready["message"].as_str().unwrap_or_default().to_string())
            }
        }),
    )
    .await;
    let Ok((message, took)) = waited else {
        let sidecar_log = std::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .args(["-n", NS, "logs", &format!("deployment/{BACKED_UP}-backup"), "--tail", "30"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
            .unwrap_or_default();
        panic!(
            "BackupReady not True within 120 s; last seen: {}\nsidecar log:\n{sidecar_log}",
            last_seen.lock().unwrap()
        );
    };
    println!("backup: BackupReady {:.1} s after the cluster was ready: {message}", took.as_secs_f64());
    let sidecars: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let sidecar_spec = sidecars.get(&format!("{BACKED_UP}-backup")).await.unwrap().spec;
    let sidecar_image = sidecar_spec.template.spec.unwrap().containers[0].image.clone().unwrap();
    assert_eq!(sidecar_image, std::env::var("KEC_SIDECAR_IMAGE").unwrap(), "the sidecar runs this build's image");
    // Keys written after the scheduled backup, so the one triggered now is a new backup that holds them.
    for i in 50..60 {
        etcd.put(format!("/backed-up/{i:03}"), format!("value {i}"), None).await.unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = secrets.get(&format!("{BACKED_UP}-backup-token")).await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let sidecar = service_url(&client, &format!("{BACKED_UP}-backup"), 19999).await;
    let auth = format!("Authorization: Bearer {token}");
    let triggered = Instant::now();
    let taken: proto::backup::BackupInfo =
        serde_json::from_str(&curl(&["-X", "POST", "-H", &auth, &format!("{sidecar}/v1/backups")])).unwrap();
    println!(
        "backup: taken with curl in {:.1} s: {} at revision {}",
        triggered.elapsed().as_secs_f64(),
        taken.name,
        taken.revision
    );
    let list: proto::backup::BackupList =
        serde_json::from_str(&curl(&["-H", &auth, &format!("{sidecar}/v1/backups")])).unwrap();
    assert_eq!(list.backups[0].name, taken.name, "the new backup is listed first");
    let work = tempfile::tempdir().unwrap();
    let gz = work.path().join("latest.db.gz");
    curl(&["-H", &auth, "-o", gz.to_str().unwrap(), &format!("{sidecar}/v1/backups/{}", taken.name)]);
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&gz).unwrap()), &mut raw)
        .unwrap();
    let snapshot = work.path().join("latest.db");
    std::fs::write(&snapshot, &raw).unwrap();
    let restored = system_tests::etcd::restore_and_start(&snapshot).await.unwrap();
    assert_eq!(restored.count("/backed-up/").await.unwrap(), 60, "the backup restores to the same keys");
    drop(restored);

    // The kubectl plugin, as a person at 3 a.m. uses it (port-forwards to the members and the sidecar, the token
    // read from its Secret): status, backups, a backup taken now, a restore into a new cluster.
    let (ok, shown, _) = kubectl_etcd(&["status", BACKED_UP, "-n", NS]);
    assert!(ok && shown.contains("Phase:       Running") && shown.contains(&taken.name), "{shown}");
    for (member, _) in &backup_members {
        let row = shown.lines().find(|l| l.starts_with(member.as_str())).unwrap_or_else(|| panic!("{member}: {shown}"));
        assert!(row.contains("healthy") && row.contains("3.5."), "{row}");
    }
    let leaders = shown.lines().filter(|l| l.starts_with(BACKED_UP) && l.contains(" * ")).count();
    assert_eq!(leaders, 1, "one leader marked: {shown}");
    let (ok, listed, _) = kubectl_etcd(&["backups", BACKED_UP, "-n", NS]);
    assert!(ok && listed.contains(&taken.name) && listed.contains("61"), "{listed}");
    // A write first: the sidecar answers a backup request at an unchanged revision with the backup it has.
    etcd.put("/plugin/marker", "taken by the plugin", None).await.unwrap();
    let (ok, now, _) = kubectl_etcd(&["backup", BACKED_UP, "-n", NS]);
    let newest = now.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap_or_default().to_string();
    assert!(ok && newest.starts_with(BACKED_UP) && newest != taken.name, "{now}");
    let (ok, _, refused) = kubectl_etcd(&["restore", BACKED_UP, "--backup", "nonesuch", "--to", "copy", "-n", NS]);
    assert!(!ok && refused.contains("has no backup \"nonesuch\""), "{refused}");
    let (ok, printed, _) =
        kubectl_etcd(&["restore", BACKED_UP, "--backup", &newest, "--to", "copy", "-n", NS, "--dry-run"]);
    let printed: serde_json::Value = serde_yaml::from_str(&printed).unwrap();
    assert!(ok && printed["spec"]["restore"]["backup"] == newest.as_str(), "{printed}");
    assert!(api.get_opt("copy").await.unwrap().is_none(), "a dry run creates nothing");
    let (ok, _, _) = kubectl_etcd(&["restore", BACKED_UP, "--backup", &newest, "--to", "copy", "-n", NS]);
    assert!(ok);
    let (copies, took) = converged(&pods, "copy", 3, &[], Duration::from_secs(180)).await;
    let copy = format!("http://{}:2379", copies[0].1);
    assert_eq!(count_keys(&copy, "/backed-up/").await, 60, "restored by the plugin");
    assert_eq!(count_keys(&copy, "/plugin/").await, 1, "from the backup the plugin took");
    println!("plugin: restore into a new cluster serving at size 3 in {:.1} s", took.as_secs_f64());
    kubectl(&["-n", NS, "delete", "etcd", "copy", "--wait=true"]);

    // The metrics the shipped alerts and dashboard read, in real scrapes of the deployed controller from here to
    // the end of the upgrade (step 9: the upgrade's series exist only while one runs), each with its namespace and
    // cluster labels; and each member's own etcd metrics on the port named `metrics` (the chart's PodMonitor).
    // Both replicas: the leader's series are the ones that count, and leadership may move meanwhile.
    controller_pod(&client, 2).await;
    let replicas: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NS);
    let urls: Vec<String> = replicas
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| Some(format!("http://{}:8080/metrics", p.status.as_ref()?.pod_ip.as_ref()?)))
        .collect();
    let (stop_scraping, scraper) = scrape_names(urls);
    let member = pods.get(&backup_members[0].0).await.unwrap();
    let port = member.spec.as_ref().unwrap().containers[0]
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"));
    let port = port.expect("a port named metrics").container_port;
    let etcd_metrics = curl(&[&format!("http://{}:{port}/metrics", backup_members[0].1)]);
    assert!(etcd_metrics.contains("etcd_server_has_leader 1"), "etcd's own metrics on its `metrics` port");

    // 8. The controller cut off from the members (iptables in its pod's network namespace) for longer than the
    //    recovery's grace while they serve, then their readiness dips briefly (every etcd stopped for 20 s): the
    //    controller says it cannot reach them and times no loss while any is Ready, so the dip starts the grace
    //    from zero and nothing is deleted; every key stays.
    let grace = serde_json::json!({ "spec": { "recovery": { "quorumLossGrace": "30s" } } });
    let api = clusters(&client, NS);
    api.patch(BACKED_UP, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&grace)).await.unwrap();
    let before = member_uids(&pods, BACKED_UP).await;
    let members = ready_members(&pods, BACKED_UP).await;
    assert_eq!(members.len(), 3);
    let every_replica = support::processes_with(&["etcd-controller", "run"]);
    assert_eq!(every_replica.len(), 2, "the two replicas' processes: {every_replica:?}");
    let cuts: Vec<support::Cut> = members
        .iter()
        .flat_map(|(_, ip)| every_replica.iter().map(|pid| support::Cut::outgoing_of(*pid, ip)))
        .collect();
    let cut_at = Instant::now();
    let (seen, _) = eventually("status to say the members are unreachable", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
            let degraded = status["conditions"].as_array()?.iter().find(|c| c["type"] == "Degraded")?.clone();
            (degraded["reason"] == "MembersUnreachable").then_some(status)
        }
    })
    .await;
    println!(
        "blind controller: {}",
        seen["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap()["message"]
    );
    // Longer than the grace, every moment with no loss timed.
    while cut_at.elapsed() < Duration::from_secs(45) {
        let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
        assert!(
            status.get("quorumLostSince").is_none_or(|s| s.is_null()),
            "no loss timed while members are Ready: {status}"
        );
        assert_eq!(status["phase"], "Running", "{status}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The dip: every member's etcd stopped, then continued.
    let stopped: Vec<u32> =
        members.iter().map(|(name, _)| support::process_with(&["etcd", &format!("--name={name}")])).collect();
    let signal = |sig: &str| {
        for pid in &stopped {
            assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
        }
    };
    signal("-STOP");
    eventually("the dip to take every member out of readiness", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { ready_members(&pods, BACKED_UP).await.is_empty().then_some(()) }
    })
    .await;
    signal("-CONT");
    let (_, took) = eventually("every member Ready again", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { (ready_members(&pods, BACKED_UP).await.len() == 3).then_some(()) }
    })
    .await;
    println!(
        "blind controller: readiness dip of every member over, Ready again {:.1} s after etcd continued",
        took.as_secs_f64()
    );
    // Past the grace and two resyncs after the dip: the same pods.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(45) {
        let now = member_uids(&pods, BACKED_UP).await;
        assert_eq!(now, before, "nothing deleted or replaced");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(cuts);
    assert_eq!(count_keys(&format!("http://{}:2379", members[0].1), "/backed-up/").await, 60, "every key is there");
    let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
    assert!(status.get("recovery").is_none_or(|r| r.is_null()), "no recovery was recorded: {status}");

    // 9. One upgrade as shipped (3.5 -> 3.6): its backup, its record, and every member's image patched in place
    //    by the deployed controller with the manifest's permissions; each member restarts in its own pod (same
    //    UID, its etcd container's restart count up), and every key is there.
    let restarts = |pod: &Pod| {
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        statuses.iter().find(|c| c.name == "etcd").map_or(0, |c| c.restart_count)
    };
    // Member pods only (the sidecar's pod carries the cluster label too).
    let members_only =
        format!("{}={BACKED_UP},{}", controller::labels::CLUSTER_LABEL, controller::labels::MEMBER_LABEL);
    let before_upgrade: Vec<(String, String, i32)> = {
        let mut listed: Vec<_> = pods
            .list(&ListParams::default().labels(&members_only))
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap(), p.metadata.uid.clone().unwrap(), restarts(p)))
            .collect();
        listed.sort();
        listed
    };
    let upgrade = serde_json::json!({ "spec": { "version": "3.6.16" } });
    api.patch(BACKED_UP, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&upgrade)).await.unwrap();
    let (status, took) = eventually("the upgrade to 3.6.16 to complete", Duration::from_secs(300), || {
        let api = api.clone();
        async move {
            let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
            let done = status["currentVersion"] == "3.6.16"
                && status["clusterVersion"] == "3.6.0"
                && status.get("upgrade").is_none_or(|u| u.is_null());
            done.then_some(status)
        }
    })
    .await;
    println!("upgrade as shipped: 3.5.35 -> 3.6.16 in {:.1} s: {}", took.as_secs_f64(), status["conditions"]);
    let after_upgrade = pods.list(&ListParams::default().labels(&members_only)).await.unwrap().items;
    for (name, uid, restarted) in &before_upgrade {
        let pod = after_upgrade.iter().find(|p| p.metadata.name.as_ref() == Some(name)).expect("the same members");
        assert_eq!(pod.metadata.uid.as_ref(), Some(uid), "{name} restarted in place, not replaced");
        assert!(restarts(pod) > *restarted, "{name}'s etcd container restarted on the new image");
        let image = pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name == "etcd").unwrap().image.clone();
        assert_eq!(image.as_deref(), Some("quay.io/coreos/etcd:v3.6.16"));
    }
    let (upgraded, _) = converged(&pods, BACKED_UP, 3, &[], Duration::from_secs(60)).await;
    stop_scraping.store(true, Ordering::Relaxed);
    let seen = scraper.await.unwrap();
    // Series that only some clusters or moments have: certificate expiry (TLS clusters; e2e_tls has them, and
    // tests/tests/alerts.rs checks every name against the exposition), reconcile failures (after one).
    let sometimes =
        ["etcd_controller_certificate_expiry_timestamp_seconds", "etcd_controller_reconcile_failures_total"];
    let used = system_tests::monitoring::used_metric_names();
    let missing: Vec<_> = used.iter().filter(|n| !seen.contains(*n) && !sometimes.contains(&n.as_str())).collect();
    assert!(missing.is_empty(), "the alerts and the dashboard read series no scrape had: {missing:?}");
    println!("monitoring: the {} controller metrics the alerts and dashboard read were all scraped", used.len());
    assert_eq!(count_keys(&format!("http://{}:2379", upgraded[0].1), "/backed-up/").await, 60, "no key lost");

    // 10. A recovery from lost quorum as shipped: two of the three member pods deleted at once (their emptyDirs
    //     with them); past the grace the deployed controller takes a fresh backup from the survivor (the only
    //     voter left), records it, deletes the lost members and seeds a new cluster from it: every key is there.
    //     Step 8's 30 s grace was for its readiness dip; this loss is real, and waits out the usual 10 s.
    let grace = serde_json::json!({ "spec": { "recovery": { "quorumLossGrace": "10s" } } });
    let generation =
        api.patch(BACKED_UP, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&grace)).await.unwrap();
    let generation = generation.metadata.generation.unwrap();
    eventually("the controller to see the 10 s grace", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
            (status["observedGeneration"].as_i64()? >= generation).then_some(())
        }
    })
    .await;
    let survivor = upgraded[0].0.clone();
    let lost: Vec<String> = upgraded.iter().skip(1).map(|(name, _)| name.clone()).collect();
    for name in &lost {
        pods.delete(name, &kube::api::DeleteParams::default()).await.unwrap();
    }
    let deleted_at = Instant::now();
    let (record, _) = eventually("the recovery to be recorded", Duration::from_secs(240), || {
        let api = api.clone();
        async move {
            let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
            (status["recovery"].is_object()).then(|| status["recovery"].clone())
        }
    })
    .await;
    println!("recovery as shipped: recorded {:.1} s after the delete: {record}", deleted_at.elapsed().as_secs_f64());
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("fresh backup") && reason.contains(&format!("taken from {survivor} ")), "{reason}");
    let (recovered, took) = eventually("the recovered cluster to serve at its size", Duration::from_secs(300), || {
        let (api, pods) = (api.clone(), pods.clone());
        async move {
            let status = api.get(BACKED_UP).await.unwrap().data["status"].clone();
            let over = status.get("recovery").is_none_or(|r| r.is_null());
            if !over {
                return None;
            }
            converged_now(&pods, BACKED_UP, 3, &[]).await
        }
    })
    .await;
    println!("recovery as shipped: serving at size 3 again {:.1} s after the record", took.as_secs_f64());
    assert!(recovered.iter().all(|(name, _)| *name != survivor && !lost.contains(name)), "a new cluster");
    assert_eq!(count_keys(&format!("http://{}:2379", recovered[0].1), "/backed-up/").await, 60, "every key is there");

    // 11. Destroy: everything the controller made goes; the backups stay.
    kubectl(&["-n", NS, "delete", "etcd", CLUSTER, BACKED_UP, "--wait=true"]);
    let (_, took) = eventually("pods, services and the sidecar to go", Duration::from_secs(120), || {
        let client = client.clone();
        async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
            let services: Api<Service> = Api::namespaced(client.clone(), NS);
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
            let owned = ListParams::default().labels("kube-etcd-controller.dev/cluster");
            let left = pods.list(&owned).await.unwrap().items.len()
                + services.list(&owned).await.unwrap().items.len()
                + deployments.list(&owned).await.unwrap().items.len();
            (left == 0).then_some(())
        }
    })
    .await;
    println!("destroy: pods, services and sidecar gone {:.1} s after the delete", took.as_secs_f64());
    // The deleted clusters' series go from the controller's metrics.
    let running = controller_pod(&client, 2).await;
    let metrics_url = format!("http://{}:8080/metrics", running.status.as_ref().unwrap().pod_ip.as_ref().unwrap());
    eventually("the deleted clusters' metrics to go", Duration::from_secs(60), || {
        let url = metrics_url.clone();
        async move {
            let text = curl(&[&url]);
            (!text.contains(&format!("namespace=\"{NS}\""))).then_some(())
        }
    })
    .await;
    let manifests = published_manifests(backups.path());
    assert!(manifests.len() >= 2, "the scheduled and the triggered backup outlive the cluster: {manifests:?}");

    println!("whole scenario: {:.1} s", created.elapsed().as_secs_f64());
}
