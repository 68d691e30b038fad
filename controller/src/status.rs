//! The status a cluster reports, derived from what was observed and the step planned. Pure, so that a steady
//! cluster yields the very same status every time and nothing is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proto::cluster::{ClusterPhase, EtcdClusterSpec, EtcdClusterStatus, MemberNames};

use crate::backup::{BackupHealth, condition};
use crate::observe::{EtcdView, Observed, PodState};
use crate::plan::{Action, RemoveReason, WaitReason};
use crate::service::client_service_name;

/// The status for `observed` and `action`, keeping from `previous` what only changes on transitions.
pub fn derive(
    spec: &EtcdClusterSpec,
    generation: Option<i64>,
    observed: &Observed,
    action: &Action,
    backup: Option<&BackupHealth>,
    previous: &EtcdClusterStatus,
    now: Time,
) -> EtcdClusterStatus {
    let members = match &observed.etcd {
        EtcdView::Members(members) => Some(members),
        EtcdView::Unreachable(_) => None,
    };
    let voters = members.map_or(0, |m| m.iter().filter(|m| !m.learner).count());
    let healthy = members.map_or(0, |m| m.iter().filter(|m| !m.learner && m.healthy).count());
    let mut names = MemberNames::default();
    for pod in &observed.pods {
        match pod.state {
            PodState::Running { ready: true } => names.ready.push(pod.name.clone()),
            _ => names.unready.push(pod.name.clone()),
        }
    }
    names.ready.sort();
    names.unready.sort();

    let phase = match action {
        _ if spec.paused => ClusterPhase::Paused,
        Action::Wait(WaitReason::QuorumLost { .. } | WaitReason::DataLost) => ClusterPhase::QuorumLost,
        Action::Done => ClusterPhase::Running,
        _ if previous.phase == ClusterPhase::Creating || !previous.formed => ClusterPhase::Creating,
        Action::RemoveMember { reason: RemoveReason::Dead, .. } | Action::CreateMemberPod { .. } => {
            ClusterPhase::Healing
        }
        _ => ClusterPhase::Scaling,
    };

    let (available, available_reason, available_message) = match &observed.etcd {
        EtcdView::Members(_) if healthy > voters / 2 => {
            (true, "QuorumHealthy", format!("{healthy} of {voters} voting members are healthy"))
        }
        EtcdView::Members(_) => (false, "QuorumLost", format!("only {healthy} of {voters} voting members are healthy")),
        EtcdView::Unreachable(why) => (false, "EtcdUnreachable", why.clone()),
    };
    let progressing = !matches!(action, Action::Done | Action::Wait(_));
    let (degraded, degraded_reason, degraded_message) = degraded(observed, action, voters, healthy, spec.size);

    let mut conditions = Vec::new();
    let mut set = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let kept = previous.conditions.iter().find(|c| c.type_ == type_ && c.status == status);
        conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            // Only a change of status moves the transition time, so a steady cluster's status never changes.
            last_transition_time: kept.map_or_else(|| now.clone(), |c| c.last_transition_time.clone()),
        });
    };
    set("Available", available, available_reason, available_message);
    set("Progressing", progressing, progress_reason(action), progress_message(action));
    set("Degraded", degraded, degraded_reason, degraded_message);
    if spec.backup.is_some() {
        let (ready, reason, message) = backup
            .map_or_else(|| (false, "SidecarStarting", "the backup sidecar is being set up".to_string()), condition);
        set("BackupReady", ready, reason, message);
    }

    EtcdClusterStatus {
        phase,
        observed_generation: generation,
        size: i32::try_from(voters).unwrap_or(i32::MAX),
        ready_members: i32::try_from(names.ready.len()).unwrap_or(i32::MAX),
        current_version: members.map(|_| spec.version.clone()),
        members: names,
        client_service: Some(client_service_name(&observed.cluster)),
        cluster_token: previous.cluster_token.clone(),
        formed: previous.formed || members.is_some(),
        next_member_index: previous.next_member_index.max(i32::try_from(observed.next_index).unwrap_or(i32::MAX)),
        conditions,
    }
}

fn degraded(
    observed: &Observed,
    action: &Action,
    voters: usize,
    healthy: usize,
    size: i32,
) -> (bool, &'static str, String) {
    match action {
        Action::Wait(WaitReason::DataLost) => (
            true,
            "DataLost",
            "every member is gone; the cluster's data exists only in backups. Nothing is deleted or re-created: \
             restore from a backup, or delete and re-create the EtcdCluster to start empty"
                .into(),
        ),
        Action::Wait(WaitReason::QuorumLost { healthy, voters }) => (
            true,
            "QuorumLost",
            format!(
                "only {healthy} of {voters} voting members are healthy; the controller changes nothing until a \
                 majority is back"
            ),
        ),
        _ if !observed.seeded && matches!(observed.etcd, EtcdView::Unreachable(_)) => {
            (false, "Creating", "the seed member is starting".into())
        }
        _ if matches!(observed.etcd, EtcdView::Unreachable(_)) => {
            (true, "EtcdUnreachable", "no member answers; the controller changes nothing until one does".into())
        }
        _ if matches!(observed.etcd, EtcdView::Members(_)) && healthy < voters => {
            (true, "MemberUnhealthy", format!("{} of {voters} voting members are unhealthy", voters - healthy))
        }
        _ if observed.pods.iter().any(|p| p.state == PodState::Dead) => {
            (true, "MemberPodFailed", "a member pod failed; it is being replaced".into())
        }
        _ if matches!(observed.etcd, EtcdView::Members(_)) && voters < size as usize => {
            (false, "BelowSize", format!("{voters} of {size} members, growing"))
        }
        _ => (false, "AllMembersHealthy", "every member is healthy".into()),
    }
}

fn progress_reason(action: &Action) -> &'static str {
    match action {
        Action::CreateSeed { .. } => "CreatingSeed",
        Action::AddLearner { .. } => "AddingMember",
        Action::CreateMemberPod { .. } => "FinishingMemberAdd",
        Action::Promote { .. } => "PromotingLearner",
        Action::RemoveMember { reason: RemoveReason::Dead, .. } => "ReplacingDeadMember",
        Action::RemoveMember { .. } => "RemovingMember",
        Action::DeletePod { .. } => "DeletingStrayPod",
        Action::Wait(WaitReason::Paused) => "Paused",
        Action::Wait(WaitReason::LearnerNotReady(_)) => "WaitingForLearner",
        Action::Wait(WaitReason::EtcdUnreachable(_)) => "WaitingForEtcd",
        Action::Wait(_) => "Blocked",
        Action::Done => "Converged",
    }
}

fn progress_message(action: &Action) -> String {
    match action {
        Action::CreateSeed { name } => format!("creating seed member {name}"),
        Action::AddLearner { name } => format!("adding member {name} as a learner"),
        Action::CreateMemberPod { name } => format!("creating the pod of member {name}"),
        Action::Promote { name, .. } => format!("promoting learner {name}"),
        Action::RemoveMember { name, .. } => format!("removing member {name}"),
        Action::DeletePod { name } => format!("deleting pod {name}, which is no member"),
        Action::Wait(WaitReason::Paused) => "spec.paused is set: nothing is changed".into(),
        Action::Wait(WaitReason::LearnerNotReady(name)) => format!("waiting for learner {name} to start and catch up"),
        Action::Wait(WaitReason::EtcdUnreachable(why)) => format!("waiting for etcd: {why}"),
        Action::Wait(WaitReason::QuorumLost { .. }) => "blocked: quorum is lost".into(),
        Action::Wait(WaitReason::DataLost) => "blocked: every member is gone".into(),
        Action::Done => "the cluster has its requested size and every member is healthy".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{Member, MemberPod};
    use crate::testing::cluster;

    fn steady() -> Observed {
        Observed {
            cluster: "demo".into(),
            seeded: true,
            next_index: 3,
            pods: (0..3)
                .map(|i| MemberPod { name: format!("demo-000{i}"), state: PodState::Running { ready: true } })
                .collect(),
            etcd: EtcdView::Members(
                (0..3)
                    .map(|i| Member {
                        id: i,
                        name: format!("demo-000{i}"),
                        started: true,
                        learner: false,
                        healthy: true,
                        leader: i == 0,
                    })
                    .collect(),
            ),
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
}
