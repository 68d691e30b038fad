//! The planner: a pure function from the spec and what was observed to the single next step.
//!
//! One membership change at a time, never one that loses quorum: a new member joins as a learner and is
//! promoted once it runs; a dead member is removed before its replacement is added; shrinking removes
//! unhealthy members first, then followers, the leader last.

use std::time::Duration;

use proto::cluster::{DEFAULT_QUORUM_LOSS_GRACE, EtcdClusterSpec, RecoveryMode};

use crate::observe::{EtcdView, Member, Observed};
use crate::pod::Release;
use crate::version::{Refusal, Version};

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
    /// `spec.storage`'s retention policy, when members get claims.
    pub storage: Option<proto::cluster::ClaimRetention>,
    /// `spec.storage.size` in bytes: claims that ask for less are expanded, one at a time, where their class
    /// allows it.
    pub storage_size: Option<u64>,
    /// `spec.storage.storageClassName`, when set: a member on a claim of another class is replaced by one on a
    /// claim of this one.
    pub storage_class: Option<String>,
    /// The settings hash a member pod rendered from the spec now carries ([`crate::pod::settings_hash`]); `None`
    /// rolls nothing out.
    pub settings: Option<String>,
    /// Whether the members talk to each other over TLS (`spec.tls.peer`): a member registered with the other
    /// scheme changes it ([`crate::peering`]).
    pub peer_tls: bool,
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
            storage: spec.storage.as_ref().map(|s| s.retention_policy),
            storage_size: spec.storage.as_ref().and_then(proto::cluster::MemberStorage::bytes),
            storage_class: spec.storage.as_ref().and_then(|s| s.storage_class_name.clone()),
            settings: None,
            peer_tls: spec.peer_tls(),
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
    /// It runs older settings and keeps its data in an emptyDir: a new member with the current ones replaces it.
    Rollout,
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
    /// Members run older settings than the spec renders, and a precondition of rolling them does not hold.
    RolloutWaiting(String),
    /// A member claim asked to grow has not got the size yet (its driver expands the volume): the next one waits.
    ClaimExpanding {
        /// The claim.
        claim: String,
        /// Why expanding it failed, when a condition of the claim says so.
        error: Option<String>,
    },
    /// A certificate of `spec.tls` cannot be used (missing, not covering a member's name, expired, a key that is
    /// not its own...): nothing is created, rolled or removed until it is fixed, and running members keep running
    /// on the files they have.
    CertificatesInvalid(Vec<String>),
    /// Quorum is lost, and a majority of the voting members have their data on usable claims: they are created
    /// again on them (or are starting); no loss is timed, and no restore is started, which would give up what they
    /// hold.
    MembersOnVolumes {
        /// The voting members on usable claims.
        members: Vec<String>,
        /// Voting members.
        voters: usize,
    },
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
    /// Create the pod of a member again on its claim, under its name: etcd restarts as the same member, on its data
    /// (no removal, no snapshot transfer, no restore). Evidence ([`volumes`]): the claim is this cluster's, records
    /// the member's etcd ID, is not retired and its volume not lost; etcd, when it answers, lists that ID.
    RestartOnClaim {
        /// The member.
        name: String,
        /// Its etcd ID (the guard checks the volume holds that member).
        id: u64,
        /// The etcd it runs.
        release: Release,
    },
    /// Delete the failed pod (evicted, or a restored seed whose etcd exited) of a member on a usable claim, so that
    /// it is created again on it.
    DeleteFailedPod {
        /// The pod.
        name: String,
        /// Its member's etcd ID, as its claim records it.
        id: u64,
    },
    /// Record on a member's claim its etcd ID, now that etcd lists it as started.
    RecordMemberId {
        /// The member.
        name: String,
        /// Its etcd ID.
        id: u64,
    },
    /// Recovering, once the lost cluster's pods are gone: retire a claim of the lost cluster (never mounted again),
    /// and keep it whatever the policy: it may hold writes the backup does not.
    RetireLostClaim {
        /// The member.
        name: String,
    },
    /// Make the EtcdCluster own a member claim (so that it is deleted with the cluster), or no longer, as
    /// `whenDeleted` says now.
    SetClaimOwner {
        /// The member.
        name: String,
        /// Whether the cluster owns it.
        owned: bool,
    },
    /// A claim whose member etcd no longer lists and whose pod is gone: mark it retired (never mounted again), and
    /// delete it when `delete` (`whenScaled: Delete`).
    RetireClaim {
        /// The member.
        name: String,
        /// Whether it is deleted too.
        delete: bool,
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
    /// Register a member at a peer URL of the scheme the spec asks for (a membership update: the others dial it
    /// there from their next connection; nothing restarts). Evidence ([`rollout`]): every member's pod listens on
    /// the URL it is to be registered at and holds the certificates its dials present, every member is healthy and
    /// Ready with a leader, no learner; followers first, the leader last.
    SwitchPeerUrl {
        /// The member.
        name: String,
        /// Its etcd ID.
        id: u64,
        /// The URL it is registered at from now on.
        url: String,
    },
    /// Roll a member on a claim onto the current settings: its pod is deleted, and created again on its claim as the
    /// same member (see [`Action::RestartOnClaim`]). Evidence ([`rollout`]): its pod runs older settings, every
    /// member is healthy and Ready, the restart keeps a quorum, followers go first and the leader last.
    RollPod {
        /// The member.
        name: String,
        /// Its etcd ID.
        id: u64,
    },
    /// Ask a member's claim for `size` (`spec.storage.size` grew): its driver expands the volume, online where it
    /// can (one that expands offline leaves the claim `FileSystemResizePending`, and the member is restarted on it
    /// with [`Action::RollPod`]). Evidence ([`volumes::grow`]): the claim's class allows expansion, every member is
    /// healthy, no other claim is being expanded.
    ExpandClaim {
        /// The claim.
        claim: String,
        /// The size asked, as Kubernetes writes it (`2Gi`).
        size: String,
    },
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

/// How long a member's pod may stay unschedulable because no node can reach its volume (a node-local volume whose
/// node is gone) before the member is replaced on a new claim (with a quorum; without one nothing is replaced).
pub const VOLUME_UNREACHABLE_AFTER: Duration = Duration::from_secs(60);

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
    if let Some(step) = certificates(observed) {
        return step;
    }
    if let Some(first_index) = observed.recovering {
        return recovery::recover(desired, observed, first_index);
    }
    if let Some(step) = volumes::restart(desired, observed) {
        return step;
    }
    let members = match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => members,
        EtcdView::Members(_) => {
            return recovery::without_etcd(desired, observed, "etcd lists no members".to_string());
        }
        EtcdView::Unreachable(why) => return recovery::without_etcd(desired, observed, why.clone()),
    };
    let voters = members.iter().filter(|m| !m.learner).count();
    let healthy = members.iter().filter(|m| !m.learner && m.healthy).count();
    if healthy <= voters / 2 {
        return recovery::lost(desired, observed, WaitReason::QuorumLost { healthy, voters });
    }
    if let Some(step) = members::step(desired, observed, members) {
        return step;
    }
    rollout::step(desired, observed, members)
}

/// The TLS rung: while a certificate the members or the controller use has a problem, no step at all. A pod
/// created or rolled onto it could not talk to its peers, and a member removed could not be replaced; the running
/// members keep the files they have (etcd reads them again only on new connections). An application's certificate
/// is no member's, and a CA's trouble only stops renewals: their problems are reported, and hold nothing up.
fn certificates(observed: &Observed) -> Option<Action> {
    let problems: Vec<String> = observed
        .certificates
        .iter()
        .filter(|c| crate::certificates::holds_up(&c.purpose))
        .filter_map(|c| c.problem.clone())
        .collect();
    (!problems.is_empty()).then_some(Action::Wait(WaitReason::CertificatesInvalid(problems)))
}

/// Whether restarting member `id` leaves a majority of all voting members healthy (the member keeps its vote
/// while it restarts, unlike a removal). One- and two-member clusters have no such margin: a restart is a short
/// outage there, which is what their size chose (the README says so).
pub fn restart_keeps_quorum(members: &[Member], id: u64) -> bool {
    let voters: Vec<&Member> = members.iter().filter(|m| !m.learner).collect();
    let others = voters.iter().filter(|m| m.id != id && m.healthy).count();
    voters.len() <= 2 || others > voters.len() / 2
}

fn remove(member: &Member, reason: RemoveReason) -> Action {
    Action::RemoveMember { id: member.id, name: member.name.clone(), reason }
}

mod members;
mod recovery;
mod rollout;
mod upgrade;
mod volumes;

pub use members::new_member_release;
pub use recovery::{SEED_RETRY_AFTER, SEED_RETRY_MAX, seed_retry_after};
pub use rollout::{drifted, other_class};

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
