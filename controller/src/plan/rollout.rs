//! The rollout rung of the plan: the one mechanism that carries every change to a member's pod. A member whose pod
//! runs another etcd image than the spec asks for (an upgrade or a rollback: [`super::upgrade`] holds what is
//! particular to a version change), or was rendered from other settings than the spec renders now (`spec.etcd`,
//! `spec.pod`, `spec.storage`: the settings hash each pod carries), is moved to the current ones, one member at a
//! time, under one set of gates: every member healthy and Ready with a leader, the spec's size, no learner, no
//! alarm but NOSPACE, a quorum kept through the restart, followers first, leadership moved, the leader last, and
//! each member serving again before the next. How a member is moved depends on what differs and where its data
//! lives: a new image is set in place (the kubelet restarts the container in the same pod); new settings on a claim
//! re-create the pod on it, as the same member; new settings on an emptyDir replace the member (removed, then a new
//! member added with the current settings, on a claim when `spec.storage` asks for one), only from three voters up.
//! Peer TLS turned on for a running cluster goes through the same gates: every pod rolled to listen on both
//! schemes, then each member's registered peer URL switched, then each pod rolled to listen on it alone
//! ([`crate::peering`]).

use super::{Action, Desired, RemoveReason, WaitReason, restart_keeps_quorum, upgrade, volumes};
use crate::observe::{Member, MemberPod, Observed, PodState};

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

/// The rollout rung: the next step that moves a member's pod to what the spec renders, for a cluster the membership
/// rungs had nothing for; `Done` when every member runs it.
///
/// Two things can differ, and the etcd image goes first: while members run another etcd than the spec asks for,
/// the version change is rolled (its record and backup first, [`upgrade::begin`]; each member's etcd container's
/// image changed in place, [`upgrade::roll`]), then the settings. Whatever the change, the member and the moment
/// are chosen here, under one set of gates: a leader, the spec's size and no learner, the alarms read and none but
/// NOSPACE raised (none at all for a version change), every member healthy and Ready (but one this very upgrade
/// restarted that did not come back: moving it is what fixes it), a quorum kept through the restart, followers by
/// name, leadership moved to a member already on the new pod, the leader last.
pub(super) fn step(desired: &Desired, observed: &Observed, members: &[Member]) -> Action {
    let target = match upgrade::target(desired, observed, members) {
        Ok(target) => target,
        Err(step) => return step,
    };
    // The volumes grow before the settings roll: a raised quota then finds the room it needs. A claim that does not
    // get its size (a slow or failing driver) stops no rollout: its wait is told once nothing else is to do.
    let mut growing = Action::Done;
    if target.is_none() {
        match volumes::grow(desired, observed, members) {
            Action::Done => {}
            wait @ Action::Wait(_) => growing = wait,
            step => return step,
        }
    }
    let pod_of = |name: &str| observed.pods.iter().find(|p| p.name == name);
    let drifted = desired.settings.as_deref().map(|wanted| drifted(observed, wanted)).unwrap_or_default();
    let voters = members.iter().filter(|m| !m.learner).count();
    // A member on a claim of another storage class than the spec names moves onto a new claim of it: it is
    // replaced, once that class is known to exist, from three voters up (below, it stays: status says so).
    let other_class = |m: &Member| other_class(desired, observed, m) && voters >= 3;
    // Whether a member's pod is what the spec renders, as far as the change rolled now goes: its settings, its
    // storage class, and where it listens for peers, which follows its registered peer URL.
    let current = |m: &Member| match &target {
        Some(target) => upgrade::on_target(observed, &target.release.image, m),
        None => !drifted.contains(&m.name.as_str()) && !other_class(m) && listens(desired, pod_of(&m.name), m),
    };
    let pending: Vec<&Member> = members.iter().filter(|m| !current(m)).collect();
    // Members registered with the other peer scheme than the spec asks for, switched once every pod listens on
    // both ([`crate::peering`]).
    let unswitched: Vec<&Member> = match target {
        Some(_) => Vec::new(),
        None => members.iter().filter(|m| switch_to(desired, m).is_some()).collect(),
    };
    if pending.is_empty() && unswitched.is_empty() {
        return growing;
    }
    let upgrading = target.is_some();
    let waiting = |why: String| {
        Action::Wait(if upgrading { WaitReason::UpgradeWaiting(why) } else { WaitReason::RolloutWaiting(why) })
    };
    let Some(leader) = members.iter().find(|m| m.leader) else {
        return waiting("the cluster has no leader".into());
    };
    if members.iter().any(|m| m.learner) || members.len() != desired.size as usize {
        return waiting("the cluster is changing size".into());
    }
    if !observed.alarms_read {
        return waiting("etcd's alarms could not be read".into());
    }
    // A NOSPACE alarm does not stop a settings rollout: a raised quota is how it is cleared.
    if let Some((member, alarm)) = observed.alarms.iter().find(|(_, alarm)| upgrading || alarm != "NOSPACE") {
        return waiting(format!("etcd has alarm {alarm} raised on {member}"));
    }
    // A member this very upgrade restarted that did not come back may be unhealthy: moving it (back) is the fix.
    let fixable = |m: &Member| upgrading && !current(m) && pod_of(&m.name).is_some_and(|p| p.rolled.is_some());
    if let Some((member, why)) =
        members.iter().filter(|m| !fixable(m)).find_map(|m| serving_now(m, pod_of(&m.name)).map(|why| (m, why)))
    {
        return waiting(format!("member {} is not healthy: {why}", member.name));
    }
    if let Some(target) = &target
        && let Some(step) = upgrade::begin(observed, members, target)
    {
        return step;
    }

    // Every pod listens where it is to be registered, with the certificates its own dials present: one member's
    // peer URL is switched, followers first.
    if pending.is_empty() {
        let next = unswitched.iter().filter(|m| !m.leader).min_by_key(|m| &m.name).unwrap_or(&unswitched[0]);
        let url = switch_to(desired, next).unwrap_or_default();
        return Action::SwitchPeerUrl { name: next.name.clone(), id: next.id, url };
    }
    // One that did not come back first, then followers by name, the leader last.
    let next = pending
        .iter()
        .find(|m| fixable(m) && !m.healthy)
        .or_else(|| pending.iter().filter(|m| !m.leader).min_by_key(|m| &m.name))
        .copied();
    let next = match next {
        Some(next) => next,
        None => {
            // Only the leader is left: hand leadership to a member on the new pod first.
            let moved = members.iter().filter(|m| m.id != leader.id && current(m) && m.healthy);
            if let Some(to) = moved.min_by_key(|m| &m.name) {
                return Action::MoveLeader { from: leader.id, to: to.id, name: to.name.clone() };
            }
            leader
        }
    };
    if !restart_keeps_quorum(members, next.id) {
        return waiting(format!("restarting {} now would leave no healthy majority", next.name));
    }
    if let Some(target) = target {
        return upgrade::roll(observed, target, next);
    }
    // The settings: a member on a claim is created again on it; one on an emptyDir, or on a claim of another
    // storage class, is replaced.
    let on_claim = observed.claim_of(&next.name).is_some_and(|c| c.usable() && c.member_id == Some(next.id));
    if on_claim && !other_class(next) {
        return Action::RollPod { name: next.name.clone(), id: next.id };
    }
    if voters < 3 {
        return waiting(format!(
            "{} keeps its data in an emptyDir, and replacing a member of a {voters}-member cluster leaves no \
             margin: grow the cluster to three members first (or delete its pod, accepting that risk)",
            next.name
        ));
    }
    Action::RemoveMember { id: next.id, name: next.name.clone(), reason: RemoveReason::Rollout }
}

/// Whether `member` keeps its data on a claim of another storage class than `spec.storage` names, which is known
/// to exist. The member's own claim (its etcd ID recorded) is judged even when retired: a member whose removal
/// failed after its claim was retired is still on the old class.
pub fn other_class(desired: &Desired, observed: &Observed, member: &Member) -> bool {
    let Some(wanted) = desired.storage_class.as_deref() else { return false };
    let claim = observed.claims.iter().find(|c| c.member == member.name && c.ours && c.member_id == Some(member.id));
    let class = claim.and_then(|c| c.class.as_deref());
    class.is_some_and(|has| has != wanted) && observed.wanted_class_exists == Some(true)
}

/// Whether `pod`, of `member`, listens for peers where its registered peer URL and the spec's scheme say
/// ([`crate::peering::listen`]). A pod whose command names no listen URLs is not judged.
fn listens(desired: &Desired, pod: Option<&MemberPod>, member: &Member) -> bool {
    let Some(pod) = pod else { return true };
    let listened = crate::peering::listened(&pod.command);
    listened.is_empty()
        || listened == crate::peering::listen(member.peer_urls.first().map(String::as_str), desired.peer_tls)
}

/// The peer URL `member` is to be registered at, when it is registered with the other scheme than the spec asks for.
fn switch_to(desired: &Desired, member: &Member) -> Option<String> {
    let url = crate::peering::PeerUrl::parse(member.peer_urls.first()?)?;
    (url.tls != desired.peer_tls).then(|| url.wanted(desired.peer_tls).render())
}

/// Why `member` does not serve right now (it does not answer, or its pod is not Ready), if it does not.
fn serving_now(member: &Member, pod: Option<&MemberPod>) -> Option<String> {
    if !member.healthy {
        return Some("it does not answer".into());
    }
    pod.is_none_or(|p| p.state != PodState::Running { ready: true }).then(|| "its pod is not Ready".into())
}
