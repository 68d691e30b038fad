//! End-to-end on the test bed: backup-driven recovery. A three-member cluster with backups on a local PV loses
//! two members (recovered with every key, from a fresh backup of the survivor), then all three (recovered from the
//! newest backup, with exactly the keys it holds); a new cluster is seeded from the first one's backup; a corrupt
//! backup is refused before any etcd runs on it; the manual policy deletes nothing until it is switched; and a
//! controller killed at three chosen points of a recovery (after the record, after the first deletion, after the
//! seed exists) still ends with a healthy cluster; backups on S3 (MinIO) are
//! taken on schedule and on demand, bring a one-member cluster back, and outlive that cluster: a new one is seeded
//! straight from the bucket (no sidecar serves it). The controller runs
//! in-process (its library's `run`), as in the lifecycle test.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use controller::plan::{Action, SEED_RETRY_AFTER};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use proto::backup::BackupInfo;
use support::etcd_cluster as cluster;
use support::{
    clusters, converged, count_keys, eventually, fresh_namespace, host_dir, install_crd, local_volume, member_pods,
    status_of as status, stop_after, testbed,
};

const NS: &str = "e2e-recovery";
/// The survivor test's own namespace (and so its own controller lease): the two tests may run at once.
const SURV_NS: &str = "e2e-recovery-survivor";
const CLUSTER: &str = "rec";

const RESYNC: Duration = Duration::from_secs(5);

async fn start_controller(client: &Client, instance: &str) -> tokio::task::JoinHandle<()> {
    support::start_controller(client, NS, instance, RESYNC, Duration::from_secs(2)).await
}

/// Starts a controller that freezes after the first step of `rec` matching `point`, waits until it got there,
/// and kills it.
async fn kill_after(client: &Client, instance: &str, what: &str, point: fn(&Action) -> bool) {
    let (hooks, reached) = stop_after(CLUSTER, point);
    let running = support::start_controller_with(client, NS, instance, RESYNC, Duration::from_secs(2), hooks).await;
    tokio::time::timeout(Duration::from_secs(180), reached.notified())
        .await
        .unwrap_or_else(|_| panic!("the controller never got {what}"));
    support::kill_controller(client, NS, running).await;
    println!("controller {instance} killed {what}");
}

/// When the container `container` of pod `name` last terminated (the kubelet's clock, as the controller reads it).
async fn finished_at(pods: &Api<Pod>, name: &str, container: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let status = pods.get(name).await.ok()?.status?;
    let all = status
        .init_container_statuses
        .unwrap_or_default()
        .into_iter()
        .chain(status.container_statuses.unwrap_or_default());
    all.into_iter().find(|c| c.name == container)?.state?.terminated?.finished_at.map(|t| t.0)
}

/// Asserts that `cluster`'s member pods stay exactly `expected` until `until` (wall clock), checking twice a second.
async fn pods_stay(
    pods: &Api<Pod>,
    cluster: &str,
    expected: &[String],
    until: k8s_openapi::jiff::Timestamp,
    what: &str,
) {
    while k8s_openapi::jiff::Timestamp::now() < until {
        assert_eq!(member_pods(pods, cluster).await, expected, "{what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn put(endpoint: &str, prefix: &str, n: usize) {
    let mut etcd = etcd_client::Client::connect([endpoint], None).await.unwrap();
    for i in 0..n {
        etcd.put(format!("{prefix}{i:03}"), format!("value {i}"), None).await.unwrap();
    }
}

async fn take_backup(client: &Client, cluster: &str) -> BackupInfo {
    support::take_backup(client, NS, cluster).await
}

async fn event_reasons(client: &Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    events.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect()
}

/// Corrupts the middle of a stored backup, its size kept: sixteen bytes inverted (one byte may fall where gzip
/// ignores it, a member header's time or the padding of a block, and change nothing that is restored).
fn corrupt_middle(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(path, bytes).unwrap();
}

fn degraded(status: &serde_json::Value) -> Option<serde_json::Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == "Degraded").cloned()
}

/// Two of three members lost while the backup sidecar cannot reach the third, which holds writes newer than any
/// backup: nothing is deleted (status says why) until the sidecar reaches it again, and then a fresh backup of it
/// keeps every write. With no member left and only backups older than `maxBackupAge`, the recovery waits for a
/// person.
#[tokio::test]
async fn a_running_member_is_never_given_up_for_an_older_backup() {
    const SURV: &str = "surv";
    let client = testbed().await;
    install_crd(&client).await;
    fresh_namespace(&client, SURV_NS).await;
    let backups = host_dir("survivor");
    local_volume("kec-e2e-survivor", backups.path(), SURV_NS, "surv-backups");
    let running = support::start_controller(&client, SURV_NS, "e2e-survivor", RESYNC, Duration::from_secs(2)).await;
    let api = clusters(&client, SURV_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), SURV_NS);
    let spec = serde_json::json!({
        "size": 3,
        "backup": { "every": "1h", "storage": { "pvc": { "claimName": "surv-backups" } } },
        "recovery": { "quorumLossGrace": "10s" },
    });
    api.create(&PostParams::default(), &cluster(SURV, spec)).await.unwrap();
    let (members, _) = converged(&pods, SURV, 3, &[], Duration::from_secs(120)).await;
    let endpoint = format!("http://{}:2379", members[0].1);
    put(&endpoint, "/surv/a/", 50).await;
    support::take_backup(&client, SURV_NS, SURV).await;
    put(&endpoint, "/surv/b/", 100).await;

    // The sidecar cannot reach the member that survives; the other two go.
    let (survivor, survivor_ip) = members[2].clone();
    let etcd = format!("--etcd-endpoints=http://{SURV}-client.{SURV_NS}.svc:2379");
    let cut = support::Cut::outgoing(&["serve", &format!("--cluster-name={SURV}"), &etcd], &survivor_ip);
    let lost: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    for (name, _) in &members[..2] {
        pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    }
    let (why, _) = eventually("the recovery to refuse giving up the survivor", Duration::from_secs(180), || {
        let api = api.clone();
        let survivor = survivor.clone();
        async move {
            let degraded = degraded(&status(&api, SURV).await)?;
            let message = degraded["message"].as_str()?.to_string();
            (degraded["reason"] == "NoUsableBackup" && message.contains(&survivor)).then_some(message)
        }
    })
    .await;
    println!("survivor unreachable from the sidecar: nothing deleted ({why})");
    let until = k8s_openapi::jiff::Timestamp::now() + RESYNC * 4;
    pods_stay(&pods, SURV, std::slice::from_ref(&survivor), until, "the survivor is kept").await;
    assert!(status(&api, SURV).await.get("recovery").is_none(), "no recovery recorded");

    // The sidecar reaches it again: a fresh backup of it, every acknowledged write kept.
    let healed = Instant::now();
    drop(cut);
    let (members, _) = converged(&pods, SURV, 3, &lost, Duration::from_secs(180)).await;
    println!("recovery once the sidecar reached the survivor: healthy {:.1} s later", healed.elapsed().as_secs_f64());
    assert_eq!(count_keys(&format!("http://{}:2379", members[0].1), "/surv/").await, 150, "no write lost");

    // Every member gone, and the newest backup older than maxBackupAge: nothing is seeded from it.
    let strict = serde_json::json!({ "spec": { "recovery": { "maxBackupAge": "1s" } } });
    api.patch(SURV, &PatchParams::default(), &Patch::Merge(&strict)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, _) in &members {
        pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    }
    let (why, _) = eventually("the recovery to refuse an old backup", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let degraded = degraded(&status(&api, SURV).await)?;
            let message = degraded["message"].as_str()?.to_string();
            (degraded["reason"] == "NoUsableBackup" && message.contains("maxBackupAge")).then_some(message)
        }
    })
    .await;
    println!("every member lost, newest backup older than maxBackupAge: waits ({why})");
    let until = k8s_openapi::jiff::Timestamp::now() + RESYNC * 3;
    pods_stay(&pods, SURV, &[], until, "no seed from a backup older than maxBackupAge").await;

    api.delete(SURV, &DeleteParams::default()).await.unwrap();
    running.abort();
    let _ = running.await;
}

#[tokio::test]
async fn recovers_lost_quorum_and_seeds_clusters_from_backups() {
    // The in-process controller's log (what it planned and did) goes with the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,controller=info"))
        .with_ansi(false)
        .with_test_writer()
        .try_init();
    let client = testbed().await;
    install_crd(&client).await;
    fresh_namespace(&client, NS).await;
    let backups = host_dir("recovery");
    local_volume("kec-e2e-recovery", backups.path(), NS, "rec-backups");
    let running = start_controller(&client, "e2e-recovery-1").await;

    let api = clusters(&client, NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let spec = serde_json::json!({
        "size": 3,
        "backup": { "every": "1h", "storage": { "pvc": { "claimName": "rec-backups" } } },
        "recovery": { "quorumLossGrace": "10s" },
    });
    api.create(&PostParams::default(), &cluster(CLUSTER, spec)).await.unwrap();
    let (members, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(120)).await;
    println!("create: 3 members in {:.1} s", took.as_secs_f64());
    let endpoint = format!("http://{}:2379", members[0].1);
    put(&endpoint, "/rec/a/", 100).await;
    let first = take_backup(&client, CLUSTER).await;
    put(&endpoint, "/rec/b/", 50).await;

    // 1. Two of three members deleted at once: a fresh backup from the survivor holds every key.
    let lost: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    let fault = Instant::now();
    for (name, _) in &members[..2] {
        pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    }
    let (members, _) = converged(&pods, CLUSTER, 3, &lost, Duration::from_secs(180)).await;
    println!(
        "recovery (2 of 3 members lost): healthy with 3 members {:.1} s after the fault",
        fault.elapsed().as_secs_f64()
    );
    let endpoint = format!("http://{}:2379", members[0].1);
    assert_eq!(count_keys(&endpoint, "/rec/").await, 150, "every acknowledged write survived");
    let (status_now, _) = eventually("the recovery to be over in status", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let s = status(&api, CLUSTER).await;
            (s["phase"] == "Running" && s.get("recovery").is_none()).then_some(s)
        }
    })
    .await;
    let restored = status_now["restoredFrom"]["backup"].as_str().unwrap().to_string();
    assert_ne!(restored, first.name, "a fresh backup, not the older one: {status_now}");
    assert!(status_now.get("quorumLostSince").is_none(), "{status_now}");
    let reasons = event_reasons(&client).await;
    for reason in ["RecoveryStarted", "LostMemberDeleted", "RecoveryCompleted"] {
        assert!(reasons.contains(&reason.to_string()), "{reason} in {reasons:?}");
    }

    // 2. Every member deleted: the newest backup, with exactly the keys it holds.
    put(&endpoint, "/rec/c/", 20).await;
    let second = take_backup(&client, CLUSTER).await;
    put(&endpoint, "/rec/d/", 30).await;
    let lost: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    let fault = Instant::now();
    for (name, _) in &members {
        pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    }
    let (members, _) = converged(&pods, CLUSTER, 3, &lost, Duration::from_secs(180)).await;
    println!(
        "recovery (every member lost): healthy with 3 members {:.1} s after the fault",
        fault.elapsed().as_secs_f64()
    );
    let endpoint = format!("http://{}:2379", members[0].1);
    assert_eq!(count_keys(&endpoint, "/rec/").await, 170, "the keys of the newest backup");
    assert_eq!(count_keys(&endpoint, "/rec/d/").await, 0, "writes after the newest backup are gone, as status says");
    let (_, _) = eventually("status to name the newest backup", Duration::from_secs(30), || {
        let api = api.clone();
        let name = second.name.clone();
        async move { (status(&api, CLUSTER).await["restoredFrom"]["backup"] == name.as_str()).then_some(()) }
    })
    .await;

    // 3. A new cluster seeded from the first one's latest backup; the source is untouched.
    let before = member_pods(&pods, CLUSTER).await;
    let seeded = Instant::now();
    let copy = serde_json::json!({ "size": 1, "restore": { "cluster": CLUSTER } });
    api.create(&PostParams::default(), &cluster("copy", copy)).await.unwrap();
    // The clusters of 3b and 3c start now too, each checked in its turn below.
    // 3b. The same from the sidecar's URL (its service address) with its token Secret, as for a sidecar that
    //     belongs to no EtcdCluster here.
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let sidecar_ip = services.get(&format!("{CLUSTER}-backup")).await.unwrap().spec.unwrap().cluster_ip.unwrap();
    //     Another cluster's token Secret is never sent anywhere: only a Secret labelled for it is read.
    let by_url = serde_json::json!({ "size": 1, "restore": {
        "url": format!("http://{sidecar_ip}:19999"), "tokenSecret": format!("{CLUSTER}-backup-token"),
    } });
    api.create(&PostParams::default(), &cluster("by-url", by_url)).await.unwrap();
    //     3c's cluster (below).
    let old = serde_json::json!({ "size": 1, "version": "3.4.23",
        "backup": { "every": "1h", "storage": { "pvc": { "claimName": "rec-backups" } } } });
    api.create(&PostParams::default(), &cluster("old", old)).await.unwrap();
    let (copies, _) = converged(&pods, "copy", 1, &[], Duration::from_secs(120)).await;
    println!("seed from a backup: 1 member serving {:.1} s after the EtcdCluster", seeded.elapsed().as_secs_f64());
    assert_eq!(count_keys(&format!("http://{}:2379", copies[0].1), "/rec/").await, 170);
    assert_eq!(member_pods(&pods, CLUSTER).await, before, "the source cluster is untouched");
    let copy_status = status(&api, "copy").await;
    assert_eq!(copy_status["restoredFrom"]["backup"], second.name.as_str(), "{copy_status}");
    // Restored with --bump-revision: a watcher that saw the source's revisions never sees them go backwards.
    let mut etcd = etcd_client::Client::connect([format!("http://{}:2379", copies[0].1)], None).await.unwrap();
    let revision = etcd.get("/rec/", None).await.unwrap().header().unwrap().revision();
    assert!(revision >= second.revision + 1_000_000_000, "revision {revision} after a restore of {}", second.revision);

    // 3b, checked: the unlabelled token Secret refused, then an opted-in one used.
    let (why, _) = eventually("the unlabelled token Secret to be refused", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let degraded = degraded(&status(&api, "by-url").await)?;
            let message = degraded["message"].as_str()?.to_string();
            (degraded["reason"] == "Refused" && message.contains(controller::act::RESTORE_TOKEN_LABEL))
                .then_some(message)
        }
    })
    .await;
    println!("seed by URL with another cluster's token Secret: refused ({why})");
    assert!(member_pods(&pods, "by-url").await.is_empty(), "nothing created");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let token = secrets.get(&format!("{CLUSTER}-backup-token")).await.unwrap().data.unwrap()["token"].clone();
    let mut opted = Secret::default();
    opted.metadata.name = Some("by-url-restore-token".into());
    opted.metadata.labels =
        Some([(controller::act::RESTORE_TOKEN_LABEL.to_string(), "true".to_string())].into_iter().collect());
    opted.data = Some([("token".to_string(), token)].into_iter().collect());
    secrets.create(&PostParams::default(), &opted).await.unwrap();
    let use_it = serde_json::json!({ "spec": { "restore": { "tokenSecret": "by-url-restore-token" } } });
    api.patch("by-url", &PatchParams::default(), &Patch::Merge(&use_it)).await.unwrap();
    let (copies, _) = converged(&pods, "by-url", 1, &[], Duration::from_secs(120)).await;
    assert_eq!(count_keys(&format!("http://{}:2379", copies[0].1), "/rec/").await, 170);
    assert_eq!(status(&api, "by-url").await["restoredFrom"]["backup"], second.name.as_str());
    api.delete("by-url", &DeleteParams::default()).await.unwrap();

    // 3c. etcd 3.4 (Debian's, created with 3's): its backups restore with etcdctl; and removing spec.backup removes
    //     the sidecar.
    let (olds, _) = converged(&pods, "old", 1, &[], Duration::from_secs(120)).await;
    put(&format!("http://{}:2379", olds[0].1), "/old/", 25).await;
    let old_backup = take_backup(&client, "old").await;
    let old_copy = serde_json::json!({ "size": 1, "version": "3.4.23", "restore": { "cluster": "old" } });
    api.create(&PostParams::default(), &cluster("old-copy", old_copy)).await.unwrap();
    let (copies, took) = converged(&pods, "old-copy", 1, &[], Duration::from_secs(120)).await;
    println!("etcd 3.4 seeded from a backup (etcdctl snapshot restore) in {:.1} s", took.as_secs_f64());
    assert_eq!(count_keys(&format!("http://{}:2379", copies[0].1), "/old/").await, 25);
    assert_eq!(status(&api, "old-copy").await["restoredFrom"]["backup"], old_backup.name.as_str());
    let no_backup = serde_json::json!({ "spec": { "backup": null } });
    api.patch("old", &PatchParams::default(), &Patch::Merge(&no_backup)).await.unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), NS);
    let (_, took) = eventually("the sidecar of a cluster without spec.backup to go", Duration::from_secs(60), || {
        let (deployments, services) = (deployments.clone(), services.clone());
        async move {
            let deployment = deployments.get_opt("old-backup").await.unwrap();
            let service = services.get_opt("old-backup").await.unwrap();
            (deployment.is_none() && service.is_none()).then_some(())
        }
    })
    .await;
    println!("spec.backup removed: sidecar gone {:.1} s later", took.as_secs_f64());
    for name in ["old", "old-copy"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    // 4. A corrupt backup (sixteen bytes inverted in storage) is refused before any etcd runs on it.
    let data = backups.path().join(CLUSTER).join(format!("{}.db.gz", second.name));
    corrupt_middle(&data);
    let bad = serde_json::json!({ "size": 1, "restore": { "cluster": CLUSTER, "backup": second.name } });
    api.create(&PostParams::default(), &cluster("bad", bad)).await.unwrap();
    let (degraded, took) = eventually("the refused restore in status", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let s = status(&api, "bad").await;
            let conditions = s["conditions"].as_array()?.clone();
            conditions.into_iter().find(|c| c["type"] == "Degraded" && c["reason"] == "RestoreFailed")
        }
    })
    .await;
    println!("corrupt backup refused {:.1} s after the EtcdCluster: {}", took.as_secs_f64(), degraded["message"]);
    let message = degraded["message"].as_str().unwrap();
    assert!(message.contains(&second.name) && message.contains("corrupt"), "{message}");
    let seed = pods.get("bad-0000").await.unwrap();
    let etcd_started = seed
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some() || s.terminated.is_some()));
    assert!(!etcd_started, "no etcd ran on the corrupt backup");
    // Past the time a failed seed would be retried (counted, as the controller does, from when its container
    // ended), and two resyncs more: still the one seed, nothing retried, nothing else created.
    let ended = finished_at(&pods, "bad-0000", "fetch-backup").await.expect("the fetch's end in the pod's status");
    let until = ended + SEED_RETRY_AFTER + RESYNC * 2;
    pods_stay(&pods, "bad", &["bad-0000".to_string()], until, "nothing retried, nothing else created").await;
    corrupt_middle(&data);
    api.delete("bad", &DeleteParams::default()).await.unwrap();
    api.delete("copy", &DeleteParams::default()).await.unwrap();

    // 5. Manual policy: quorum lost, nothing deleted after the grace has run out, the condition says what a
    //    person can do.
    let manual = serde_json::json!({ "spec": { "recovery": { "policy": "Manual", "quorumLossGrace": "10s" } } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&manual)).await.unwrap();
    let lost: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    for (name, _) in &members[..2] {
        pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    }
    let survivor = vec![lost[2].clone()];
    let (since, _) = eventually("the quorum loss in status", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let s = status(&api, CLUSTER).await;
            let since: k8s_openapi::jiff::Timestamp = s["quorumLostSince"].as_str()?.parse().ok()?;
            (s["phase"] == "QuorumLost").then_some(since)
        }
    })
    .await;
    // The survivor's readiness (etcd's /health) must have failed too, or the planner would not call it lost.
    eventually("the survivor to be unready", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { support::ready_members(&pods, CLUSTER).await.is_empty().then_some(()) }
    })
    .await;
    let unready = k8s_openapi::jiff::Timestamp::now();
    let grace = Duration::from_secs(10);
    let until = std::cmp::max(since + grace, unready) + RESYNC * 3;
    pods_stay(&pods, CLUSTER, &survivor, until, "the survivor is kept after the grace").await;
    let s = status(&api, CLUSTER).await;
    assert_eq!(s["phase"], "QuorumLost", "{s}");
    assert!(s.get("recovery").is_none(), "no recovery recorded: {s}");
    let degraded = s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap().clone();
    assert!(degraded["message"].as_str().unwrap().contains("Manual"), "{degraded}");

    // 6. Switching to Restore recovers. The controller is killed at three chosen points, each by a controller
    //    that freezes right after that step (before writing status), and a new one carries on from what it
    //    observes each time.
    support::kill_controller(&client, NS, running).await;
    let fault = Instant::now();
    let restore = serde_json::json!({ "spec": { "recovery": { "policy": "Restore" } } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&restore)).await.unwrap();

    kill_after(&client, "e2e-recovery-2", "after recording the recovery", |a| {
        matches!(a, Action::StartRecovery { .. })
    })
    .await;
    let s = status(&api, CLUSTER).await;
    assert!(s.get("recovery").is_some(), "the recovery is recorded: {s}");
    let pod = pods.get(&survivor[0]).await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none(), "nothing deleted yet");
    assert_eq!(member_pods(&pods, CLUSTER).await, survivor, "no seed yet");

    // Nothing is deleted yet, so switching the policy back to Manual abandons the recovery and keeps the survivor.
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&manual)).await.unwrap();
    let abandoning = start_controller(&client, "e2e-recovery-2b").await;
    let (abandoned, _) = eventually("the recovery to be abandoned", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let s = status(&api, CLUSTER).await;
            s.get("recovery").is_none().then_some(s)
        }
    })
    .await;
    assert!(event_reasons(&client).await.contains(&"RecoveryAbandoned".to_string()), "{abandoned}");
    let pod = pods.get(&survivor[0]).await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none(), "the survivor is kept");
    let until = k8s_openapi::jiff::Timestamp::now() + grace + RESYNC * 2;
    pods_stay(&pods, CLUSTER, &survivor, until, "Manual again: nothing deleted").await;
    support::kill_controller(&client, NS, abandoning).await;
    println!("recovery abandoned before its first deletion when the policy went back to Manual");
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&restore)).await.unwrap();

    kill_after(&client, "e2e-recovery-3", "after the first deletion", |a| matches!(a, Action::DeleteLostMember { .. }))
        .await;
    let deleted = pods.get_opt(&survivor[0]).await.unwrap();
    assert!(deleted.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the lost member is being deleted");
    assert!(member_pods(&pods, CLUSTER).await.iter().all(|p| survivor.contains(p)), "no seed yet");
    assert!(status(&api, CLUSTER).await.get("recovery").is_some(), "still recovering");

    kill_after(&client, "e2e-recovery-4", "after creating the seed", |a| matches!(a, Action::CreateSeed { .. })).await;
    let seeds: Vec<String> = member_pods(&pods, CLUSTER).await.into_iter().filter(|p| !lost.contains(p)).collect();
    assert_eq!(seeds.len(), 1, "one seed of the new cluster: {seeds:?}");
    assert!(status(&api, CLUSTER).await.get("recovery").is_some(), "still recovering");

    let running = start_controller(&client, "e2e-recovery-5").await;
    let (members, _) = converged(&pods, CLUSTER, 3, &lost, Duration::from_secs(180)).await;
    println!(
        "recovery (manual switched to restore, controller killed three times): healthy {:.1} s after the switch",
        fault.elapsed().as_secs_f64()
    );
    assert!(members.iter().any(|(n, _)| n == &seeds[0]), "the seed the killed controller made leads the new cluster");
    assert_eq!(count_keys(&format!("http://{}:2379", members[0].1), "/rec/").await, 170);

    api.delete(CLUSTER, &DeleteParams::default()).await.unwrap();

    // 7. Backups on S3 (MinIO listening on the node's address, which pods reach): a scheduled backup at start-up,
    //    one triggered with curl, and a one-member cluster whose only member is deleted comes back from S3.
    let node = kube::Config::infer().await.unwrap().cluster_url.host().unwrap().to_string();
    let minio = system_tests::s3::S3Server::start_on(&node).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let credentials: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "s3-credentials" },
        "stringData": {
            "AWS_ACCESS_KEY_ID": system_tests::s3::ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": system_tests::s3::SECRET_KEY,
        },
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &credentials).await.unwrap();
    let s3 = serde_json::json!({
        "size": 1,
        "backup": { "every": "1h", "storage": { "s3": {
            "bucket": system_tests::s3::BUCKET, "endpoint": minio.endpoint(), "allowHttp": true,
            "credentialsSecret": "s3-credentials",
        } } },
        "recovery": { "quorumLossGrace": "10s" },
    });
    api.create(&PostParams::default(), &cluster("s3", s3)).await.unwrap();
    let (members, _) = converged(&pods, "s3", 1, &[], Duration::from_secs(120)).await;
    let (scheduled, took) = eventually("a scheduled backup on S3", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let s = status(&api, "s3").await;
            let ready = s["conditions"].as_array()?.iter().find(|c| c["type"] == "BackupReady")?.clone();
            (ready["status"] == "True").then(|| ready["message"].as_str().unwrap_or_default().to_string())
        }
    })
    .await;
    println!("s3: BackupReady {:.1} s after the member was ready: {scheduled}", took.as_secs_f64());
    assert!(scheduled.contains("s3://"), "{scheduled}");
    put(&format!("http://{}:2379", members[0].1), "/s3/", 40).await;
    let taken = take_backup(&client, "s3").await;
    let fault = Instant::now();
    pods.delete("s3-0000", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    let (members, _) = converged(&pods, "s3", 1, &["s3-0000".to_string()], Duration::from_secs(180)).await;
    println!("s3: the only member deleted, back from S3 {:.1} s after the fault", fault.elapsed().as_secs_f64());
    assert_eq!(count_keys(&format!("http://{}:2379", members[0].1), "/s3/").await, 40);
    let (_, _) = eventually("status to name the S3 backup", Duration::from_secs(30), || {
        let api = api.clone();
        let name = taken.name.clone();
        async move { (status(&api, "s3").await["restoredFrom"]["backup"] == name.as_str()).then_some(()) }
    })
    .await;

    // 8. The cluster is deleted; its backups stay in the bucket, and seed a new cluster straight from storage.
    api.delete("s3", &DeleteParams::default()).await.unwrap();
    let bucket = serde_json::json!({
        "bucket": system_tests::s3::BUCKET, "prefix": format!("{NS}/s3"), "endpoint": minio.endpoint(),
        "allowHttp": true, "credentialsSecret": "s3-credentials",
    });
    // Wrong credentials first: the seed's fetch fails, the seed is kept (no pod churn) and status says why.
    let wrong: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "s3-wrong" },
        "stringData": { "AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret" },
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &wrong).await.unwrap();
    let mut wrong_bucket = bucket.clone();
    wrong_bucket["credentialsSecret"] = "s3-wrong".into();
    let denied = serde_json::json!({ "size": 1, "restore": { "storage": { "s3": wrong_bucket } } });
    api.create(&PostParams::default(), &cluster("denied", denied)).await.unwrap();
    let (failed, took) = eventually("the failed seed in status", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let conditions = status(&api, "denied").await["conditions"].as_array()?.clone();
            conditions.into_iter().find(|c| c["type"] == "Degraded" && c["reason"] == "SeedFailed")
        }
    })
    .await;
    println!(
        "seed with wrong S3 credentials: SeedFailed {:.1} s after the EtcdCluster: {}",
        took.as_secs_f64(),
        failed["message"]
    );
    assert!(failed["message"].as_str().unwrap().contains("fetch-backup: exit code 1"), "{failed}");
    // Kept for its logs until SEED_RETRY_AFTER after its fetch ended, then replaced under a new name: both times
    // from the same clocks the controller reads (the kubelet's finishedAt, the API server's creationTimestamp).
    let ended = finished_at(&pods, "denied-0000", "fetch-backup").await.expect("the fetch's end in the pod's status");
    let (replacement, took) = eventually("the failed seed to be replaced", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move { pods.get_opt("denied-0001").await.unwrap() }
    })
    .await;
    let created = replacement.metadata.creation_timestamp.unwrap().0;
    println!(
        "seed with wrong S3 credentials: replaced {:.0} s after its fetch failed ({:.1} s after SeedFailed showed)",
        created.duration_since(ended).as_secs_f64(),
        took.as_secs_f64()
    );
    let retry = k8s_openapi::jiff::SignedDuration::try_from(SEED_RETRY_AFTER).unwrap();
    assert!(created.duration_since(ended) >= retry, "the failed seed was kept at least {SEED_RETRY_AFTER:?}");
    let degraded = status(&api, "denied").await["conditions"].as_array().unwrap().clone();
    assert!(degraded.iter().any(|c| c["type"] == "Degraded" && c["reason"] == "SeedFailed"), "{degraded:?}");
    api.delete("denied", &DeleteParams::default()).await.unwrap();

    // Re-created under its old name with no prefix: the default prefix is its own, where its backups are.
    eventually("the old s3 cluster's pods to go", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move { member_pods(&pods, "s3").await.is_empty().then_some(()) }
    })
    .await;
    let mut own = bucket.clone();
    own.as_object_mut().unwrap().remove("prefix");
    let from_s3 = serde_json::json!({ "size": 1, "restore": { "storage": { "s3": own } } });
    let seeded = Instant::now();
    api.create(&PostParams::default(), &cluster("s3", from_s3)).await.unwrap();
    let (members, _) = converged(&pods, "s3", 1, &[], Duration::from_secs(120)).await;
    println!(
        "seed straight from S3 (re-created under its old name): 1 member serving {:.1} s after the EtcdCluster",
        seeded.elapsed().as_secs_f64()
    );
    assert_eq!(count_keys(&format!("http://{}:2379", members[0].1), "/s3/").await, 40);
    // `latest` was resolved by the seed's fetch, which reported the backup it verified; status names it.
    let (restored, _) = eventually("status to name the backup read from S3", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let from = status(&api, "s3").await["restoredFrom"].clone();
            (from["revision"].as_i64().unwrap_or(0) > 0).then_some(from)
        }
    })
    .await;
    println!("seed straight from S3: status.restoredFrom = {restored}");
    assert_eq!(restored["source"], format!("s3://{}/{NS}/s3", system_tests::s3::BUCKET), "{restored}");
    assert!(restored["revision"].as_i64().unwrap() >= taken.revision, "the newest backup: {restored}");
    assert!(restored["backup"].as_str().unwrap().starts_with("s3-"), "a backup of the deleted cluster: {restored}");
    assert!(event_reasons(&client).await.contains(&"SeedRestored".to_string()));
    api.delete("s3", &DeleteParams::default()).await.unwrap();
    running.abort();
    drop(minio);
    drop(backups);
}
