//! The recovery rungs of the plan: a cluster etcd cannot be asked about, a lost quorum (waited out, excused by an
//! upgrade's restart, or recovered from a backup by the policy), and the recovery itself until its seed serves.

use std::time::Duration;

use super::{Action, Desired, Recovery, UPGRADE_MEMBER_TIMEOUT, WaitReason, upgrade};
use crate::observe::{EtcdView, MemberPod, Observed, PodState, member_index, member_name};
use crate::pod::Release;

/// The plan when etcd's member list is not available.
pub(super) fn without_etcd(desired: &Desired, observed: &Observed, why: String) -> Action {
    let live =
        observed.pods.iter().any(|p| !matches!(p.state, PodState::Dead | PodState::Refused | PodState::Terminating));
    if live && observed.seeded {
        // The cluster formed once and no member answers now.
        return lost(desired, observed, WaitReason::NoMemberAnswers(why));
    }
    if live {
        // The seed is starting: nothing can be changed through etcd.
        return Action::Wait(WaitReason::EtcdUnreachable(why));
    }
    if observed.seeded {
        return lost(desired, observed, WaitReason::DataLost);
    }
    seed_step(desired, observed).unwrap_or(Action::Wait(WaitReason::EtcdUnreachable(why)))
}

/// The step towards a seed for a cluster that holds no data yet (new, or being recovered), if one is due: a
/// restore that refused its backup stops everything; a seed that died otherwise holds nothing, so it is cleared
/// and made again (under a new name); with no pod at all, the seed is created.
fn seed_step(desired: &Desired, observed: &Observed) -> Option<Action> {
    if let Some(refused) = observed.pods.iter().find(|p| p.state == PodState::Refused) {
        let why = observed.refusal.clone().unwrap_or_else(|| "the restore failed".into());
        return Some(Action::Wait(WaitReason::RestoreRefused { member: refused.name.clone(), why }));
    }
    if let Some(dead) = observed.pods.iter().find(|p| p.state == PodState::Dead) {
        // Not at once: a source that is down, or a token that is refused, would otherwise cost a pod (and a
        // member name) every few seconds, with nothing to read why.
        let first = observed.recovering.unwrap_or(0);
        let attempt = member_index(&observed.cluster, &dead.name).map_or(0, |i| i.saturating_sub(first));
        let after = seed_retry_after(attempt);
        if let Some(failure) = observed.failure.as_ref().filter(|f| f.member == dead.name && f.ago < after) {
            let why = failure.why.clone();
            return Some(Action::Wait(WaitReason::SeedFailed { member: dead.name.clone(), why, after }));
        }
        return Some(Action::DeletePod { name: dead.name.clone() });
    }
    observed.pods.is_empty().then(|| match super::new_member_release(desired, observed) {
        Ok(release) => Action::CreateSeed { name: member_name(&observed.cluster, observed.next_index), release },
        Err(refused) => refused,
    })
}

/// How long the first failed seed is kept before it is replaced; each later one twice as long as the one before,
/// up to [`SEED_RETRY_MAX`].
pub const SEED_RETRY_AFTER: Duration = Duration::from_secs(15);

/// The longest a failed seed is kept.
pub const SEED_RETRY_MAX: Duration = Duration::from_secs(240);

/// How long failed seed number `attempt` (0 for the first of a new cluster or of a recovery) is kept before it is
/// replaced: a source that stays down costs a pod every few minutes at most, one that comes back is used soon.
pub fn seed_retry_after(attempt: u32) -> Duration {
    SEED_RETRY_AFTER.saturating_mul(1 << attempt.min(4)).min(SEED_RETRY_MAX)
}

/// Quorum is lost (`reason` says how it shows). A member the kubelet finds ready answers `/health`, which needs a
/// quorum: whatever the controller cannot see, such a cluster is not lost. Otherwise, once the loss has lasted the
/// grace period and the policy allows it, the recovery starts; until then nothing is touched.
pub(super) fn lost(desired: &Desired, observed: &Observed, reason: WaitReason) -> Action {
    let ready: Vec<String> =
        observed.pods.iter().filter(|p| p.state == PodState::Running { ready: true }).map(|p| p.name.clone()).collect();
    if !ready.is_empty() {
        return Action::Wait(WaitReason::MembersUnreachable { ready, seen: seen(&reason) });
    }
    // A member the recorded upgrade restarted, in a cluster too small to keep a quorum through a restart (or one
    // whose restart did not come back): no loss is timed and nothing is recovered, its data is intact. Setting
    // spec.version back to the image it ran before rolls it back.
    // Setting spec.version back to what the member rolled last ran rolls it back onto its data, whatever explains
    // the loss: only while its container is not Ready and the cluster version has not moved (checked there).
    if let Some(pod) = observed.upgrade.as_ref().and(upgrade::last_rolled(observed)).filter(|p| {
        !matches!(
            p.state,
            PodState::Dead | PodState::Refused | PodState::Terminating | PodState::Running { ready: true }
        )
    }) && let Some(back) = roll_back_without_quorum(desired, pod, observed.cluster_version)
    {
        return back;
    }
    if let Some(pod) = upgrade::restarting_for_upgrade(observed, &reason) {
        let member = pod.name.clone();
        let rolled = pod.rolled.as_ref().map_or(Duration::ZERO, |r| r.ago);
        let why = "it does not serve after its image change, and there is no quorum without it".to_string();
        return if rolled >= UPGRADE_MEMBER_TIMEOUT {
            Action::Wait(WaitReason::UpgradeStalled { member, why })
        } else {
            Action::Wait(WaitReason::UpgradeSettling { member, why })
        };
    }
    if let Some((nodes, pods)) = on_nodes_down(observed) {
        return Action::Wait(WaitReason::NodesNotReady { nodes, pods, seen: seen(&reason) });
    }
    if let Some(on_volumes) = super::volumes::quorum_on_volumes(observed) {
        return Action::Wait(on_volumes);
    }
    match desired.recovery {
        Recovery::Restore { grace } if observed.lost_for.is_some_and(|lost| lost >= grace) => {
            Action::StartRecovery { first_index: observed.next_index }
        }
        _ => Action::Wait(reason),
    }
}

/// Rolling a member back onto its data when nothing answers: only to the very image it ran before this upgrade
/// changed it (recorded on the pod), which the spec asks for again, and only a member whose new container has
/// not served (its restart has not completed, or it does not answer): the cluster version cannot have moved.
fn roll_back_without_quorum(
    desired: &Desired,
    pod: &MemberPod,
    cluster_version: Option<crate::version::Version>,
) -> Option<Action> {
    let rolled = pod.rolled.as_ref()?;
    let from = rolled.from.as_deref()?;
    let version = desired.etcd.version?;
    // The downgrade rule holds here too: once the cluster version moved past the old minor, its binary refuses the
    // data (review A4).
    if cluster_version.is_some_and(|c| c.minor > version.minor) {
        return None;
    }
    (from == desired.etcd.image && !pod.runs_image(&desired.etcd.image)).then(|| Action::RollMember {
        name: pod.name.clone(),
        from: rolled.to.clone(),
        release: Release { image: desired.etcd.image.clone(), version },
        leader: false,
        restarts: pod.restarts,
    })
}

/// What the controller sees of a lost quorum, in words.
fn seen(reason: &WaitReason) -> String {
    match reason {
        WaitReason::QuorumLost { healthy, voters } => format!("only {healthy} of {voters} voting members healthy"),
        WaitReason::NoMemberAnswers(why) => format!("no member answers ({why})"),
        WaitReason::DataLost => "no member pod".into(),
        other => format!("{other:?}"),
    }
}

/// The nodes that are not Ready and the member pods on them that may still run etcd (not failed for good), if
/// any. A Terminating pod counts: without its kubelet its container may run on.
fn on_nodes_down(observed: &Observed) -> Option<(Vec<String>, Vec<String>)> {
    let on_down: Vec<_> = observed
        .pods
        .iter()
        .filter(|p| !matches!(p.state, PodState::Dead | PodState::Refused))
        .filter_map(|p| Some((p.node_down.as_ref()?, &p.name)))
        .collect();
    if on_down.is_empty() {
        return None;
    }
    let nodes: std::collections::BTreeSet<String> = on_down.iter().map(|(d, _)| d.node.clone()).collect();
    Some((nodes.into_iter().collect(), on_down.into_iter().map(|(_, p)| p.clone()).collect()))
}

/// Why a recovery that has deleted nothing yet is no longer wanted, if it is not: the policy no longer restores,
/// or the lost cluster serves again (a pod the kubelet finds Ready, or a healthy majority in etcd's list). A
/// snapshot of a large database takes minutes, so the decision to recover is looked at again here, right before
/// the first deletion.
fn abandon(desired: &Desired, observed: &Observed) -> Option<String> {
    if !matches!(desired.recovery, Recovery::Restore { .. }) {
        return Some(match desired.recovery {
            Recovery::Manual => "spec.recovery.policy is Manual now".into(),
            _ => "spec.backup is gone, so there is nothing to restore from".into(),
        });
    }
    if let Some(ready) = observed.pods.iter().find(|p| p.state == PodState::Running { ready: true }) {
        return Some(format!("member pod {} is Ready again: the cluster serves", ready.name));
    }
    if let Some((nodes, _)) = on_nodes_down(observed) {
        return Some(format!(
            "member pods sit on nodes that are not Ready ({}): they may serve behind a partition",
            nodes.join(", ")
        ));
    }
    match &observed.etcd {
        EtcdView::Members(members) => {
            let voters = members.iter().filter(|m| !m.learner).count();
            let healthy = members.iter().filter(|m| !m.learner && m.healthy).count();
            (voters > 0 && healthy > voters / 2)
                .then(|| format!("{healthy} of {voters} voting members are healthy again: the quorum is back"))
        }
        EtcdView::Unreachable(_) => None,
    }
}

/// The plan while recovering from a lost quorum: the lost cluster's pods go, then a seed restored from the
/// recorded backup starts a new cluster; once it serves, the recovery is over and the normal plan grows it.
pub(super) fn recover(desired: &Desired, observed: &Observed, first_index: u32) -> Action {
    if observed.recovery_untouched
        && let Some(why) = abandon(desired, observed)
    {
        return Action::AbandonRecovery { why };
    }
    let lost_member = |name: &str| member_index(&observed.cluster, name).is_none_or(|i| i < first_index);
    // A pod already Terminating goes by itself, unless its node is not Ready: its kubelet can never confirm, and
    // it is deleted again, at once (review A7: its node may have gone down during the pod's grace period).
    let deletable = |p: &MemberPod| p.state != PodState::Terminating || p.node_down.is_some();
    if let Some(old) = observed.pods.iter().find(|p| lost_member(&p.name) && deletable(p)) {
        return Action::DeleteLostMember { name: old.name.clone() };
    }
    if observed.pods.iter().any(|p| lost_member(&p.name)) {
        // Only once they are gone is every answer from etcd an answer from the new cluster.
        return Action::Wait(WaitReason::LostMembersTerminating);
    }
    // The lost cluster's claims (their pods gone before, or never re-created) are retired before the seed: never
    // mounted again, and kept, whatever the policy (they may hold writes the backup does not).
    if let Some(claim) = observed.claims.iter().find(|c| c.ours && !c.retired && !c.deleting && lost_member(&c.member))
    {
        return Action::RetireLostClaim { name: claim.member.clone() };
    }
    if let Some(step) = seed_step(desired, observed) {
        return step;
    }
    match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => Action::CompleteRecovery,
        EtcdView::Members(_) => Action::Wait(WaitReason::EtcdUnreachable("etcd lists no members".into())),
        EtcdView::Unreachable(why) => Action::Wait(WaitReason::EtcdUnreachable(why.clone())),
    }
}
