//! An oracle for the planner's safety promises, written from the README and the doc comments on [`Action`], not
//! from the planner: nothing here calls `keeps_quorum` or any other planner helper, and majorities are counted
//! from first principles (`voters / 2 + 1`).
//!
//! - [`quorum_after`] applies an action's effect on etcd's voting members itself (a removed member is gone, a
//!   deleted pod's member no longer answers, a promoted learner votes and so raises the majority needed, a started
//!   recovery dooms every member of the lost cluster).
//! - [`evidence`] says, for every variant of [`Action`], what must hold for the planner to return it.
//! - [`arb_world`] generates worlds well beyond the happy path: learners started or not, promotion candidates,
//!   dead, refused, terminating and missing pods, pods that are no member, unhealthy members and leaders, sizes
//!   1 to 7, pausing, every recovery policy with the loss below or past its grace, recoveries already recorded
//!   (and their seeds), and Ready pods while etcd looks unreachable.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;

use super::{Action, Desired, Recovery, RemoveReason, WaitReason, plan};
use crate::observe::{EtcdView, Member, MemberPod, NodeDown, Observed, PodFailure, PodState};

const C: &str = "etcd";
const REPOSITORY: &str = "quay.io/coreos/etcd";
const V35: crate::version::Version = crate::version::Version { minor: 5, patch: 35 };
const V36: crate::version::Version = crate::version::Version { minor: 6, patch: 16 };

fn image_of(version: crate::version::Version) -> String {
    format!("{REPOSITORY}:{}", version.tag())
}

/// How long a failed seed is kept, as the README says ("replaced under a new name 15 s after it failed").
const SEED_KEPT: Duration = Duration::from_secs(15);

/// How long a member's node must have been not Ready, the member silent, before it is replaced (README: "10 s").
const NODE_LOST: Duration = Duration::from_secs(10);

/// Whether any member pod that may still run etcd sits on a node that is not Ready (its member may serve behind a
/// partition). README: "no recovery runs while a member pod sits on a node that is not Ready".
fn on_down_node(observed: &Observed) -> bool {
    observed.pods.iter().any(|p| p.node_down.is_some() && !matches!(p.state, PodState::Dead | PodState::Refused))
}

// ---- counting, from first principles ----

/// Votes and the healthy among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Votes {
    voters: usize,
    healthy: usize,
}

impl Votes {
    /// How many voters are a majority.
    fn majority(self) -> usize {
        self.voters / 2 + 1
    }

    /// A majority of the voters answers (and there is at least one voter).
    fn quorate(self) -> bool {
        self.voters > 0 && self.healthy >= self.majority()
    }
}

/// One member of etcd's list as the oracle tracks it while applying an action.
#[derive(Clone, Debug)]
struct Seat {
    id: u64,
    name: String,
    voting: bool,
    answers: bool,
}

/// The name of member `index`, as the README spells it (`<cluster>-0007`).
fn name_of(index: u32) -> String {
    format!("{C}-{index:04}")
}

fn pod_of<'a>(observed: &'a Observed, name: &str) -> Option<&'a MemberPod> {
    observed.pods.iter().find(|p| p.name == name)
}

/// A member answers if etcd says it is healthy and its pod runs (only running pods have an address).
fn seats(observed: &Observed, members: &[Member]) -> Vec<Seat> {
    members
        .iter()
        .map(|m| Seat {
            id: m.id,
            name: m.name.clone(),
            voting: !m.learner,
            answers: m.healthy && matches!(pod_of(observed, &m.name).map(|p| p.state), Some(PodState::Running { .. })),
        })
        .collect()
}

fn votes(seats: &[Seat]) -> Votes {
    let voters = seats.iter().filter(|s| s.voting).count();
    let healthy = seats.iter().filter(|s| s.voting && s.answers).count();
    Votes { voters, healthy }
}

/// etcd's member list, when the controller got a non-empty one.
fn listed(observed: &Observed) -> Option<&[Member]> {
    match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => Some(members),
        _ => None,
    }
}

/// The index in a member name (`etcd-0007` is 7), parsed here rather than with the planner's helper.
fn index_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(C)?.strip_prefix('-')?;
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` belongs to the cluster that lost quorum, in a recovery whose new cluster starts at `first`.
fn of_lost_cluster(name: &str, first: u32) -> bool {
    index_of(name).is_none_or(|i| i < first)
}

/// Votes before and after `action` on a listed cluster.
fn quorum_after(observed: &Observed, members: &[Member], action: &Action) -> (Votes, Votes) {
    let before = seats(observed, members);
    let mut after = before.clone();
    match action {
        Action::RemoveMember { id, .. } => after.retain(|s| s.id != *id),
        Action::DeletePod { name } | Action::DeleteLostMember { name } => {
            after.iter_mut().filter(|s| &s.name == name).for_each(|s| s.answers = false)
        }
        Action::Promote { id, .. } => after.iter_mut().filter(|s| s.id == *id).for_each(|s| s.voting = true),
        // A member restarting on another image answers nothing until it is back. (One- and two-member clusters
        // have no margin for any restart: the README says an upgrade is a short outage there, which their size
        // chose.)
        Action::RollMember { name, .. } if before.iter().filter(|s| s.voting).count() > 2 => {
            after.iter_mut().filter(|s| &s.name == name).for_each(|s| s.answers = false)
        }
        Action::RollMember { .. } => {}
        // A member whose pod is deleted to be created again answers nothing until it is back.
        Action::RollPod { name, .. } if before.iter().filter(|s| s.voting).count() > 2 => {
            after.iter_mut().filter(|s| &s.name == name).for_each(|s| s.answers = false)
        }
        Action::RollPod { .. } => {}
        // Recording the recovery commits to deleting every pod of the lost cluster.
        Action::StartRecovery { first_index } => {
            after.iter_mut().filter(|s| of_lost_cluster(&s.name, *first_index)).for_each(|s| s.answers = false)
        }
        // A learner votes on nothing; a new pod or a seed takes no vote away; the rest changes nothing (a failed
        // pod answers nothing already; claims' records take no vote).
        Action::RestartOnClaim { .. }
        | Action::DeleteFailedPod { .. }
        | Action::RecordMemberId { .. }
        | Action::RetireClaim { .. }
        | Action::RetireLostClaim { .. }
        | Action::SetClaimOwner { .. }
        | Action::ExpandClaim { .. }
        | Action::AddLearner { .. }
        | Action::CreateMemberPod { .. }
        | Action::CreateSeed { .. }
        | Action::CompleteRecovery
        | Action::AbandonRecovery { .. }
        | Action::StartUpgrade { .. }
        | Action::MoveLeader { .. }
        | Action::CompleteUpgrade
        // A new peer URL restarts nothing: the others dial the member there from their next connection.
        | Action::SwitchPeerUrl { .. }
        | Action::Wait(_)
        | Action::Done => {}
    }
    (votes(&before), votes(&after))
}

/// Whether an action changes nothing in the cluster.
fn inert(action: &Action) -> bool {
    match action {
        Action::Wait(_) | Action::Done => true,
        Action::CreateSeed { .. }
        | Action::AddLearner { .. }
        | Action::CreateMemberPod { .. }
        | Action::Promote { .. }
        | Action::RemoveMember { .. }
        | Action::DeletePod { .. }
        | Action::RestartOnClaim { .. }
        | Action::DeleteFailedPod { .. }
        | Action::RecordMemberId { .. }
        | Action::RetireClaim { .. }
        | Action::RetireLostClaim { .. }
        | Action::SetClaimOwner { .. }
        | Action::ExpandClaim { .. }
        | Action::StartRecovery { .. }
        | Action::DeleteLostMember { .. }
        | Action::CompleteRecovery
        | Action::AbandonRecovery { .. }
        | Action::StartUpgrade { .. }
        | Action::RollMember { .. }
        | Action::RollPod { .. }
        | Action::MoveLeader { .. }
        | Action::SwitchPeerUrl { .. }
        | Action::CompleteUpgrade => false,
    }
}

/// Whether the cluster formed once and has lost its quorum now, as the observation shows it (no recovery yet).
fn lost(observed: &Observed) -> bool {
    match listed(observed) {
        Some(members) => !votes(&seats(observed, members)).quorate(),
        // Nothing answers: a formed cluster is lost (a cluster that never formed is a seed starting).
        None => observed.seeded,
    }
}

/// A majority of the listed voting members is healthy (as etcd says; recovery views count only etcd's word).
fn healthy_majority(observed: &Observed) -> bool {
    let Some(members) = listed(observed) else { return false };
    let voters = members.iter().filter(|m| !m.learner).count();
    let healthy = members.iter().filter(|m| !m.learner && m.healthy).count();
    voters > 0 && healthy > voters / 2
}

/// The claim of `member` its pod may run on: this cluster's, not retired or going, its volume not lost.
fn usable_claim<'a>(observed: &'a Observed, member: &str) -> Option<&'a crate::observe::Claim> {
    observed.claims.iter().find(|c| {
        c.member == member && c.ours && !c.retired && !c.deleting && c.phase != crate::observe::ClaimPhase::Lost
    })
}

fn ready_pod(observed: &Observed) -> bool {
    observed.pods.iter().any(|p| p.state == PodState::Running { ready: true })
}

fn recent_failure(observed: &Observed, pod: &str) -> bool {
    observed.failure.as_ref().is_some_and(|f| f.member == pod && f.ago < SEED_KEPT)
}

macro_rules! require {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// What must hold for the planner to return `action`: its evidence, one arm per variant of [`Action`].
pub(super) fn evidence(desired: &Desired, observed: &Observed, action: &Action) -> Result<(), String> {
    require!(!desired.paused || inert(action), "paused, yet {action:?}");
    // README: nothing is created, rolled or removed while a certificate of spec.tls cannot be used.
    let member_purposes = ["peer", "server", "operator"];
    let bad_certificate =
        observed.certificates.iter().any(|c| c.problem.is_some() && member_purposes.contains(&c.purpose.as_str()));
    require!(!bad_certificate || inert(action), "a certificate cannot be used, yet {action:?}");
    let members = listed(observed);
    let all_indexes = || {
        let pods = observed.pods.iter().map(|p| p.name.as_str());
        let members = members.unwrap_or_default().iter().map(|m| m.name.as_str());
        pods.chain(members).filter_map(index_of).collect::<Vec<_>>()
    };
    let fresh_name = |name: &str| {
        index_of(name).is_some_and(|i| i >= observed.next_index && all_indexes().iter().all(|&seen| seen < i))
    };
    let voters = members.map_or(0, |m| m.iter().filter(|m| !m.learner).count());
    let quorate = members.is_some_and(|m| votes(&seats(observed, m)).quorate());
    let member = |id: u64, name: &str| members.and_then(|ms| ms.iter().find(|m| m.id == id && m.name == name));
    match action {
        Action::CreateSeed { name, .. } => {
            require!(observed.pods.is_empty(), "a seed beside other pods");
            require!(members.is_none(), "a seed while etcd lists members");
            require!(observed.recovering.is_some() || !observed.seeded, "a formed cluster seeded again, empty");
            require!(fresh_name(name), "the seed reuses a name: {name}");
        }
        Action::AddLearner { name, .. } => {
            require!(observed.recovering.is_none(), "grown while recovering");
            let ms = members.ok_or("a learner added without a member list")?;
            require!(quorate, "a learner added without a quorum");
            require!(ms.iter().all(|m| !m.learner && m.started), "a second membership change in flight");
            require!(voters < desired.size as usize, "a learner added to a big enough cluster");
            require!(fresh_name(name), "the learner reuses a name: {name}");
        }
        Action::CreateMemberPod { name, .. } => {
            require!(observed.recovering.is_none(), "a member pod created while recovering");
            let m = members.and_then(|ms| ms.iter().find(|m| &m.name == name)).ok_or("a pod for no member")?;
            require!(!m.started && pod_of(observed, name).is_none(), "{name} has started or has its pod");
        }
        Action::Promote { id, name } => {
            require!(observed.recovering.is_none(), "promoted while recovering");
            let m = member(*id, name).ok_or("promoting no member")?;
            require!(m.learner && m.started && m.healthy, "promoting {m:?}");
            let running = matches!(pod_of(observed, name).map(|p| p.state), Some(PodState::Running { .. }));
            require!(running, "promoting {name} whose pod does not run");
            require!(quorate, "promoted without a quorum");
            require!(voters < desired.size as usize, "promoted into a big enough cluster");
        }
        Action::RemoveMember { id, name, reason } => {
            require!(observed.recovering.is_none(), "a member removed while recovering");
            let ms = members.ok_or("removed without a member list")?;
            let m = member(*id, name).ok_or("removing no member")?;
            require!(quorate, "a member removed without a quorum");
            match reason {
                RemoveReason::Dead => {
                    // A member whose data is on a usable claim that records it is created again there, never
                    // replaced for a pod that is gone or failed.
                    let on_claim = usable_claim(observed, name).is_some_and(|c| c.member_id == Some(*id));
                    let corrupt = observed.alarms.iter().any(|(n, a)| n == name && a == "CORRUPT");
                    let gone = match pod_of(observed, name) {
                        None => m.started && !on_claim,
                        Some(pod) if pod.volume_refused.is_some() => false,
                        Some(pod) if pod.volume_unschedulable.is_some_and(|d| d >= Duration::from_secs(60)) => true,
                        Some(_) if corrupt => true,
                        Some(pod) if pod.state == PodState::Dead && on_claim => false,
                        Some(pod) => {
                            matches!(pod.state, PodState::Dead | PodState::Refused | PodState::CrashLooping)
                                || (!m.healthy && pod.node_down.as_ref().is_some_and(|d| d.down_for >= NODE_LOST))
                        }
                    };
                    require!(gone, "{name} removed as dead with {:?}", pod_of(observed, name));
                }
                RemoveReason::Rollout => {
                    // On an emptyDir with older settings, or on a claim of another class than the spec names
                    // (known to exist).
                    let on_emptydir = usable_claim(observed, name).is_none_or(|c| c.member_id != Some(*id));
                    require!(
                        other_class(desired, observed, ms, name) || (drifted(desired, observed, name) && on_emptydir),
                        "{name} replaced while on the current settings, or on a claim"
                    );
                    require!(voters >= 3, "a member replaced for a rollout in a cluster of {voters}");
                    require!(keeps_majority(observed, ms, *id), "a rollout removal without a quorum after");
                    rollout_gates(desired, observed, ms, m)?;
                }
                RemoveReason::ScaleDown if m.learner => {
                    require!(voters >= desired.size as usize, "a learner still needed rolled back");
                }
                RemoveReason::ScaleDown => {
                    require!(voters > desired.size as usize, "shrunk to below its size");
                    // Unhealthy first, then followers, the leader last: no voter ranks below the victim among
                    // those whose removal keeps a quorum.
                    let all = seats(observed, ms);
                    let rank = |m: &Member| (all.iter().any(|s| s.id == m.id && s.answers), m.leader);
                    let keeps = |victim: u64| {
                        votes(&all.iter().filter(|s| s.id != victim).cloned().collect::<Vec<_>>()).quorate()
                    };
                    let better = ms.iter().find(|o| !o.learner && o.id != *id && keeps(o.id) && rank(o) < rank(m));
                    require!(better.is_none(), "{name} removed before {better:?}");
                }
            }
        }
        Action::DeletePod { name } => {
            let pod = pod_of(observed, name).ok_or("deleting no pod")?;
            require!(
                pod.state != PodState::Terminating || pod.node_down.is_some(),
                "deleting a pod that is already going (and whose kubelet can confirm it)"
            );
            match (observed.recovering, members) {
                (None, Some(ms)) => require!(ms.iter().all(|m| &m.name != name), "{name} is a member"),
                (first, _) => {
                    // A seed (before the cluster formed, or of a recovery): only a dead one, once kept long enough,
                    // after the lost cluster is gone, and never beside one that refused its backup.
                    require!(first.is_some() || !observed.seeded, "a formed cluster's pod deleted without etcd");
                    require!(pod.state == PodState::Dead, "deleting a seed that is {:?}", pod.state);
                    require!(!recent_failure(observed, name), "a failed seed deleted before it was kept");
                    require!(observed.pods.iter().all(|p| p.state != PodState::Refused), "beside a refused restore");
                    if let Some(first) = first {
                        require!(!of_lost_cluster(name, first), "a lost member deleted as a seed");
                        require!(observed.pods.iter().all(|p| !of_lost_cluster(&p.name, first)), "lost pods remain");
                    } else {
                        let live = observed.pods.iter().any(|p| {
                            matches!(p.state, PodState::Pending | PodState::Running { .. } | PodState::CrashLooping)
                        });
                        require!(!live, "a dead seed deleted while a pod starts or runs");
                    }
                }
            }
        }
        Action::RestartOnClaim { name, id, .. } | Action::DeleteFailedPod { name, id } => {
            require!(observed.recovering.is_none(), "a member restarted on its claim while recovering");
            let claim = usable_claim(observed, name).ok_or("no usable claim")?;
            require!(claim.member_id == Some(*id), "the claim of {name} does not record member {id:x}");
            if let Some(ms) = members.filter(|ms| !ms.is_empty()) {
                require!(ms.iter().any(|m| m.id == *id && &m.name == name), "{name} ({id:x}) is no member");
            }
            let pod = pod_of(observed, name);
            match action {
                Action::RestartOnClaim { .. } => require!(pod.is_none(), "{name} has a pod"),
                // Dead, or stopped by its guard for files its user cannot use while the spec renders other settings.
                _ => require!(
                    pod.is_some_and(
                        |p| p.state == PodState::Dead || super::volumes::unusable_with_older_settings(desired, p)
                    ),
                    "{name}'s pod has not failed"
                ),
            }
        }
        Action::RecordMemberId { name, id } => {
            require!(quorate, "a claim recorded without a quorum");
            let m = member(*id, name).ok_or("recording no member")?;
            require!(m.started, "recording a member that has not started");
            let claim = observed.claims.iter().find(|c| &c.member == name).ok_or("no claim")?;
            require!(claim.ours && claim.member_id.is_none(), "recording {claim:?}");
        }
        Action::RetireLostClaim { name } => {
            let first = observed.recovering.ok_or("a lost claim retired outside a recovery")?;
            require!(of_lost_cluster(name, first), "{name} is of the new cluster");
            require!(observed.pods.iter().all(|p| !of_lost_cluster(&p.name, first)), "lost pods remain");
            let claim = observed.claims.iter().find(|c| &c.member == name).ok_or("no claim")?;
            require!(claim.ours && !claim.retired, "retiring {claim:?}");
        }
        Action::SetClaimOwner { name, owned } => {
            let retention = desired.storage.ok_or("a claim's owner set without spec.storage")?;
            require!(*owned == (retention.when_deleted == proto::cluster::Retention::Delete), "against whenDeleted");
            let claim = observed.claims.iter().find(|c| &c.member == name).ok_or("no claim")?;
            require!(claim.ours && !claim.lost && claim.owned != *owned, "owner of {claim:?}");
        }
        Action::ExpandClaim { claim, size } => {
            require!(quorate, "a claim expanded without a quorum");
            let wanted = desired.storage_size.ok_or("a claim expanded without spec.storage.size")?;
            require!(proto::cluster::quantity_bytes(size) == Some(wanted), "asked {size}, the spec says {wanted}");
            require!(members.is_some_and(|ms| ms.iter().all(|m| m.healthy)), "a claim expanded with a member down");
            let claim = observed.claims.iter().find(|c| &c.name == claim).ok_or("no claim")?;
            require!(claim.usable() && claim.expandable == Some(true), "expanding {claim:?}");
            require!(claim.requested.is_some_and(|r| r < wanted), "a claim asked to shrink or stay: {claim:?}");
            // A claim never mounted again (lost, retired) may stay asked for more than it got: no wait for it.
            require!(observed.claims.iter().all(|c| !c.usable() || !c.expanding()), "two claims expanding at once");
        }
        Action::RetireClaim { name, delete } => {
            require!(quorate, "a claim retired without a quorum");
            require!(members.is_some_and(|ms| ms.iter().all(|m| &m.name != name)), "{name} is a member");
            require!(pod_of(observed, name).is_none(), "{name} has a pod");
            let claim = observed.claims.iter().find(|c| &c.member == name).ok_or("no claim")?;
            require!(claim.ours, "retiring a claim of another cluster");
            require!(index_of(name).is_some_and(|i| i < observed.next_index), "retiring the next member's claim");
            let deletes = desired.storage.is_some_and(|r| r.when_scaled == proto::cluster::Retention::Delete);
            require!(*delete == (deletes && !claim.lost), "deleting against the policy, or a lost cluster's claim");
        }
        Action::StartRecovery { first_index } => {
            require!(observed.recovering.is_none(), "a recovery started twice");
            // A majority of the voters with their data on usable claims comes back: no restore gives it up.
            if let Some(ms) = members.filter(|ms| !ms.is_empty()) {
                let voting: Vec<&Member> = ms.iter().filter(|m| !m.learner).collect();
                // A claim holds a member's data once it records that member (it started on it).
                let on_claims = voting
                    .iter()
                    .filter(|m| usable_claim(observed, &m.name).is_some_and(|c| c.member_id == Some(m.id)))
                    .count();
                require!(on_claims < voting.len() / 2 + 1, "a restore while a majority is on its claims");
            }
            let Recovery::Restore { grace } = desired.recovery else {
                return Err(format!("a recovery started with {:?}", desired.recovery));
            };
            require!(
                observed.lost_for.is_some_and(|l| l >= grace),
                "a recovery within the grace: {:?}",
                observed.lost_for
            );
            require!(!ready_pod(observed), "a recovery while a member pod is Ready");
            require!(!on_down_node(observed), "a recovery while a member pod sits on a node that is not Ready");
            require!(lost(observed), "a recovery of a cluster that is not lost");
            require!(*first_index >= observed.next_index, "the new cluster reuses indexes");
            require!(all_indexes().iter().all(|&i| i < *first_index), "a pod or member would count as new");
        }
        Action::DeleteLostMember { name } => {
            let first = observed.recovering.ok_or("a lost member deleted before the recovery was recorded")?;
            let pod = pod_of(observed, name).ok_or("deleting no pod")?;
            require!(
                pod.state != PodState::Terminating || pod.node_down.is_some(),
                "deleting a pod that is already going (and whose kubelet can confirm it)"
            );
            require!(of_lost_cluster(name, first), "{name} is of the new cluster (from {first})");
            // The first deletion is the point of no return: it needs the policy still to restore and the cluster
            // still to be lost, looked at again now (later deletions finish what was started).
            if observed.recovery_untouched {
                require!(
                    matches!(desired.recovery, Recovery::Restore { .. }),
                    "a first deletion under {:?}",
                    desired.recovery
                );
                require!(!ready_pod(observed), "a first deletion while a member pod is Ready");
                require!(!on_down_node(observed), "a first deletion while a member pod's node is not Ready");
                require!(!healthy_majority(observed), "a first deletion while a healthy majority is listed");
            }
        }
        Action::AbandonRecovery { .. } => {
            require!(observed.recovering.is_some(), "abandoning no recovery");
            require!(observed.recovery_untouched, "abandoning a recovery that has already deleted something");
            let unwanted = !matches!(desired.recovery, Recovery::Restore { .. });
            require!(
                unwanted || ready_pod(observed) || healthy_majority(observed) || on_down_node(observed),
                "abandoning a wanted recovery"
            );
        }
        Action::CompleteRecovery => {
            let first = observed.recovering.ok_or("no recovery to complete")?;
            require!(observed.pods.iter().all(|p| !of_lost_cluster(&p.name, first)), "lost pods remain");
            require!(members.is_some(), "the new cluster does not serve");
        }
        Action::StartUpgrade { release, .. } => {
            require!(observed.recovering.is_none(), "an upgrade started while recovering");
            let ms = members.ok_or("an upgrade started without a member list")?;
            require!(ms.iter().all(|m| !m.learner) && voters == desired.size as usize, "an upgrade at the wrong size");
            // A member an earlier target of this upgrade restarted may not serve: moving it (back) fixes it. Every
            // other member serves.
            let fixable = |m: &Member| {
                pod_of(observed, &m.name).is_some_and(|p| p.rolled.is_some() && !p.runs_image(&release.image))
            };
            let others: Vec<Member> = ms.iter().filter(|m| !fixable(m)).cloned().collect();
            require!(every_other_serves(observed, &others, None), "an upgrade started with a member not serving");
            require!(observed.alarms.is_empty(), "an upgrade started with an alarm raised");
            require!(
                observed.upgrade.as_ref().is_none_or(|u| u.to_image != release.image),
                "an upgrade started again for the image it records"
            );
            require!(release.image == desired.etcd.image, "an upgrade to another image than the spec's");
            require!(one_minor_at_most(ms, observed, release.version), "an upgrade across more than one minor");
        }
        Action::RollMember { name, release, leader, .. } => {
            require!(observed.recovering.is_none(), "a member restarted while recovering");
            let record = observed.upgrade.as_ref().ok_or("a member restarted with no upgrade recorded")?;
            let pod = pod_of(observed, name).ok_or("restarting a member without a pod")?;
            require!(release.image == desired.etcd.image, "a restart to another image than the spec's");
            require!(
                pod.image.as_ref().is_some_and(|i| i != &release.image)
                    && pod.rolled.as_ref().is_none_or(|r| r.to != release.image),
                "{name} already runs {release:?}"
            );
            let Some(ms) = members.filter(|_| quorate) else {
                // No quorum: only a member this upgrade changed, going back to exactly what it ran.
                let rolled = pod.rolled.as_ref().ok_or("a restart without a member list, of a member not rolled")?;
                require!(rolled.from.as_ref() == Some(&release.image), "a restart without quorum to a new image");
                require!(pod.state != PodState::Running { ready: true }, "rolled back while it serves");
                return Ok(());
            };
            let m = ms.iter().find(|m| &m.name == name).ok_or("restarting no member")?;
            require!(record.to_image == release.image, "restart to {release:?} while {record:?} is recorded");
            require!(ms.iter().all(|m| !m.learner) && voters == desired.size as usize, "a restart at the wrong size");
            let rolled_back = pod.rolled.is_some();
            require!(
                every_other_serves(observed, ms, Some(name)) && (rolled_back || m.healthy),
                "{name} restarted while a member does not serve"
            );
            require!(observed.alarms.is_empty(), "a member restarted with an alarm raised");
            require!(m.leader == *leader, "the leader flag is wrong");
            // The leader last: only where no other member could lead (a one-member cluster), or when it is a member
            // this upgrade restarted that did not come back (it serves nothing and cannot hand leadership over:
            // putting back what it ran is the fix).
            require!(
                !m.leader || ms.len() == 1 || (rolled_back && !m.healthy),
                "the leader restarted while another member could lead"
            );
            require!(one_minor_at_most(ms, observed, release.version), "a restart across more than one minor");
        }
        Action::RollPod { name, id } => {
            require!(observed.recovering.is_none(), "a member rolled while recovering");
            let ms = members.ok_or("a member rolled without a member list")?;
            let m = member(*id, name).ok_or("rolling no member")?;
            require!(quorate, "a member rolled without a quorum");
            let remount = usable_claim(observed, name).is_some_and(|c| {
                c.resize_pending.is_some_and(|d| d >= super::volumes::RESIZE_REMOUNT_AFTER) && c.expanding()
            });
            require!(drifted(desired, observed, name) || remount, "{name} runs the current settings");
            require!(!other_class(desired, observed, ms, name), "{name} restarted on a claim of another class");
            require!(usable_claim(observed, name).is_some_and(|c| c.member_id == Some(*id)), "{name} is on no claim");
            rollout_gates(desired, observed, ms, m)?;
        }
        Action::SwitchPeerUrl { name, id, url } => {
            require!(observed.recovering.is_none(), "a peer URL switched while recovering");
            let ms = members.ok_or("a peer URL switched without a member list")?;
            let m = member(*id, name).ok_or("switching no member")?;
            require!(quorate, "a peer URL switched without a quorum");
            let tls = |url: &str| url.starts_with("https://");
            let registered = m.peer_urls.first().ok_or("switching a member with no peer URL")?;
            require!(tls(registered) != desired.peer_tls, "{name} is registered with the scheme the spec asks for");
            require!(tls(url) == desired.peer_tls, "{name} switched to {url}");
            // Every member's pod listens where it is to be registered, and so holds the certificates its dials
            // present: the others can dial the new URL, and it can dial theirs.
            require!(
                ms.iter().all(|o| !listens_elsewhere(desired, observed, &o.name)),
                "a peer URL switched before every pod listens on both schemes"
            );
            let pod_listens = pod_of(observed, name).is_some_and(|p| {
                crate::peering::listened(&p.command).iter().any(|l| l.ends_with(&url[url.rfind(':').unwrap_or(0)..]))
            });
            require!(pod_listens, "{name} switched to {url}, where its pod does not listen");
            require!(
                ms.iter().all(|m| !m.learner) && ms.len() == desired.size as usize,
                "a peer URL switched at the wrong size"
            );
            require!(every_other_serves(observed, ms, None), "a peer URL switched while a member does not serve");
            require!(
                !m.leader
                    || ms.iter().all(|o| o.leader || o.peer_urls.first().is_some_and(|u| tls(u) == desired.peer_tls)),
                "the leader switched before a follower"
            );
        }
        Action::MoveLeader { from, to, name } if observed.upgrade.is_none() => {
            // A rollout of settings: the leader is the last member on older settings.
            let ms = members.ok_or("leadership moved without a member list")?;
            let leader = ms.iter().find(|m| m.id == *from && m.leader).ok_or("moving leadership from no leader")?;
            let target = member(*to, name).ok_or("moving leadership to no member")?;
            require!(target.healthy && !target.learner, "leadership moved to {target:?}");
            let moving = |n: &str| drifted(desired, observed, n) || other_class(desired, observed, ms, n);
            let remount = usable_claim(observed, &leader.name).is_some_and(|c| {
                c.resize_pending.is_some_and(|d| d >= super::volumes::RESIZE_REMOUNT_AFTER) && c.expanding()
            });
            require!(moving(&leader.name) || remount, "the leader runs the current settings");
            require!(remount || !moving(name), "leadership moved to a member on older settings");
            require!(
                remount || ms.iter().filter(|m| m.id != *from).all(|m| !moving(&m.name)),
                "leadership moved before every follower runs the current settings"
            );
        }
        Action::MoveLeader { from, to, name } => {
            require!(observed.recovering.is_none(), "leadership moved while recovering");
            let ms = members.ok_or("leadership moved without a member list")?;
            let leader = ms.iter().find(|m| m.id == *from && m.leader).ok_or("moving leadership from no leader")?;
            let target = member(*to, name).ok_or("moving leadership to no member")?;
            require!(target.healthy && !target.learner, "leadership moved to {target:?}");
            let image_of = |n: &str| pod_of(observed, n).and_then(|p| p.image.clone());
            require!(image_of(&leader.name) != Some(desired.etcd.image.clone()), "the leader runs the target already");
            require!(
                ms.iter().filter(|m| m.id != *from).all(|m| image_of(&m.name).is_none_or(|i| i == desired.etcd.image)),
                "leadership moved before every follower runs the target"
            );
        }
        Action::CompleteUpgrade => {
            let ms = members.ok_or("an upgrade completed without a member list")?;
            require!(observed.upgrade.is_some(), "no upgrade to complete");
            let target = desired.etcd.version.ok_or("completed to no version")?;
            require!(ms.iter().all(|m| m.version == Some(target) && m.healthy), "a member does not run the target");
            require!(
                observed.cluster_version.is_some_and(|c| c.minor == target.minor),
                "completed before the cluster version moved"
            );
        }
        Action::Done => {
            require!(observed.recovering.is_none(), "done while recovering");
            let ms = members.ok_or("done without a member list")?;
            require!(ms.iter().all(|m| !m.learner) && voters == desired.size as usize, "done at the wrong size");
        }
        Action::Wait(_) => {}
    }
    Ok(())
}

/// Whether every voter (but `except`) answers and has a Ready pod.
/// Whether the pod of `name` runs other settings than the spec renders (a pod that records none is not rolled).
fn drifted(desired: &Desired, observed: &Observed, name: &str) -> bool {
    let pod = pod_of(observed, name);
    desired.settings.as_ref().is_some_and(|w| pod.and_then(|p| p.settings.as_ref()).is_some_and(|h| h != w))
        || listens_elsewhere(desired, observed, name)
}

/// Whether member `name`'s pod listens for peers elsewhere than its registered peer URL and the spec's scheme say
/// (a pod whose command names none is not judged).
fn listens_elsewhere(desired: &Desired, observed: &Observed, name: &str) -> bool {
    let registered =
        listed(observed).and_then(|ms| ms.iter().find(|m| m.name == name)).and_then(|m| m.peer_urls.first().cloned());
    pod_of(observed, name).is_some_and(|p| {
        let listened = crate::peering::listened(&p.command);
        !listened.is_empty() && listened != crate::peering::listen(registered.as_deref(), desired.peer_tls)
    })
}

/// Whether member `name` keeps its data on its own claim (even retired) of another class than the spec names, that
/// class known to exist, in a cluster of three voters or more.
fn other_class(desired: &Desired, observed: &Observed, members: &[Member], name: &str) -> bool {
    let Some(member) = members.iter().find(|m| m.name == name) else { return false };
    let Some(wanted) = desired.storage_class.as_deref() else { return false };
    let claim = observed.claims.iter().find(|c| c.member == name && c.ours && c.member_id == Some(member.id));
    claim.and_then(|c| c.class.as_deref()).is_some_and(|class| class != wanted)
        && observed.wanted_class_exists == Some(true)
        && members.iter().filter(|m| !m.learner).count() >= 3
}

/// Whether removing `id` leaves a majority of the remaining voters answering.
fn keeps_majority(observed: &Observed, members: &[Member], id: u64) -> bool {
    votes(&seats(observed, members).into_iter().filter(|s| s.id != id).collect::<Vec<_>>()).quorate()
}

/// The gates every rollout step holds to: the spec's size, no learner, no alarm but NOSPACE (read), every member
/// healthy and Ready, followers first (the leader only when no other member could lead).
fn rollout_gates(desired: &Desired, observed: &Observed, members: &[Member], m: &Member) -> Result<(), String> {
    require!(
        members.iter().all(|m| !m.learner) && members.len() == desired.size as usize,
        "a rollout at the wrong size"
    );
    require!(observed.alarms_read && observed.alarms.iter().all(|(_, a)| a == "NOSPACE"), "a rollout under an alarm");
    require!(every_other_serves(observed, members, None), "a rollout step while a member does not serve");
    require!(!m.leader || members.len() == 1, "the leader rolled while another member could lead");
    Ok(())
}

fn every_other_serves(observed: &Observed, members: &[Member], except: Option<&String>) -> bool {
    members
        .iter()
        .filter(|m| Some(&m.name) != except)
        .all(|m| m.healthy && pod_of(observed, &m.name).is_some_and(|p| p.state == PodState::Running { ready: true }))
}

/// Whether `target` is at most one minor above every member's version and the cluster version, and not below the
/// cluster version's minor (etcd: one minor at a time; no downgrade below the cluster version).
fn one_minor_at_most(members: &[Member], observed: &Observed, target: crate::version::Version) -> bool {
    let mut minors: Vec<u32> = members.iter().filter_map(|m| m.version.map(|v| v.minor)).collect();
    minors.extend(observed.cluster_version.map(|v| v.minor));
    minors.iter().all(|&minor| target.minor <= minor + 1)
        && observed.cluster_version.is_none_or(|c| target.minor >= c.minor)
}

// ---- the generator ----

fn arb_pod() -> impl Strategy<Value = Option<PodState>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(PodState::Pending)),
        2 => any::<bool>().prop_map(|ready| Some(PodState::Running { ready })),
        2 => Just(Some(PodState::Dead)),
        1 => Just(Some(PodState::Refused)),
        1 => Just(Some(PodState::Terminating)),
        1 => Just(Some(PodState::CrashLooping)),
    ]
}

fn arb_recovery() -> impl Strategy<Value = Recovery> {
    prop_oneof![
        3 => prop_oneof![Just(0u64), Just(30), Just(60), Just(120)]
            .prop_map(|secs| Recovery::Restore { grace: Duration::from_secs(secs) }),
        1 => Just(Recovery::Manual),
        1 => Just(Recovery::NoBackups),
    ]
}

/// One voter: `(faulty, healthy, pod, ready, gap before its index)`. Voters have all started (only learners are
/// ever added: a voter is the seed, or a learner promoted once it started). One that is not faulty answers and
/// runs; a faulty one is anything (but answers only if its pod runs).
type MemberGen = (bool, bool, Option<PodState>, bool, u32);

/// A learner, drawn on its own so that each stage of joining is common: `(started, healthy, pod)`.
fn arb_learner() -> impl Strategy<Value = (bool, bool, Option<PodState>)> {
    prop_oneof![
        // Added, its pod not created yet (or the controller stopped in between).
        1 => Just((false, false, None)),
        // Its pod starting.
        2 => Just((false, false, Some(PodState::Pending))),
        // Running, catching up: not to be promoted yet.
        2 => any::<bool>().prop_map(|ready| (true, false, Some(PodState::Running { ready }))),
        // Running and answering: the promotion candidate.
        3 => any::<bool>().prop_map(|ready| (true, true, Some(PodState::Running { ready }))),
        // Anything else: dead, refused, gone, terminating.
        2 => (any::<bool>(), arb_pod()).prop_map(|(started, pod)| (started, false, pod)),
    ]
}

/// A generated spec and observation.
#[derive(Clone, Debug)]
struct World {
    desired: Desired,
    observed: Observed,
}

fn arb_world() -> impl Strategy<Value = World> {
    let fault = prop_oneof![Just(0.0), Just(0.15), Just(0.4), Just(0.8)];
    let cluster = fault.prop_flat_map(|p| {
        let member: BoxedStrategy<MemberGen> = (
            prop::bool::weighted(p),
            prop::bool::weighted(0.6),
            arb_pod(),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.3).prop_map(u32::from),
        )
            .boxed();
        (
            prop::collection::vec(member, 0..=7),
            prop::option::weighted(0.5, (0usize..7, arb_learner())),
            prop::option::weighted(0.9, 0usize..7),
            prop::option::weighted(0.3, prop::collection::vec((arb_pod(), 0u32..=12), 1..=2)),
        )
    });
    let upgrades = (
        prop::sample::select(vec!["3.5.35", "3.6.16", "3.7.3", "3.4.23", "3.5.1", "3.5.33"]),
        0u32..=3,
        any::<bool>(),
        prop::option::weighted(0.5, prop::sample::select(vec!["3.5.35", "3.6.16", "3.7.3"])),
        prop::bool::weighted(0.2),
        // The shape of an upgrade under way: versions as drawn; every voter but the leader on 3.6 (leadership is to
        // be moved); every member on 3.6 and the cluster version moved (the upgrade is to be completed); or
        // every member on 3.5 with the upgrade recorded (the first member is to be rolled).
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8), 2 => Just(3u8)],
    );
    let context = (
        (1u32..=7, prop::bool::weighted(0.1), arb_recovery(), prop::option::weighted(0.8, -30i64..=30)),
        (prop::bool::weighted(0.85), 0u8..10, prop::option::weighted(0.25, 0u32..=8)),
        (prop::option::weighted(0.4, (0usize..16, 0u64..=30)), any::<bool>(), 0u32..=3, 0u32..=2),
        // Pods sit on three nodes (by index); one of them may be not Ready, for a while.
        prop::option::weighted(0.3, (0u32..3, 0u64..=30)),
        // Members on claims (spec.storage), some not recording their member yet, one lost or retired.
        prop::option::weighted(0.3, (0u32..=6, any::<bool>())),
    );
    (cluster, context, upgrades).prop_map(
        |(
            (specs, learner_at, leader_at, orphans),
            (
                (size, paused, recovery, lost_offset),
                (seeded, reach, back),
                (failure, refusal, base, extra),
                down,
                on_claims,
            ),
            (spec_version, upgraded_every, rolled, recorded, alarmed, shape),
        )| {
            // A shaped upgrade is one to 3.6.16, recorded.
            // A rollout world (shape 0, extra 2) asks for the version every member runs: nothing to upgrade.
            let rolling = shape == 0 && extra == 2;
            let (spec_version, recorded) = match shape {
                0 if rolling => ("3.5.35", None),
                0 => (spec_version, recorded),
                _ => ("3.6.16", Some("3.6.16")),
            };
            // Shapes 1 and 2 are a settled cluster of its size: no learner, no stray pod, no node down, every pod
            // Ready and not in a restart.
            // Half of the rollout worlds are settled too (the other half meets faults).
            let settled = matches!(shape, 1 | 2) || (rolling && base % 2 == 0);
            // Half of the rollout worlds turn peer TLS on; in some, a pod still listens on its registered URL
            // alone; in some, pods run older settings (each of these holds the URL switches back).
            let peer_tls = rolling && (base + extra).is_multiple_of(2);
            let lagging = upgraded_every % 2 == 1;
            let (learner_at, orphans, down) = if settled { (None, None, None) } else { (learner_at, orphans, down) };
            let mut members = Vec::new();
            let mut pods = Vec::new();
            let mut used = BTreeSet::new();
            let mut index = base;
            for (at, (faulty, healthy, pod, ready, gap)) in specs.into_iter().enumerate() {
                index += gap;
                let name = name_of(index);
                let learner = learner_at.filter(|(l, _)| *l == at).map(|(_, shape)| shape);
                let (started, healthy, pod) = match learner {
                    Some(shape) => shape,
                    // Shapes 1 and 2 are healthy: leadership moves and completions need every member serving.
                    None if faulty && !settled => (true, healthy, pod),
                    None => (true, true, Some(PodState::Running { ready: ready || settled })),
                };
                let runs = matches!(pod, Some(PodState::Running { .. }));
                let healthy = started && runs && healthy;
                // Some members already run the next minor (an upgrade under way), the others the first.
                let version = match shape {
                    1 if learner.is_none() && leader_at == Some(at) => V35,
                    1 | 2 => V36,
                    3 => V35,
                    _ if rolling => V35,
                    _ if (index + at as u32) % upgraded_every.max(1) == 1 => V36,
                    _ => V35,
                };
                // Rollout worlds may be turning peer TLS on: some members registered with it already.
                let registered = match index % 3 {
                    _ if !rolling => None,
                    0 => Some(format!("https://{name}.{C}.ns.svc:2382")),
                    _ => Some(format!("http://{name}.{C}.ns.svc:2380")),
                };
                members.push(Member {
                    id: 1000 + u64::from(index),
                    name: name.clone(),
                    started,
                    peer_urls: registered.iter().cloned().collect(),
                    learner: learner.is_some(),
                    healthy,
                    leader: learner.is_none() && leader_at == Some(at),
                    version: healthy.then_some(version),
                    raft: (0, 0),
                    served: None,
                    db_size: None,
                });
                if let Some(state) = pod {
                    let rolled = (version == V36 && rolled && !settled).then(|| crate::observe::Rolled {
                        ago: Duration::from_secs(u64::from(index) * 20),
                        to: image_of(V36),
                        from: Some(image_of(V35)),
                        restarts_before: 0,
                    });
                    let restarts = i32::from(index % 2 == 0);
                    // Some worlds roll settings out: every other member's pod runs older ones.
                    let older = rolling && index % 2 == 0;
                    // Where it listens for peers: as its registered URL and the spec's scheme say, or (some) on its
                    // registered URL alone, not yet rolled to listen on both.
                    let command = match &registered {
                        Some(url) => {
                            let listen = if lagging && index % 4 == 1 {
                                crate::peering::listen(Some(url), url.starts_with("https://"))
                            } else {
                                crate::peering::listen(Some(url), peer_tls)
                            };
                            vec!["etcd".to_string(), format!("--listen-peer-urls={}", listen.join(","))]
                        }
                        None => Vec::new(),
                    };
                    pods.push(MemberPod {
                        image: Some(image_of(version)),
                        rolled,
                        restarts,
                        command,
                        settings: Some(if older && upgraded_every >= 2 { "older" } else { "current" }.into()),
                        ..MemberPod::new(name, state)
                    });
                }
                used.insert(index);
                index += 1;
            }
            for (state, at) in orphans.unwrap_or_default() {
                if let Some(state) = state.filter(|_| used.insert(at)) {
                    pods.push(MemberPod::new(name_of(at), state));
                }
            }
            if let Some((node, secs)) = down {
                for pod in &mut pods {
                    if index_of(&pod.name).is_some_and(|i| i % 3 == node) {
                        let down_for = Duration::from_secs(secs);
                        pod.node_down = Some(NodeDown { node: format!("node-{node}"), down_for });
                    }
                }
            }
            // Every member (and stray pod) on a claim; the claim of every `skip`-th index records no member yet; one
            // claim's volume is lost, or (on odd draws) retired.
            let mut claims = Vec::new();
            // Settled shapes record every member on its claim; half of the rollout worlds are on claims.
            let on_claims = if rolling && on_claims.is_none() && base % 2 == 0 { Some((0, false)) } else { on_claims };
            let on_claims = on_claims.map(|(skip, retire)| if settled { (0, retire) } else { (skip, retire) });
            if let Some((skip, retire)) = on_claims {
                for m in &members {
                    let index = index_of(&m.name).unwrap_or(0);
                    let id = (m.started && (skip == 0 || !index.is_multiple_of(skip + 1))).then_some(m.id);
                    let mut claim = crate::observe::Claim::new(&m.name, id);
                    if index % 7 == skip && !settled {
                        if retire {
                            claim.retired = true;
                        } else {
                            claim.phase = crate::observe::ClaimPhase::Lost;
                        }
                    }
                    claims.push(claim);
                }
                for pod in pods.iter().filter(|p| members.iter().all(|m| m.name != p.name)) {
                    claims.push(crate::observe::Claim::new(&pod.name, None));
                }
                // The claim of a member removed earlier, whose removal did not get to it.
                if base > 0 && claims.iter().all(|c| c.member != name_of(base - 1)) {
                    claims.push(crate::observe::Claim::new(&name_of(base - 1), Some(999)));
                }
            }
            // Storage worlds (on claims, base 0): half name another class for half of the claims (the class known
            // to exist, or not); half ask for a bigger size, with a claim expanding (offline, on some draws) and a
            // class that does not allow it.
            let (mut storage_class, mut storage_size, mut wanted_class_exists) = (None, None, None);
            let draw = lost_offset.unwrap_or(0).unsigned_abs();
            if let Some((_, retire)) = on_claims.filter(|_| base == 0) {
                if retire {
                    storage_class = Some("new".to_string());
                    wanted_class_exists = (draw % 5 != 0).then_some(true);
                    for (i, claim) in claims.iter_mut().enumerate() {
                        claim.class = Some(if i % 2 == 0 { "old" } else { "new" }.into());
                    }
                } else {
                    storage_size = Some(2u64 << 30);
                    for (i, claim) in claims.iter_mut().enumerate() {
                        let expanding = i == 1 && draw % 3 == 0;
                        claim.requested = Some(if expanding { 2 << 30 } else { 1 << 30 });
                        claim.capacity = Some("1Gi".into());
                        claim.expandable = Some(i % 3 != 2);
                        claim.resize_pending = (expanding && draw % 2 == 0)
                            .then(|| Duration::from_secs(if draw % 4 == 0 { 300 } else { 10 }));
                    }
                }
            }
            // Rollout worlds (extra == 2) are, like settled ones, at their size half of the time.
            let sized = settled || (rolling && lost_offset.is_some_and(|o| o % 2 == 0));
            let size = if sized { u32::try_from(members.len()).unwrap_or(size).max(1) } else { size };
            let next_index = used.iter().max().map_or(base, |i| i + 1) + extra;
            let running = pods.iter().any(|p| matches!(p.state, PodState::Running { .. }));
            let etcd = match reach {
                _ if !running => EtcdView::Unreachable("no member pod is running".into()),
                0..=6 => EtcdView::Members(members),
                7 | 8 => EtcdView::Unreachable("timed out".into()),
                _ => EtcdView::Members(vec![]),
            };
            let grace = match recovery {
                Recovery::Restore { grace } => grace,
                Recovery::Manual | Recovery::NoBackups => Duration::from_secs(60),
            };
            let lost_for = lost_offset.map(|off| Duration::from_secs(grace.as_secs().saturating_add_signed(off)));
            // Derived as observe does, from a record that lists the lost pods half of the time.
            let recovering = back.filter(|_| !rolling).map(|back| next_index.saturating_sub(back));
            let recovery_untouched = recovering.is_some_and(|first| {
                next_index % 2 == 0
                    && pods.iter().all(|p| p.state != PodState::Terminating && of_lost_cluster(&p.name, first))
            });
            let failure = failure.filter(|_| !pods.is_empty()).map(|(at, secs)| PodFailure {
                member: pods[at % pods.len()].name.clone(),
                why: "etcd: exit code 1: boom".into(),
                ago: Duration::from_secs(secs),
            });
            let desired = Desired {
                size,
                paused,
                recovery,
                etcd: crate::plan::WantedEtcd::new(REPOSITORY, spec_version),
                backups: true,
                settings: Some("current".into()),
                peer_tls,
                storage_size,
                storage_class,
                storage: on_claims.map(|(skip, _)| proto::cluster::ClaimRetention {
                    when_scaled: if skip % 2 == 0 {
                        proto::cluster::Retention::Delete
                    } else {
                        proto::cluster::Retention::Retain
                    },
                    ..Default::default()
                }),
            };
            let upgrade = recorded.map(|to| proto::cluster::UpgradeStatus {
                to_image: format!("{REPOSITORY}:v{to}"),
                to_version: to.into(),
                ..Default::default()
            });
            let cluster_version = match &etcd {
                EtcdView::Members(ms) if !ms.is_empty() && shape == 2 => Some(V36),
                EtcdView::Members(ms) if !ms.is_empty() => Some(V35),
                _ => None,
            };
            let alarms = if alarmed { vec![(name_of(base), "NOSPACE".to_string())] } else { vec![] };
            World {
                desired,
                observed: Observed {
                    cluster: C.into(),
                    seeded,
                    next_index,
                    pods,
                    etcd,
                    recovering,
                    recovery_untouched,
                    lost_for,
                    refusal: refusal.then(|| "restore-data: exit code 1: snapshot missing hash".into()),
                    restored: None,
                    failure,
                    stuck: None,
                    alarms,
                    alarms_read: true,
                    cluster_version,
                    upgrade,
                    claims,
                    current_version: Some(V35),
                    wanted_class_exists,
                    // One world in sixteen has a certificate that cannot be used.
                    certificates: if draw % 16 == 7 {
                        vec![proto::cluster::CertificateStatus {
                            purpose: "peer".into(),
                            secret: "etcd-tls-peer".into(),
                            problem: Some("the certificate expired".into()),
                            ..Default::default()
                        }]
                    } else {
                        Vec::new()
                    },
                    trust: Default::default(),
                },
            }
        },
    )
}

// ---- the properties ----

/// Cases per property: 2000 (about a second each in a debug build), or `PROPTEST_CASES` for a deeper run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// (a) Outside a recovery, no step leaves fewer than a majority of healthy voters when there was one; and
    /// when etcd cannot be asked, a Ready pod (which passed etcd's quorum-needing `/health`) means a quorum may
    /// exist, so no pod that may hold it is touched.
    #[test]
    fn no_step_loses_a_healthy_majority(world in arb_world()) {
        let World { desired, observed } = &world;
        let action = plan(desired, observed);
        if observed.recovering.is_none() {
            if let Some(members) = listed(observed) {
                let (before, after) = quorum_after(observed, members, &action);
                prop_assert!(!before.quorate() || after.quorate(), "{action:?}: {before:?} -> {after:?}");
            } else if ready_pod(observed) {
                let doomed = match &action {
                    Action::DeletePod { name } | Action::DeleteLostMember { name } => {
                        pod_of(observed, name).is_some_and(|p| !matches!(p.state, PodState::Dead | PodState::Refused))
                    }
                    Action::StartRecovery { .. } | Action::RemoveMember { .. } | Action::Promote { .. } => true,
                    _ => false,
                };
                prop_assert!(!doomed, "{action:?} while a pod is Ready");
            }
        }
    }

    /// (b) Every action, destructive ones above all, comes only with its evidence.
    #[test]
    fn every_action_has_its_evidence(world in arb_world()) {
        let action = plan(&world.desired, &world.observed);
        if let Err(why) = evidence(&world.desired, &world.observed, &action) {
            prop_assert!(false, "{why}: {action:?}");
        }
    }

    /// With quorum lost, nothing is changed: the planner waits, until the policy starts a recovery (whose own
    /// evidence, the grace, the policy and no Ready pod, is checked above). Manual, or no backups, never get
    /// further than waiting.
    #[test]
    fn a_lost_quorum_is_only_waited_out_or_recovered(world in arb_world()) {
        let World { desired, mut observed } = world;
        observed.recovering = None;
        if !lost(&observed) {
            return Ok(());
        }
        let action = plan(&desired, &observed);
        let allowed = match action {
            Action::Wait(_) => true,
            Action::StartRecovery { .. } => matches!(desired.recovery, Recovery::Restore { .. }),
            // A member's pod created again on its claim (or its failed pod cleared for that): its data is its own.
            Action::RestartOnClaim { .. } | Action::DeleteFailedPod { .. } => true,
            // Putting back the image a member ran before the upgrade changed it (the spec asks for it again):
            // its data stays, and it is how a one-member cluster whose new image does not start comes back.
            Action::RollMember { ref name, ref release, .. } => pod_of(&observed, name)
                .and_then(|p| p.rolled.as_ref())
                .is_some_and(|r| r.from.as_ref() == Some(&release.image)),
            _ => false,
        };
        prop_assert!(allowed, "{action:?} with quorum lost");
    }

    /// (c) A paused cluster is left alone, whatever state it is in (recovering included).
    #[test]
    fn a_paused_cluster_is_only_waited_on(world in arb_world()) {
        let paused = Desired { paused: true, ..world.desired };
        let action = plan(&paused, &world.observed);
        prop_assert!(inert(&action), "paused, yet {action:?}");
    }
}

/// The generator reaches the states the properties are about: a property that never meets its case proves
/// nothing.
#[test]
fn the_generator_covers_the_interesting_worlds() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = arb_world();
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        let World { desired, observed } = strategy.new_tree(&mut runner).unwrap().current();
        let action = plan(&desired, &observed);
        let kind = format!("{action:?}");
        seen.insert(kind.split([' ', '(']).next().unwrap_or_default().to_string());

        if let Some(members) = listed(&observed) {
            let v = votes(&seats(&observed, members));
            if v.quorate() && v.healthy == v.majority() {
                seen.insert("a bare majority".into());
            }
            if members.iter().any(|m| m.learner && m.started && m.healthy) {
                seen.insert("a promotion candidate".into());
            }
            if matches!(action, Action::Wait(WaitReason::LearnerNotReady(_)))
                && members.iter().any(|m| m.learner && m.started && !m.healthy)
            {
                seen.insert("a running learner not answering yet, waited for".into());
            }
            if members.iter().any(|m| m.leader && !m.healthy) {
                seen.insert("an unhealthy leader".into());
            }
        } else if ready_pod(&observed) && observed.seeded {
            seen.insert("a Ready pod while etcd is unreachable".into());
        }
        if let (Action::RemoveMember { reason: crate::plan::RemoveReason::Rollout, name, .. }, Some(members)) =
            (&action, listed(&observed))
            && other_class(&desired, &observed, members, name)
        {
            seen.insert("a member moved to another storage class".into());
        }
        if let Action::RollPod { name, .. } = &action
            && listens_elsewhere(&desired, &observed, name)
        {
            seen.insert("a pod rolled to listen on both peer schemes".into());
        }
        if matches!(action, Action::Wait(WaitReason::MembersOnVolumes { .. })) {
            seen.insert("a lost quorum waited out on volumes".into());
        }
        if observed.recovering.is_some() && ready_pod(&observed) {
            seen.insert("a Ready pod while recovering".into());
        }
        if matches!(desired.recovery, Recovery::Manual | Recovery::NoBackups) && lost(&observed) {
            seen.insert("a lost quorum without a restore policy".into());
        }
        if let (Recovery::Restore { grace }, Some(lost_for)) = (desired.recovery, observed.lost_for) {
            seen.insert(if lost_for < grace { "within the grace" } else { "past the grace" }.into());
            if lost_for >= grace && lost(&observed) && ready_pod(&observed) && observed.recovering.is_none() {
                seen.insert("lost past the grace, but a pod is Ready".into());
            }
        }
        if observed.pods.iter().any(|p| p.state == PodState::Dead && recent_failure(&observed, &p.name)) {
            seen.insert("a seed that failed a moment ago".into());
        }
        if let (Some(first), Some(members)) = (observed.recovering, listed(&observed))
            && members.iter().any(|m| !of_lost_cluster(&m.name, first))
        {
            seen.insert("a recovery whose seed serves".into());
        }
    }
    // Not generated yet (the generator rarely builds a finished roll): MoveLeader and CompleteUpgrade, whose
    // evidence arms are covered only by the planner's own tests.
    let wanted = [
        "CreateSeed",
        "AddLearner",
        "CreateMemberPod",
        "Promote",
        "RemoveMember",
        "DeletePod",
        "StartRecovery",
        "DeleteLostMember",
        "CompleteRecovery",
        "AbandonRecovery",
        "StartUpgrade",
        "RollMember",
        "MoveLeader",
        "CompleteUpgrade",
        "RestartOnClaim",
        "DeleteFailedPod",
        "RecordMemberId",
        "RetireClaim",
        "RollPod",
        "SwitchPeerUrl",
        "a pod rolled to listen on both peer schemes",
        "ExpandClaim",
        "a member moved to another storage class",
        "a lost quorum waited out on volumes",
        "Wait",
        "Done",
        "a bare majority",
        "a promotion candidate",
        "an unhealthy leader",
        "a running learner not answering yet, waited for",
        "a Ready pod while etcd is unreachable",
        "a Ready pod while recovering",
        "a lost quorum without a restore policy",
        "within the grace",
        "past the grace",
        "lost past the grace, but a pod is Ready",
        "a seed that failed a moment ago",
        "a recovery whose seed serves",
    ];
    let missing: Vec<&str> = wanted.into_iter().filter(|w| !seen.contains(*w)).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
