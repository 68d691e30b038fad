//! The controller's membership layer against real multi-member etcd clusters: grow through a learner, replace a
//! dead member, shrink leader-last, and pick up a membership change the controller died in the middle of.

use std::time::Duration;

use controller::dial::Dial;
use controller::membership::{Listed, Membership, MembershipError};
use controller::observe::{EtcdView, Member, MemberPod, Observed, PodState};
use controller::plan::{Action, Desired, Recovery, WantedEtcd, plan};
use controller::pod::Release;
use system_tests::etcd_cluster::LocalCluster;

const TIMEOUT: Duration = Duration::from_secs(2);

/// What a spec of `size` members asks for, at the default version (the members' own, whatever it is, is what
/// new members get).
fn desired(size: u32) -> Desired {
    Desired {
        size,
        paused: false,
        recovery: Recovery::NoBackups,
        etcd: WantedEtcd::new("quay.io/coreos/etcd", proto::cluster::DEFAULT_ETCD_VERSION),
        backups: false,
        storage: None,
        storage_size: None,
        storage_class: None,
        settings: None,
        peer_tls: false,
    }
}

async fn connect(cluster: &LocalCluster) -> Membership {
    Membership::connect(&cluster.endpoints(), &Dial::plain(TIMEOUT)).await.unwrap()
}

/// Names members by their peer URL, as pod names come from peer URLs in Kubernetes.
async fn observe(cluster: &LocalCluster) -> Vec<Member> {
    let mut membership = connect(cluster).await;
    let name_of = |listed: &Listed| cluster.name_of_peer(&listed.peer_urls[0]).unwrap_or_else(|| "unknown".into());
    let url_of = |listed: &Listed, _: &str| listed.client_urls.first().cloned();
    membership.observe(name_of, url_of).await.unwrap()
}

async fn put_keys(cluster: &LocalCluster, count: usize) {
    let mut client = cluster.client().await.unwrap();
    for i in 0..count {
        client.put(format!("/data/{i:04}"), format!("value {i}"), None).await.unwrap();
    }
}

/// Reads every key back through one member only.
async fn keys_via(client_url: &str) -> usize {
    let mut client = etcd_client::Client::connect([client_url], None).await.unwrap();
    let options = etcd_client::GetOptions::new().with_prefix().with_count_only();
    client.get("/data/", Some(options)).await.unwrap().count() as usize
}

/// Retries a membership change while etcd says it is not ready for one yet (its leader must have been connected
/// to every voter for a few seconds), as the controller requeues it.
async fn retrying<T, F, Fut>(cluster: &LocalCluster, mut change: F) -> T
where
    F: FnMut(Membership) -> Fut,
    Fut: std::future::Future<Output = Result<T, MembershipError>>,
{
    for _ in 0..150 {
        match change(connect(cluster).await).await {
            Ok(value) => return value,
            Err(MembershipError::NotReady { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => panic!("membership change failed: {other}"),
        }
    }
    panic!("etcd was never ready for the change");
}

async fn add_learner(cluster: &LocalCluster, peer: &str) -> u64 {
    retrying(cluster, |mut m| {
        let peer = peer.to_string();
        async move { m.add_learner(&peer).await }
    })
    .await
}

async fn remove(cluster: &LocalCluster, id: u64) {
    retrying(cluster, |mut m| async move { m.remove(id).await }).await
}

/// Promotes `id`, waiting while etcd says the learner is not caught up.
async fn promote_when_ready(cluster: &LocalCluster, id: u64) {
    for _ in 0..100 {
        match connect(cluster).await.promote(id).await {
            Ok(()) => return,
            Err(MembershipError::NotCaughtUp(_) | MembershipError::NotReady { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(other) => panic!("promote failed: {other}"),
        }
    }
    panic!("the learner never caught up");
}

/// Adds member `name` as a learner, starts it, promotes it.
async fn grow(cluster: &mut LocalCluster, name: &str) -> u64 {
    let (name, peer, client) = cluster.reserve(name);
    let id = add_learner(cluster, &peer).await;
    let mut initial: Vec<String> =
        cluster.members.iter().filter(|m| m.alive()).map(|m| format!("{}={}", m.name, m.peer_url)).collect();
    initial.push(format!("{name}={peer}"));
    cluster.join(&name, &peer, &client, &initial.join(",")).await.unwrap();
    promote_when_ready(cluster, id).await;
    id
}

#[tokio::test]
async fn grows_through_a_learner_that_is_promoted_once_it_runs() {
    let mut cluster = LocalCluster::start(1).await.unwrap();
    put_keys(&cluster, 100).await;

    let (name, peer, client) = cluster.reserve("m1");
    let id = add_learner(&cluster, &peer).await;
    let members = observe(&cluster).await;
    let learner = members.iter().find(|m| m.id == id).unwrap();
    assert!(learner.learner && !learner.started && !learner.healthy, "{learner:?}");

    // etcd refuses to promote a learner that is not running: the layer says to wait.
    let refused = connect(&cluster).await.promote(id).await.unwrap_err();
    assert!(matches!(refused, MembershipError::NotCaughtUp(_)), "{refused}");

    let initial = format!("m0={},{name}={peer}", cluster.members[0].peer_url);
    cluster.join(&name, &peer, &client, &initial).await.unwrap();
    promote_when_ready(&cluster, id).await;

    let members = observe(&cluster).await;
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| !m.learner && m.started && m.healthy), "{members:?}");
    assert_eq!(members.iter().filter(|m| m.leader).count(), 1);
    assert_eq!(keys_via(&client).await, 100, "the new member holds the data written before it joined");
}

#[tokio::test]
async fn survivors_are_ordered_by_what_they_committed_and_a_silent_one_comes_last() {
    let mut cluster = LocalCluster::start(3).await.unwrap();
    let all = cluster.endpoints();
    put_keys(&cluster, 20).await;
    cluster.kill("m1");
    // A dead endpoint listed first still comes last; the live ones report the index their writes reached.
    let listed = vec![all[1].clone(), all[0].clone(), all[2].clone()];
    let ordered = controller::membership::by_progress(&listed, &Dial::plain(TIMEOUT)).await;
    assert_eq!(ordered.last().unwrap(), &(all[1].clone(), None), "{ordered:?}");
    for (endpoint, index) in &ordered[..2] {
        assert!(index.is_some_and(|i| i >= 20), "{endpoint} committed the 20 writes: {ordered:?}");
    }
}

#[tokio::test]
async fn a_dead_member_is_removed_and_replaced_with_the_data_intact() {
    let mut cluster = LocalCluster::start(3).await.unwrap();
    put_keys(&cluster, 50).await;
    cluster.kill("m2");

    let members = observe(&cluster).await;
    let dead = members.iter().find(|m| m.name == "m2").unwrap();
    assert!(!dead.healthy && dead.started);
    // The planner, given the pod as gone, removes the dead member first.
    let observed = Observed {
        cluster: "m".into(),
        seeded: true,
        next_index: 3,
        pods: ["m0", "m1"].map(|n| MemberPod::new(n, PodState::Running { ready: true })).into(),
        etcd: EtcdView::Members(members.clone()),
        recovering: None,
        recovery_untouched: false,
        lost_for: None,
        refusal: None,
        restored: None,
        failure: None,
        stuck: None,
        alarms: vec![],
        alarms_read: true,
        cluster_version: None,
        upgrade: None,
        claims: Vec::new(),
        current_version: None,
        wanted_class_exists: None,
        certificates: Vec::new(),
        trust: Default::default(),
    };
    let action = plan(&desired(3), &observed);
    assert!(matches!(action, Action::RemoveMember { id, .. } if id == dead.id), "{action:?}");

    remove(&cluster, dead.id).await;
    assert_eq!(observe(&cluster).await.len(), 2);
    grow(&mut cluster, "m3").await;

    let members = observe(&cluster).await;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(!names.contains(&"m2") && names.contains(&"m3"), "{names:?}");
    assert!(members.iter().all(|m| m.healthy && !m.learner));
    let m3 = cluster.members.iter().find(|m| m.name == "m3").unwrap().client_url.clone();
    assert_eq!(keys_via(&m3).await, 50);
}

#[tokio::test]
async fn shrinking_removes_followers_and_keeps_the_leader() {
    let cluster = LocalCluster::start(3).await.unwrap();
    put_keys(&cluster, 20).await;
    let members = observe(&cluster).await;
    let leader = members.iter().find(|m| m.leader).expect("a leader").id;
    let observed = Observed {
        cluster: "m".into(),
        seeded: true,
        next_index: 3,
        pods: members.iter().map(|m| MemberPod::new(m.name.clone(), PodState::Running { ready: true })).collect(),
        etcd: EtcdView::Members(members.clone()),
        recovering: None,
        recovery_untouched: false,
        lost_for: None,
        refusal: None,
        restored: None,
        failure: None,
        stuck: None,
        alarms: vec![],
        alarms_read: true,
        cluster_version: None,
        upgrade: None,
        claims: Vec::new(),
        current_version: None,
        wanted_class_exists: None,
        certificates: Vec::new(),
        trust: Default::default(),
    };
    let Action::RemoveMember { id, .. } = plan(&desired(2), &observed) else { panic!("no removal") };
    assert_ne!(id, leader, "the leader goes last");
    remove(&cluster, id).await;

    let left = observe(&cluster).await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().any(|m| m.id == leader));
    let survivor = cluster.members.iter().find(|m| left.iter().any(|l| l.name == m.name)).unwrap();
    assert_eq!(keys_via(&survivor.client_url).await, 20);
}

#[tokio::test]
async fn a_member_added_by_a_controller_that_died_before_its_pod_is_finished_or_rolled_back() {
    let mut cluster = LocalCluster::start(3).await.unwrap();
    put_keys(&cluster, 10).await;
    // The old controller added a learner, then died before starting it.
    let (name, peer, client) = cluster.reserve("m3");
    let id = add_learner(&cluster, &peer).await;

    // A new controller sees a member that never started and has no pod: it finishes the add.
    let mut members = observe(&cluster).await;
    for member in &mut members {
        if member.id == id {
            member.name = name.clone();
        }
    }
    let pods = ["m0", "m1", "m2"].map(|n| MemberPod::new(n, PodState::Running { ready: true }));
    let version = members.iter().filter_map(|m| m.version).min().expect("the members report their version");
    let observed = Observed {
        cluster: "m".into(),
        seeded: true,
        next_index: 4,
        pods: pods.clone().into(),
        etcd: EtcdView::Members(members.clone()),
        recovering: None,
        recovery_untouched: false,
        lost_for: None,
        refusal: None,
        restored: None,
        failure: None,
        stuck: None,
        alarms: vec![],
        alarms_read: true,
        cluster_version: None,
        upgrade: None,
        claims: Vec::new(),
        current_version: None,
        wanted_class_exists: None,
        certificates: Vec::new(),
        trust: Default::default(),
    };
    assert_eq!(
        plan(&desired(4), &observed),
        Action::CreateMemberPod { name: name.clone(), release: Release::of("quay.io/coreos/etcd", version) }
    );
    // With the spec back at 3 instead, the half-added learner is rolled back.
    let rollback = plan(&desired(3), &observed);
    assert!(matches!(rollback, Action::RemoveMember { id: removed, .. } if removed == id), "{rollback:?}");

    // Finish it: start the member and promote it.
    let initial: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .chain([format!("{name}={peer}")])
        .collect();
    cluster.join(&name, &peer, &client, &initial.join(",")).await.unwrap();
    promote_when_ready(&cluster, id).await;
    let members = observe(&cluster).await;
    assert_eq!(members.iter().filter(|m| !m.learner && m.healthy).count(), 4);
    assert_eq!(keys_via(&client).await, 10);

    // And the roll-back path on a second half-added learner.
    let (_, stray_peer, _) = cluster.reserve("m4");
    let stray = add_learner(&cluster, &stray_peer).await;
    remove(&cluster, stray).await;
    let ids: Vec<u64> = observe(&cluster).await.iter().map(|m| m.id).collect();
    assert!(!ids.contains(&stray) && ids.len() == 4);
}

/// A member cut off from the others still answers a status request, but without a leader it serves nothing that
/// needs a quorum: it is not healthy.
#[tokio::test]
async fn a_member_that_answers_without_a_leader_is_not_healthy() {
    let mut cluster = LocalCluster::start(3).await.unwrap();
    assert!(observe(&cluster).await.iter().all(|m| m.healthy), "all three healthy at first");
    cluster.kill("m1");
    cluster.kill("m2");
    let survivor = cluster.members.iter().find(|m| m.name == "m0").unwrap().client_url.clone();
    let mut client = etcd_client::Client::connect([survivor.as_str()], None).await.unwrap();
    // Its election timeout passes and it drops the leader it knew (etcd's default: 1 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.status().await.expect("the survivor answers status requests");
        if status.leader() == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "m0 still names leader {:x}", status.leader());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let members = observe(&cluster).await;
    let m0 = members.iter().find(|m| m.name == "m0").unwrap();
    assert!(!m0.healthy, "answers, but has no leader: {m0:?}");
    assert!(members.iter().all(|m| !m.leader), "{members:?}");
}

/// A voter that answers but knows no leader (cut off from its peers) refuses every membership change: the
/// controller goes through a voter that knows one, even when the leaderless one comes first (review A6), and
/// falls back to the leaderless one only when no other voter answers (its member list still tells what etcd knows).
#[tokio::test]
async fn membership_changes_go_through_a_voter_that_knows_a_leader() {
    let mut lost = LocalCluster::start(3).await.unwrap();
    lost.wait_serving().await.unwrap();
    let names: Vec<String> = observe(&lost).await.into_iter().map(|m| m.name).collect();
    lost.kill(&names[1]);
    lost.kill(&names[2]);
    let leaderless = lost.endpoints()[0].clone();
    // Its leader gone, the survivor's election timeout passes and it reports no leader.
    let mut asked = etcd_client::Client::connect([leaderless.as_str()], None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while asked.status().await.map(|s| s.leader()).unwrap_or(0) != 0 {
        assert!(std::time::Instant::now() < deadline, "the survivor still reports a leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let serving = LocalCluster::start(1).await.unwrap();
    serving.wait_serving().await.unwrap();
    let with_leader = serving.endpoints()[0].clone();

    let chosen = Membership::connect(&[leaderless.clone(), with_leader.clone()], &Dial::plain(TIMEOUT)).await.unwrap();
    assert_eq!(chosen.endpoints(), [with_leader], "the voter that knows a leader");
    let fallback = Membership::connect(std::slice::from_ref(&leaderless), &Dial::plain(TIMEOUT)).await.unwrap();
    assert_eq!(fallback.endpoints(), [leaderless], "alone, the leaderless voter still answers");
}
