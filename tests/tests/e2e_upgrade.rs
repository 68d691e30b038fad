//! End-to-end: rolling upgrades on the test bed, with a writer through the client Service the whole time.
//! 0. every supported version starts with the flags the controller renders for it (one one-member cluster each:
//!    Debian's 3.4, and 3.5, 3.6 and 3.7 built from their Go modules);
//! 1. a three-member cluster created at 3.4 with keys, with backups, then:
//!    - 3.4 -> 3.6 refused (`UpgradeBlocked=SkipsMinor`), nothing restarted;
//!    - 3.4 -> 3.5 with one member not answering (its etcd stopped): the upgrade does not start, and status names
//!      the member; then with the backup storage unwritable: the backup fails, so it does not start either;
//!    - 3.4 -> 3.5, in place (same pods, each container restarted once), followers first and the leader last;
//!    - 3.5 -> 3.4 refused as a downgrade;
//!    - 3.5 -> 3.6 with the controller killed right after it restarted the first member: a new one finishes it;
//!    - 3.6 -> 3.7 with a member not yet upgraded deleted mid-way: it is replaced at the version the cluster runs,
//!      and the upgrade completes.
//!
//! No acknowledged write is lost, every key is there, and the longest gap without an acknowledged write per
//! upgrade is printed, with each step's time.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use controller::plan::Action;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams};
use support::etcd_cluster as object;
use support::{
    Writer, client_service, clusters, condition, converged, eventually, fresh_namespace, host_dir, install_crd,
    local_volume, lost_writes, process_with, status_of as status, stop_after, testbed,
};

const NS: &str = "e2e-upgrade";
const CLUSTER: &str = "up";
const RESYNC: Duration = Duration::from_secs(3);
/// The fewest writes the client Service must acknowledge during each upgrade (the writer does hundreds a second
/// when the cluster serves): with none, a gap bar alone would hold only by its bounds.
const MIN_ACKED: usize = 20;
const V35: &str = "3.5.35";
const V36: &str = "3.6.16";
const V37: &str = "3.7.3";

/// Debian's etcd 3.4, the one the test bed's 3.4 image holds.
fn v34() -> String {
    let out = std::process::Command::new("etcd").arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("etcd Version: ")).unwrap().trim().to_string()
}

async fn set_version(api: &Api<DynamicObject>, version: &str) {
    let patch = serde_json::json!({ "spec": { "version": version } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Member pods: name -> (UID, etcd image, etcd container restarts).
async fn pods_now(pods: &Api<Pod>) -> BTreeMap<String, (String, String, i32)> {
    let selector = format!("kube-etcd-controller.dev/cluster={CLUSTER},kube-etcd-controller.dev/member");
    let listed = pods.list(&ListParams::default().labels(&selector)).await.unwrap().items;
    listed
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let image = p.spec.as_ref().and_then(|s| s.containers[0].image.clone()).unwrap_or_default();
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.iter().find(|c| c.name == "etcd").map(|c| c.restart_count))
                .unwrap_or_default();
            (p.metadata.name.unwrap(), (p.metadata.uid.unwrap(), image, restarts))
        })
        .collect()
}

/// Asserts for `how_long` that no member pod is restarted, replaced or given another image.
async fn nothing_restarted_for(pods: &Api<Pod>, how_long: Duration, what: &str) {
    let before = pods_now(pods).await;
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        assert_eq!(pods_now(pods).await, before, "{what}: no member restarted or changed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The cluster's events (reason, note, time), oldest first.
async fn events(client: &Client) -> Vec<(String, String, k8s_openapi::jiff::Timestamp)> {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    let mut all: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().is_some_and(|r| r.name.as_deref() == Some(CLUSTER)))
        .filter_map(|e| {
            let at = e.event_time.map(|t| t.0).or(e.metadata.creation_timestamp.map(|t| t.0))?;
            Some((e.reason?, e.note.unwrap_or_default(), at))
        })
        .collect();
    all.sort_by_key(|(_, _, at)| *at);
    all
}

/// Waits until the cluster runs `version` everywhere: status says so (current and cluster version, no upgrade
/// record) and three ready voting members answer.
async fn upgraded_to(api: &Api<DynamicObject>, pods: &Api<Pod>, version: &str, limit: Duration) -> Duration {
    let minor = version.rsplit_once('.').unwrap().0.to_string();
    let (_, took) = eventually(&format!("every member on {version}"), limit, || {
        let (api, minor) = (api.clone(), minor.clone());
        async move {
            let status = status(&api, CLUSTER).await;
            let versions = status["serverVersions"].as_object()?;
            let all = versions.len() == 3 && versions.values().all(|v| v == version);
            (all && status["currentVersion"] == version
                && status["clusterVersion"] == format!("{minor}.0")
                && status.get("upgrade").is_none_or(|u| u.is_null()))
            .then_some(())
        }
    })
    .await;
    converged(pods, CLUSTER, 3, &[], Duration::from_secs(60)).await;
    took
}

/// The rollback point the upgrade to `to` left: `status.lastUpgrade` names it, and it is the newest backup the
/// sidecar lists as pinned (retention keeps only the newest pinned one: a later upgrade's pin releases the earlier,
/// which keeps its mark until retention removes it). Returns its name.
async fn rollback_point(client: &Client, api: &Api<DynamicObject>, to: &str) -> String {
    let last = status(api, CLUSTER).await["lastUpgrade"].clone();
    assert_eq!(last["toVersion"], to, "status.lastUpgrade: {last}");
    assert_eq!(last["rollback"], false, "{last}");
    let backup = last["backup"].as_str().unwrap_or_else(|| panic!("status.lastUpgrade names its backup: {last}"));
    let listed = support::list_backups(client, NS, CLUSTER).await;
    let pinned: Vec<&str> = listed.backups.iter().filter(|b| b.pinned.is_some()).map(|b| b.name.as_str()).collect();
    assert_eq!(pinned.first(), Some(&backup), "the pre-upgrade backup is the newest pinned one: {pinned:?}");
    println!("upgrade to {to}: rollback point {backup}, pinned");
    backup.to_string()
}

/// The etcd log of every member pod running now, followed from now until its container stops: what a member logged
/// as it was stopped, read as it was written (the kubelet's copy of a stopped container's log, `--previous`, is not
/// always kept: the dead container may be gone when it is asked for).
struct Followed(BTreeMap<String, std::sync::Arc<std::sync::Mutex<String>>>);

impl Followed {
    async fn start(pods: &Api<Pod>) -> Followed {
        use futures::{AsyncBufReadExt, TryStreamExt};
        let mut logs = BTreeMap::new();
        for name in pods_now(pods).await.into_keys() {
            let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let params =
                LogParams { container: Some("etcd".into()), follow: true, tail_lines: Some(1), ..Default::default() };
            let Ok(stream) = pods.log_stream(&name, &params).await else { continue };
            let into = text.clone();
            tokio::spawn(async move {
                let mut lines = stream.lines();
                while let Ok(Some(line)) = lines.try_next().await {
                    let mut text = into.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
            logs.insert(name, text);
        }
        Followed(logs)
    }
}

/// Whether member `name`'s etcd container that the upgrade stopped was a follower when it was stopped, in etcd's
/// own words: on SIGTERM etcd logs "skipped leadership transfer; local server is not leader" unless it leads (every
/// version from 3.4 to 3.7). Read from the log followed while it ran, else from the kubelet's copy.
async fn stopped_as_follower(pods: &Api<Pod>, followed: &Followed, name: &str) -> bool {
    const SKIPPED: &str = "skipped leadership transfer; local server is not leader";
    if followed.0.get(name).is_some_and(|text| text.lock().unwrap().contains(SKIPPED)) {
        return true;
    }
    let params = LogParams { container: Some("etcd".into()), previous: true, ..Default::default() };
    match pods.logs(name, &params).await {
        Ok(log) => log.contains(SKIPPED),
        Err(e) => {
            let seen = followed.0.get(name).map(|t| t.lock().unwrap().clone()).unwrap_or_default();
            panic!("{name}'s etcd log as it was stopped: neither followed ({} bytes) nor kept: {e}", seen.len())
        }
    }
}

/// The upgrade's member restarts and leader moves since `since`, in order, as the events tell them, and how far
/// apart they came. Asserts, from etcd's own log of each restarted member, that no member was restarted while it
/// led (the leader last, after leadership moved away); with `strict`, also that the member the controller moved
/// leadership from was the last restarted.
async fn upgrade_steps(
    client: &Client,
    since: k8s_openapi::jiff::Timestamp,
    followed: &Followed,
    label: &str,
    strict: bool,
) -> Vec<String> {
    let wanted = ["UpgradeStarted", "MemberUpgrading", "LeaderMoved", "UpgradeCompleted"];
    // The last event comes right after the status write that clears the record.
    eventually(&format!("{label}: the UpgradeCompleted event"), Duration::from_secs(30), || async move {
        events(client).await.iter().any(|(r, _, at)| *at >= since && r == "UpgradeCompleted").then_some(())
    })
    .await;
    let steps: Vec<_> =
        events(client).await.into_iter().filter(|(r, _, at)| *at >= since && wanted.contains(&r.as_str())).collect();
    let mut previous = since;
    let mut restarted = Vec::new();
    let mut moved_from = None;
    for (reason, note, at) in &steps {
        let took = at.duration_since(previous).as_secs_f64();
        previous = *at;
        println!("{label}: +{took:5.1} s {reason}: {note}");
        if reason == "MemberUpgrading" {
            assert!(note.contains("a follower"), "{label}: only followers are restarted in a three-member cluster");
            restarted.push(note.split_whitespace().nth(1).unwrap().trim_end_matches(',').to_string());
        }
        if reason == "LeaderMoved" {
            moved_from = note.split_whitespace().nth(3).map(String::from);
        }
    }
    let total = steps.last().map_or(0.0, |(_, _, at)| at.duration_since(since).as_secs_f64());
    println!("{label}: total {total:.1} s, members restarted in order {restarted:?}");
    match moved_from {
        Some(old_leader) if strict => {
            assert_eq!(restarted.last(), Some(&old_leader), "{label}: the old leader went last")
        }
        Some(old_leader) => println!("{label}: leadership moved from {old_leader}"),
        // Leadership may have moved to an upgraded member on its own (an election): no move was needed.
        None => println!("{label}: leadership was already on an upgraded member when the last one was restarted"),
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for member in &restarted {
        assert!(
            stopped_as_follower(&pods, followed, member).await,
            "{label}: {member} was stopped while it led (its etcd log)"
        );
    }
    println!("{label}: each of {restarted:?} was a follower when stopped, as its etcd logged");
    restarted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrades_from_3_4_to_3_7_lose_no_acknowledged_write() {
    let client = testbed().await;
    install_crd(&client).await;
    fresh_namespace(&client, NS).await;
    let dir = host_dir("upgrade");
    local_volume("kec-e2e-upgrade", dir.path(), NS, "up-backups");
    let api = clusters(&client, NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let v34 = v34();
    let running = support::start_controller(&client, NS, "e2e-upgrade-0", RESYNC, Duration::from_secs(2)).await;

    // 0. Each supported version starts, with its own flags.
    let each = [("v34", v34.clone()), ("v35", V35.into()), ("v36", V36.into()), ("v37", V37.into())];
    for (name, version) in &each {
        api.create(&PostParams::default(), &object(name, serde_json::json!({ "size": 1, "version": version })))
            .await
            .unwrap();
    }
    for (name, version) in &each {
        let (_, took) = eventually(&format!("{name} serving etcd {version}"), Duration::from_secs(120), || {
            let api = api.clone();
            async move {
                let status = status(&api, name).await;
                (status["currentVersion"] == version.as_str() && status["readyMembers"] == 1).then_some(())
            }
        })
        .await;
        let pod = pods.get(&format!("{name}-0000")).await.unwrap();
        let command = pod.spec.unwrap().containers[0].command.clone().unwrap();
        let gates = command.iter().any(|a| a.starts_with("--feature-gates="));
        assert_eq!(gates, !version.starts_with("3.4") && !version.starts_with("3.5"), "{name}: {command:?}");
        println!("etcd {version} serves with the flags rendered for it ({:.1} s)", took.as_secs_f64());
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    // 1. Three members at 3.4, with backups, and keys that must survive every upgrade.
    let spec = serde_json::json!({
        "size": 3,
        "version": v34,
        "backup": { "every": "1h", "storage": { "pvc": { "claimName": "up-backups" } } },
    });
    api.create(&PostParams::default(), &object(CLUSTER, spec)).await.unwrap();
    let (members, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(180)).await;
    println!("create at {v34}: 3 members in {:.1} s", took.as_secs_f64());
    let mut etcd = etcd_client::Client::connect([format!("http://{}:2379", members[0].1)], None).await.unwrap();
    for i in 0..100 {
        etcd.put(format!("/keep/{i:03}"), format!("value {i}"), None).await.unwrap();
    }
    let service = client_service(&client, NS, CLUSTER).await;
    let writer = Writer::start(vec![service.clone()], "/writer/", None);

    // 3.4 -> 3.6 skips a minor: refused, nothing restarted.
    set_version(&api, V36).await;
    let (blocked, _) = eventually("UpgradeBlocked=SkipsMinor", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let c = condition(&status(&api, CLUSTER).await, "UpgradeBlocked");
            (c["status"] == "True" && c["reason"] == "SkipsMinor").then_some(c)
        }
    })
    .await;
    println!("3.4 -> 3.6: {}", blocked["message"]);
    nothing_restarted_for(&pods, Duration::from_secs(8), "3.4 -> 3.6 refused").await;
    assert_eq!(status(&api, CLUSTER).await["currentVersion"], v34.as_str(), "status tells what runs");

    // 3.4 -> 3.5 with one member not answering (its etcd stopped, its pod still Running): it does not start.
    let stopped_member = members[1].0.clone();
    let pid = process_with(&[&format!("--name={stopped_member}"), "--logger=zap"]).to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    set_version(&api, V35).await;
    let (waiting, _) = eventually("the upgrade to wait for the stopped member", Duration::from_secs(60), || {
        let (api, stopped_member) = (api.clone(), stopped_member.clone());
        async move {
            let c = condition(&status(&api, CLUSTER).await, "Progressing");
            (c["reason"] == "UpgradeWaiting" && c["message"].as_str()?.contains(&stopped_member)).then_some(c)
        }
    })
    .await;
    println!("3.4 -> 3.5 with a member down: {}", waiting["message"]);
    nothing_restarted_for(&pods, Duration::from_secs(8), "the upgrade waits for every member").await;
    // With the backup storage unwritable, the backup before the upgrade fails: it does not start either.
    std::process::Command::new("chmod").args(["-R", "0555"]).arg(dir.path()).status().unwrap();
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let (failed, _) = eventually("the upgrade to say its backup failed", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let c = condition(&status(&api, CLUSTER).await, "Progressing");
            (c["reason"] == "UpgradeWaiting" && c["message"].as_str()?.contains("backup")).then_some(c)
        }
    })
    .await;
    println!("3.4 -> 3.5 with the backup failing: {}", failed["message"]);
    nothing_restarted_for(&pods, Duration::from_secs(8), "no upgrade without its backup").await;
    assert!(status(&api, CLUSTER).await.get("upgrade").is_none_or(|u| u.is_null()), "not started");

    // 3.4 -> 3.5, in place, followers first and the leader last.
    let before = pods_now(&pods).await;
    let followed = Followed::start(&pods).await;
    let began = (Instant::now(), k8s_openapi::jiff::Timestamp::now());
    std::process::Command::new("chmod").args(["-R", "0777"]).arg(dir.path()).status().unwrap();
    let took = upgraded_to(&api, &pods, V35, Duration::from_secs(300)).await;
    let window_35 = (began.0, Instant::now());
    println!("3.4 -> 3.5: every member on {V35} {:.1} s after the backup could be written", took.as_secs_f64());
    upgrade_steps(&client, began.1, &followed, "3.4 -> 3.5", true).await;
    let after = pods_now(&pods).await;
    for (name, (uid, image, restarts)) in &after {
        let (old_uid, old_image, old_restarts) = &before[name];
        assert_eq!(uid, old_uid, "{name} upgraded in place, not replaced");
        assert_ne!(image, old_image);
        assert_eq!(*restarts, old_restarts + 1, "{name} restarted once");
    }
    let upgrade_status = status(&api, CLUSTER).await;
    assert!(upgrade_status.get("upgrade").is_none_or(|u| u.is_null()));
    let backups = events(&client).await;
    let started = backups.iter().rev().find(|(r, _, _)| r == "UpgradeStarted").unwrap();
    assert!(started.1.contains("backup up-"), "the pre-upgrade backup is named: {}", started.1);
    let first_pin = rollback_point(&client, &api, "3.5.35").await;
    assert!(started.1.contains(&first_pin), "the backup the upgrade started with is the one kept: {}", started.1);
    assert!(
        backups.iter().any(|(r, n, _)| r == "UpgradeBlocked" && n.contains("skips a minor")),
        "a refused version is told in a Warning event"
    );

    // 3.5 -> 3.4 is a downgrade below the cluster version: refused.
    set_version(&api, &v34).await;
    eventually("UpgradeBlocked=Downgrade", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let c = condition(&status(&api, CLUSTER).await, "UpgradeBlocked");
            (c["status"] == "True" && c["reason"] == "Downgrade").then_some(())
        }
    })
    .await;
    nothing_restarted_for(&pods, Duration::from_secs(6), "a downgrade refused").await;

    // 3.5 -> 3.6 with the controller killed right after its first member restart: another one finishes. (Each
    // controller killed here has its Lease deleted with it, as its expiry would 15 s later: e2e_leader and
    // e2e_nodes time the expiry itself.)
    support::kill_controller(&client, NS, running).await;
    let (hooks, reached) = stop_after(CLUSTER, |a| matches!(a, Action::RollMember { .. }));
    let frozen =
        support::start_controller_with(&client, NS, "e2e-upgrade-1", RESYNC, Duration::from_secs(2), hooks).await;
    let followed = Followed::start(&pods).await;
    let began = (Instant::now(), k8s_openapi::jiff::Timestamp::now());
    set_version(&api, V36).await;
    tokio::time::timeout(Duration::from_secs(180), reached.notified()).await.expect("a member restarted");
    support::kill_controller(&client, NS, frozen).await;
    println!("3.5 -> 3.6: controller killed after its first member restart");
    let running = support::start_controller(&client, NS, "e2e-upgrade-2", RESYNC, Duration::from_secs(2)).await;
    let took = upgraded_to(&api, &pods, V36, Duration::from_secs(300)).await;
    let window_36 = (began.0, Instant::now());
    println!("3.5 -> 3.6: every member on {V36} {:.1} s after the edit (one controller killed)", took.as_secs_f64());
    upgrade_steps(&client, began.1, &followed, "3.5 -> 3.6", true).await;
    let second_pin = rollback_point(&client, &api, "3.6.16").await;
    assert_ne!(second_pin, first_pin, "a later upgrade pins its own backup, which releases the earlier one");

    // 3.6 -> 3.7 with a member not yet upgraded deleted mid-way: replaced at the version the cluster runs.
    let followed = Followed::start(&pods).await;
    let began = (Instant::now(), k8s_openapi::jiff::Timestamp::now());
    set_version(&api, V37).await;
    eventually("the first member restarted for 3.7", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            let now = pods_now(&pods).await;
            now.values().any(|(_, image, _)| image.ends_with(V37)).then_some(())
        }
    })
    .await;
    // A member still on 3.6, deleted as it is (a precondition on its resourceVersion: not one rolled meanwhile).
    let (victim, lowest_left) = loop {
        let listed = pods
            .list(&ListParams::default().labels(&format!("kube-etcd-controller.dev/cluster={CLUSTER}")))
            .await
            .unwrap();
        let candidate = listed.items.iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref().is_some_and(|i| i.ends_with(V36)))
        });
        let Some(candidate) = candidate else { panic!("every member was upgraded before one could be deleted") };
        let name = candidate.metadata.name.clone().unwrap();
        let versions = status(&api, CLUSTER).await["serverVersions"].clone();
        let left: Vec<String> = versions
            .as_object()
            .unwrap()
            .iter()
            .filter(|(member, _)| **member != name)
            .map(|(_, v)| v.as_str().unwrap().to_string())
            .collect();
        let lowest = if left.iter().any(|v| v == V36) { V36 } else { V37 };
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: candidate.metadata.resource_version.clone(),
                uid: None,
            }),
            ..Default::default()
        };
        match pods.delete(&name, &params).await {
            Ok(_) => break (name, lowest),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("deleting {name}: {e}"),
        }
    };
    println!("3.6 -> 3.7: deleted {victim}, not yet upgraded, after the first restart");
    let took = upgraded_to(&api, &pods, V37, Duration::from_secs(300)).await;
    let window_37 = (began.0, Instant::now());
    println!("3.6 -> 3.7: every member on {V37} {:.1} s after the edit (one member replaced)", took.as_secs_f64());
    let replaced = events(&client).await;
    let added = replaced
        .iter()
        .find(|(r, n, at)| *at >= began.1 && r == "MemberAdded" && n.contains("running etcd"))
        .unwrap_or_else(|| panic!("a replacement member: {replaced:?}"));
    println!("3.6 -> 3.7: {}", added.1);
    assert!(
        added.1.ends_with(&format!("running etcd {lowest_left}")),
        "replaced at the lowest version the members left ran ({lowest_left}): {}",
        added.1
    );
    // With a member replaced mid-way, the replacement (a new follower) goes in the order too; the leader-last
    // rule is asserted on the two upgrades above.
    upgrade_steps(&client, began.1, &followed, "3.6 -> 3.7", false).await;

    // No acknowledged write lost, every key there.
    let written = writer.stop();
    let lost = lost_writes(&service, "/writer/", &written).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let keep = support::count_keys(&service, "/keep/").await;
    assert_eq!(keep, 100, "every key written at 3.4 is there");
    for (label, (from, to)) in [("3.4 -> 3.5", window_35), ("3.5 -> 3.6", window_36), ("3.6 -> 3.7", window_37)] {
        let (gap, acked) = (written.longest_gap_within(from, to), written.acked_between(from, to));
        println!(
            "{label}: {acked} writes acknowledged in {:.1} s, longest gap without one {:.2} s",
            (to - from).as_secs_f64(),
            gap.as_secs_f64()
        );
        assert!(acked >= MIN_ACKED, "{label}: only {acked} writes acknowledged during the upgrade");
        assert!(gap < Duration::from_secs(5), "{label}: {gap:?} without a write (the bar is under 5 s)");
    }
    println!(
        "writer: {} of {} writes acknowledged, 0 lost, longest gap overall {:.2} s",
        written.acked.len(),
        written.tried,
        written.longest_gap.as_secs_f64()
    );
    running.abort();
}
