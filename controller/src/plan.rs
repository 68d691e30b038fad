//! The planner: a pure function from the spec and what was observed to the single next step.
//!
//! One membership change at a time, never one that loses quorum: a new member joins as a learner and is
//! promoted once it runs; a dead member is removed before its replacement is added; shrinking removes
//! unhealthy members first, then followers, the leader last.

use std::time::Duration;

use proto::cluster::{DEFAULT_QUORUM_LOSS_GRACE, EtcdClusterSpec, RecoveryMode};

use crate::observe::{EtcdView, Member, MemberPod, Observed, PodState, member_index, member_name};
use crate::pod::Release;
use crate::version::{self, Refusal, Version};

/// What the user asked for, as far as planning cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Voting members wanted.
    pub size: u32,
    /// Change nothing.
    pub paused: bool,
    /// What to do when quorum is lost.
    pub recovery: Recovery,
    /// The etcd the spec asks for.
    pub etcd: WantedEtcd,
    /// Whether backups are configured: an upgrade takes one before it touches a member.
    pub backups: bool,
}

/// The etcd `spec.version` and `spec.repository` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedEtcd {
    /// `spec.version` as written.
    pub spec: String,
    /// Its version, if it is one.
    pub version: Option<Version>,
    /// The image (`<repository>:v<version>`).
    pub image: String,
    /// `spec.repository`.
    pub repository: String,
}

impl WantedEtcd {
    /// `repository:v<version>`.
    pub fn new(repository: &str, version: &str) -> Self {
        let parsed = Version::parse(version);
        let image = parsed.map_or_else(|| format!("{repository}:{version}"), |v| format!("{repository}:{}", v.tag()));
        Self { spec: version.to_string(), version: parsed, image, repository: repository.to_string() }
    }
}

impl Desired {
    /// What `spec` asks for.
    pub fn from_spec(spec: &EtcdClusterSpec) -> Self {
        Self {
            size: u32::try_from(spec.size).unwrap_or(1),
            paused: spec.paused,
            recovery: Recovery::from_spec(spec),
            etcd: WantedEtcd::new(&spec.repository, &spec.version),
            backups: spec.backup.is_some(),
        }
    }
}

/// The answer to a lost quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Seed a new cluster from a backup once quorum has been lost for `grace`.
    Restore {
        /// How long the loss must last.
        grace: Duration,
    },
    /// The spec says a person decides.
    Manual,
    /// Restoring is wanted but there are no backups to restore from (`spec.backup` is not set).
    NoBackups,
}

impl Recovery {
    /// The policy `spec` sets: restore when backups are configured, unless it says `Manual`.
    pub fn from_spec(spec: &EtcdClusterSpec) -> Self {
        let policy = spec.recovery.as_ref();
        let grace = policy
            .and_then(|p| p.quorum_loss_grace.as_deref())
            .and_then(|g| humantime::parse_duration(g).ok())
            .unwrap_or_else(|| humantime::parse_duration(DEFAULT_QUORUM_LOSS_GRACE).expect("a valid default"));
        match policy.and_then(|p| p.policy) {
            Some(RecoveryMode::Manual) => Self::Manual,
            _ if spec.backup.is_none() => Self::NoBackups,
            _ => Self::Restore { grace },
        }
    }
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
    /// The cluster formed once, member pods exist, and none of them answers.
    NoMemberAnswers(String),
    /// The controller sees a lost quorum (or no answer), but member pods are Ready: they pass etcd's `/health`,
    /// which needs a quorum, so the cluster serves and the controller cannot reach it. Nothing is changed, and no
    /// loss is timed.
    MembersUnreachable {
        /// The Ready member pods.
        ready: Vec<String>,
        /// What the controller sees.
        seen: String,
    },
    /// The controller sees a lost quorum, but member pods sit on nodes that are not Ready (NotReady or Unknown):
    /// their members may be serving on the other side of a partition, where the controller cannot see them.
    /// Nothing is changed and no loss is timed: a person decides, or the recovery's grace starts once those nodes
    /// are Ready again or gone from the API.
    NodesNotReady {
        /// The nodes.
        nodes: Vec<String>,
        /// The member pods on them.
        pods: Vec<String>,
        /// What the controller sees.
        seen: String,
    },
    /// The step was refused, not failed: the API server refused a create or patch (Pod Security admission, a
    /// quota, a webhook, a value the schema let through), or a seed's source cannot be used as named. It is tried
    /// again after a growing pause (reported by the reconcile, never planned: the plan does not know it).
    Refused {
        /// What was being done.
        op: String,
        /// Why, as the API server or the check said it (shortened).
        why: String,
    },
    /// The restore of a seed refused its backup (corrupt, or not restorable): nothing more is tried until a
    /// person changes the source or deletes the pod.
    RestoreRefused {
        /// The seed's pod, kept for its logs.
        member: String,
        /// Why, from the init container's termination message.
        why: String,
    },
    /// A seed failed for a reason that may pass (its backup could not be fetched, the restore ran out of memory
    /// or disk, etcd did not start): it is kept for its logs for as long as [`seed_retry_after`] says for its
    /// attempt, then replaced under a new name.
    SeedFailed {
        /// The seed's pod.
        member: String,
        /// Which container failed, and how.
        why: String,
        /// How long after its failure it is replaced.
        after: Duration,
    },
    /// Recovering: the pods of the lost cluster are still terminating.
    LostMembersTerminating,
    /// Quorum is lost and a recovery found no backup to restore from (set from the failed step, for status).
    NoUsableBackup(String),
    /// A learner is starting or catching up before it can be promoted.
    LearnerNotReady(String),
    /// `spec.version` (or the change to it) is refused: the cluster keeps running what it runs, and heals and
    /// resizes with that.
    VersionRefused(Refusal),
    /// An upgrade is wanted, and a precondition does not hold (which one, in words): nothing is touched.
    UpgradeWaiting(String),
    /// An upgrade restarted a member (or added one at the target) that does not serve at the target yet.
    UpgradeSettling {
        /// The member.
        member: String,
        /// What is missing.
        why: String,
    },
    /// A member an upgrade restarted has not served at the target for [`UPGRADE_MEMBER_TIMEOUT`]: the upgrade
    /// stops, the other members stay as they are. Setting `spec.version` back to the version the others run rolls
    /// it back onto its data.
    UpgradeStalled {
        /// The member.
        member: String,
        /// What is missing.
        why: String,
    },
    /// Every member runs the target; etcd has not moved the cluster version to it yet (it does within seconds).
    UpgradeFinishing(String),
}

/// The single next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the seed member's pod (`--initial-cluster-state=new`) with a new cluster token.
    CreateSeed {
        /// Its name.
        name: String,
        /// The etcd it runs.
        release: Release,
    },
    /// Add a member to etcd as a learner, then create its pod (`--initial-cluster-state=existing`).
    AddLearner {
        /// Its name.
        name: String,
        /// The etcd it runs: the version the cluster runs ([`new_member_release`]).
        release: Release,
    },
    /// Create the pod of a member that is in etcd's list but never got one (the controller stopped between the
    /// two halves of [`Action::AddLearner`]).
    CreateMemberPod {
        /// The member's name.
        name: String,
        /// The etcd it runs.
        release: Release,
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
    /// Quorum has been lost for longer than the grace period: choose a backup (a fresh one from any member that
    /// still answers, else the newest) and record it, before anything is deleted.
    StartRecovery {
        /// The index the new cluster's seed gets; pods with lower indexes belong to the lost cluster.
        first_index: u32,
    },
    /// Recovering: delete a pod of the lost cluster.
    DeleteLostMember {
        /// The pod.
        name: String,
    },
    /// Recovering: the new seed serves; the recovery is over, and the cluster grows back to its size.
    CompleteRecovery,
    /// Recovering, before anything was deleted: the recovery is no longer wanted (the quorum came back, or the
    /// policy is no longer `Restore`), so its record is cleared and the cluster is kept. Evidence: the record
    /// lists the lost pods and every one is still there, and no seed exists (`Observed::recovery_untouched`).
    AbandonRecovery {
        /// Why.
        why: String,
    },
    /// An upgrade's preconditions hold: take a backup (when backups are configured; verified, or the upgrade does
    /// not start) and record the upgrade in status, before any member is touched.
    StartUpgrade {
        /// What the members run now, in words.
        from: String,
        /// The target.
        release: Release,
        /// A warning etcd's guide calls for, if any.
        warning: Option<String>,
    },
    /// Restart one member on its own data with another image: the pod's etcd container image is changed, and the
    /// kubelet restarts the container in the same pod (same name, address and volume). Evidence: the upgrade is
    /// recorded, every other member is healthy and restarting this one keeps a quorum, and its command is
    /// accepted by the target's binary.
    RollMember {
        /// The member.
        name: String,
        /// The image it runs now.
        from: String,
        /// The target.
        release: Release,
        /// Whether it was the leader when it was chosen (only once no follower is left, and only in a one-member
        /// cluster, where there is no one to move leadership to).
        leader: bool,
        /// The etcd container's restart count now (recorded on the pod: the new image runs once it is past it).
        restarts: i32,
    },
    /// Move leadership from the leader, the last member still to upgrade, to an upgraded healthy member.
    MoveLeader {
        /// The leader's etcd ID.
        from: u64,
        /// The new leader's etcd ID.
        to: u64,
        /// The new leader's name.
        name: String,
    },
    /// Every member runs the target and the cluster version reports it: the upgrade record is cleared.
    CompleteUpgrade,
    /// Do nothing now; look again later.
    Wait(WaitReason),
    /// The cluster is as the spec asks.
    Done,
}

impl Action {
    /// Whether the action changes etcd's member list.
    pub fn changes_membership(&self) -> bool {
        // (A roll or a leader move changes no membership: the member keeps its ID and data.)
        matches!(self, Self::AddLearner { .. } | Self::Promote { .. } | Self::RemoveMember { .. })
    }

    /// Whether the action answers (or waits out) a lost quorum.
    pub fn quorum_lost(&self) -> bool {
        matches!(
            self,
            Self::Wait(
                WaitReason::QuorumLost { .. }
                    | WaitReason::DataLost
                    | WaitReason::NoMemberAnswers(_)
                    | WaitReason::NoUsableBackup(_)
            ) | Self::StartRecovery { .. }
        )
    }
}

/// How long a member's node must have been not Ready, with the member not answering, before the member is replaced
/// (with a quorum; without one nothing is replaced). The node controller marks a node NotReady only after its
/// `node-monitor-grace-period` (40 s or more) without a heartbeat, so this only keeps a flapping node from costing
/// a member.
pub const NODE_LOST_AFTER: Duration = Duration::from_secs(10);

/// How long a member restarted by an upgrade may take to serve again at the target (healthy, Ready, reporting the
/// target version, caught up with the leader) before the upgrade stops there.
pub const UPGRADE_MEMBER_TIMEOUT: Duration = Duration::from_secs(180);

/// How many raft entries a member restarted by an upgrade may trail the leader's commit index and count as caught
/// up (under writes, a follower is always a few entries behind).
pub const CAUGHT_UP_ENTRIES: u64 = 1000;

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
    if let Some(first_index) = observed.recovering {
        return recover(desired, observed, first_index);
    }
    let members = match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => members,
        EtcdView::Members(_) => return without_etcd(desired, observed, "etcd lists no members".to_string()),
        EtcdView::Unreachable(why) => return without_etcd(desired, observed, why.clone()),
    };
    let pod_of = |name: &str| observed.pods.iter().find(|p| p.name == name);
    let pod_state = |name: &str| pod_of(name).map(|p| p.state);

    let voters = members.iter().filter(|m| !m.learner).count();
    let healthy = members.iter().filter(|m| !m.learner && m.healthy).count();
    if healthy <= voters / 2 {
        return lost(desired, observed, WaitReason::QuorumLost { healthy, voters });
    }

    // Pods that are no member: leftovers of a removal whose pod deletion did not happen. Only with a quorum: a
    // member list read without one may be stale and miss a newer member.
    if let Some(orphan) =
        observed.pods.iter().find(|p| p.state != PodState::Terminating && !members.iter().any(|m| m.name == p.name))
    {
        return Action::DeletePod { name: orphan.name.clone() };
    }

    // Dead members first: remove them, so their replacements can be added. A member in a restart loop is dead;
    // so is one that does not answer from a node that has been lost for a while (its pod, Terminating or not,
    // is then deleted without waiting for that node's kubelet).
    // The member an upgrade restarted last that now crash-loops is not replaced while the upgrade is recorded and
    // the cluster version has not moved: its data is intact, and the answer is the upgrade's (it stalls; setting the
    // version back rolls the member back). Once the cluster version moved to the target's minor, the member served
    // at the target and no rollback is possible: it is replaced like any member in a restart loop (review A3b).
    let dead = |m: &&Member| match pod_of(&m.name) {
        None => m.started,
        Some(pod) => {
            let rolled = observed.upgrade.is_some()
                && !cluster_moved(observed)
                && last_rolled(observed).is_some_and(|last| last.name == pod.name);
            matches!(pod.state, PodState::Dead | PodState::Refused)
                || (pod.state == PodState::CrashLooping && !rolled)
                || (!m.healthy && pod.node_down.as_ref().is_some_and(|d| d.down_for >= NODE_LOST_AFTER))
        }
    };
    if let Some(member) = members.iter().filter(dead).find(|m| m.learner || keeps_quorum(members, m.id)) {
        return remove(member, RemoveReason::Dead);
    }

    // A member added to etcd whose pod was never created: finish the add, unless it is no longer needed.
    if let Some(member) = members.iter().find(|m| !m.started && pod_state(&m.name).is_none()) {
        if member.learner && voters >= desired.size as usize {
            return remove(member, RemoveReason::ScaleDown);
        }
        return match new_member_release(desired, observed) {
            Ok(release) => Action::CreateMemberPod { name: member.name.clone(), release },
            Err(refused) => refused,
        };
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
        return match new_member_release(desired, observed) {
            Ok(release) => Action::AddLearner { name: member_name(&observed.cluster, observed.next_index), release },
            Err(refused) => refused,
        };
    }
    upgrade(desired, observed, members)
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

/// Whether restarting member `id` leaves a majority of all voting members healthy (the member keeps its vote
/// while it restarts, unlike a removal). One- and two-member clusters have no such margin: a restart is a short
/// outage there, which is what their size chose (the README says so).
pub fn restart_keeps_quorum(members: &[Member], id: u64) -> bool {
    let voters: Vec<&Member> = members.iter().filter(|m| !m.learner).collect();
    let others = voters.iter().filter(|m| m.id != id && m.healthy).count();
    voters.len() <= 2 || others > voters.len() / 2
}

/// The member pod the recorded upgrade changed last, if its restart explains a lost quorum: its new container has
/// not served yet, and with it the cluster would have a majority (a one- or two-member cluster in its restart, or a
/// larger one whose restart did not come back while another member was lost too is not: that is a loss).
///
/// Not served yet means: the kubelet has not restarted it with the new image, or it does not answer at the target
/// and the cluster version has not moved to the target's minor (a new image that exits at once stays excused: the
/// answer is a rollback, which needs no quorum). A member that answers at the target, or any other member whose pod
/// is gone or dead, means the loss is no restart: it is timed and handled as a loss (review A3a), and the recovery
/// takes no fresh backup while a pod that may hold data is silent.
fn restarting_for_upgrade<'a>(observed: &'a Observed, reason: &WaitReason) -> Option<&'a MemberPod> {
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
fn cluster_moved(observed: &Observed) -> bool {
    let Some(record) = observed.upgrade.as_ref() else { return false };
    let Some(target) = Version::parse(&record.to_version) else { return false };
    let from_minor = record.from.split(',').filter_map(Version::parse).map(|v| v.minor).min();
    observed.cluster_version.is_some_and(|c| c.same_minor(target)) && from_minor.is_some_and(|m| m < target.minor)
}

/// The member pod the recorded upgrade changed last (the others it changed have served since, or the upgrade
/// would not have moved on).
fn last_rolled(observed: &Observed) -> Option<&MemberPod> {
    observed.pods.iter().filter(|p| p.rolled.is_some()).min_by_key(|p| p.rolled.as_ref().map(|r| r.ago))
}

/// The tail of the plan, for a cluster with its size, no learner and no dead member: move it to the etcd the spec
/// asks for, one member at a time (followers first, the leader last after leadership moved to an upgraded
/// member), each restarted on its own data and serving at the target before the next; or `Done`.
fn upgrade(desired: &Desired, observed: &Observed, members: &[Member]) -> Action {
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
        Err(refusal) => return Action::Wait(WaitReason::VersionRefused(refusal)),
    };
    let Some(target) = desired.etcd.version else {
        return Action::Done;
    };
    let image = desired.etcd.image.as_str();
    let release = Release { image: image.to_string(), version: target };
    // A pod whose image is not known (no etcd container) cannot be moved, and is not waited for.
    let on_target = |m: &Member| pod_of(&m.name).is_none_or(|p| p.image.is_none() || p.runs_image(image));
    let pending: Vec<&Member> = members.iter().filter(|m| !on_target(m)).collect();
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
        if m.version != Some(target) {
            return Some("it does not report the target version yet".into());
        }
        if pod.is_none_or(|p| p.state != PodState::Running { ready: true }) {
            return Some("its pod is not Ready".into());
        }
        let behind = leader.map_or(0, |l| l.raft.0.saturating_sub(m.raft.1));
        (behind > CAUGHT_UP_ENTRIES).then(|| "it has not caught up with the leader's raft log yet".into())
    };
    // A member on the target that does not serve yet: the one just restarted, or one added at the target.
    let settling = members.iter().filter(|m| on_target(m)).find_map(|m| {
        let pod = pod_of(&m.name);
        serving(m, pod).map(|why| (m, pod, why))
    });
    if let Some((member, pod, why)) = settling {
        if change.is_none() && pending.is_empty() && observed.upgrade.is_none() {
            // Nothing to upgrade: an unhealthy member is healing's business, not the upgrade's.
            return Action::Done;
        }
        let name = member.name.clone();
        return match pod.and_then(|p| p.rolled.as_ref()) {
            Some(rolled) if rolled.ago >= UPGRADE_MEMBER_TIMEOUT => {
                Action::Wait(WaitReason::UpgradeStalled { member: name, why })
            }
            _ => Action::Wait(WaitReason::UpgradeSettling { member: name, why }),
        };
    }
    if pending.is_empty() {
        if observed.upgrade.is_none() {
            return Action::Done;
        }
        return match observed.cluster_version {
            Some(cluster) if cluster.same_minor(target) => Action::CompleteUpgrade,
            Some(_) => Action::Wait(WaitReason::UpgradeFinishing("the cluster version has not moved yet".into())),
            None => Action::Wait(WaitReason::UpgradeFinishing("no member reports the cluster version yet".into())),
        };
    }

    // Preconditions: every member healthy and Ready with a leader, no alarm. A member this very upgrade restarted
    // that did not come back may be unhealthy: moving it (back) is what fixes it.
    let Some(leader) = leader else {
        return Action::Wait(WaitReason::UpgradeWaiting("the cluster has no leader".into()));
    };
    if let Some((member, alarm)) = observed.alarms.first() {
        return Action::Wait(WaitReason::UpgradeWaiting(format!("etcd has alarm {alarm} raised on {member}")));
    }
    if !observed.alarms_read {
        return Action::Wait(WaitReason::UpgradeWaiting("etcd's alarms could not be read".into()));
    }
    let fixable = |m: &Member| !on_target(m) && pod_of(&m.name).is_some_and(|p| p.rolled.is_some());
    if let Some((member, why)) =
        members.iter().filter(|m| !fixable(m)).find_map(|m| serving_now(m, pod_of(&m.name)).map(|why| (m, why)))
    {
        return Action::Wait(WaitReason::UpgradeWaiting(format!("member {} is not healthy: {why}", member.name)));
    }
    if members.len() == 1 && pod_of(&members[0].name).is_some_and(|p| p.restart_never) {
        return Action::Wait(WaitReason::UpgradeWaiting(format!(
            "{} was restored from a backup and runs with restartPolicy Never: if its etcd exited after the image \
             change it would not start again, and a one-member cluster would lose its data. Grow the cluster to \
             three members first (the new ones restart in place), or take a backup and accept that risk by \
             deleting the pod for a new seed",
            members[0].name
        )));
    }

    // The backup and the record come before the first member is touched.
    if observed.upgrade.as_ref().is_none_or(|u| u.to_image != image) {
        let mut versions: Vec<String> = running.iter().map(Version::to_string).collect();
        versions.sort();
        versions.dedup();
        let warning = change.and_then(|(_, warning)| warning);
        return Action::StartUpgrade { from: versions.join(", "), release, warning };
    }

    // A member that did not come back first, then followers by name, the leader last.
    let next = pending
        .iter()
        .find(|m| fixable(m) && !m.healthy)
        .or_else(|| pending.iter().filter(|m| !m.leader).min_by_key(|m| &m.name))
        .copied();
    let next = match next {
        Some(next) => next,
        None => {
            // Only the leader is left: hand leadership to an upgraded member first.
            let upgraded = members.iter().filter(|m| m.id != leader.id && on_target(m) && m.healthy);
            if let Some(to) = upgraded.min_by_key(|m| &m.name) {
                return Action::MoveLeader { from: leader.id, to: to.id, name: to.name.clone() };
            }
            leader
        }
    };
    if !restart_keeps_quorum(members, next.id) {
        return Action::Wait(WaitReason::UpgradeWaiting(format!(
            "restarting {} now would leave no healthy majority",
            next.name
        )));
    }
    let Some(pod) = pod_of(&next.name) else {
        return Action::Wait(WaitReason::UpgradeWaiting(format!("member {} has no pod", next.name)));
    };
    if let Some(flag) = version::refused_flag(&pod.command, target) {
        return Action::Wait(WaitReason::VersionRefused(Refusal {
            reason: "FlagsRefused",
            message: format!(
                "member {} was created with {flag}, which etcd {target} does not accept: it would not start after \
                 the upgrade. Replace the member first (delete its pod: it is replaced with the flags of the version \
                 the cluster runs), then the upgrade goes on",
                next.name
            ),
        }));
    }
    Action::RollMember {
        name: next.name.clone(),
        from: pod.image.clone().unwrap_or_default(),
        release,
        leader: next.leader,
        restarts: pod.restarts,
    }
}

/// Why `member` does not serve right now (it does not answer, or its pod is not Ready), if it does not.
fn serving_now(member: &Member, pod: Option<&MemberPod>) -> Option<String> {
    if !member.healthy {
        return Some("it does not answer".into());
    }
    pod.is_none_or(|p| p.state != PodState::Running { ready: true }).then(|| "its pod is not Ready".into())
}

/// The plan when etcd's member list is not available.
fn without_etcd(desired: &Desired, observed: &Observed, why: String) -> Action {
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
    observed.pods.is_empty().then(|| match new_member_release(desired, observed) {
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
fn lost(desired: &Desired, observed: &Observed, reason: WaitReason) -> Action {
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
    if let Some(pod) = observed.upgrade.as_ref().and(last_rolled(observed)).filter(|p| {
        !matches!(
            p.state,
            PodState::Dead | PodState::Refused | PodState::Terminating | PodState::Running { ready: true }
        )
    }) && let Some(back) = roll_back_without_quorum(desired, pod, observed.cluster_version)
    {
        return back;
    }
    if let Some(pod) = restarting_for_upgrade(observed, &reason) {
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
fn recover(desired: &Desired, observed: &Observed, first_index: u32) -> Action {
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
    if let Some(step) = seed_step(desired, observed) {
        return step;
    }
    match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => Action::CompleteRecovery,
        EtcdView::Members(_) => Action::Wait(WaitReason::EtcdUnreachable("etcd lists no members".into())),
        EtcdView::Unreachable(why) => Action::Wait(WaitReason::EtcdUnreachable(why.clone())),
    }
}

fn remove(member: &Member, reason: RemoveReason) -> Action {
    Action::RemoveMember { id: member.id, name: member.name.clone(), reason }
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
