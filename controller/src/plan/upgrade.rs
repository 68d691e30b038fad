//! The etcd-version half of the rollout rung ([`super::rollout`]): which version change is allowed, its record (a
//! backup first) and its end, members settling at the target, and the in-place image change that moves one member
//! — the member, its gates and its order are the rollout's, as for any other change to a member's pod.

use super::{Action, CAUGHT_UP_ENTRIES, Desired, UPGRADE_MEMBER_TIMEOUT, WaitReason};
use crate::observe::{EtcdView, Member, MemberPod, Observed, PodState};
use crate::pod::Release;
use crate::version::{self, Refusal, Version};

/// The member pod the recorded upgrade changed last, if its restart explains a lost quorum: its new container has
/// not served yet, and with it the cluster would have a majority (a one- or two-member cluster in its restart, or a
/// larger one whose restart did not come back while another member was lost too is not: that is a loss).
///
/// Not served yet means: the kubelet has not restarted it with the new image, or it does not answer at the target
/// and the cluster version has not moved to the target's minor (a new image that exits at once stays excused: the
/// answer is a rollback, which needs no quorum). A member that answers at the target, or any other member whose pod
/// is gone or dead, means the loss is no restart: it is timed and handled as a loss (review A3a), and the recovery
/// takes no fresh backup while a pod that may hold data is silent.
pub(super) fn restarting_for_upgrade<'a>(observed: &'a Observed, reason: &WaitReason) -> Option<&'a MemberPod> {
    observed.upgrade.as_ref()?;
    let pod = last_rolled(observed)?;
    let rolled = pod.rolled.as_ref()?;
    let down = matches!(pod.state, PodState::Dead | PodState::Refused | PodState::Terminating)
        || pod.state == (PodState::Running { ready: true });
    let explains = match reason {
        WaitReason::QuorumLost { healthy, voters } => *voters <= 2 || healthy + 1 > voters / 2,
        // Nothing answers: only a one- or two-member cluster is explained by one restart.
        _ => observed.pods.len() <= 2,
    };
    let members = match &observed.etcd {
        EtcdView::Members(members) => members.as_slice(),
        EtcdView::Unreachable(_) => &[],
    };
    let target = observed.upgrade.as_ref().and_then(|u| Version::parse(&u.to_version));
    let answers_at_target = members.iter().any(|m| m.name == pod.name && m.version.is_some() && m.version == target);
    let not_served = !rolled.restarted(pod) || (!answers_at_target && !cluster_moved(observed));
    // Every other voter's pod is there and not dead: a member lost besides is a loss, whatever this one does.
    let others_there = members.iter().filter(|m| !m.learner && m.name != pod.name).all(|m| {
        observed
            .pods
            .iter()
            .find(|p| p.name == m.name)
            .is_some_and(|p| !matches!(p.state, PodState::Dead | PodState::Refused | PodState::Terminating))
    });
    (!down && explains && not_served && others_there).then_some(pod)
}

/// Whether the recorded upgrade crosses a minor and the cluster version already moved to the target's: every
/// member reported the new version (etcd moves it only then), so the member rolled last served at the target,
/// and the old binary no longer starts on this data.
pub(super) fn cluster_moved(observed: &Observed) -> bool {
    let Some(record) = observed.upgrade.as_ref() else { return false };
    let Some(target) = Version::parse(&record.to_version) else { return false };
    let from_minor = record.from.split(',').filter_map(Version::parse).map(|v| v.minor).min();
    observed.cluster_version.is_some_and(|c| c.same_minor(target)) && from_minor.is_some_and(|m| m < target.minor)
}

/// The member pod the recorded upgrade changed last (the others it changed have served since, or the upgrade
/// would not have moved on).
pub(super) fn last_rolled(observed: &Observed) -> Option<&MemberPod> {
    observed.pods.iter().filter(|p| p.rolled.is_some()).min_by_key(|p| p.rolled.as_ref().map(|r| r.ago))
}

/// The etcd the members are to run, as far as the rollout rung goes: `Ok(Some(..))` with the target and what the
/// record of the change needs when members still run another image; `Ok(None)` when every member runs the image
/// the spec asks for and no upgrade is recorded (or nothing is wanted); `Err` with the step the version change
/// takes before any member is touched or after the last (refused, a member settling at the target, finishing).
pub(super) fn target(desired: &Desired, observed: &Observed, members: &[Member]) -> Result<Option<Target>, Action> {
    let pod_of = |name: &str| observed.pods.iter().find(|p| p.name == name);
    let mut running: Vec<Version> = members.iter().filter_map(|m| m.version).collect();
    // A member this upgrade changed that reports no version (its new container does not serve) still counts as
    // what it ran before: etcd's cluster version cannot have moved past it, so rolling it back stays allowed.
    running.extend(members.iter().filter(|m| m.version.is_none()).filter_map(|m| {
        let from = pod_of(&m.name)?.rolled.as_ref()?.from.as_deref()?;
        Version::parse(from.rsplit_once(':')?.1)
    }));
    let change = match version::check(&running, observed.cluster_version, desired.etcd.version, &desired.etcd.spec) {
        Ok(change) => change,
        Err(refusal) => return Err(Action::Wait(WaitReason::VersionRefused(refusal))),
    };
    let Some(version) = desired.etcd.version else {
        return Ok(None);
    };
    let image = desired.etcd.image.as_str();
    let release = Release { image: image.to_string(), version };
    let pending = members.iter().any(|m| !on_target(observed, image, m));
    let leader = members.iter().find(|m| m.leader);
    // Why a member on the target does not serve at it yet, if it does not. No numbers in the words: they go into
    // status, which is written only when it changes.
    let serving = |m: &Member, pod: Option<&MemberPod>| -> Option<String> {
        if let Some(pod) = pod
            && let Some(rolled) = &pod.rolled
            && !rolled.restarted(pod)
        {
            return Some("the kubelet has not restarted its container with the new image yet".into());
        }
        if !m.healthy {
            return Some("it does not answer".into());
        }
        if m.version != Some(version) {
            return Some("it does not report the target version yet".into());
        }
        if pod.is_none_or(|p| p.state != PodState::Running { ready: true }) {
            return Some("its pod is not Ready".into());
        }
        let behind = leader.map_or(0, |l| l.raft.0.saturating_sub(m.raft.1));
        (behind > CAUGHT_UP_ENTRIES).then(|| "it has not caught up with the leader's raft log yet".into())
    };
    // A member on the target that does not serve yet: the one just restarted, or one added at the target.
    let settling = members.iter().filter(|m| on_target(observed, image, m)).find_map(|m| {
        let pod = pod_of(&m.name);
        serving(m, pod).map(|why| (m, pod, why))
    });
    if let Some((member, pod, why)) = settling {
        if change.is_none() && !pending && observed.upgrade.is_none() {
            // Nothing to upgrade: an unhealthy member is healing's business (or a settings rollout's), not the
            // upgrade's.
            return Ok(None);
        }
        let name = member.name.clone();
        return Err(match pod.and_then(|p| p.rolled.as_ref()) {
            Some(rolled) if rolled.ago >= UPGRADE_MEMBER_TIMEOUT => {
                Action::Wait(WaitReason::UpgradeStalled { member: name, why })
            }
            _ => Action::Wait(WaitReason::UpgradeSettling { member: name, why }),
        });
    }
    if !pending {
        return match observed.upgrade {
            None => Ok(None),
            Some(_) => Err(match observed.cluster_version {
                Some(cluster) if cluster.same_minor(version) => Action::CompleteUpgrade,
                Some(_) => Action::Wait(WaitReason::UpgradeFinishing("the cluster version has not moved yet".into())),
                None => Action::Wait(WaitReason::UpgradeFinishing("no member reports the cluster version yet".into())),
            }),
        };
    }
    let mut versions: Vec<String> = running.iter().map(Version::to_string).collect();
    versions.sort();
    versions.dedup();
    let warning = change.and_then(|(_, warning)| warning);
    Ok(Some(Target { release, from: versions.join(", "), warning }))
}

/// An etcd change members still wait for.
pub(super) struct Target {
    /// The etcd the spec asks for.
    pub release: Release,
    /// What the members run now, in words.
    pub from: String,
    /// A warning etcd's guide calls for, if any.
    pub warning: Option<String>,
}

/// Whether `member` runs `image` (a pod whose image is not known, with no etcd container, cannot be moved and is
/// not waited for).
pub(super) fn on_target(observed: &Observed, image: &str, member: &Member) -> bool {
    observed.pods.iter().find(|p| p.name == member.name).is_none_or(|p| p.image.is_none() || p.runs_image(image))
}

/// What the version change does once the rollout's gates hold, before any member is touched: the backup and the
/// record (`StartUpgrade`), or why it cannot go on; `None` once it is recorded.
pub(super) fn begin(observed: &Observed, members: &[Member], target: &Target) -> Option<Action> {
    let pod_of = |name: &str| observed.pods.iter().find(|p| p.name == name);
    if members.len() == 1 && pod_of(&members[0].name).is_some_and(|p| p.restart_never) {
        return Some(Action::Wait(WaitReason::UpgradeWaiting(format!(
            "{} was restored from a backup and runs with restartPolicy Never: if its etcd exited after the image \
             change it would not start again, and a one-member cluster would lose its data. Grow the cluster to \
             three members first (the new ones restart in place), or take a backup and accept that risk by \
             deleting the pod for a new seed",
            members[0].name
        ))));
    }
    observed.upgrade.as_ref().is_none_or(|u| u.to_image != target.release.image).then(|| Action::StartUpgrade {
        from: target.from.clone(),
        release: target.release.clone(),
        warning: target.warning.clone(),
    })
}

/// The step that moves `member` (chosen by the rollout rung, under its gates, after [`begin`]) to the target: its
/// etcd container's image changed in place (the kubelet restarts it in the same pod, on the same data); or why
/// that cannot be done.
pub(super) fn roll(observed: &Observed, target: Target, member: &Member) -> Action {
    let pod_of = |name: &str| observed.pods.iter().find(|p| p.name == name);
    let Some(pod) = pod_of(&member.name) else {
        return Action::Wait(WaitReason::UpgradeWaiting(format!("member {} has no pod", member.name)));
    };
    if let Some(flag) = version::refused_flag(&pod.command, target.release.version) {
        return Action::Wait(WaitReason::VersionRefused(Refusal {
            reason: "FlagsRefused",
            message: format!(
                "member {} was created with {flag}, which etcd {} does not accept: it would not start after \
                 the upgrade. Replace the member first (delete its pod: it is replaced with the flags of the version \
                 the cluster runs), then the upgrade goes on",
                member.name, target.release.version
            ),
        }));
    }
    Action::RollMember {
        name: member.name.clone(),
        from: pod.image.clone().unwrap_or_default(),
        release: target.release,
        leader: member.leader,
        restarts: pod.restarts,
    }
}
