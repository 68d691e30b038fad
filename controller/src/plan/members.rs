//! The membership rungs of the plan: strays, dead members, unfinished adds, learners, and the cluster's size.

use super::{Action, Desired, RemoveReason, WaitReason, keeps_quorum, remove, upgrade};
use crate::observe::{EtcdView, Member, Observed, PodState, member_name};
use crate::pod::Release;
use crate::version;

/// The next membership change, for a cluster with a quorum: a pod that is no member goes; a dead member is removed
/// (so its replacement can be added); an add whose pod never appeared is finished or rolled back; a learner is
/// promoted once it runs; then the size: shrink (unhealthy members first, then followers, the leader last) or grow
/// by a learner. `None` when the membership is what the spec asks for.
pub(super) fn step(desired: &Desired, observed: &Observed, members: &[Member]) -> Option<Action> {
    let pod_of = |name: &str| observed.pods.iter().find(|p| p.name == name);
    let pod_state = |name: &str| pod_of(name).map(|p| p.state);
    let voters = members.iter().filter(|m| !m.learner).count();
    let healthy = members.iter().filter(|m| !m.learner && m.healthy).count();

    // Pods that are no member: leftovers of a removal whose pod deletion did not happen. Only with a quorum: a
    // member list read without one may be stale and miss a newer member.
    if let Some(orphan) =
        observed.pods.iter().find(|p| p.state != PodState::Terminating && !members.iter().any(|m| m.name == p.name))
    {
        return Some(Action::DeletePod { name: orphan.name.clone() });
    }
    if let Some(step) = super::volumes::bookkeeping(desired, observed, members) {
        return Some(step);
    }

    // Dead members first: remove them, so their replacements can be added. A member in a restart loop is dead;
    // so is one that does not answer from a node that has been lost for a while (its pod, Terminating or not,
    // is then deleted without waiting for that node's kubelet).
    // The member an upgrade restarted last that now crash-loops is not replaced while the upgrade is recorded and
    // the cluster version has not moved: its data is intact, and the answer is the upgrade's (it stalls; setting the
    // version back rolls the member back). Once the cluster version moved to the target's minor, the member served
    // at the target and no rollback is possible: it is replaced like any member in a restart loop (review A3b).
    // A member whose volume its guard refused is not replaced: the claim may hold another cluster's data, and a
    // person decides (status names it). One that a CORRUPT alarm names is, once a quorum is kept without it.
    let corrupt = |m: &Member| observed.alarms.iter().any(|(name, alarm)| name == &m.name && alarm == "CORRUPT");
    let dead = |m: &&Member| match pod_of(&m.name) {
        None => m.started,
        Some(pod) if pod.volume_refused.is_some() => false,
        // Its volume is pinned to a node no pod can go to any more: it cannot come back on it.
        Some(pod) if pod.volume_unschedulable.is_some_and(|d| d >= super::VOLUME_UNREACHABLE_AFTER) => true,
        Some(_) if corrupt(m) => true,
        Some(pod) => {
            let rolled = observed.upgrade.is_some()
                && !upgrade::cluster_moved(observed)
                && upgrade::last_rolled(observed).is_some_and(|last| last.name == pod.name);
            matches!(pod.state, PodState::Dead | PodState::Refused)
                || (pod.state == PodState::CrashLooping && !rolled)
                || (!m.healthy && pod.node_down.as_ref().is_some_and(|d| d.down_for >= super::NODE_LOST_AFTER))
        }
    };
    if let Some(member) = members.iter().filter(dead).find(|m| m.learner || keeps_quorum(members, m.id)) {
        return Some(remove(member, RemoveReason::Dead));
    }

    // A member added to etcd whose pod was never created: finish the add, unless it is no longer needed.
    if let Some(member) = members.iter().find(|m| !m.started && pod_state(&m.name).is_none()) {
        if member.learner && voters >= desired.size as usize {
            return Some(remove(member, RemoveReason::ScaleDown));
        }
        return Some(match new_member_release(desired, observed) {
            Ok(release) => Action::CreateMemberPod { name: member.name.clone(), release },
            Err(refused) => refused,
        });
    }

    if let Some(learner) = members.iter().find(|m| m.learner) {
        if voters >= desired.size as usize {
            // Not needed any more (the spec shrank while it was joining): it must not block anything.
            return Some(remove(learner, RemoveReason::ScaleDown));
        }
        let running = matches!(pod_state(&learner.name), Some(PodState::Running { .. }));
        if learner.started && learner.healthy && running {
            return Some(Action::Promote { id: learner.id, name: learner.name.clone() });
        }
        return Some(Action::Wait(WaitReason::LearnerNotReady(learner.name.clone())));
    }

    if voters > desired.size as usize {
        // Unhealthy members first, then followers; the leader last.
        let mut candidates: Vec<&Member> = members.iter().filter(|m| !m.learner).collect();
        candidates.sort_by_key(|m| (m.healthy, m.leader, std::cmp::Reverse(m.name.clone())));
        if let Some(victim) = candidates.into_iter().find(|m| keeps_quorum(members, m.id)) {
            return Some(remove(victim, RemoveReason::ScaleDown));
        }
        return Some(Action::Wait(WaitReason::QuorumLost { healthy, voters }));
    }
    if voters < desired.size as usize {
        return Some(match new_member_release(desired, observed) {
            Ok(release) => Action::AddLearner { name: member_name(&observed.cluster, observed.next_index), release },
            Err(refused) => refused,
        });
    }
    None
}

/// The etcd a new member runs: the version the cluster runs (its lowest member's), so that a member added during
/// an upgrade (a heal, a grow) never makes a mix etcd does not support; it is moved to the target with the others.
/// Its image is that of a settled member running that version (the repository in use), else the spec's
/// repository's. A cluster with no member reporting (a seed) gets what the spec asks for, if the controller runs
/// that at all.
pub fn new_member_release(desired: &Desired, observed: &Observed) -> Result<Release, Action> {
    let reporting: Vec<&Member> = match &observed.etcd {
        EtcdView::Members(members) if observed.recovering.is_none() => {
            members.iter().filter(|m| m.version.is_some()).collect()
        }
        _ => Vec::new(),
    };
    if let Some(version) = reporting.iter().filter_map(|m| m.version).min() {
        // A pod whose image was just changed still reports its old version: its image says nothing about it.
        let settled_image = reporting.iter().filter(|m| m.version == Some(version)).find_map(|m| {
            let pod = observed.pods.iter().find(|p| p.name == m.name)?;
            let settled = pod.rolled.as_ref().is_none_or(|r| r.restarted(pod));
            let image = pod.image.as_ref().filter(|i| settled && i.ends_with(&format!(":{}", version.tag())))?;
            Some(image.clone())
        });
        return Ok(settled_image
            .map_or_else(|| Release::of(&desired.etcd.repository, version), |image| Release { image, version }));
    }
    match version::supported(desired.etcd.version, &desired.etcd.spec) {
        Ok(version) => Ok(Release { image: desired.etcd.image.clone(), version }),
        Err(refusal) => Err(Action::Wait(WaitReason::VersionRefused(refusal))),
    }
}
