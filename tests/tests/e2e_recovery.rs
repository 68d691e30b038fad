//! End-to-end on the test bed: backup-driven recovery. A three-member cluster with backups on a local PV loses
//! two members (recovered with every key, from a fresh backup of the survivor), then all three (recovered from the
//! newest backup, with exactly the keys it holds); a new cluster is seeded from the first one's backup; a corrupt
//! backup is refused before any etcd runs on it; the manual policy deletes nothing until it is switched; and a
//! controller killed in the middle of a recovery still ends with a healthy cluster; backups on S3 (MinIO) are
//! taken on schedule and on demand, bring a one-member cluster back, and outlive that cluster: a new one is seeded
//! straight from the bucket (no sidecar serves it). The controller runs
//! in-process (its library's `run`), as in the lifecycle test.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use proto::backup::BackupInfo;
use support::{clusters, converged, count_keys, curl, eventually, fresh_namespace, install_crd, local_volume};

const NS: &str = "e2e-recovery";
const CLUSTER: &str = "rec";

fn backups_dir() -> PathBuf {
    PathBuf::from("/var/tmp/kec-e2e-recovery")
}

fn start_controller(instance: &str) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let args = controller::run::RunArgs {
        namespace: Some(NS.into()),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        etcd_timeout: Duration::from_secs(2),
        resync: Duration::from_secs(5),
        instance: instance.into(),
        sidecar_image: controller::run::DEFAULT_SIDECAR_IMAGE.into(),
        leader_elect: true,
        lease_namespace: None,
    };
    tokio::spawn(controller::run::run(args))
}

async fn member_pods(pods: &Api<Pod>, cluster: &str) -> Vec<String> {
    let selector = format!("kube-etcd-controller.dev/cluster={cluster},kube-etcd-controller.dev/member");
    let mut names: Vec<String> =
        pods.list(&ListParams::default().labels(&selector)).await.unwrap().items.iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

async fn put(endpoint: &str, prefix: &str, n: usize) {
    let mut etcd = etcd_client::Client::connect([endpoint], None).await.unwrap();
    for i in 0..n {
        etcd.put(format!("{prefix}{i:03}"), format!("value {i}"), None).await.unwrap();
    }
}

/// Takes a backup of `cluster` through its sidecar's API with curl, as a person would, once the sidecar answers;
/// the backup then appears in the sidecar's list.
async fn take_backup(client: &Client, cluster: &str) -> BackupInfo {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let ((base, auth), _) = eventually("the backup sidecar's service and token", Duration::from_secs(60), || {
        let (services, secrets) = (services.clone(), secrets.clone());
        async move {
            let service = services.get_opt(&format!("{cluster}-backup")).await.unwrap()?;
            let secret = secrets.get_opt(&format!("{cluster}-backup-token")).await.unwrap()?;
            let token = String::from_utf8(secret.data?.get("token")?.0.clone()).ok()?;
            Some((format!("http://{}:19999", service.spec?.cluster_ip?), format!("Authorization: Bearer {token}")))
        }
    })
    .await;
    eventually("the sidecar to be ready", Duration::from_secs(90), || {
        let base = base.clone();
        async move {
            let out = std::process::Command::new("curl").args(["-sf", &format!("{base}/readyz")]).output().ok()?;
            out.status.success().then_some(())
        }
    })
    .await;
    let taken: BackupInfo =
        serde_json::from_str(&curl(&["-X", "POST", "-H", &auth, &format!("{base}/v1/backups")])).unwrap();
    let listed: proto::backup::BackupList =
        serde_json::from_str(&curl(&["-H", &auth, &format!("{base}/v1/backups")])).unwrap();
    assert_eq!(listed.backups.first().map(|b| b.name.as_str()), Some(taken.name.as_str()), "newest first");
    taken
}

async fn status(api: &Api<DynamicObject>, name: &str) -> serde_json::Value {
    api.get(name).await.unwrap().data["status"].clone()
}

async fn event_reasons(client: &Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    events.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect()
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn cluster(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn recovers_lost_quorum_and_seeds_clusters_from_backups() {
    // The in-process controller's log (what it planned and did) goes with the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,controller=info"))
        .with_ansi(false)
        .with_test_writer()
        .try_init();
    let client = Client::try_default().await.expect("KUBECONFIG must point at the test bed (tests/e2e/up.sh)");
    install_crd(&client).await;
    fresh_namespace(&client, NS).await;
    local_volume("kec-e2e-recovery", &backups_dir(), NS, "rec-backups");
    let mut running = start_controller("e2e-recovery-1");

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
    let (copies, _) = converged(&pods, "copy", 1, &[], Duration::from_secs(120)).await;
    println!("seed from a backup: 1 member serving {:.1} s after the EtcdCluster", seeded.elapsed().as_secs_f64());
    assert_eq!(count_keys(&format!("http://{}:2379", copies[0].1), "/rec/").await, 170);
    assert_eq!(member_pods(&pods, CLUSTER).await, before, "the source cluster is untouched");
    let copy_status = status(&api, "copy").await;
    assert_eq!(copy_status["restoredFrom"]["backup"], second.name.as_str(), "{copy_status}");

    // 4. A corrupt backup (one flipped byte in storage) is refused before any etcd runs on it.
    let data = backups_dir().join(CLUSTER).join(format!("{}.db.gz", second.name));
    flip_byte(&data);
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
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(member_pods(&pods, "bad").await, ["bad-0000"], "nothing retried, nothing else created");
    flip_byte(&data);
    api.delete("bad", &DeleteParams::default()).await.unwrap();
    api.delete("copy", &DeleteParams::default()).await.unwrap();

    // 5. Manual policy: quorum lost, nothing deleted, the condition says what a person can do.
    let manual = serde_json::json!({ "spec": { "recovery": { "policy": "Manual", "quorumLossGrace": "10s" } } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&manual)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lost: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    for (name, _) in &members[..2] {
        pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(member_pods(&pods, CLUSTER).await, [lost[2].clone()], "the survivor is kept");
    let s = status(&api, CLUSTER).await;
    assert_eq!(s["phase"], "QuorumLost", "{s}");
    let degraded = s["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap().clone();
    assert!(degraded["message"].as_str().unwrap().contains("Manual"), "{degraded}");

    // 6. Switching to Restore recovers; the controller is killed once the recovery is recorded, and a new one
    //    finishes it from what it observes.
    let fault = Instant::now();
    let restore = serde_json::json!({ "spec": { "recovery": { "policy": "Restore" } } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&restore)).await.unwrap();
    eventually("the recovery to be recorded", Duration::from_secs(60), || {
        let api = api.clone();
        async move { status(&api, CLUSTER).await.get("recovery").map(|_| ()) }
    })
    .await;
    running.abort();
    let _ = running.await;
    println!("controller killed {:.1} s into the recovery", fault.elapsed().as_secs_f64());
    running = start_controller("e2e-recovery-2");
    let (members, _) = converged(&pods, CLUSTER, 3, &lost, Duration::from_secs(180)).await;
    println!(
        "recovery (manual switched to restore, controller killed midway): healthy {:.1} s after the switch",
        fault.elapsed().as_secs_f64()
    );
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
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(member_pods(&pods, "denied").await, ["denied-0000"], "the failed seed is kept, not churned");
    // Then replaced under a new name, and the condition holds while the replacement starts.
    let (_, took) = eventually("the failed seed to be replaced", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { (member_pods(&pods, "denied").await.contains(&"denied-0001".to_string())).then_some(()) }
    })
    .await;
    println!("seed with wrong S3 credentials: replaced {:.1} s after SeedFailed showed", took.as_secs_f64() + 8.0);
    let degraded = status(&api, "denied").await["conditions"].as_array().unwrap().clone();
    assert!(degraded.iter().any(|c| c["type"] == "Degraded" && c["reason"] == "SeedFailed"), "{degraded:?}");
    api.delete("denied", &DeleteParams::default()).await.unwrap();

    let from_s3 = serde_json::json!({ "size": 1, "restore": { "storage": { "s3": bucket } } });
    let seeded = Instant::now();
    api.create(&PostParams::default(), &cluster("from-s3", from_s3)).await.unwrap();
    let (members, _) = converged(&pods, "from-s3", 1, &[], Duration::from_secs(120)).await;
    println!("seed straight from S3: 1 member serving {:.1} s after the EtcdCluster", seeded.elapsed().as_secs_f64());
    assert_eq!(count_keys(&format!("http://{}:2379", members[0].1), "/s3/").await, 40);
    // `latest` was resolved by the seed's fetch, which reported the backup it verified; status names it.
    let (restored, _) = eventually("status to name the backup read from S3", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let from = status(&api, "from-s3").await["restoredFrom"].clone();
            (from["revision"].as_i64().unwrap_or(0) > 0).then_some(from)
        }
    })
    .await;
    println!("seed straight from S3: status.restoredFrom = {restored}");
    assert_eq!(restored["source"], format!("s3://{}/{NS}/s3", system_tests::s3::BUCKET), "{restored}");
    assert!(restored["revision"].as_i64().unwrap() >= taken.revision, "the newest backup: {restored}");
    assert!(restored["backup"].as_str().unwrap().starts_with("s3-"), "a backup of the deleted cluster: {restored}");
    assert!(event_reasons(&client).await.contains(&"SeedRestored".to_string()));
    api.delete("from-s3", &DeleteParams::default()).await.unwrap();
    running.abort();
    drop(minio);
}
