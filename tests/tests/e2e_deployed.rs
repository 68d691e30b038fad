//! End-to-end with the controller deployed exactly as a user deploys it (`kubectl apply -f` the CRD and
//! `example/etcd-controller.yaml`, images built from the release binaries), on the test bed's real node:
//! the example cluster comes up, heals with its controller dead and re-created, resizes 3 → 5 → 3 without ever
//! losing quorum, and is destroyed; a cluster with backups on a PVC runs its sidecar, takes a backup triggered with
//! curl that restores with `etcdctl snapshot restore` to the same keys, and its backups outlive it.
//! Needs `--features e2e`, `KUBECONFIG` and `KUBECTL` (scripts/test.sh sets both) and the images
//! (tests/e2e/images.sh rust ...).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use support::{
    clusters, converged, count_keys, curl, eventually, example, fresh_namespace, kubectl, local_volume, ready_members,
    voters,
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

fn backups_dir() -> PathBuf {
    PathBuf::from("/var/tmp/kec-e2e-backups")
}

/// A static local PersistentVolume on this node and the claim the backup example names.
fn backup_volume() {
    local_volume("kec-e2e-backups", &backups_dir(), NS, "etcd-backups");
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
    let client = Client::try_default().await.expect("KUBECONFIG must point at the test bed (tests/e2e/up.sh)");

    // 1. Deploy as a user would.
    let start = Instant::now();
    kubectl(&["apply", "-f", example("etcd-crd.yaml").to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for",
        "condition=Established",
        "crd/etcdclusters.kube-etcd-controller.dev",
        "--timeout",
        "60s",
    ]);
    kubectl(&["apply", "-f", example("etcd-controller.yaml").to_str().unwrap()]);
    kubectl(&["-n", "etcd-controller", "rollout", "status", "deployment/etcd-controller", "--timeout", "120s"]);
    println!("deploy: controller available {:.1} s after kubectl apply", start.elapsed().as_secs_f64());

    fresh_namespace(&client, NS).await;
    backup_volume();
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
    let service = service_url(&client, &format!("{CLUSTER}-client"), 2379).await;
    let mut etcd = etcd_client::Client::connect([service.as_str()], None).await.unwrap();
    for i in 0..200 {
        etcd.put(format!("/e2e/{i:03}"), format!("value {i}"), None).await.unwrap();
    }

    // 4. Controller recovery: with the controller gone a deleted member stays dead; re-created, it heals.
    kubectl(&["-n", "etcd-controller", "delete", "deployment", "etcd-controller", "--wait=true"]);
    eventually("the controller's pod to go", Duration::from_secs(60), || async {
        let controllers: Api<Pod> = Api::namespaced(client.clone(), "etcd-controller");
        controllers.list(&ListParams::default()).await.unwrap().items.is_empty().then_some(())
    })
    .await;
    kubectl(&["-n", NS, "delete", "pod", "example-etcd-cluster-0001", "--wait=true"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ready_members(&pods, CLUSTER).await.len(), 2, "nothing replaces a member while the controller is away");
    let recreated = Instant::now();
    kubectl(&["apply", "-f", example("etcd-controller.yaml").to_str().unwrap()]);
    let (healed, _) =
        eventually("the member to be replaced by the re-created controller", Duration::from_secs(120), || {
            let pods = pods.clone();
            async move {
                let ready = ready_members(&pods, CLUSTER).await;
                let names: BTreeSet<String> = ready.iter().map(|(n, _)| n.clone()).collect();
                if ready.len() != 3 || names.contains("example-etcd-cluster-0001") {
                    return None;
                }
                let listed = voters(&format!("http://{}:2379", ready[0].1)).await?;
                (listed == names).then_some(ready)
            }
        })
        .await;
    println!(
        "controller recovery: healed {:.1} s after the controller was re-created",
        recreated.elapsed().as_secs_f64()
    );
    assert!(healed.iter().any(|(n, _)| n == "example-etcd-cluster-0003"), "the next name: {healed:?}");
    assert_eq!(count_keys(&format!("http://{}:2379", healed[0].1), "/e2e/").await, 200);

    // 5. Resize 3 → 5 → 3 through the scale subresource, never without quorum.
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

    // 6. Destroy: everything the controller made goes; the backups stay.
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
    let manifests = published_manifests(&backups_dir());
    assert!(manifests.len() >= 2, "the scheduled and the triggered backup outlive the cluster: {manifests:?}");

    // Leave the API server to the suites that run their controller in-process.
    kubectl(&["delete", "-f", example("etcd-controller.yaml").to_str().unwrap(), "--wait=true"]);
    println!("whole scenario: {:.1} s", created.elapsed().as_secs_f64());
}
