//! The rollout rung of the plan: a member whose pod was rendered from other settings than the spec renders now
//! (`spec.etcd`, `spec.pod`, `spec.storage`: the settings hash each pod carries) is moved to the current ones, one
//! member at a time, under the gates the upgrade uses: every member healthy and Ready with a leader, the spec's
//! size, no learner, no CORRUPT alarm (a NOSPACE alarm does not stop it: a raised quota is how it is cleared),
//! a quorum kept through the restart, followers first, leadership moved, the leader last, and each member serving
//! again before the next. A member on a claim is restarted on it (its pod deleted, then created again as the same
//! member with the current settings); a member on an emptyDir is replaced (removed, then a new member added with
//! the current settings, on a claim when `spec.storage` asks for one), only from three voters up.

use super::{Action, Desired, RemoveReason, WaitReason, restart_keeps_quorum};
use crate::observe::{Member, Observed, PodState};

/// The members whose pods run other settings than `wanted` (by name), for status.
pub fn drifted<'a>(observed: &'a Observed, wanted: &str) -> Vec<&'a str> {
    let mut names: Vec<&str> = observed
        .pods
        .iter()
        .filter(|p| p.state != PodState::Terminating && p.settings.as_deref().is_some_and(|h| h != wanted))
        .map(|p| p.name.as_str())
        .collect();
    names.sort();
    names
}

/// The next rollout step, for a cluster the membership and upgrade rungs had nothing for; `Done` when every member
/// pod runs the current settings (or records none: a pod of an earlier controller is not rolled for that).
pub(super) fn step(desired: &Desired, observed: &Observed, members: &[Member]) -> Action {
    let Some(wanted) = desired.settings.as_deref() else { return Action::Done };
    let drifted = drifted(observed, wanted);
    if drifted.is_empty() {
        return Action::Done;
    }
    let waiting = |why: String| Action::Wait(WaitReason::RolloutWaiting(why));
    let Some(leader) = members.iter().find(|m| m.leader) else {
        return waiting("the cluster has no leader".into());
    };
    if members.iter().any(|m| m.learner) || members.len() != desired.size as usize {
        return waiting("the cluster is changing size".into());
    }
    if !observed.alarms_read {
        return waiting("etcd's alarms could not be read".into());
    }
    if let Some((member, _)) = observed.alarms.iter().find(|(_, a)| a != "NOSPACE") {
        return waiting(format!("etcd has an alarm other than NOSPACE raised on {member}"));
    }
    let pod_of = |name: &str| observed.pods.iter().find(|p| p.name == name);
    if let Some(member) = members
        .iter()
        .find(|m| !m.healthy || pod_of(&m.name).is_none_or(|p| p.state != PodState::Running { ready: true }))
    {
        return waiting(format!("member {} is not healthy and Ready", member.name));
    }
    let pending: Vec<&Member> = members.iter().filter(|m| drifted.contains(&m.name.as_str())).collect();
    let next = match pending.iter().filter(|m| !m.leader).min_by_key(|m| &m.name) {
        Some(next) => *next,
        None => {
            // Only the leader is left: hand leadership to a member on the current settings first.
            let current = members.iter().filter(|m| m.id != leader.id && !drifted.contains(&m.name.as_str()));
            if let Some(to) = current.min_by_key(|m| &m.name) {
                return Action::MoveLeader { from: leader.id, to: to.id, name: to.name.clone() };
            }
            leader
        }
    };
    if !restart_keeps_quorum(members, next.id) {
        return waiting(format!("restarting {} now would leave no healthy majority", next.name));
    }
    let on_claim = observed.claim_of(&next.name).is_some_and(|c| c.usable() && c.member_id == Some(next.id));
    if on_claim {
        return Action::RollPod { name: next.name.clone(), id: next.id };
    }
    let voters = members.iter().filter(|m| !m.learner).count();
    if voters < 3 {
        return waiting(format!(
            "{} keeps its data in an emptyDir, and replacing a member of a {voters}-member cluster leaves no \
             margin: grow the cluster to three members first (or delete its pod, accepting that risk)",
            next.name
        ));
    }
    Action::RemoveMember { id: next.id, name: next.name.clone(), reason: RemoveReason::Rollout }
}
