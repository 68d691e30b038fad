//! The volume rungs of the plan (`spec.storage`): a member whose pod is gone, or failed, is created again on its
//! claim as the same member, whatever etcd says (that is how a cluster whose every pod was deleted comes back,
//! with every write); a member's etcd ID is recorded on its claim once etcd lists it as started (the evidence a
//! re-creation needs); a claim whose member is gone from etcd follows the retention policy.

use super::{Action, Desired, WaitReason, restart_keeps_quorum};
use crate::observe::{Claim, ClaimPhase, EtcdView, Member, Observed, PodState};
use crate::pod::Release;

/// The claim-backed step that needs no quorum: the pod of a member on a usable claim is created again when it is
/// gone, or deleted (to be created again) when it failed for good. Evidence: the claim was made for this cluster,
/// records the member's etcd ID (so the member started on it), is not retired, its volume is not lost, and etcd,
/// when it answers, still lists that ID.
pub(super) fn restart(desired: &Desired, observed: &Observed) -> Option<Action> {
    let listed = |claim: &Claim, id: u64| match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => {
            members.iter().any(|m| m.id == id && m.name == claim.member)
        }
        // Nothing answers (every member pod gone, say): the claim's record is the evidence.
        _ => true,
    };
    for claim in observed.claims.iter().filter(|c| c.usable()) {
        let Some(id) = claim.member_id.filter(|&id| listed(claim, id)) else { continue };
        match observed.pods.iter().find(|p| p.name == claim.member) {
            None => {
                return Some(match restart_release(desired, observed) {
                    Ok(release) => Action::RestartOnClaim { name: claim.member.clone(), id, release },
                    Err(refused) => refused,
                });
            }
            // Evicted, or a restored seed's etcd that exited (`restartPolicy: Never`): its data is on the claim.
            Some(pod) if pod.state == PodState::Dead && pod.volume_refused.is_none() => {
                return Some(Action::DeleteFailedPod { name: pod.name.clone(), id });
            }
            // Its own volume, whose files its pod's user cannot use, and the spec now renders other settings (the
            // user the files belong to, say): its pod failed for good, and is created again with them. Nothing is
            // lost: etcd never ran in that pod.
            Some(pod) if unusable_with_older_settings(desired, pod) => {
                return Some(Action::DeleteFailedPod { name: pod.name.clone(), id });
            }
            Some(_) => {}
        }
    }
    None
}

/// The etcd a member created again on its volume runs: what the cluster runs when members report (a new member's
/// release), else the lowest version the members last reported (status), never what the spec asks for: the spec
/// may have moved on while nothing ran, and etcd moves one minor at a time.
fn restart_release(desired: &Desired, observed: &Observed) -> Result<Release, Action> {
    let reporting = matches!(&observed.etcd, EtcdView::Members(m) if m.iter().any(|m| m.version.is_some()));
    match observed.current_version {
        Some(version) if !reporting => Ok(Release::of(&desired.etcd.repository, version)),
        _ => super::new_member_release(desired, observed),
    }
}

/// With a quorum: the claim bookkeeping. A started member's claim that does not record its etcd ID gets it; a claim
/// of this cluster whose member etcd no longer lists and whose pod is gone is retired, then deleted when
/// `whenScaled` says `Delete` (a removal the controller did not finish). Claims retained from an earlier cluster
/// of the same name are left alone, and so is a claim whose guard refused its volume: it may hold another
/// cluster's data.
pub(super) fn bookkeeping(desired: &Desired, observed: &Observed, members: &[Member]) -> Option<Action> {
    // A claim made for the next member before etcd took it (the add failed) is that member's still: the name is
    // used again.
    let before_next = |c: &&Claim| {
        crate::observe::member_index(&observed.cluster, &c.member).is_some_and(|i| i < observed.next_index)
    };
    // The claims are owned by the EtcdCluster (deleted with it) exactly when `whenDeleted` says `Delete`: a policy
    // changed since they were made is applied to them (a claim retired for a lost cluster is never owned).
    if let Some(retention) = desired.storage {
        let owned = retention.when_deleted == proto::cluster::Retention::Delete;
        if let Some(claim) = observed.claims.iter().find(|c| c.ours && !c.deleting && !c.lost && c.owned != owned) {
            return Some(Action::SetClaimOwner { name: claim.member.clone(), owned });
        }
    }
    for claim in observed.claims.iter().filter(|c| c.ours && !c.deleting).filter(before_next) {
        let member = members.iter().find(|m| m.name == claim.member);
        let pod = observed.pods.iter().find(|p| p.name == claim.member);
        match member {
            Some(m) if m.started && claim.member_id.is_none() && !claim.retired => {
                return Some(Action::RecordMemberId { name: claim.member.clone(), id: m.id });
            }
            Some(_) => {}
            None if pod.is_some() => {}
            None if pod.is_none() && refused(observed, claim) => {}
            None => {
                let delete =
                    !claim.lost && desired.storage.is_some_and(|r| r.when_scaled == proto::cluster::Retention::Delete);
                if !claim.retired || delete {
                    return Some(Action::RetireClaim { name: claim.member.clone(), delete });
                }
            }
        }
    }
    None
}

fn refused(observed: &Observed, claim: &Claim) -> bool {
    observed.pods.iter().any(|p| p.name == claim.member && p.volume_refused.is_some())
}

/// Whether a majority of the voting members (etcd's list when it was read, else the claims that recorded a member)
/// have a usable claim: their data is intact, and a lost quorum comes back when their pods run again. A restore
/// from a backup, which gives up what they hold, is then never started.
pub(super) fn quorum_on_volumes(observed: &Observed) -> Option<WaitReason> {
    // (name, etcd ID) of each voting member.
    let voters: Vec<(String, u64)> = match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => {
            members.iter().filter(|m| !m.learner).map(|m| (m.name.clone(), m.id)).collect()
        }
        _ => observed
            .claims
            .iter()
            .filter(|c| c.ours && !c.retired)
            .filter_map(|c| Some((c.member.clone(), c.member_id?)))
            .collect(),
    };
    // A claim holds a member's data once it records that member (it started on it).
    let usable = |(name, id): &(String, u64)| {
        observed.claim_of(name).is_some_and(|c| c.usable() && c.member_id == Some(*id))
            && !observed.pods.iter().any(|p| {
                &p.name == name
                    && (p.volume_refused.as_deref().is_some_and(|why| !crate::observe::data_intact(why))
                        || p.volume_unschedulable.is_some_and(|d| d >= super::VOLUME_UNREACHABLE_AFTER))
            })
    };
    let on_volumes: Vec<String> = voters.iter().filter(|v| usable(v)).map(|(n, _)| n.clone()).collect();
    (!voters.is_empty() && on_volumes.len() > voters.len() / 2)
        .then_some(WaitReason::MembersOnVolumes { members: on_volumes, voters: voters.len() })
}

/// How long a claim may wait for the kubelet to grow its file system (`FileSystemResizePending`) before its member
/// is restarted on it: a driver that expands online does it within seconds, one that expands only offline never
/// while the pod lives.
pub const RESIZE_REMOUNT_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// The volume size, between the etcd image and the settings in the rollout rung: claims asked to grow
/// (`spec.storage.size` more than they ask for), one at a time. Evidence: every member is healthy (a volume being
/// resized is no time to lose another), no claim is being expanded already (the one asked last has not got its
/// size: `ClaimExpanding`, with the claim's resize error if a condition says one — a wait the rollout rung does not
/// stop at: settings and class moves go on), and the claim's class allows expansion (a class that does not, or
/// cannot be read, leaves the claim as it is; status says so). A smaller size is never asked (the API server
/// refuses to shrink `spec.storage.size`; a claim bigger than it stays as it is). A claim whose file system has
/// waited [`RESIZE_REMOUNT_AFTER`] for the kubelet (a driver that expands offline) gets its member restarted on it
/// (`RollPod`), under the rollout's gates (leadership moved first, a quorum kept), unless that member is to move
/// to another storage class anyway.
pub(super) fn grow(desired: &Desired, observed: &Observed, members: &[Member]) -> Action {
    let Some(size) = desired.storage_size else { return Action::Done };
    let listed = |claim: &&Claim| members.iter().any(|m| m.name == claim.member && claim.member_id == Some(m.id));
    let claims: Vec<&Claim> =
        observed.claims.iter().filter(|c| c.usable() && c.phase == ClaimPhase::Bound).filter(listed).collect();
    let waiting = |why: String| Action::Wait(WaitReason::RolloutWaiting(why));
    let voters = members.iter().filter(|m| !m.learner).count();
    if let Some(expanding) = claims.iter().find(|c| c.expanding()) {
        let member = members.iter().find(|m| m.name == expanding.member);
        let remount = expanding.resize_pending.is_some_and(|d| d >= RESIZE_REMOUNT_AFTER);
        let moving = member.is_some_and(|m| super::rollout::other_class(desired, observed, m) && voters >= 3);
        if let Some(member) = member.filter(|_| remount && !moving) {
            // The rollout's gates: the spec's size and no learner, alarms read and none but NOSPACE, every member
            // healthy and Ready.
            if members.iter().any(|m| m.learner) || members.len() != desired.size as usize {
                return waiting(format!(
                    "{} waits for its pod to mount it again, and the cluster is changing size",
                    expanding.name
                ));
            }
            if !observed.alarms_read || observed.alarms.iter().any(|(_, alarm)| alarm != "NOSPACE") {
                return waiting(format!("{} waits for its pod to mount it again, under an alarm", expanding.name));
            }
            let ready = |m: &Member| {
                observed.pods.iter().any(|p| p.name == m.name && p.state == (PodState::Running { ready: true }))
            };
            if let Some(down) = members.iter().find(|m| !m.healthy || !ready(m)) {
                return waiting(format!(
                    "{} waits for its pod to mount it again, and {} is not healthy and Ready",
                    expanding.name, down.name
                ));
            }
            if member.leader
                && let Some(to) = members.iter().filter(|m| m.id != member.id && !m.learner).min_by_key(|m| &m.name)
            {
                return Action::MoveLeader { from: member.id, to: to.id, name: to.name.clone() };
            }
            if !restart_keeps_quorum(members, member.id) {
                return waiting(format!("restarting {} now would leave no healthy majority", member.name));
            }
            return Action::RollPod { name: member.name.clone(), id: member.id };
        }
        return Action::Wait(WaitReason::ClaimExpanding {
            claim: expanding.name.clone(),
            error: expanding.resize_error.clone(),
        });
    }
    let Some(next) = claims
        .iter()
        .filter(|c| c.requested.is_some_and(|r| r < size) && c.expandable == Some(true))
        .min_by_key(|c| &c.name)
    else {
        return Action::Done;
    };
    // One at a time over every claim that may still be mounted, not only those of listed members (a member being
    // added, a claim waiting for its member's ID): a lost or retired one is never mounted again, and never waited on.
    if let Some(expanding) = observed.claims.iter().find(|c| c.usable() && c.expanding()) {
        return Action::Wait(WaitReason::ClaimExpanding {
            claim: expanding.name.clone(),
            error: expanding.resize_error.clone(),
        });
    }
    if let Some(down) = members.iter().find(|m| !m.healthy) {
        return waiting(format!("{} is to grow, and {} is not healthy", next.name, down.name));
    }
    Action::ExpandClaim { claim: next.name.clone(), size: crate::status::bytes_in_words(size) }
}

/// Whether `pod`'s guard found its own volume's files unusable by the pod's user, and the spec now renders other
/// settings than the pod was made with (the user the files belong to, say): created again, it may start.
pub(super) fn unusable_with_older_settings(desired: &Desired, pod: &crate::observe::MemberPod) -> bool {
    pod.volume_refused.as_deref().is_some_and(crate::observe::data_intact)
        && pod.state != PodState::Terminating
        && desired.settings.is_some()
        && pod.settings != desired.settings
}
