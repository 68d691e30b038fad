//! End-to-end on the test bed's real node: a three-member cluster comes up, serves writes through its client
//! service, heals a deleted member under a new name with every key intact, restarts every member in place when
//! all their etcd processes are killed at once, loses no acknowledged write while members are deleted one at a
//! time under a writer, and goes away with its EtcdCluster.
//! Its backup sidecar can never start (an image that does not exist, a claim that does not exist): that must hold
//! up neither the creation nor the healing, and BackupReady says it is not ready.
//! The controller runs in-process (its library's `run`), watching this test's namespace.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use support::{clusters, converged, eventually, install_crd, ready_members, voters};

const NS: &str = "e2e-lifecycle";
const CLUSTER: &str = "life";
/// The etcd version the test bed has an image of (Debian's).
const VERSION: &str = "3.4.23";
/// This cluster's member pods.
const MEMBERS: &str = "kube-etcd-controller.dev/cluster=life,kube-etcd-controller.dev/member";

async fn client_service(client: &Client) -> String {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let service = services.get(&format!("{CLUSTER}-client")).await.unwrap();
    format!("http://{}:2379", service.spec.unwrap().cluster_ip.unwrap())
}

#[tokio::test]
async fn creates_heals_and_destroys_a_three_member_cluster() {
    let client = support::testbed().await;
    install_crd(&client).await;
    support::fresh_namespace(&client, NS).await;
    let running = support::start_controller(&client, NS, "e2e", Duration::from_secs(5), Duration::from_secs(2)).await;

    let api = clusters(&client, NS);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": CLUSTER },
        "spec": {
            "size": 3,
            "version": VERSION,
            "backup": {
                "sidecarImage": "kec.local/no-such-sidecar:0",
                "storage": { "pvc": { "claimName": "no-such-claim" } },
            },
        },
    }))
    .unwrap();
    let created = Instant::now();
    api.create(&PostParams::default(), &object).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let (members, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(90)).await;
    println!("create: 3 ready voting members {:.1} s after the EtcdCluster (goal: under 30 s)", took.as_secs_f64());
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["life-0000", "life-0001", "life-0002"]);

    // Each membership event names its member, as `kubectl get events` shows it: two learners were added, so two
    // MemberAdded events, one per member (not one series with the first member's message).
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    let (added, _) = eventually("a MemberAdded event per learner", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let listed = events.list(&ListParams::default()).await.unwrap().items;
            let messages: BTreeSet<String> = listed
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("MemberAdded"))
                .filter_map(|e| e.message)
                .collect();
            (messages.len() >= 2).then_some(messages)
        }
    })
    .await;
    for member in ["life-0001", "life-0002"] {
        assert_eq!(added.iter().filter(|m| m.contains(member)).count(), 1, "{member}: {added:?}");
    }

    // Writes through the client service.
    let service = client_service(&client).await;
    let mut etcd = etcd_client::Client::connect([service.as_str()], None).await.unwrap();
    for i in 0..100 {
        etcd.put(format!("/e2e/{i:03}"), format!("value {i}"), None).await.unwrap();
    }

    // Member recovery: delete one member pod; a new member with the next name replaces it.
    pods.delete("life-0001", &DeleteParams::default()).await.unwrap();
    let (healed, took) = eventually("the deleted member to be replaced", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move {
            let ready = ready_members(&pods, CLUSTER).await;
            let names: BTreeSet<String> = ready.iter().map(|(n, _)| n.clone()).collect();
            if !names.contains("life-0003") || names.contains("life-0001") || ready.len() != 3 {
                return None;
            }
            let listed = voters(&format!("http://{}:2379", ready[0].1)).await?;
            (listed == names).then_some(ready)
        }
    })
    .await;
    println!("heal: member replaced {:.1} s after its pod was deleted (goal: under 20 s)", took.as_secs_f64());
    let mut etcd = etcd_client::Client::connect([format!("http://{}:2379", healed[2].1)], None).await.unwrap();
    let count = etcd.get("/e2e/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(count.count(), 100, "every key survived the replacement, read through the new member");

    // Status catches up on a later reconcile: the new member's pod turns Ready (its readiness probe) after etcd
    // lists it healthy, so the status written in between rightly shows it unready; wait for the one that follows.
    let (status, _) = eventually("status Running with three ready members", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let status = api.get(CLUSTER).await.unwrap().data["status"].clone();
            (status["phase"] == "Running" && status["readyMembers"] == 3).then_some(status)
        }
    })
    .await;
    assert_eq!(status["members"]["ready"], serde_json::json!(["life-0000", "life-0002", "life-0003"]));
    let available = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Available").unwrap();
    assert_eq!(available["status"], "True");
    let backup = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "BackupReady").unwrap();
    assert_ne!(backup["status"], "True", "the sidecar never ran: {backup}");
    println!("with a sidecar that cannot start: BackupReady {} ({})", backup["status"], backup["message"]);

    // The etcd process of every member killed at once, as a node-wide OOM kill does: each restarts in place on
    // its data. Same pods (same UIDs), same member names, every key there, and no recovery.
    let uids = |list: Vec<Pod>| -> Vec<(String, String)> {
        list.into_iter().map(|p| (p.metadata.name.unwrap(), p.metadata.uid.unwrap())).collect()
    };
    let before = uids(pods.list(&ListParams::default().labels(MEMBERS)).await.unwrap().items);
    let members: Vec<String> = before.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(members, ["life-0000", "life-0002", "life-0003"]);
    for member in &members {
        support::kill_member_etcd(NS, CLUSTER, member);
    }
    // Restarted, not replaced: the same pods, each etcd container restarted (as the kubelet reports it), all Ready
    // again and listed by etcd.
    let (back, took) = eventually("every member restarted in place and serving", Duration::from_secs(120), || {
        let pods = pods.clone();
        let (members, before) = (members.clone(), before.clone());
        async move {
            let listed = pods.list(&ListParams::default().labels(MEMBERS)).await.unwrap().items;
            let restarted = listed.iter().all(|pod| {
                let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
                statuses.is_some_and(|s| s.iter().any(|c| c.name == "etcd" && c.restart_count >= 1))
            });
            assert_eq!(uids(listed.clone()), before, "the same pods: restarted, not replaced");
            let ready = ready_members(&pods, CLUSTER).await;
            let names: Vec<String> = ready.iter().map(|(n, _)| n.clone()).collect();
            if !restarted || names != members {
                return None;
            }
            let listed = voters(&format!("http://{}:2379", ready[0].1)).await?;
            (listed == names.iter().cloned().collect::<BTreeSet<_>>()).then_some(ready)
        }
    })
    .await;
    println!("every member's etcd killed at once: all serving again {:.1} s later, in place", took.as_secs_f64());
    let mut etcd = etcd_client::Client::connect([format!("http://{}:2379", back[0].1)], None).await.unwrap();
    let count = etcd.get("/e2e/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(count.count(), 100, "every key is on the restarted members' data");
    let status = api.get(CLUSTER).await.unwrap().data["status"].clone();
    assert!(status.get("recovery").is_none_or(|r| r.is_null()), "no recovery was started: {status}");

    // Chaos: a writer through the client Service while member pods are deleted one at a time, each replaced
    // before the next goes. Every write etcd acknowledged is there at the end, and the cluster is at its size.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (service, stop) = (service.clone(), stop.clone());
        async move {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(2));
            let mut client = etcd_client::Client::connect([service.as_str()], Some(options)).await.unwrap();
            let (mut acked, mut tried) = (Vec::new(), 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tried += 1;
                if client.put(format!("/chaos/{tried:08}"), "v", None).await.is_ok() {
                    acked.push(tried);
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (acked, tried)
        }
    });
    let mut members = members.clone();
    for round in 0..4 {
        let victim = members[round % members.len()].clone();
        pods.delete(&victim, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
        let (ready, took) = eventually("the killed member to be replaced", Duration::from_secs(90), || {
            let pods = pods.clone();
            let victim = victim.clone();
            async move {
                let ready = ready_members(&pods, CLUSTER).await;
                if ready.len() != 3 || ready.iter().any(|(n, _)| *n == victim) {
                    return None;
                }
                let listed = voters(&format!("http://{}:2379", ready[0].1)).await?;
                (listed == ready.iter().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>()).then_some(ready)
            }
        })
        .await;
        println!("chaos: {victim} deleted, replaced {:.1} s later", took.as_secs_f64());
        members = ready.into_iter().map(|(n, _)| n).collect();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, tried) = writer.await.unwrap();
    let ready = ready_members(&pods, CLUSTER).await;
    let mut etcd = etcd_client::Client::connect([format!("http://{}:2379", ready[0].1)], None).await.unwrap();
    let stored =
        etcd.get("/chaos/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let stored: BTreeSet<String> =
        stored.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
    let lost: Vec<u64> = acked.iter().copied().filter(|n| !stored.contains(&format!("/chaos/{n:08}"))).collect();
    println!(
        "chaos: 4 members deleted under a writer: {} of {tried} writes acknowledged, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(acked.len() > 100, "the writer got writes through: {} of {tried}", acked.len());
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(ready.len(), 3, "the cluster is at its size");

    // Destroy.
    api.delete(CLUSTER, &DeleteParams::default()).await.unwrap();
    eventually("the member pods to go", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default()).await.unwrap().items.is_empty().then_some(()) }
    })
    .await;
    println!("whole scenario: {:.1} s", created.elapsed().as_secs_f64());
    running.abort();
}

/// A cluster out of space: etcd raises its NOSPACE alarm at the quota the spec sets; status says so (condition
/// `Alarm`, reason NOSPACE, naming the member and what to do), and the member stays Ready, so the reads, deletes
/// and compaction that free space still reach it through the client Service.
#[tokio::test]
async fn a_cluster_out_of_space_says_so_and_stays_in_the_client_service() {
    const NS2: &str = "e2e-nospace";
    const FULL: &str = "full";
    let client = support::testbed().await;
    install_crd(&client).await;
    support::fresh_namespace(&client, NS2).await;
    let running =
        support::start_controller(&client, NS2, "e2e-nospace", Duration::from_secs(5), Duration::from_secs(2)).await;
    let api = clusters(&client, NS2);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": FULL },
        // etcd 3.5 (the default version), whose /health can leave NOSPACE out.
        "spec": { "size": 1, "etcd": { "quotaBackendBytes": 67_108_864 } },
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS2);
    let (members, _) = converged(&pods, FULL, 1, &[], Duration::from_secs(90)).await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS2);
    let service = services.get(&format!("{FULL}-client")).await.unwrap();
    let service = format!("http://{}:2379", service.spec.unwrap().cluster_ip.unwrap());

    // The Service routes to the member once kube-proxy has its endpoint, a moment after the pod is Ready.
    let (mut etcd, _) = eventually("the client Service to route to the member", Duration::from_secs(30), || {
        let service = service.clone();
        async move {
            let mut etcd = etcd_client::Client::connect([service.as_str()], None).await.ok()?;
            etcd.put("/small", "kept", None).await.ok()?;
            Some(etcd)
        }
    })
    .await;
    support::fill_to_quota(&mut etcd).await;

    let (alarm, _) = eventually("the Alarm condition", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let status = api.get(FULL).await.unwrap().data["status"].clone();
            let alarm = status["conditions"].as_array()?.iter().find(|c| c["type"] == "Alarm")?.clone();
            (alarm["status"] == "True").then_some(alarm)
        }
    })
    .await;
    assert_eq!(alarm["reason"], "NOSPACE", "{alarm}");
    let message = alarm["message"].as_str().unwrap();
    assert!(message.contains(&members[0].0) && message.contains("alarm disarm"), "{message}");
    println!("out of space: {message}");
    // Longer than the readiness probe takes to fail (3 × 5 s): the member stays Ready, and reads get through.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(25) {
        assert_eq!(ready_members(&pods, FULL).await.len(), 1, "NOSPACE takes no member out of the client Service");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let read = etcd.get("/small", None).await.unwrap();
    assert_eq!(read.kvs()[0].value(), b"kept", "reads reach the full cluster through the client Service");

    api.delete(FULL, &DeleteParams::default()).await.unwrap();
    running.abort();
    let _ = running.await;
}
