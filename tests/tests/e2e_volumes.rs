//! End-to-end on the three-node test bed, with members on volumes (`spec.storage`, the test bed's default
//! StorageClass: rancher's local-path provisioner, node-pinned volumes), and settings rolled out to running members.
//! In order, on one cluster:
//! 1. three members come up on emptyDirs; `spec.storage` is added under a writer: each member is replaced by one on
//!    its own claim, one at a time, no acknowledged write lost; each bound claim records its etcd member ID;
//! 2. every member pod deleted at once under a writer: the same members (same names, same etcd IDs) come back on
//!    their claims, no acknowledged write is lost, and nothing was restored (the time to three healthy members is
//!    printed);
//! 3. a member's volume made another cluster's (its guard file rewritten on the node's disk) and its pod deleted:
//!    the guard refuses it, status names the claim and why, etcd never starts on it and the member is not
//!    replaced; with the volume put back, the member comes back on it;
//!    then a member's database corrupted on disk (while the guard holds etcd off it): etcd refuses it at every
//!    start, and the member is replaced by a new one on a new claim while the others serve, nothing lost;
//! 4. scaled 3 -> 5 -> 3: each new member gets a new claim; the removed members' claims are deleted
//!    (`whenScaled: Delete`), and no later member reuses a name;
//! 5. `spec.pod.resources` changed under a writer: every member restarted on its claim with them (same etcd IDs),
//!    the leader last, no acknowledged write lost; then the database filled to its 64 MiB quota (NOSPACE) and
//!    `spec.etcd.quotaBackendBytes` raised: rolled to every member, after which the alarm can be disarmed and writes
//!    are taken again;
//! 6. `spec.storage.size` grown on the test bed's class, which does not allow expansion: the claims stay as they
//!    are and `ConfigDrift` says why; a smaller size is refused by the API server;
//! 7. another `storageClassName` under a writer: each member replaced, one at a time, by a new member on a claim of
//!    that class (with the grown size), the old claims deleted, no acknowledged write lost;
//! 8. the EtcdCluster deleted (`whenDeleted: Retain`): the claims stay; created again under the same name, it is
//!    refused (the retained claims belong to the earlier cluster), nothing starts, and status says why.
//!
//! The controller runs in-process (its library's `run`) with the permissions the install grants.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use support::{Writer, client_service, clusters, converged, eventually, install_crd, lost_writes};

const NS: &str = "e2e-volumes";
const CLUSTER: &str = "vol";
const CLAIMS: &str = "kube-etcd-controller.dev/cluster=vol,kube-etcd-controller.dev/member";
/// etcd's smallest quota the spec allows (64 MiB): filled in seconds.
const QUOTA: i64 = 67_108_864;

/// Patches the cluster's spec, then waits until status describes that spec (its generation), `ConfigDrift` is
/// False (every member pod runs the settings it renders) and the three member pods carry one settings hash; returns
/// how long that took.
async fn rolled_out(
    api: &Api<DynamicObject>,
    pods: &Api<Pod>,
    patch: serde_json::Value,
    what: &str,
    limit: Duration,
) -> Duration {
    let patched = api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    let generation = patched.metadata.generation.unwrap();
    let (_, took) = eventually(what, limit, || {
        let (api, pods) = (api.clone(), pods.clone());
        async move {
            let status = status(&api).await;
            if status["observedGeneration"].as_i64()? < generation {
                return None;
            }
            let drift = condition(&status, "ConfigDrift");
            let listed = pods.list(&ListParams::default().labels(CLAIMS)).await.ok()?.items;
            let hashes: std::collections::BTreeSet<String> = listed
                .iter()
                .filter_map(|p| p.metadata.annotations.as_ref()?.get("kube-etcd-controller.dev/settings-hash").cloned())
                .collect();
            (drift["status"] == "False" && hashes.len() == 1 && listed.len() == 3).then_some(())
        }
    })
    .await;
    took
}

fn object() -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": CLUSTER },
        "spec": { "size": 3, "etcd": { "quotaBackendBytes": QUOTA } },
    }))
    .unwrap()
}

/// etcd's member list as one member tells it: name to ID.
async fn member_ids(endpoint: &str) -> Option<BTreeMap<String, u64>> {
    let mut etcd = etcd_client::Client::connect([endpoint], None).await.ok()?;
    let listed = etcd.member_list().await.ok()?;
    Some(listed.members().iter().map(|m| (m.name().to_string(), m.id())).collect())
}

/// The member claims: name to (phase, recorded member ID, deleting).
async fn claims(api: &Api<PersistentVolumeClaim>) -> BTreeMap<String, (String, Option<String>, bool)> {
    let listed = api.list(&ListParams::default().labels(CLAIMS)).await.unwrap().items;
    listed
        .into_iter()
        .map(|c| {
            let id = c.metadata.annotations.as_ref().and_then(|a| a.get("kube-etcd-controller.dev/member-id").cloned());
            let phase = c.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            let deleting = c.metadata.deletion_timestamp.is_some();
            (c.metadata.name.unwrap(), (phase, id, deleting))
        })
        .collect()
}

async fn status(api: &Api<DynamicObject>) -> serde_json::Value {
    api.get(CLUSTER).await.unwrap().data["status"].clone()
}

fn condition(status: &serde_json::Value, kind: &str) -> serde_json::Value {
    status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == kind).cloned()).unwrap_or_default()
}

/// Where the volume bound to `claim` lives on this machine (the provisioner's directory on its node's disk).
async fn volume_dir(client: &kube::Client, claims: &Api<PersistentVolumeClaim>, claim: &str) -> std::path::PathBuf {
    let volume = claims.get(claim).await.unwrap().spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&volume).await.unwrap().spec.unwrap();
    let path = pv.host_path.map(|h| h.path).or(pv.local.map(|l| l.path)).expect("a hostPath or local volume");
    std::path::PathBuf::from(path)
}

#[tokio::test]
async fn members_on_volumes_come_back_as_themselves_and_volumes_are_guarded() {
    let client = support::testbed().await;
    install_crd(&client).await;
    support::fresh_namespace(&client, NS).await;
    let _controller =
        support::start_controller(&client, NS, "e2e-volumes", Duration::from_secs(5), Duration::from_secs(2)).await;
    let api = clusters(&client, NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);

    // 1. Three members on emptyDirs, moved onto claims under a writer, then each on its own bound claim recording
    // its member ID.
    api.create(&PostParams::default(), &object()).await.unwrap();
    let (members, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(120)).await;
    println!("create on emptyDirs: 3 ready voting members in {:.1} s", took.as_secs_f64());
    let service = client_service(&client, NS, CLUSTER).await;
    let writer = Writer::start(vec![service.clone()], "/volumes/migrate/", None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let storage = serde_json::json!({ "spec": { "storage": { "size": "256Mi" } } });
    let took = rolled_out(&api, &pods, storage, "every member moved onto a claim", Duration::from_secs(300)).await;
    let gone: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
    let (members, _) = converged(&pods, CLUSTER, 3, &gone, Duration::from_secs(60)).await;
    let written = writer.stop();
    println!(
        "spec.storage added: every member replaced by one on a claim in {:.1} s; {} writes acknowledged, longest gap \
         {:.1} s",
        took.as_secs_f64(),
        written.acked.len(),
        written.longest_gap.as_secs_f64()
    );
    let endpoint = format!("http://{}:2379", members[0].1);
    let lost = lost_writes(&endpoint, "/volumes/migrate/", &written).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost moving onto claims", lost.len());
    let ids = member_ids(&endpoint).await.unwrap();
    let (recorded, _) = eventually("every claim Bound and recording its member ID", Duration::from_secs(60), || {
        let pvcs = pvcs.clone();
        let ids = ids.clone();
        async move {
            let claims = claims(&pvcs).await;
            let recorded: BTreeMap<String, u64> = claims
                .iter()
                .filter(|(_, (phase, _, _))| phase == "Bound")
                .filter_map(|(name, (_, id, _))| Some((name.clone(), u64::from_str_radix(id.as_ref()?, 16).ok()?)))
                .collect();
            let wanted: BTreeMap<String, u64> = ids.iter().map(|(m, id)| (format!("data-{m}"), *id)).collect();
            (recorded == wanted && claims.len() == 3).then_some(recorded)
        }
    })
    .await;
    println!("claims: {recorded:x?}");
    let nodes: std::collections::BTreeSet<String> = {
        let listed = pods.list(&ListParams::default().labels(CLAIMS)).await.unwrap().items;
        listed.into_iter().filter_map(|p| p.spec?.node_name).collect()
    };
    assert_eq!(nodes.len(), 3, "one member per node: {nodes:?}");

    // 2. Every member pod deleted at once, under a writer.
    let writer = Writer::start(vec![service.clone()], "/volumes/all-pods/", None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let uids: Vec<String> = pods
        .list(&ListParams::default().labels(CLAIMS))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.uid.unwrap())
        .collect();
    let deleted = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels(CLAIMS)).await.unwrap();
    let (back, _) = eventually("the same three members back on new pods", Duration::from_secs(180), || {
        let pods = pods.clone();
        let uids = uids.clone();
        async move {
            let ready = support::converged_now(&pods, CLUSTER, 3, &[]).await?;
            let listed = pods.list(&ListParams::default().labels(CLAIMS)).await.ok()?.items;
            listed.iter().all(|p| !uids.contains(p.metadata.uid.as_ref().unwrap())).then_some(ready)
        }
    })
    .await;
    let took = deleted.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = writer.stop();
    println!(
        "every member pod deleted: the same members serve again {:.1} s later (goal: under 20 s); {} writes \
         acknowledged, longest gap {:.1} s",
        took.as_secs_f64(),
        written.acked.len(),
        written.longest_gap.as_secs_f64()
    );
    let endpoint = format!("http://{}:2379", back[0].1);
    assert_eq!(member_ids(&endpoint).await.unwrap(), ids, "the same members, with the same etcd IDs");
    let lost = lost_writes(&endpoint, "/volumes/all-pods/", &written).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost: {:?}", lost.len(), &lost[..lost.len().min(10)]);
    assert!(written.acked_since(deleted + took) > 0, "the writer wrote again after the members came back");
    let now = status(&api).await;
    assert!(now["restoredFrom"].is_null() && now["recovery"].is_null(), "nothing was restored: {now}");

    // 3. A volume made another cluster's: refused by the guard, named in status, nothing started, not replaced.
    let victim = back[2].0.clone();
    let claim = format!("data-{victim}");
    let guard = volume_dir(&client, &pvcs, &claim).await.join(proto::backup::GUARD_FILE);
    let original = std::fs::read(&guard).expect("the guard file on the volume");
    let mut foreign: proto::backup::VolumeGuard = serde_json::from_slice(&original).unwrap();
    foreign.cluster_uid = "another-cluster-uid".into();
    foreign.cluster = "elsewhere/other".into();
    std::fs::write(&guard, serde_json::to_vec(&foreign).unwrap()).unwrap();
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    let (refused, _) = eventually("status to name the refused claim", Duration::from_secs(120), || {
        let api = api.clone();
        let claim = claim.clone();
        async move {
            let status = status(&api).await;
            let degraded = condition(&status, "Degraded");
            let named = status["claims"].as_array()?.iter().find(|c| c["claim"] == claim.as_str())?.clone();
            (degraded["reason"] == "VolumeRefused" && named["refused"].is_string()).then_some((degraded, named))
        }
    })
    .await;
    println!("refused: {} / {}", refused.0["message"], refused.1);
    assert!(refused.1["refused"].as_str().unwrap().contains("elsewhere/other"), "{}", refused.1);
    // The member stays in etcd, on its claim: nothing replaced it, and etcd never ran there.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let listed = member_ids(&endpoint).await.unwrap();
    assert_eq!(listed, ids, "the member is neither removed nor replaced");
    let pod = pods.get(&victim).await.unwrap();
    let etcd_started = pod.status.and_then(|s| s.container_statuses).into_iter().flatten().any(|c| {
        c.name == "etcd"
            && (c.state.is_some_and(|s| s.running.is_some()) || c.last_state.is_some_and(|s| s.terminated.is_some()))
    });
    assert!(!etcd_started, "etcd never started on a refused volume");
    std::fs::write(&guard, &original).unwrap();
    let (_, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(180)).await;
    println!("with its own volume back, {victim} serves again after {:.1} s", took.as_secs_f64());
    assert_eq!(member_ids(&endpoint).await.unwrap(), ids);

    // 3b. A member's data corrupted on disk: while its guard holds etcd off the volume (the same trick as above),
    // both meta pages of its bbolt database are overwritten; with the guard put back, etcd refuses the data at
    // every start. The member is replaced (removed, a new member on a new claim) while the others serve a writer.
    let writer = Writer::start(vec![service.clone()], "/volumes/corrupt/", None);
    let victim = back[1].0.clone();
    let claim = format!("data-{victim}");
    let volume = volume_dir(&client, &pvcs, &claim).await;
    let guard = volume.join(proto::backup::GUARD_FILE);
    let original = std::fs::read(&guard).expect("the guard file on the volume");
    let mut foreign: proto::backup::VolumeGuard = serde_json::from_slice(&original).unwrap();
    foreign.cluster_uid = "another-cluster-uid".into();
    std::fs::write(&guard, serde_json::to_vec(&foreign).unwrap()).unwrap();
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    eventually("the guard to hold etcd off the volume", Duration::from_secs(120), || {
        let api = api.clone();
        let claim = claim.clone();
        async move {
            let status = status(&api).await;
            status["claims"]
                .as_array()?
                .iter()
                .any(|c| c["claim"] == claim.as_str() && c["refused"].is_string())
                .then_some(())
        }
    })
    .await;
    let db = volume.join("data/member/snap/db");
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&db).expect("the member's database on its volume");
        // Both meta pages, whatever the page size (4 KiB here; up to 64 KiB elsewhere).
        file.write_all_at(&[0xa5; 128 * 1024], 0).unwrap();
    }
    std::fs::write(&guard, &original).unwrap();
    let corrupted = Instant::now();
    let (replaced, _) = eventually("the member with corrupt data replaced", Duration::from_secs(400), || {
        let (pods, victim) = (pods.clone(), victim.clone());
        async move {
            let ready = support::converged_now(&pods, CLUSTER, 3, &[]).await?;
            (!ready.iter().any(|(name, _)| name == &victim)).then_some(ready)
        }
    })
    .await;
    let written = writer.stop();
    println!(
        "{victim}'s database corrupted on disk: replaced by {:?} {:.1} s after etcd first met it; {} writes \
         acknowledged, longest gap {:.1} s",
        replaced.iter().map(|(n, _)| n.as_str()).filter(|n| !ids.contains_key(*n)).collect::<Vec<_>>(),
        corrupted.elapsed().as_secs_f64(),
        written.acked.len(),
        written.longest_gap.as_secs_f64()
    );
    let endpoint = format!("http://{}:2379", replaced[0].1);
    let lost = lost_writes(&endpoint, "/volumes/corrupt/", &written).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost replacing a corrupt member", lost.len());
    let ids = member_ids(&endpoint).await.unwrap();
    assert!(!ids.contains_key(&victim), "the corrupt member is out of etcd: {ids:x?}");
    eventually("the corrupt member's claim deleted (whenScaled: Delete)", Duration::from_secs(120), || {
        let (pvcs, claim) = (pvcs.clone(), claim.clone());
        async move { (!claims(&pvcs).await.contains_key(&claim)).then_some(()) }
    })
    .await;

    // 4. Scaled to five, then back to three: new members on new claims; removed members' claims deleted.
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": { "size": 5 } })))
        .await
        .unwrap();
    let (five, took) = converged(&pods, CLUSTER, 5, &[], Duration::from_secs(240)).await;
    println!("grown to 5 on volumes in {:.1} s", took.as_secs_f64());
    let grown: Vec<String> = five.iter().map(|(n, _)| n.clone()).filter(|n| !ids.contains_key(n)).collect();
    assert_eq!(grown.len(), 2, "{five:?}");
    let with_five = claims(&pvcs).await;
    for member in &grown {
        assert!(with_five.contains_key(&format!("data-{member}")), "{member} has its claim: {with_five:?}");
    }
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": { "size": 3 } })))
        .await
        .unwrap();
    let (three, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(180)).await;
    println!("shrunk to 3 in {:.1} s", took.as_secs_f64());
    let removed: Vec<String> =
        five.iter().map(|(n, _)| n.clone()).filter(|n| !three.iter().any(|(m, _)| m == n)).collect();
    assert_eq!(removed.len(), 2);
    eventually("the removed members' claims deleted", Duration::from_secs(120), || {
        let pvcs = pvcs.clone();
        let removed = removed.clone();
        async move {
            let claims = claims(&pvcs).await;
            removed.iter().all(|m| !claims.contains_key(&format!("data-{m}"))).then_some(())
        }
    })
    .await;
    let names: Vec<String> = three.iter().map(|(n, _)| n.clone()).collect();
    let highest = five.iter().map(|(n, _)| n.clone()).max().unwrap();
    assert!(names.iter().all(|n| n <= &highest), "no name reused or made anew: {names:?}");

    // 5. Resources changed under a writer: every member restarted on its claim with them, as the same member.
    let endpoint = format!("http://{}:2379", three[0].1);
    let ids = member_ids(&endpoint).await.unwrap();
    let writer = Writer::start(vec![service.clone()], "/volumes/resources/", None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resources =
        serde_json::json!({ "spec": { "pod": { "resources": { "requests": { "cpu": "150m", "memory": "96Mi" } } } } });
    let took = rolled_out(&api, &pods, resources, "the new resources rolled out", Duration::from_secs(300)).await;
    let (back, _) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(60)).await;
    let written = writer.stop();
    println!(
        "spec.pod.resources rolled to every member in {:.1} s; {} writes acknowledged, longest gap {:.1} s",
        took.as_secs_f64(),
        written.acked.len(),
        written.longest_gap.as_secs_f64()
    );
    for pod in pods.list(&ListParams::default().labels(CLAIMS)).await.unwrap() {
        let etcd = pod.spec.unwrap().containers.into_iter().find(|c| c.name == "etcd").unwrap();
        let requests = etcd.resources.unwrap().requests.unwrap();
        assert_eq!(requests["cpu"].0, "150m", "{:?} runs the new resources", pod.metadata.name);
    }
    let endpoint = format!("http://{}:2379", back[0].1);
    assert_eq!(member_ids(&endpoint).await.unwrap(), ids, "restarted on their claims: the same members");
    let lost = lost_writes(&endpoint, "/volumes/resources/", &written).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost rolling resources", lost.len());

    // The database filled to its quota: NOSPACE. The quota raised: rolled to every member, then the alarm can be
    // disarmed and writes are taken again.
    let mut etcd = etcd_client::Client::connect([service.as_str()], None).await.unwrap();
    support::fill_to_quota(&mut etcd).await;
    eventually("the NOSPACE alarm in status", Duration::from_secs(60), || {
        let api = api.clone();
        async move { (condition(&status(&api).await, "Alarm")["reason"] == "NOSPACE").then_some(()) }
    })
    .await;
    let quota = serde_json::json!({ "spec": { "etcd": { "quotaBackendBytes": 4 * QUOTA } } });
    let took =
        rolled_out(&api, &pods, quota, "the raised quota rolled out under NOSPACE", Duration::from_secs(300)).await;
    println!("quotaBackendBytes raised on a cluster in NOSPACE: rolled to every member in {:.1} s", took.as_secs_f64());
    for pod in pods.list(&ListParams::default().labels(CLAIMS)).await.unwrap() {
        let command = pod.spec.unwrap().containers.into_iter().find(|c| c.name == "etcd").unwrap().command.unwrap();
        assert!(command.contains(&format!("--quota-backend-bytes={}", 4 * QUOTA)), "{command:?}");
    }
    let (back, _) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(60)).await;
    let endpoint = format!("http://{}:2379", back[0].1);
    assert_eq!(member_ids(&endpoint).await.unwrap(), ids);
    let (_, _) = eventually("the alarm disarmed and a write taken", Duration::from_secs(60), || {
        let endpoint = endpoint.clone();
        async move {
            // As `etcdctl alarm disarm` does it: each raised alarm deactivated for its member.
            let mut etcd = etcd_client::Client::connect([endpoint.as_str()], None).await.ok()?;
            let raised = etcd.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.ok()?;
            for alarm in raised.alarms() {
                let mut disarm = etcd_client::AlarmOptions::new();
                disarm.with_member(alarm.member_id());
                etcd.alarm(etcd_client::AlarmAction::Deactivate, alarm.alarm(), Some(disarm)).await.ok()?;
            }
            etcd.put("/after-quota", "taken", None).await.ok()
        }
    })
    .await;

    // 6. spec.storage.size grown on a class that does not allow expansion (the test bed's local-path): the claims
    // stay as they are, and ConfigDrift says why; shrinking is refused by the API server.
    let grown = serde_json::json!({ "spec": { "storage": { "size": "512Mi" } } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(grown)).await.unwrap();
    let (drift, _) = eventually("ConfigDrift to say the claims cannot grow", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let drift = condition(&status(&api).await, "ConfigDrift");
            (drift["reason"] == "VolumeExpansionNotAllowed").then(|| drift["message"].as_str().unwrap().to_string())
        }
    })
    .await;
    println!("spec.storage.size grown on local-path: {drift}");
    assert!(drift.contains("storage class local-path does not allow"), "{drift}");
    for claim in status(&api).await["claims"].as_array().unwrap() {
        assert_eq!((claim["requested"].as_str(), claim["storageClass"].as_str()), (Some("256Mi"), Some("local-path")));
    }
    let shrink = serde_json::json!({ "spec": { "storage": { "size": "128Mi" } } });
    let refused = api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(shrink)).await.unwrap_err();
    assert!(refused.to_string().contains("cannot shrink"), "{refused}");

    // 7. Another storage class named, under a writer: each member replaced, one at a time, by one on a claim of that
    // class (with the grown size); the old claims deleted (whenScaled: Delete); no acknowledged write lost.
    support::kubectl_with_input(
        &["apply", "-f", "-"],
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: { name: kec-local-b }\n\
         provisioner: rancher.io/local-path\nvolumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Delete\n",
    );
    let writer = Writer::start(vec![service.clone()], "/volumes/class/", None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let class = serde_json::json!({ "spec": { "storage": { "storageClassName": "kec-local-b" } } });
    let took =
        rolled_out(&api, &pods, class, "every member moved onto a claim of kec-local-b", Duration::from_secs(400))
            .await;
    let (moved, _) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(120)).await;
    let (_, settled) = eventually("three claims, all of kec-local-b", Duration::from_secs(120), || {
        let pvcs = pvcs.clone();
        async move {
            let listed = pvcs.list(&ListParams::default().labels(CLAIMS)).await.ok()?.items;
            let classes: Vec<(Option<String>, Option<String>)> = listed
                .iter()
                .map(|c| {
                    let spec = c.spec.as_ref().unwrap();
                    let asked = spec.resources.as_ref()?.requests.as_ref()?.get("storage").map(|q| q.0.clone());
                    Some((spec.storage_class_name.clone(), asked))
                })
                .collect::<Option<_>>()?;
            (classes.len() == 3 && classes.iter().all(|c| c.0.as_deref() == Some("kec-local-b"))).then_some(classes)
        }
    })
    .await;
    let written = writer.stop();
    println!(
        "storageClassName changed: every member replaced onto a claim of the new class in {:.1} s (+{:.1} s for the \
         old claims to go); {} writes acknowledged, longest gap {:.1} s",
        took.as_secs_f64(),
        settled.as_secs_f64(),
        written.acked.len(),
        written.longest_gap.as_secs_f64()
    );
    for claim in claims(&pvcs).await.values() {
        assert_eq!(claim.0, "Bound");
    }
    let listed = pvcs.list(&ListParams::default().labels(CLAIMS)).await.unwrap().items;
    for claim in &listed {
        let asked = &claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"];
        assert_eq!(asked.0, "512Mi", "a new claim gets the grown size");
    }
    let endpoint = format!("http://{}:2379", moved[0].1);
    let now = member_ids(&endpoint).await.unwrap();
    assert!(now.values().all(|id| !ids.values().any(|old| old == id)), "every member is new: {now:x?} / {ids:x?}");
    let lost = lost_writes(&endpoint, "/volumes/class/", &written).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost moving to another class", lost.len());
    assert_eq!(condition(&status(&api).await, "ConfigDrift")["status"], "False");

    // 8. Deleted with whenDeleted: Retain: the claims stay; the same name again is refused, and says why.
    let kept: Vec<String> = claims(&pvcs).await.into_keys().collect();
    assert_eq!(kept.len(), 3);
    api.delete(CLUSTER, &DeleteParams::default()).await.unwrap();
    eventually("the member pods gone with their cluster", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default().labels(CLAIMS)).await.unwrap().items.is_empty().then_some(()) }
    })
    .await;
    eventually("the cluster object gone", Duration::from_secs(60), || {
        let api = api.clone();
        async move { api.get_opt(CLUSTER).await.unwrap().is_none().then_some(()) }
    })
    .await;
    let retained: Vec<String> = claims(&pvcs).await.into_keys().collect();
    assert_eq!(retained, kept, "whenDeleted: Retain keeps every claim");
    // The same name again: not started beside (nor on) the claims the earlier cluster left.
    let mut again = object();
    again.data["spec"]["size"] = serde_json::json!(1);
    api.create(&PostParams::default(), &again).await.unwrap();
    let (refusal, _) = eventually("the new cluster refused or started", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let status = api.get(CLUSTER).await.ok()?.data["status"].clone();
            let degraded = condition(&status, "Degraded");
            (degraded["reason"] == "Refused").then_some(degraded["message"].as_str().unwrap_or("").to_string())
        }
    })
    .await;
    println!("created again under the same name: {refusal}");
    assert!(refusal.contains("earlier cluster"), "{refusal}");
    assert!(pods.list(&ListParams::default().labels(CLAIMS)).await.unwrap().items.is_empty(), "nothing started");
    api.delete(CLUSTER, &DeleteParams::default()).await.unwrap();
    pvcs.delete_collection(&DeleteParams::default(), &ListParams::default().labels(CLAIMS)).await.unwrap();
    support::kubectl(&["delete", "storageclass", "kec-local-b", "--ignore-not-found"]);
}
