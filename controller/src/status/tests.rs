//! Status derived from observations: what each condition says, and that it says what runs.
//! (`steady` is shared with other modules' tests: a three-member cluster of `demo`, every member Ready.)

use super::*;
use crate::observe::{Member, MemberPod};
use crate::testing::cluster;

pub(crate) fn steady() -> Observed {
    Observed {
        cluster: "demo".into(),
        seeded: true,
        next_index: 3,
        pods: (0..3).map(|i| MemberPod::new(format!("demo-000{i}"), PodState::Running { ready: true })).collect(),
        etcd: EtcdView::Members(
            (0..3)
                .map(|i| Member {
                    id: i,
                    name: format!("demo-000{i}"),
                    started: true,
                    peer_urls: Vec::new(),
                    learner: false,
                    healthy: true,
                    leader: i == 0,
                    version: crate::version::Version::parse("3.5.35"),
                    raft: (0, 0),
                    served: None,
                    db_size: None,
                })
                .collect(),
        ),
        recovering: None,
        recovery_untouched: false,
        lost_for: None,
        refusal: None,
        restored: None,
        failure: None,
        stuck: None,
        alarms: vec![],
        alarms_read: true,
        cluster_version: crate::version::Version::parse("3.5.35"),
        upgrade: None,
        claims: Vec::new(),
        current_version: None,
        wanted_class_exists: None,
        certificates: Vec::new(),
        trust: Default::default(),
    }
}

fn time(seconds: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
}

#[test]
fn a_steady_cluster_derives_the_same_status_every_time() {
    let c = cluster("demo", 3);
    let first = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &EtcdClusterStatus::default(), time(100));
    assert_eq!(first.phase, ClusterPhase::Running);
    assert_eq!(first.ready_members, 3);
    let again = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &first, time(200));
    assert_eq!(again, first, "nothing changed, so nothing is written");
}

/// An unhealthy member is named, with its node when the node is not Ready (a partitioned or lost node).
#[test]
fn unhealthy_members_are_named_with_their_lost_node() {
    let c = cluster("demo", 3);
    let mut one_down = steady();
    if let EtcdView::Members(members) = &mut one_down.etcd {
        members[2].healthy = false;
    }
    one_down.pods[2].node_down =
        Some(crate::observe::NodeDown { node: "node-c".into(), down_for: std::time::Duration::from_secs(12) });
    let status = derive(&c.spec, Some(1), &one_down, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "MemberUnhealthy"));
    assert_eq!(degraded.message, "1 of 3 voting members are unhealthy: demo-0002 (node node-c not Ready)");
}

#[test]
fn lost_quorum_is_told_truthfully() {
    let c = cluster("demo", 3);
    let mut broken = steady();
    if let EtcdView::Members(members) = &mut broken.etcd {
        members[1].healthy = false;
        members[2].healthy = false;
    }
    let action = Action::Wait(WaitReason::QuorumLost { healthy: 1, voters: 3 });
    let status = derive(&c.spec, Some(1), &broken, &action, None, &EtcdClusterStatus::default(), time(1));
    assert_eq!(status.phase, ClusterPhase::QuorumLost);
    let available = status.conditions.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!((available.status.as_str(), available.reason.as_str()), ("False", "QuorumLost"));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.status, "True");
    assert!(degraded.message.contains("1 of 3"), "{}", degraded.message);
}

/// `Ready` is what `kubectl wait --for=condition=Ready` reads: True only while the cluster serves at its size,
/// every member Ready, nothing under way and nothing degraded; False with the reason otherwise.
#[test]
fn ready_says_the_cluster_serves_at_its_size_with_nothing_under_way() {
    let c = cluster("demo", 3);
    let ready = |observed: &Observed, action: &Action| {
        let status = derive(&c.spec, Some(1), observed, action, None, &EtcdClusterStatus::default(), time(1));
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").cloned().expect("a Ready condition");
        (ready.status, ready.reason)
    };
    assert_eq!(ready(&steady(), &Action::Done), ("True".into(), "Serving".into()));
    let grow = Action::Promote { id: 103, name: "demo-0003".into() };
    assert_eq!(ready(&steady(), &grow), ("False".into(), "Progressing".into()), "a step under way");
    let mut one_down = steady();
    if let EtcdView::Members(members) = &mut one_down.etcd {
        members[2].healthy = false;
    }
    assert_eq!(ready(&one_down, &Action::Done).0, "False", "a member unhealthy");
    let mut not_ready = steady();
    not_ready.pods[1].state = crate::observe::PodState::Running { ready: false };
    assert_eq!(ready(&not_ready, &Action::Done), ("False".into(), "NotAllMembersReady".into()));
    let mut lost = steady();
    if let EtcdView::Members(members) = &mut lost.etcd {
        members[1].healthy = false;
        members[2].healthy = false;
    }
    let waiting = Action::Wait(WaitReason::QuorumLost { healthy: 1, voters: 3 });
    assert_eq!(ready(&lost, &waiting), ("False".into(), "NotAvailable".into()));
    // NOSPACE: members pass their probe (it excludes NOSPACE) and refuse writes: not Ready.
    let full = Observed { alarms: vec![("demo-0001".into(), "NOSPACE".into())], alarms_read: true, ..steady() };
    assert_eq!(ready(&full, &Action::Done).1, "Alarm");
    let bigger = cluster("demo", 5);
    let status = derive(&bigger.spec, Some(1), &steady(), &Action::Done, None, &EtcdClusterStatus::default(), time(1));
    let condition = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "NotAllMembersReady"));
}

#[test]
fn a_seed_restored_from_storage_is_named_once_its_fetch_reports() {
    use proto::backup::RestoreResult;
    let c = cluster("demo", 3);
    let pending = RestoredFrom { source: "s3://b/ns/old".into(), backup: "latest".into(), revision: 0 };
    let previous = EtcdClusterStatus { restored_from: Some(pending.clone()), ..Default::default() };
    let starting = Observed { restored: None, ..steady() };
    let status = derive(&c.spec, Some(1), &starting, &Action::Done, None, &previous, time(1));
    assert_eq!(status.restored_from, Some(pending.clone()), "not known until the fetch says");

    let result = RestoreResult { backup: "old-r9".into(), revision: 9, sha256: "ab".into(), size: 1 };
    let fetched = Observed { restored: Some(result.clone()), ..steady() };
    let status = derive(&c.spec, Some(1), &fetched, &Action::Done, None, &previous, time(2));
    let named = RestoredFrom { source: pending.source.clone(), backup: "old-r9".into(), revision: 9 };
    assert_eq!(status.restored_from, Some(named.clone()));

    // A recorded choice is never rewritten by what some pod reports.
    let other = RestoreResult { backup: "other-r12".into(), revision: 12, ..result };
    let previous = EtcdClusterStatus { restored_from: Some(named.clone()), ..Default::default() };
    let status = derive(
        &c.spec,
        Some(1),
        &Observed { restored: Some(other), ..steady() },
        &Action::Done,
        None,
        &previous,
        time(3),
    );
    assert_eq!(status.restored_from, Some(named));
}

#[test]
fn a_seed_that_keeps_failing_stays_reported_while_it_is_replaced() {
    let c = cluster("demo", 3);
    let failing = Observed {
        seeded: false,
        pods: vec![MemberPod::new("demo-0000", PodState::Dead)],
        etcd: EtcdView::Unreachable("no member pod is running".into()),
        ..steady()
    };
    let wait = Action::Wait(WaitReason::SeedFailed {
        member: "demo-0000".into(),
        why: "fetch-backup: 403".into(),
        after: crate::plan::SEED_RETRY_AFTER,
    });
    let failed = derive(&c.spec, Some(1), &failing, &wait, None, &EtcdClusterStatus::default(), time(1));
    let reason = |s: &EtcdClusterStatus| {
        let d = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        (d.status.clone(), d.reason.clone())
    };
    assert_eq!(reason(&failed), ("True".to_string(), "SeedFailed".to_string()));
    let replacing = Observed { pods: vec![], ..failing.clone() };
    let create = Action::CreateSeed {
        name: "demo-0001".into(),
        release: crate::pod::Release::of("quay.io/coreos/etcd", crate::version::Version::parse("3.5.35").unwrap()),
    };
    let next = derive(&c.spec, Some(1), &replacing, &create, None, &failed, time(20));
    assert_eq!(reason(&next), reason(&failed), "no flap while the replacement starts");
    let stuck = Observed {
        pods: vec![MemberPod::new("demo-0001", PodState::Pending)],
        stuck: Some(("demo-0001".into(), "fetch-backup: CreateContainerConfigError: no secret".into())),
        ..failing
    };
    let wait = Action::Wait(WaitReason::EtcdUnreachable("no member pod is running".into()));
    let status = derive(&c.spec, Some(1), &stuck, &wait, None, &EtcdClusterStatus::default(), time(30));
    assert_eq!(reason(&status), ("True".to_string(), "MemberPodStuck".to_string()));
}

#[test]
fn a_volume_its_user_cannot_use_is_told_apart_from_another_clusters_volume() {
    let c = cluster("demo", 3);
    let mut pod = MemberPod::new("demo-0001", PodState::Pending);
    pod.volume_refused = Some("volume unusable: /var/lib/etcd/data (owned by uid 0 gid 0, mode 700)".into());
    let observed = Observed { pods: vec![pod], ..steady() };
    let status = derive(&c.spec, Some(1), &observed, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "VolumeUnusable");
    assert!(
        degraded.message.contains("data is intact") && !degraded.message.contains("delete"),
        "{}",
        degraded.message
    );
    let mut foreign = observed.clone();
    foreign.pods[0].volume_refused = Some("volume refused: it belongs to cluster ns/other".into());
    let status = derive(&c.spec, Some(1), &foreign, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "VolumeRefused");
}

#[test]
fn members_of_an_earlier_build_running_as_root_are_named_with_what_moving_them_takes() {
    let mut c = cluster("demo", 3);
    let mut observed = steady();
    for pod in observed.pods.iter_mut().take(2) {
        pod.runs_as_root = true;
    }
    let drift = |spec: &proto::cluster::EtcdClusterSpec, observed: &Observed| {
        let status = derive(spec, Some(1), observed, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
        status.conditions.iter().find(|c| c.type_ == "ConfigDrift").cloned().unwrap()
    };
    let said = drift(&c.spec, &observed);
    assert_eq!((said.status.as_str(), said.reason.as_str()), ("True", "RunsAsRoot"), "{}", said.message);
    assert!(
        said.message.starts_with(&format!("{}, {} run etcd as root", observed.pods[0].name, observed.pods[1].name))
    );
    assert!(said.message.contains("fsGroup") && said.message.contains("runAsUser"), "{}", said.message);
    // Root asked for: nothing to say.
    c.spec.pod.security_context.run_as_user = 0;
    assert_ne!(drift(&c.spec, &observed).reason, "RunsAsRoot");
}

#[test]
fn formed_is_sticky_once_etcd_answered() {
    let c = cluster("demo", 3);
    let status = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &EtcdClusterStatus::default(), time(1));
    assert!(status.formed);
    let gone = Observed { pods: vec![], etcd: EtcdView::Unreachable("no pods".into()), ..steady() };
    let later = derive(&c.spec, Some(1), &gone, &Action::Wait(WaitReason::DataLost), None, &status, time(2));
    assert!(later.formed, "a cluster that formed stays formed");
    assert_eq!(later.phase, ClusterPhase::QuorumLost);
}

/// A recovery recorded at time 20, from backup demo-r7 (revision 7).
fn recovery_of_r7() -> proto::cluster::RecoveryStatus {
    proto::cluster::RecoveryStatus {
        lost_pods: None,
        backup: "demo-r7".into(),
        revision: 7,
        reason: "the newest backup".into(),
        first_member_index: 3,
        started_at: Some(time(20)),
    }
}

#[test]
fn a_recorded_recovery_is_carried_until_it_completes_even_when_the_plan_saw_an_older_object() {
    let c = cluster("demo", 3);
    let recorded = EtcdClusterStatus {
        formed: true,
        quorum_lost_since: Some(time(10)),
        recovery: Some(recovery_of_r7()),
        ..Default::default()
    };
    // The plan ran on an object without the record (StartRecovery wrote it in this very reconcile).
    let stale = Observed { pods: vec![], etcd: EtcdView::Unreachable("no pods".into()), ..steady() };
    let action = Action::StartRecovery { first_index: 3 };
    let status = derive(&c.spec, Some(1), &stale, &action, None, &recorded, time(30));
    assert_eq!(status.recovery, recorded.recovery, "never cleared behind the step's back");
    assert_eq!(status.phase, ClusterPhase::Recovering);
    assert_eq!(status.quorum_lost_since, Some(time(10)), "the loss is timed from its first sighting");
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(degraded.message.contains("demo-r7"), "{}", degraded.message);

    let done = derive(&c.spec, Some(1), &steady(), &Action::CompleteRecovery, None, &recorded, time(40));
    assert_eq!((done.recovery, done.quorum_lost_since), (None, None));
}

/// A recovery whose seed refused the recorded backup says so, and names a way out that works (the record cannot
/// change, so "name another backup in spec.restore" would not), instead of "being seeded" for ever.
#[test]
fn a_recovery_whose_backup_is_refused_says_what_works() {
    let c = cluster("demo", 3);
    let recorded = EtcdClusterStatus { formed: true, recovery: Some(recovery_of_r7()), ..Default::default() };
    let refused = Observed {
        pods: vec![MemberPod::new("demo-0003", PodState::Refused)],
        etcd: EtcdView::Unreachable("no pods".into()),
        ..steady()
    };
    let why = "checksum mismatch".to_string();
    let action = Action::Wait(WaitReason::RestoreRefused { member: "demo-0003".into(), why });
    let status = derive(&c.spec, Some(1), &refused, &action, None, &recorded, time(30));
    assert_eq!(status.phase, ClusterPhase::Recovering);
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "RestoreFailed");
    for needed in ["demo-0003", "demo-r7", "checksum mismatch", "spec.restore", "delete this EtcdCluster"] {
        assert!(degraded.message.contains(needed), "{needed}: {}", degraded.message);
    }
    assert!(!degraded.message.contains("delete pod"), "deleting the seed only fails again: {}", degraded.message);
}

/// The defect reproduced on the test bed: the controller could not reach the members for a minute while their
/// pods were Ready, then a readiness dip started a recovery at once. The loss is timed only while no member
/// pod is Ready: the dip starts the grace from zero.
#[test]
fn the_loss_is_timed_only_while_no_member_pod_is_ready() {
    use crate::plan::{Desired, Recovery, plan};
    let mut c = cluster("demo", 3);
    c.spec.backup = serde_json::from_value(serde_json::json!({ "storage": { "pvc": { "claimName": "b" } } })).unwrap();
    let grace = std::time::Duration::from_secs(30);
    let desired = Desired { recovery: Recovery::Restore { grace }, ..Desired::from_spec(&c.spec) };
    let blind = Observed { etcd: EtcdView::Unreachable("timed out".into()), ..steady() };
    let mut status = EtcdClusterStatus { formed: true, ..Default::default() };
    let step = |observed: &Observed, status: &EtcdClusterStatus, now: i64| {
        let lost_for = status
            .quorum_lost_since
            .as_ref()
            .map(|since| std::time::Duration::from_secs(u64::try_from(now - since.0.as_second()).unwrap()));
        let action = plan(&desired, &Observed { lost_for, ..observed.clone() });
        (action.clone(), derive(&c.spec, Some(1), observed, &action, None, status, time(now)))
    };
    // A minute blind, members Ready: nothing timed, and status says the controller cannot reach them.
    for now in (0..=60).step_by(5) {
        let (action, next) = step(&blind, &status, now);
        assert!(matches!(action, Action::Wait(WaitReason::MembersUnreachable { .. })), "{action:?}");
        assert_eq!(next.quorum_lost_since, None, "no loss is timed while a member pod is Ready");
        assert_eq!(next.phase, ClusterPhase::Running);
        let degraded = next.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.reason, "MembersUnreachable");
        assert!(degraded.message.contains("demo-0000, demo-0001, demo-0002"), "{}", degraded.message);
        status = next;
    }
    // Readiness dips: the grace starts now, so nothing is deleted before it has run out.
    let mut dipped = blind.clone();
    dipped.pods.iter_mut().for_each(|p| p.state = PodState::Running { ready: false });
    for now in (65..95).step_by(5) {
        let (action, next) = step(&dipped, &status, now);
        assert!(matches!(action, Action::Wait(WaitReason::NoMemberAnswers(_))), "at {now}: {action:?}");
        assert_eq!(next.quorum_lost_since, Some(time(65)), "timed from the first sighting without a Ready pod");
        status = next;
    }
    // One Ready pod again restarts it from zero.
    let (_, next) = step(&blind, &status, 95);
    assert_eq!(next.quorum_lost_since, None);
    let (action, next) = step(&dipped, &next, 100);
    assert!(matches!(action, Action::Wait(_)), "{action:?}");
    assert_eq!(next.quorum_lost_since, Some(time(100)));
    // Only a loss that lasts the whole grace without a break starts the recovery.
    let (action, _) = step(&dipped, &next, 130);
    assert_eq!(action, Action::StartRecovery { first_index: 3 });
}

#[test]
fn a_lost_quorum_says_what_the_policy_will_do() {
    let mut c = cluster("demo", 3);
    let action = Action::Wait(WaitReason::QuorumLost { healthy: 1, voters: 3 });
    let message = |c: &proto::cluster::EtcdCluster| {
        let status = derive(&c.spec, Some(1), &steady(), &action, None, &EtcdClusterStatus::default(), time(1));
        assert_eq!(status.quorum_lost_since, Some(time(1)));
        status.conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap().message
    };
    assert!(message(&c).contains("there are no backups"), "{}", message(&c));
    c.spec.recovery = serde_json::from_value(serde_json::json!({ "policy": "Manual" })).unwrap();
    assert!(message(&c).contains("Manual"), "{}", message(&c));
}

#[test]
fn a_recovery_without_any_backup_says_so() {
    let c = cluster("demo", 3);
    let gone = Observed { pods: vec![], etcd: EtcdView::Unreachable("no pods".into()), ..steady() };
    let action = Action::Wait(WaitReason::NoUsableBackup("there is no backup to recover from".into()));
    let status = derive(&c.spec, Some(1), &gone, &action, None, &EtcdClusterStatus::default(), time(5));
    assert_eq!(status.phase, ClusterPhase::QuorumLost);
    assert_eq!(status.quorum_lost_since, Some(time(5)));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "NoUsableBackup");
    assert!(degraded.message.contains("no backup"), "{}", degraded.message);
}

fn condition<'a>(status: &'a EtcdClusterStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn an_alarm_names_its_member_and_what_to_do() {
    let c = cluster("demo", 3);
    let quiet = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &EtcdClusterStatus::default(), time(1));
    assert_eq!(condition(&quiet, "Alarm").status, "False");
    let mut full = steady();
    full.alarms = vec![("demo-0001".into(), "NOSPACE".into())];
    let status = derive(&c.spec, Some(1), &full, &Action::Done, None, &quiet, time(2));
    let alarm = condition(&status, "Alarm");
    assert_eq!((alarm.status.as_str(), alarm.reason.as_str()), ("True", "NOSPACE"));
    assert!(alarm.message.contains("demo-0001") && alarm.message.contains("alarm disarm"), "{}", alarm.message);
    full.alarms.push(("demo-0002".into(), "CORRUPT".into()));
    let status = derive(&c.spec, Some(1), &full, &Action::Done, None, &quiet, time(3));
    let alarm = condition(&status, "Alarm");
    assert_eq!(alarm.reason, "CORRUPT", "the worse one first");
    assert!(alarm.message.contains("demo-0002") && alarm.message.contains("delete its pod"), "{}", alarm.message);
}

/// Review S3 and S8: a NOSPACE alarm quotes the quota the members run with (their command), and says when the
/// spec asks for another; alarms that could not be read are Unknown, never "no alarm".
#[test]
fn an_alarm_quotes_the_quota_the_members_run_and_unread_alarms_are_unknown() {
    let mut c = cluster("demo", 3);
    c.spec.etcd.quota_backend_bytes = 8_000_000_000;
    let mut full = steady();
    full.pods[1].command = vec!["etcd".into(), "--quota-backend-bytes=2147483648".into()];
    full.alarms = vec![("demo-0001".into(), "NOSPACE".into())];
    let status = derive(&c.spec, Some(1), &full, &Action::Done, None, &EtcdClusterStatus::default(), time(2));
    let alarm = condition(&status, "Alarm");
    assert!(alarm.message.contains("2147483648 bytes"), "the quota it runs: {}", alarm.message);
    assert!(alarm.message.contains("asks for 8000000000"), "the spec's, told apart: {}", alarm.message);
    let mut unread = steady();
    unread.alarms_read = false;
    let status = derive(&c.spec, Some(1), &unread, &Action::Done, None, &EtcdClusterStatus::default(), time(3));
    let alarm = condition(&status, "Alarm");
    assert_eq!((alarm.status.as_str(), alarm.reason.as_str()), ("Unknown", "NotRead"), "{alarm:?}");
}

/// Review A2 (until rollouts): members whose pods were created from other spec.etcd or spec.pod settings are
/// named; pods that recorded no hash are not counted.
#[test]
fn members_running_older_settings_are_named() {
    let mut c = cluster("demo", 3);
    let current = crate::pod::settings_hash(&c, &Default::default());
    let mut observed = steady();
    for pod in &mut observed.pods {
        pod.settings = Some(current.clone());
    }
    let status = derive(&c.spec, Some(1), &observed, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
    assert_eq!(condition(&status, "ConfigDrift").status, "False");
    c.spec.etcd.quota_backend_bytes *= 2;
    assert_ne!(crate::pod::settings_hash(&c, &Default::default()), current, "the quota is a setting");
    observed.pods[2].settings = Some(crate::pod::settings_hash(&c, &Default::default()));
    observed.pods[1].settings = None;
    let status = derive(&c.spec, Some(2), &observed, &Action::Done, None, &status, time(2));
    let drift = condition(&status, "ConfigDrift");
    assert_eq!((drift.status.as_str(), drift.reason.as_str()), ("True", "OlderSettings"));
    assert!(drift.message.starts_with("demo-0000 runs settings"), "{}", drift.message);
    assert!(drift.message.contains("replaced by new members (their data is on an emptyDir"), "{}", drift.message);
    // On a claim that records it, the cost is a restart, and status says so before it is done.
    observed.claims = vec![crate::observe::Claim::new("demo-0000", Some(0))];
    let status = derive(&c.spec, Some(2), &observed, &Action::Done, None, &status, time(2));
    let drift = condition(&status, "ConfigDrift");
    assert!(drift.message.contains("restarted on its claim: demo-0000"), "{}", drift.message);
    assert!(!drift.message.contains("replaced"), "{}", drift.message);
    observed.claims.clear();
    // Review S10: a member upgraded from 3.4 keeps its exec probe; named, with what to do.
    let mut upgraded = steady();
    for pod in &mut upgraded.pods {
        pod.settings = Some(current.clone());
        pod.image = Some("quay.io/coreos/etcd:v3.5.35".into());
    }
    upgraded.pods[1].exec_probe = true;
    let base = cluster("demo", 3);
    let status = derive(&base.spec, Some(3), &upgraded, &Action::Done, None, &EtcdClusterStatus::default(), time(3));
    let drift = condition(&status, "ConfigDrift");
    assert_eq!((drift.status.as_str(), drift.reason.as_str()), ("True", "ProbeOfOlderVersion"), "{drift:?}");
    assert!(drift.message.starts_with("demo-0001 kept the readiness probe"), "{}", drift.message);
    upgraded.pods[1].image = Some("quay.io/coreos/etcd:v3.4.23".into());
    let status = derive(&base.spec, Some(3), &upgraded, &Action::Done, None, &EtcdClusterStatus::default(), time(3));
    assert_eq!(condition(&status, "ConfigDrift").status, "False", "at 3.4 the probe is its version's");
    // Only the disruption budget's setting changed: no pod differs.
    let mut budget = cluster("demo", 3);
    budget.spec.pod.allow_unsafe_eviction = true;
    assert_eq!(crate::pod::settings_hash(&budget, &Default::default()), current);
}

/// Review S7 and issue 17 §4: a refused spec.version shows no phase Running for a cluster that never formed,
/// and Upgrading for one whose members run mixed versions.
#[test]
fn a_refused_version_is_running_only_for_a_cluster_that_runs_one_version() {
    let c = cluster("demo", 3);
    let refused = Action::Wait(WaitReason::VersionRefused(crate::version::Refusal {
        reason: "Unsupported",
        message: "no".into(),
    }));
    let mut fresh = steady();
    fresh.pods.clear();
    fresh.seeded = false;
    fresh.etcd = EtcdView::Unreachable("no member pod is running".into());
    let status = derive(&c.spec, Some(1), &fresh, &refused, None, &EtcdClusterStatus::default(), time(1));
    assert_eq!(status.phase, ClusterPhase::Invalid);
    let progressing = condition(&status, "Progressing");
    assert!(!progressing.message.contains("requested size"), "{}", progressing.message);
    let formed = EtcdClusterStatus { formed: true, ..Default::default() };
    let status = derive(&c.spec, Some(1), &steady(), &refused, None, &formed, time(2));
    assert_eq!(status.phase, ClusterPhase::Running);
    let mut mixed = steady();
    if let EtcdView::Members(members) = &mut mixed.etcd {
        members[1].version = crate::version::Version::parse("3.6.16");
    }
    let status = derive(&c.spec, Some(1), &mixed, &refused, None, &formed, time(3));
    assert_eq!(status.phase, ClusterPhase::Upgrading);
}

#[test]
fn members_on_nodes_that_are_not_ready_are_reported_and_no_loss_is_timed() {
    let c = cluster("demo", 3);
    let mut partitioned = steady();
    partitioned.etcd = EtcdView::Unreachable("timed out".into());
    let action = Action::Wait(WaitReason::NodesNotReady {
        nodes: vec!["node-b".into(), "node-c".into()],
        pods: vec!["demo-0001".into(), "demo-0002".into()],
        seen: "no member answers (timed out)".into(),
    });
    let status = derive(&c.spec, Some(1), &partitioned, &action, None, &EtcdClusterStatus::default(), time(5));
    assert_eq!(status.quorum_lost_since, None, "not a proven loss: its grace does not run");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.reason, "MembersOnNotReadyNodes");
    assert!(degraded.message.contains("node-b, node-c") && degraded.message.contains("demo-0002"));
    assert!(degraded.message.contains("no automatic recovery"), "{}", degraded.message);
}

#[test]
fn status_tells_the_versions_that_run_not_the_one_the_spec_asks_for() {
    let mut c = cluster("demo", 3);
    c.spec.version = "3.6.16".into();
    let mut mixed = steady();
    if let EtcdView::Members(members) = &mut mixed.etcd {
        members[1].version = crate::version::Version::parse("3.6.16");
    }
    let status = derive(&c.spec, Some(2), &mixed, &Action::Done, None, &EtcdClusterStatus::default(), time(100));
    assert_eq!(status.current_version.as_deref(), Some("3.5.35"), "the lowest that runs");
    assert_eq!(status.cluster_version.as_deref(), Some("3.5.0"));
    assert_eq!(status.server_versions["demo-0001"], "3.6.16");
    assert_eq!(status.server_versions["demo-0000"], "3.5.35");
    assert!(status.peer_urls.is_empty(), "no peer URL listed, none told");
    if let EtcdView::Members(members) = &mut mixed.etcd {
        members[1].peer_urls = vec!["https://demo-0001.demo.ns.svc:2382".into()];
    }
    let status = derive(&c.spec, Some(2), &mixed, &Action::Done, None, &EtcdClusterStatus::default(), time(100));
    assert_eq!(status.peer_urls["demo-0001"], "https://demo-0001.demo.ns.svc:2382", "where its peers dial it");
    let blind = Observed { etcd: EtcdView::Unreachable("no answer".into()), ..mixed.clone() };
    let kept = derive(&c.spec, Some(2), &blind, &Action::Done, None, &status, time(110));
    assert_eq!(kept.peer_urls, status.peer_urls, "kept while etcd cannot be asked");
    assert_eq!(condition(&status, "UpgradeBlocked").status, "False");
    // 3.5 -> 3.7 skips a minor: blocked, with what to do, whatever the step.
    c.spec.version = "3.7.3".into();
    let status = derive(&c.spec, Some(3), &steady(), &Action::Done, None, &status, time(110));
    let blocked = condition(&status, "UpgradeBlocked");
    assert_eq!((blocked.status.as_str(), blocked.reason.as_str()), ("True", "SkipsMinor"));
    assert!(blocked.message.contains("3.6.x first"), "{}", blocked.message);
    assert_eq!(status.phase, ClusterPhase::Running, "the cluster runs on, at its version");
    // No member answers: the last versions known are kept, never the spec's.
    let silent = Observed { etcd: EtcdView::Unreachable("timeout".into()), cluster_version: None, ..steady() };
    let status = derive(&c.spec, Some(3), &silent, &Action::Done, None, &status, time(120));
    assert_eq!(status.current_version.as_deref(), Some("3.5.35"));
    assert_eq!(status.cluster_version.as_deref(), Some("3.5.0"));
}

/// Review S5: the advice of a stalled upgrade works: "set spec.version back to <what the members ran>" while a
/// rollback is possible, "delete the pod" once the cluster version moved to the target's minor.
#[test]
fn a_stalled_upgrade_gives_the_advice_that_works() {
    let c = cluster("demo", 3);
    let stalled =
        Action::Wait(WaitReason::UpgradeStalled { member: "demo-0002".into(), why: "it does not answer".into() });
    let previous = EtcdClusterStatus {
        formed: true,
        upgrade: Some(proto::cluster::UpgradeStatus {
            from: "3.5.35".into(),
            to_image: "quay.io/coreos/etcd:v3.6.16".into(),
            to_version: "3.6.16".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = derive(&c.spec, Some(2), &steady(), &stalled, None, &previous, time(10));
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.reason, "UpgradeStalled");
    assert!(degraded.message.contains("Set spec.version back to 3.5.35"), "{}", degraded.message);
    let mut moved = steady();
    moved.cluster_version = crate::version::Version::parse("3.6.0");
    let status = derive(&c.spec, Some(2), &moved, &stalled, None, &previous, time(20));
    let degraded = condition(&status, "Degraded");
    assert!(degraded.message.contains("going back is no longer possible"), "{}", degraded.message);
    assert!(degraded.message.contains("Delete pod demo-0002"), "{}", degraded.message);
}

/// `status.highestRevisionSeen`: recorded when first seen, then at most every five minutes (a busy cluster's
/// status is not rewritten every reconcile), started over for a new etcd cluster ID, kept while none answers.
#[test]
fn the_highest_revision_seen_is_recorded_first_then_at_most_every_five_minutes() {
    let served = |id: &str, revision: i64| ServedRevision { etcd_cluster_id: id.into(), revision, seen_at: None };
    let members = |revision: i64| -> Vec<Member> {
        let EtcdView::Members(mut members) = steady().etcd else { unreachable!() };
        for member in &mut members {
            member.served = Some(served("c1", revision));
        }
        members
    };
    let first = highest_revision_seen(Some(&members(100)), None, &time(0)).unwrap();
    assert_eq!((first.revision, first.seen_at.clone()), (100, Some(time(0))));
    let soon = highest_revision_seen(Some(&members(500)), Some(&first), &time(60)).unwrap();
    assert_eq!(soon, first, "not rewritten within five minutes");
    let later = highest_revision_seen(Some(&members(900)), Some(&first), &time(300)).unwrap();
    assert_eq!((later.revision, later.seen_at), (900, Some(time(300))));
    let mut restored = members(5);
    for member in &mut restored {
        member.served = Some(served("c2", 5));
    }
    let anew = highest_revision_seen(Some(&restored), Some(&first), &time(61)).unwrap();
    assert_eq!((anew.etcd_cluster_id.as_str(), anew.revision), ("c2", 5), "a new etcd cluster starts over");
    assert_eq!(highest_revision_seen(None, Some(&first), &time(999)), Some(first), "kept while none answers");
}

/// Issue 18: claims of another storage class, or asking for less than `spec.storage.size`, are told in
/// ConfigDrift: whether they grow, cannot (their class), or nobody knows; status.claims shows what each asks.
#[test]
fn claims_that_differ_from_spec_storage_are_told_with_what_will_happen() {
    let mut c = cluster("demo", 3);
    c.spec.storage = Some(serde_json::from_value(serde_json::json!({ "size": "2Gi" })).unwrap());
    let current = crate::pod::settings_hash(&c, &Default::default());
    let mut observed = steady();
    for pod in &mut observed.pods {
        pod.settings = Some(current.clone());
    }
    observed.claims = (0..3)
        .map(|i| crate::observe::Claim {
            requested: Some(1 << 30),
            capacity: Some("1Gi".into()),
            class: Some("local-path".into()),
            expandable: Some(false),
            ..crate::observe::Claim::new(&format!("demo-000{i}"), Some(100 + i))
        })
        .collect();
    let drift_of = |c: &EtcdCluster, observed: &Observed| {
        let status = derive(&c.spec, Some(1), observed, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
        let drift = condition(&status, "ConfigDrift").clone();
        (status, drift)
    };
    let (status, drift) = drift_of(&c, &observed);
    assert_eq!((drift.status.as_str(), drift.reason.as_str()), ("True", "VolumeExpansionNotAllowed"), "{drift:?}");
    assert!(drift.message.contains("storage class local-path does not allow"), "{}", drift.message);
    assert_eq!(status.claims[0].requested.as_deref(), Some("1Gi"));
    assert_eq!(status.claims[0].storage_class.as_deref(), Some("local-path"));
    for claim in &mut observed.claims {
        claim.expandable = None;
    }
    assert_eq!(drift_of(&c, &observed).1.reason, "VolumeExpansionUnknown");
    for claim in &mut observed.claims {
        claim.expandable = Some(true);
    }
    observed.claims[0].requested = Some(2 << 30);
    let (_, drift) = drift_of(&c, &observed);
    assert_eq!(drift.reason, "VolumesGrowing");
    assert!(
        drift.message.starts_with("data-demo-0000, data-demo-0001, data-demo-0002 are to grow"),
        "{}",
        drift.message
    );
    for claim in &mut observed.claims {
        claim.requested = Some(2 << 30);
        claim.capacity = Some("2Gi".into());
    }
    assert_eq!(drift_of(&c, &observed).1.status, "False");
    // Another class named: each member on a claim of the old one is to move, once the class is known to exist.
    c.spec.storage.as_mut().unwrap().storage_class_name = Some("fast".into());
    assert_eq!(drift_of(&c, &observed).1.reason, "StorageClassUnknown");
    observed.wanted_class_exists = Some(false);
    let (_, drift) = drift_of(&c, &observed);
    assert_eq!(drift.reason, "StorageClassNotFound");
    assert!(drift.message.contains("storage class fast does not exist"), "{}", drift.message);
    observed.wanted_class_exists = Some(true);
    let (_, drift) = drift_of(&c, &observed);
    assert_eq!(drift.reason, "OtherStorageClass");
    assert!(drift.message.starts_with("demo-0000 (local-path), demo-0001 (local-path), demo-0002 (local-path) keep"));
    assert!(drift.message.contains("replaced, one at a time"), "{}", drift.message);
}

#[test]
fn sizes_are_written_as_kubernetes_writes_them() {
    assert_eq!(bytes_in_words(2 << 30), "2Gi");
    assert_eq!(bytes_in_words(3 << 29), "1536Mi");
    assert_eq!(bytes_in_words(1000), "1000");
    assert_eq!(bytes_in_words(0), "0");
}

#[test]
fn certificates_are_reported_with_what_holds_the_cluster_up_told_apart_from_what_does_not() {
    let mut c = cluster("demo", 3);
    c.spec.tls = Some(serde_json::from_value(serde_json::json!({ "peer": {}, "client": {} })).unwrap());
    let certificate = |purpose: &str, problem: Option<&str>| proto::cluster::CertificateStatus {
        purpose: purpose.into(),
        secret: format!("demo-tls-{purpose}"),
        generated: true,
        not_after: problem.is_none().then(|| time(5_000)),
        problem: problem.map(String::from),
        ..Default::default()
    };
    let ready = |observed: &Observed, action: &Action| {
        let status = derive(&c.spec, Some(1), observed, action, None, &EtcdClusterStatus::default(), time(1));
        let condition = status.conditions.iter().find(|c| c.type_ == "CertificatesReady").cloned().unwrap();
        (status, condition)
    };
    let mut observed = steady();
    observed.certificates =
        vec![certificate("peer", None), certificate("server", None), certificate("client-ca", None)];
    let (status, said) = ready(&observed, &Action::Done);
    assert_eq!((said.status.as_str(), said.reason.as_str()), ("True", "CertificatesValid"), "{}", said.message);
    assert_eq!(status.certificates, observed.certificates, "status shows every certificate as read");
    // A CA that is gone: renewals stop, nothing else is held up, and the condition says so.
    observed.certificates[2] = certificate("client-ca", Some("client-ca (demo-tls-client-ca): the Secret is gone"));
    let (_, said) = ready(&observed, &Action::Done);
    assert_eq!((said.status.as_str(), said.reason.as_str()), ("False", "CertificateTrouble"), "{}", said.message);
    assert!(said.message.contains("nothing else is held up"), "{}", said.message);
    // A member's certificate that cannot be used: everything waits, and both problems are named.
    observed.certificates[0] = certificate("peer", Some("peer certificate (demo-tls-peer): the certificate expired"));
    let waiting = Action::Wait(crate::plan::WaitReason::CertificatesInvalid(vec!["peer ...".into()]));
    let (_, said) = ready(&observed, &waiting);
    assert_eq!((said.status.as_str(), said.reason.as_str()), ("False", "CertificateInvalid"), "{}", said.message);
    assert!(said.message.contains("expired") && said.message.contains("is gone"), "{}", said.message);
    assert!(said.message.contains("Nothing is created, rolled or removed"), "{}", said.message);
}

#[test]
fn tls_turned_off_stays_in_status_until_no_member_needs_it_and_then_is_gone_for_good() {
    let mut c = cluster("demo", 3);
    c.spec.tls = Some(serde_json::from_value(serde_json::json!({ "peer": {}, "client": {} })).unwrap());
    let certificate = |purpose: &str| proto::cluster::CertificateStatus {
        purpose: purpose.into(),
        secret: format!("demo-tls-{purpose}"),
        generated: true,
        ..Default::default()
    };
    let mut observed = steady();
    observed.certificates = ["peer", "server", "operator", "peer-ca", "client-ca"].map(certificate).to_vec();
    let https = |observed: &mut Observed, scheme: &str| {
        let EtcdView::Members(members) = &mut observed.etcd else { unreachable!() };
        for member in members {
            member.peer_urls = vec![format!("{scheme}://{}.demo.ns.svc:2380", member.name)];
        }
    };
    https(&mut observed, "https");
    for pod in &mut observed.pods {
        pod.command = vec!["etcd".into(), "--listen-client-urls=https://0.0.0.0:2379".into()];
    }
    let derive_from = |spec: &EtcdClusterSpec, observed: &Observed, previous: &EtcdClusterStatus| {
        derive(spec, Some(1), observed, &Action::Done, None, previous, time(1))
    };
    let on = derive_from(&c.spec, &observed, &EtcdClusterStatus::default());
    let kept = on.tls.clone().expect("status.tls says what runs");
    assert!(kept.peer.is_some() && kept.client.is_some());
    // The spec drops TLS: kept while a pod serves client TLS and a member is registered https.
    let mut off = c.clone();
    off.spec.tls = None;
    let during = derive_from(&off.spec, &observed, &on);
    assert_eq!(during.tls, Some(kept.clone()));
    assert_eq!(during.certificates, observed.certificates, "still used, still listed");
    assert!(condition(&during, "CertificatesReady").status == "True", "still judged");
    // Every pod serves plain: the client part goes, with its certificates.
    for pod in &mut observed.pods {
        pod.command = vec!["etcd".into(), "--listen-client-urls=http://0.0.0.0:2379".into()];
    }
    let client_off = derive_from(&off.spec, &observed, &during);
    assert_eq!(client_off.tls.as_ref().map(|t| (t.peer.is_some(), t.client.is_some())), Some((true, false)));
    let listed: Vec<&str> = client_off.certificates.iter().map(|c| c.purpose.as_str()).collect();
    assert_eq!(listed, ["peer", "peer-ca"]);
    // etcd unreachable: nothing is known of the peer URLs, and the peer part stays.
    let blind = Observed { etcd: EtcdView::Unreachable("no member answers".into()), ..observed.clone() };
    assert!(derive_from(&off.spec, &blind, &client_off).tls.is_some());
    // Every member registered plain: nothing is kept, nothing listed, and it does not come back from status.
    https(&mut observed, "http");
    let done = derive_from(&off.spec, &observed, &client_off);
    assert_eq!((done.tls.clone(), done.certificates.len()), (None, 0));
    // Nor from a stored status that still lists them (as a merge patch that left the list out would keep it): read
    // as an earlier build's, it says nothing is used once nothing is.
    let stale = EtcdClusterStatus { tls: None, ..client_off.clone() };
    let after = derive_from(&off.spec, &observed, &stale);
    assert_eq!((after.tls.clone(), after.certificates.len()), (None, 0));
    assert!(!after.conditions.iter().any(|c| c.type_ == "CertificatesReady"));
}
