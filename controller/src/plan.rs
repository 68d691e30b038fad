//! The planner: a pure function from the spec and what was observed to the single next step.
//!
//! One membership change at a time, never one that loses quorum: a new member joins as a learner and is
//! promoted once it runs; a dead member is removed before its replacement is added; shrinking removes
//! unhealthy members first, then followers, the leader last.

use crate::observe::{EtcdView, Member, Observed, PodState, member_name};

/// What the user asked for, as far as planning cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Voting members wanted.
    pub size: u32,
    /// Change nothing.
    pub paused: bool,
}

/// Why a member is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveReason {
    /// Its pod is gone or failed: it is replaced by a new member.
    Dead,
    /// The cluster is larger than its spec.
    ScaleDown,
}

/// Why nothing is done now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// `spec.paused` is set.
    Paused,
    /// etcd does not answer yet (the seed is starting) or any more.
    EtcdUnreachable(String),
    /// Fewer than a majority of voting members are healthy.
    QuorumLost {
        /// Healthy voting members.
        healthy: usize,
        /// Voting members.
        voters: usize,
    },
    /// The cluster was seeded once, and every member is gone: its data exists only in backups.
    DataLost,
    /// A learner is starting or catching up before it can be promoted.
    LearnerNotReady(String),
}

/// The single next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the seed member's pod (`--initial-cluster-state=new`) with a new cluster token.
    CreateSeed {
        /// Its name.
        name: String,
    },
    /// Add a member to etcd as a learner, then create its pod (`--initial-cluster-state=existing`).
    AddLearner {
        /// Its name.
        name: String,
    },
    /// Create the pod of a member that is in etcd's list but never got one (the controller stopped between the
    /// two halves of [`Action::AddLearner`]).
    CreateMemberPod {
        /// The member's name.
        name: String,
    },
    /// Promote a running learner to a voting member.
    Promote {
        /// etcd member ID.
        id: u64,
        /// Its name.
        name: String,
    },
    /// Remove a member from etcd, then delete its pod.
    RemoveMember {
        /// etcd member ID.
        id: u64,
        /// Its name.
        name: String,
        /// Why.
        reason: RemoveReason,
    },
    /// Delete a pod that is no member of the cluster.
    DeletePod {
        /// The pod.
        name: String,
    },
    /// Do nothing now; look again later.
    Wait(WaitReason),
    /// The cluster is as the spec asks.
    Done,
}

impl Action {
    /// Whether the action changes etcd's member list.
    pub fn changes_membership(&self) -> bool {
        matches!(self, Self::AddLearner { .. } | Self::Promote { .. } | Self::RemoveMember { .. })
    }
}

/// Whether removing member `id` leaves a majority of the remaining voting members healthy (and at least one).
pub fn keeps_quorum(members: &[Member], id: u64) -> bool {
    let remaining: Vec<&Member> = members.iter().filter(|m| m.id != id && !m.learner).collect();
    let healthy = remaining.iter().filter(|m| m.healthy).count();
    !remaining.is_empty() && healthy > remaining.len() / 2
}

/// The single next step for a cluster.
pub fn plan(desired: &Desired, observed: &Observed) -> Action {
    if desired.paused {
        return Action::Wait(WaitReason::Paused);
    }
    let members = match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => members,
        EtcdView::Members(_) => return without_etcd(observed, "etcd lists no members".to_string()),
        EtcdView::Unreachable(why) => return without_etcd(observed, why.clone()),
    };
    let pod_state = |name: &str| observed.pods.iter().find(|p| p.name == name).map(|p| p.state);

    // Pods that are no member: leftovers of a removal whose pod deletion did not happen.
    if let Some(orphan) =
        observed.pods.iter().find(|p| p.state != PodState::Terminating && !members.iter().any(|m| m.name == p.name))
    {
        return Action::DeletePod { name: orphan.name.clone() };
    }

    let voters = members.iter().filter(|m| !m.learner).count();
    let healthy = members.iter().filter(|m| !m.learner && m.healthy).count();
    if healthy <= voters / 2 {
        return Action::Wait(WaitReason::QuorumLost { healthy, voters });
    }

    // Dead members first: remove them, so their replacements can be added.
    let dead = |m: &&Member| match pod_state(&m.name) {
        None => m.started,
        Some(state) => state == PodState::Dead,
    };
    if let Some(member) = members.iter().filter(dead).find(|m| m.learner || keeps_quorum(members, m.id)) {
        return remove(member, RemoveReason::Dead);
    }

    // A member added to etcd whose pod was never created: finish the add, unless it is no longer needed.
    if let Some(member) = members.iter().find(|m| !m.started && pod_state(&m.name).is_none()) {
        if member.learner && voters >= desired.size as usize {
            return remove(member, RemoveReason::ScaleDown);
        }
        return Action::CreateMemberPod { name: member.name.clone() };
    }

    if let Some(learner) = members.iter().find(|m| m.learner) {
        if voters >= desired.size as usize {
            // Not needed any more (the spec shrank while it was joining): it must not block anything.
            return remove(learner, RemoveReason::ScaleDown);
        }
        let running = matches!(pod_state(&learner.name), Some(PodState::Running { .. }));
        if learner.started && learner.healthy && running {
            return Action::Promote { id: learner.id, name: learner.name.clone() };
        }
        return Action::Wait(WaitReason::LearnerNotReady(learner.name.clone()));
    }

    if voters > desired.size as usize {
        // Unhealthy members first, then followers; the leader last.
        let mut candidates: Vec<&Member> = members.iter().filter(|m| !m.learner).collect();
        candidates.sort_by_key(|m| (m.healthy, m.leader, std::cmp::Reverse(m.name.clone())));
        if let Some(victim) = candidates.into_iter().find(|m| keeps_quorum(members, m.id)) {
            return remove(victim, RemoveReason::ScaleDown);
        }
        return Action::Wait(WaitReason::QuorumLost { healthy, voters });
    }
    if voters < desired.size as usize {
        return Action::AddLearner { name: member_name(&observed.cluster, observed.next_index) };
    }
    Action::Done
}

/// The plan when etcd's member list is not available.
fn without_etcd(observed: &Observed, why: String) -> Action {
    let live = observed.pods.iter().any(|p| !matches!(p.state, PodState::Dead | PodState::Terminating));
    if live {
        // The seed is starting, or quorum is lost: either way nothing can be changed through etcd.
        return Action::Wait(WaitReason::EtcdUnreachable(why));
    }
    if observed.seeded {
        return Action::Wait(WaitReason::DataLost);
    }
    if let Some(dead) = observed.pods.iter().find(|p| p.state == PodState::Dead) {
        // A seed that died before the cluster ever formed holds nothing: clear it and seed again.
        return Action::DeletePod { name: dead.name.clone() };
    }
    if observed.pods.is_empty() {
        return Action::CreateSeed { name: member_name(&observed.cluster, observed.next_index) };
    }
    Action::Wait(WaitReason::EtcdUnreachable(why))
}

fn remove(member: &Member, reason: RemoveReason) -> Action {
    Action::RemoveMember { id: member.id, name: member.name.clone(), reason }
}

#[cfg(test)]
mod tests;
