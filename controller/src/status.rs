//! The status a cluster reports, derived from what was observed and the step planned. Pure, so that a steady
//! cluster yields the very same status every time and nothing is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proto::cluster::{
    ClusterPhase, EtcdCluster, EtcdClusterSpec, EtcdClusterStatus, MemberNames, RestoredFrom, ServedRevision,
};

use crate::backup::{BackupHealth, condition};
use crate::observe::{EtcdView, Member, Observed, PodState};
use crate::plan::{Action, Recovery, RemoveReason, WaitReason};
use crate::service::client_service_name;

/// The status for `observed` and `action`, keeping from `previous` what only changes on transitions.
pub fn derive(
    spec: &EtcdClusterSpec,
    generation: Option<i64>,
    observed: &Observed,
    action: &Action,
    backup: Option<&BackupHealth>,
    previous: &EtcdClusterStatus,
    now: Time,
) -> EtcdClusterStatus {
    let members = match &observed.etcd {
        EtcdView::Members(members) => Some(members),
        EtcdView::Unreachable(_) => None,
    };
    let voters = members.map_or(0, |m| m.iter().filter(|m| !m.learner).count());
    // Each member's server version as it answered now, else as last recorded (a member restarting, or one that
    // did not answer this time, keeps its entry instead of flapping out of status).
    let server_versions: std::collections::BTreeMap<String, String> = match members {
        Some(members) => members
            .iter()
            .filter_map(|m| {
                let version =
                    m.version.map(|v| v.to_string()).or_else(|| previous.server_versions.get(&m.name).cloned());
                Some((m.name.clone(), version?))
            })
            .collect(),
        None => previous.server_versions.clone(),
    };
    let versions: Vec<crate::version::Version> =
        server_versions.values().filter_map(|v| crate::version::Version::parse(v)).collect();
    let healthy = members.map_or(0, |m| m.iter().filter(|m| !m.learner && m.healthy).count());
    let mut names = MemberNames::default();
    for pod in &observed.pods {
        match pod.state {
            PodState::Running { ready: true } => names.ready.push(pod.name.clone()),
            _ => names.unready.push(pod.name.clone()),
        }
    }
    names.ready.sort();
    names.unready.sort();

    // `previous` is the status as read back after the step: only the step records (StartRecovery) or ends
    // (CompleteRecovery) a recovery, and the cluster object the plan saw may predate its record.
    let recovering =
        previous.recovery.is_some() && !matches!(action, Action::CompleteRecovery | Action::AbandonRecovery { .. });
    let phase = match action {
        _ if spec.paused => ClusterPhase::Paused,
        _ if recovering => ClusterPhase::Recovering,
        _ if action.quorum_lost() => ClusterPhase::QuorumLost,
        // The kubelet finds members serving: the cluster runs, whatever the controller cannot see.
        Action::Wait(WaitReason::MembersUnreachable { .. }) => ClusterPhase::Running,
        // Not known to be lost (its members may serve behind a partition), and not known to serve.
        Action::Wait(WaitReason::NodesNotReady { .. }) => ClusterPhase::QuorumLost,
        Action::Done => ClusterPhase::Running,
        // A refused spec.version: a cluster that never formed has nothing running (the spec cannot be acted on);
        // one whose upgrade is recorded, or whose members run mixed versions, is mid-upgrade (review S7).
        Action::Wait(WaitReason::VersionRefused(_)) if !previous.formed && observed.pods.is_empty() => {
            ClusterPhase::Invalid
        }
        Action::Wait(WaitReason::VersionRefused(_)) => {
            let mut distinct = versions.clone();
            distinct.sort();
            distinct.dedup();
            if previous.upgrade.is_some() || distinct.len() > 1 {
                ClusterPhase::Upgrading
            } else {
                ClusterPhase::Running
            }
        }
        // A refused step leaves the cluster in the phase it was in (a refused upgrade step is still an upgrade).
        Action::Wait(WaitReason::Refused { .. }) if previous.formed => previous.phase,
        _ if upgrading(action) => ClusterPhase::Upgrading,
        _ if previous.phase == ClusterPhase::Creating || !previous.formed => ClusterPhase::Creating,
        Action::RemoveMember { reason: RemoveReason::Dead, .. } | Action::CreateMemberPod { .. } => {
            ClusterPhase::Healing
        }
        _ => ClusterPhase::Scaling,
    };

    let (available, available_reason, available_message) = match &observed.etcd {
        EtcdView::Members(_) if healthy > voters / 2 => {
            (true, "QuorumHealthy", format!("{healthy} of {voters} voting members are healthy"))
        }
        EtcdView::Members(_) => (false, "QuorumLost", format!("only {healthy} of {voters} voting members are healthy")),
        EtcdView::Unreachable(why) => (false, "EtcdUnreachable", why.clone()),
    };
    let progressing = !matches!(action, Action::Done | Action::Wait(_))
        || matches!(action, Action::Wait(WaitReason::UpgradeSettling { .. } | WaitReason::UpgradeFinishing(_)));
    let (degraded, degraded_reason, degraded_message) = match (&previous.recovery, action) {
        // A recovery's backup refused: the recovery cannot go on with it (its choice is recorded, and the lost
        // cluster's pods are gone), so status says what does work.
        (Some(recovery), Action::Wait(WaitReason::RestoreRefused { member, why })) if recovering => (
            true,
            "RestoreFailed",
            format!(
                "the recovery's seed {member} refused backup {} (revision {}): {why}. The recovery stops here and \
                 deletes nothing more; seeding again from that backup would fail the same way. To go on, restore \
                 another backup: delete this EtcdCluster and create it again with spec.restore naming an older \
                 backup (spec.restore.storage reads this cluster's backup storage directly; the backups stay when \
                 the EtcdCluster is deleted)",
                recovery.backup, recovery.revision
            ),
        ),
        (Some(recovery), _) if recovering => (
            true,
            "Recovering",
            format!(
                "quorum was lost; a new cluster is being seeded from backup {} (revision {}): {}",
                recovery.backup, recovery.revision, recovery.reason
            ),
        ),
        (_, Action::Wait(WaitReason::RestoreRefused { member, why })) => {
            let backup = match &previous.restored_from {
                Some(from) if from.revision == 0 => format!("{} (from {})", from.backup, from.source),
                Some(from) => from.backup.clone(),
                None => "(unknown)".into(),
            };
            (
                true,
                "RestoreFailed",
                format!(
                    "the restore of seed {member} refused backup {backup}: {why}. Nothing else was touched: name \
                     another backup in spec.restore (or repair the source), then delete pod {member} to try again"
                ),
            )
        }
        _ => degraded(spec, observed, action, voters, healthy, previous),
    };

    let mut conditions = Vec::new();
    let truth = |status: bool| if status { "True" } else { "False" };
    let mut set = |type_: &str, status: &str, reason: &str, message: String| {
        let kept = previous.conditions.iter().find(|c| c.type_ == type_ && c.status == status);
        conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            // Only a change of status moves the transition time, so a steady cluster's status never changes.
            last_transition_time: kept.map_or_else(|| now.clone(), |c| c.last_transition_time.clone()),
        });
    };
    set("Available", truth(available), available_reason, available_message);
    set("Progressing", truth(progressing), progress_reason(action), progress_message(action));
    set("Degraded", truth(degraded), degraded_reason, degraded_message);
    let (alarmed, alarm_reason, alarm_message) = alarm(spec, observed);
    if observed.alarms_read || alarmed {
        set("Alarm", truth(alarmed), alarm_reason, alarm_message);
    } else {
        // Alarms are read through a member with a leader: none was reached, so nothing is known (review S8).
        set(
            "Alarm",
            "Unknown",
            "NotRead",
            "etcd's alarms could not be read: no member the controller reaches has a leader".into(),
        );
    }
    let (drift, drift_reason, drift_message) = config_drift(spec, observed);
    set("ConfigDrift", truth(drift), drift_reason, drift_message);
    let (blocked, blocked_reason, blocked_message) = version_verdict(spec, observed, action, previous);
    set("UpgradeBlocked", truth(blocked), &blocked_reason, blocked_message);
    if spec.backup.is_some() {
        let (ready, reason, message) = backup
            .map_or_else(|| (false, "SidecarStarting", "the backup sidecar is being set up".to_string()), condition);
        set("BackupReady", truth(ready), reason, message);
    }

    EtcdClusterStatus {
        phase,
        observed_generation: generation,
        size: i32::try_from(voters).unwrap_or(i32::MAX),
        ready_members: i32::try_from(names.ready.len()).unwrap_or(i32::MAX),
        // What runs, as the members report it: the lowest while mixed. Kept from before while no member answers.
        current_version: versions.iter().min().map(ToString::to_string).or_else(|| previous.current_version.clone()),
        cluster_version: observed
            .cluster_version
            .map(|v| format!("3.{}.0", v.minor))
            .or_else(|| previous.cluster_version.clone()),
        server_versions,
        upgrade: if matches!(action, Action::CompleteUpgrade) { None } else { previous.upgrade.clone() },
        members: names,
        client_service: Some(client_service_name(&observed.cluster)),
        cluster_token: previous.cluster_token.clone(),
        formed: previous.formed || members.is_some(),
        next_member_index: previous.next_member_index.max(i32::try_from(observed.next_index).unwrap_or(i32::MAX)),
        restored_from: previous.restored_from.clone().map(|from| resolved(from, observed)),
        // Kept from the first sighting of the loss until the cluster serves again (or its recovery is over).
        quorum_lost_since: match action {
            Action::CompleteRecovery | Action::AbandonRecovery { .. } => None,
            _ if action.quorum_lost() || recovering => previous.quorum_lost_since.clone().or(Some(now.clone())),
            _ => None,
        },
        recovery: if recovering { previous.recovery.clone() } else { None },
        last_upgrade: previous.last_upgrade.clone(),
        highest_revision_seen: highest_revision_seen(
            members.map(Vec::as_slice),
            previous.highest_revision_seen.as_ref(),
            &now,
        ),
        conditions,
    }
}

/// How often the highest revision seen is written while it moves: each write of status wakes the controller again,
/// so a cluster taking writes would otherwise have its status written on every reconcile.
pub const REVISION_RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The highest revision a member with a leader reported, for the etcd cluster the members report now (a restored
/// cluster has a new ID and starts over): recorded when first seen, then at most every [`REVISION_RECORD_EVERY`];
/// kept as it was while none answers.
fn highest_revision_seen(
    members: Option<&[Member]>,
    previous: Option<&ServedRevision>,
    now: &Time,
) -> Option<ServedRevision> {
    let seen = members.into_iter().flatten().filter(|m| m.healthy).filter_map(|m| m.served.clone());
    let Some(seen) = seen.max_by_key(|s| s.revision) else { return previous.cloned() };
    let fresh = || Some(ServedRevision { seen_at: Some(now.clone()), ..seen.clone() });
    let Some(before) = previous.filter(|b| b.etcd_cluster_id == seen.etcd_cluster_id) else { return fresh() };
    let due = before.seen_at.as_ref().is_none_or(|at| {
        now.0.duration_since(at.0).as_secs() >= i64::try_from(REVISION_RECORD_EVERY.as_secs()).unwrap_or(i64::MAX)
    });
    if seen.revision > before.revision && due { fresh() } else { Some(before.clone()) }
}

/// Whether `action` is a step of an upgrade (or a wait inside one).
fn upgrading(action: &Action) -> bool {
    matches!(
        action,
        Action::StartUpgrade { .. }
            | Action::RollMember { .. }
            | Action::MoveLeader { .. }
            | Action::CompleteUpgrade
            | Action::Wait(
                WaitReason::UpgradeWaiting(_)
                    | WaitReason::UpgradeSettling { .. }
                    | WaitReason::UpgradeStalled { .. }
                    | WaitReason::UpgradeFinishing(_)
            )
    )
}

/// The `UpgradeBlocked` condition: whether `spec.version` (or the change to it) is refused, from the same rules
/// the plan follows, whatever step the plan took (a heal goes on while the spec is refused). While a member does
/// not report its version, the verdict is kept as it was: judged without it, it would flap.
fn version_verdict(
    spec: &EtcdClusterSpec,
    observed: &Observed,
    action: &Action,
    previous: &EtcdClusterStatus,
) -> (bool, String, String) {
    if let Action::Wait(WaitReason::VersionRefused(refusal)) = action {
        return (true, refusal.reason.into(), refusal.message.clone());
    }
    let members = match &observed.etcd {
        EtcdView::Members(members) => members.as_slice(),
        EtcdView::Unreachable(_) => &[],
    };
    let kept = previous.conditions.iter().find(|c| c.type_ == "UpgradeBlocked");
    if let Some(kept) = kept.filter(|_| members.is_empty() || members.iter().any(|m| m.version.is_none())) {
        return (kept.status == "True", kept.reason.clone(), kept.message.clone());
    }
    let running: Vec<crate::version::Version> = members.iter().filter_map(|m| m.version).collect();
    let target = crate::version::Version::parse(&spec.version);
    match crate::version::check(&running, observed.cluster_version, target, &spec.version) {
        Err(refusal) => (true, refusal.reason.into(), refusal.message),
        Ok(_) => (false, "VersionAccepted".into(), format!("etcd {} is a version the cluster can run", spec.version)),
    }
}

/// A seed restored straight from storage is recorded before its fetch knows which backup `latest` is (revision 0);
/// once the fetch reports what it restored, the record names it.
fn resolved(from: RestoredFrom, observed: &Observed) -> RestoredFrom {
    match &observed.restored {
        Some(done) if from.revision == 0 && (from.backup == "latest" || from.backup == done.backup) => {
            RestoredFrom { backup: done.backup.clone(), revision: done.revision, ..from }
        }
        _ => from,
    }
}

/// What a person can do about a lost quorum, given the recovery policy.
fn recovery_hint(spec: &EtcdClusterSpec) -> String {
    match Recovery::from_spec(spec) {
        Recovery::Restore { grace } => format!(
            "unless a majority comes back within {} of the loss, a new cluster is seeded from a backup",
            humantime::format_duration(grace)
        ),
        Recovery::Manual => "spec.recovery.policy is Manual, so nothing is deleted: bring the members back, or set \
                             the policy to Restore to seed a new cluster from the newest backup"
            .into(),
        Recovery::NoBackups => "there are no backups (spec.backup is not set), so nothing is deleted: bring the \
                                members back, or create a new EtcdCluster with spec.restore from a backup"
            .into(),
    }
}

fn degraded(
    spec: &EtcdClusterSpec,
    observed: &Observed,
    action: &Action,
    voters: usize,
    healthy: usize,
    previous: &EtcdClusterStatus,
) -> (bool, &'static str, String) {
    let size = spec.size;
    match action {
        Action::Wait(WaitReason::DataLost) => (
            true,
            "DataLost",
            format!("every member is gone; the data exists only in backups: {}", recovery_hint(spec)),
        ),
        Action::Wait(WaitReason::QuorumLost { healthy, voters }) => (
            true,
            "QuorumLost",
            format!("only {healthy} of {voters} voting members are healthy: {}", recovery_hint(spec)),
        ),
        Action::Wait(WaitReason::NoMemberAnswers(why)) => {
            (true, "QuorumLost", format!("no member answers ({why}): {}", recovery_hint(spec)))
        }
        Action::Wait(WaitReason::MembersUnreachable { ready, seen }) => (
            true,
            "MembersUnreachable",
            format!(
                "the controller sees {seen}, but member pods {} are Ready (they pass etcd's /health, which needs a \
                 quorum): the cluster serves and the controller cannot reach it (a NetworkPolicy, the pod network, \
                 load?). Nothing is changed and no loss is timed until it can",
                ready.join(", ")
            ),
        ),
        Action::Wait(WaitReason::NodesNotReady { nodes, pods, seen }) => (
            true,
            "MembersOnNotReadyNodes",
            format!(
                "the controller sees {seen}, but member pods {} sit on nodes that are not Ready ({}): their members \
                 may be serving behind a partition, so no automatic recovery runs and no loss is timed. A person \
                 decides (see the nodes); the recovery's grace starts once those nodes are Ready again or deleted \
                 from the API",
                pods.join(", "),
                nodes.join(", ")
            ),
        ),
        Action::StartRecovery { .. } => {
            (true, "QuorumLost", "quorum is lost: choosing the backup to recover from".into())
        }
        Action::Wait(WaitReason::UpgradeStalled { member, why }) => {
            let image = previous.upgrade.as_ref().map_or("the target", |u| u.to_image.as_str());
            let target = previous.upgrade.as_ref().and_then(|u| crate::version::Version::parse(&u.to_version));
            let moved = target.zip(observed.cluster_version).filter(|(t, c)| c.same_minor(*t)).map(|(_, c)| c);
            let from_older = previous.upgrade.as_ref().is_some_and(|u| {
                u.from
                    .split(',')
                    .filter_map(crate::version::Version::parse)
                    .any(|f| target.is_some_and(|t| f.minor < t.minor))
            });
            let advice = match moved {
                // The old binary would refuse the data now (etcd refuses a downgrade below the cluster version).
                Some(cluster) if from_older => format!(
                    "The cluster version is already {cluster}: going back is no longer possible. Delete pod {member} \
                     to have it replaced at the target (only while the others keep a quorum), or fix what keeps it \
                     from serving"
                ),
                _ => format!(
                    "Set spec.version back to {} (what the members ran before the upgrade) to roll {member} back onto \
                     its data, or fix the image",
                    previous.upgrade.as_ref().map_or("the version they ran", |u| u.from.as_str())
                ),
            };
            (
                true,
                "UpgradeStalled",
                format!(
                    "the upgrade stopped: {member}, restarted with {image}, does not serve ({why}); the other members \
                     are left as they are. {advice}"
                ),
            )
        }
        Action::Wait(WaitReason::Refused { op, why }) => {
            (true, "Refused", format!("{op} was refused, and is tried again after a growing pause: {why}"))
        }
        Action::Wait(WaitReason::NoUsableBackup(why)) => (
            true,
            "NoUsableBackup",
            format!("{why}. Bring the members back, or restore into a new EtcdCluster (spec.restore)"),
        ),
        Action::Wait(WaitReason::SeedFailed { member, why, after }) => (
            true,
            "SeedFailed",
            format!(
                "seed {member} failed ({why}); it is kept for its logs and replaced {} s after it failed",
                after.as_secs()
            ),
        ),
        _ if observed.stuck.is_some() => {
            let (member, why) = observed.stuck.clone().unwrap_or_default();
            (true, "MemberPodStuck", format!("pod {member} cannot start: {why}"))
        }
        // A failed seed being replaced stays reported until a seed serves: a fault that lasts must not flap.
        _ if !observed.seeded && matches!(observed.etcd, EtcdView::Unreachable(_)) => {
            let failed = previous.conditions.iter().find(|c| c.type_ == "Degraded" && c.reason == "SeedFailed");
            if let Some(failed) = failed {
                return (true, "SeedFailed", failed.message.clone());
            }
            (false, "Creating", "the seed member is starting".into())
        }
        _ if matches!(observed.etcd, EtcdView::Unreachable(_)) => {
            (true, "EtcdUnreachable", "no member answers; the controller changes nothing until one does".into())
        }
        _ if matches!(observed.etcd, EtcdView::Members(_)) && healthy < voters => {
            let list = match &observed.etcd {
                EtcdView::Members(list) => list.as_slice(),
                EtcdView::Unreachable(_) => &[],
            };
            let unhealthy: Vec<String> = list
                .iter()
                .filter(|m| !m.learner && !m.healthy)
                .map(|m| {
                    let down = observed.pods.iter().find(|p| p.name == m.name).and_then(|p| p.node_down.as_ref());
                    match down {
                        // No running count in the text: status is rewritten only when something changed.
                        Some(d) => format!("{} (node {} not Ready)", m.name, d.node),
                        None => m.name.clone(),
                    }
                })
                .collect();
            (
                true,
                "MemberUnhealthy",
                format!("{} of {voters} voting members are unhealthy: {}", voters - healthy, unhealthy.join(", ")),
            )
        }
        _ if observed.pods.iter().any(|p| p.state == PodState::Dead) => {
            (true, "MemberPodFailed", "a member pod failed; it is being replaced".into())
        }
        _ if matches!(observed.etcd, EtcdView::Members(_)) && voters < size as usize => {
            (false, "BelowSize", format!("{voters} of {size} members, growing"))
        }
        _ => (false, "AllMembersHealthy", "every member is healthy".into()),
    }
}

/// The `Alarm` condition: etcd's alarms, the members that raised them, and what to do.
fn alarm(spec: &EtcdClusterSpec, observed: &Observed) -> (bool, &'static str, String) {
    let raised = |kind: &str| {
        let members: Vec<&str> = observed.alarms.iter().filter(|(_, a)| a == kind).map(|(m, _)| m.as_str()).collect();
        (!members.is_empty()).then(|| members.join(", "))
    };
    if let Some(members) = raised("CORRUPT") {
        return (
            true,
            "CORRUPT",
            format!(
                "etcd found the data of {members} inconsistent with the other members' and takes no writes. Replace \
                 each such member: delete its pod, and the controller removes it and adds a new member in its place \
                 (then `etcdctl alarm disarm`)"
            ),
        );
    }
    if let Some(members) = raised("NOSPACE") {
        // The quota the members run with, from their own command (it cannot change while a pod lives), not the
        // spec's (review S3).
        let mut quotas: Vec<String> = observed
            .alarms
            .iter()
            .filter(|(_, a)| a == "NOSPACE")
            .filter_map(|(m, _)| observed.pods.iter().find(|p| p.name == *m))
            .filter_map(|p| running_quota(&p.command))
            .map(|q| q.to_string())
            .collect();
        quotas.sort();
        quotas.dedup();
        let quota = if quotas.is_empty() {
            "a quota the controller cannot read from their pods".to_string()
        } else {
            format!("the quota they run with, {} bytes", quotas.join(" and "))
        };
        let spec_quota = spec.etcd.quota_backend_bytes.to_string();
        let raised_in_spec = if quotas.is_empty() || quotas.iter().all(|q| *q == spec_quota) {
            String::new()
        } else {
            format!(
                " spec.etcd.quotaBackendBytes asks for {spec_quota} bytes, which a member gets only when its pod is \
                 created again (see the ConfigDrift condition)."
            )
        };
        return (
            true,
            "NOSPACE",
            format!(
                "the database of {members} reached {quota}: etcd takes only reads, deletes and compaction.\
                 {raised_in_spec} Delete what is not needed, compact (`etcdctl compact <revision>`), defragment each \
                 member (`etcdctl defrag`), then `etcdctl alarm disarm`"
            ),
        );
    }
    if let Some((member, alarm)) = observed.alarms.first() {
        return (true, "Other", format!("etcd raised alarm {alarm} on {member}"));
    }
    (false, "NoAlarm", "etcd has raised no alarm".into())
}

/// `--quota-backend-bytes` in a member's command.
fn running_quota(command: &[String]) -> Option<i64> {
    command.iter().find_map(|a| a.strip_prefix("--quota-backend-bytes=")?.parse().ok())
}

/// The `ConfigDrift` condition: member pods created from other settings (`spec.etcd`, `spec.pod`) than the spec
/// holds now, by the hash each pod carries. A pod cannot change them while it lives.
fn config_drift(spec: &EtcdClusterSpec, observed: &Observed) -> (bool, &'static str, String) {
    let wanted = crate::pod::settings_hash(&EtcdCluster::new(&observed.cluster, spec.clone()));
    let mut older: Vec<&str> = observed
        .pods
        .iter()
        .filter(|p| p.state != PodState::Terminating && p.settings.as_ref().is_some_and(|h| *h != wanted))
        .map(|p| p.name.as_str())
        .collect();
    older.sort();
    let unknown = observed.pods.iter().filter(|p| p.settings.is_none()).count();
    if !older.is_empty() {
        return (
            true,
            "OlderSettings",
            format!(
                "{} run{} settings of an earlier spec (spec.etcd, spec.pod): a pod's command, resources and placement \
                 cannot change while it lives, and this controller does not roll them out yet. A member gets the \
                 current settings when its pod is created again: delete one member pod at a time, only while the \
                 others keep a quorum (it is replaced by a new member)",
                older.join(", "),
                if older.len() == 1 { "s" } else { "" }
            ),
        );
    }
    if unknown > 0 {
        return (
            false,
            "SettingsUnrecorded",
            "members created by an earlier controller do not record their settings: only the others are compared"
                .into(),
        );
    }
    (false, "SettingsCurrent", "every member pod runs the settings the spec asks for".into())
}

fn progress_reason(action: &Action) -> &'static str {
    match action {
        Action::CreateSeed { .. } => "CreatingSeed",
        Action::AddLearner { .. } => "AddingMember",
        Action::CreateMemberPod { .. } => "FinishingMemberAdd",
        Action::Promote { .. } => "PromotingLearner",
        Action::RemoveMember { reason: RemoveReason::Dead, .. } => "ReplacingDeadMember",
        Action::RemoveMember { .. } => "RemovingMember",
        Action::DeletePod { .. } => "DeletingStrayPod",
        Action::StartRecovery { .. } => "StartingRecovery",
        Action::DeleteLostMember { .. } => "DeletingLostMembers",
        Action::CompleteRecovery => "RecoveryCompleted",
        Action::AbandonRecovery { .. } => "RecoveryAbandoned",
        Action::Wait(WaitReason::LostMembersTerminating) => "DeletingLostMembers",
        Action::Wait(WaitReason::Paused) => "Paused",
        Action::Wait(WaitReason::LearnerNotReady(_)) => "WaitingForLearner",
        Action::Wait(WaitReason::EtcdUnreachable(_)) => "WaitingForEtcd",
        Action::Wait(WaitReason::SeedFailed { .. }) => "RetryingSeed",
        Action::StartUpgrade { .. }
        | Action::RollMember { .. }
        | Action::MoveLeader { .. }
        | Action::Wait(WaitReason::UpgradeSettling { .. } | WaitReason::UpgradeFinishing(_)) => "Upgrading",
        Action::CompleteUpgrade => "UpgradeCompleted",
        Action::Wait(WaitReason::UpgradeWaiting(_)) => "UpgradeWaiting",
        Action::Wait(WaitReason::UpgradeStalled { .. }) => "UpgradeStalled",
        Action::Wait(WaitReason::VersionRefused(_)) => "VersionRefused",
        Action::Wait(_) => "Blocked",
        Action::Done => "Converged",
    }
}

fn progress_message(action: &Action) -> String {
    match action {
        Action::CreateSeed { name, release } => format!("creating seed member {name} (etcd {})", release.version),
        Action::AddLearner { name, release } => {
            format!("adding member {name} as a learner (etcd {})", release.version)
        }
        Action::CreateMemberPod { name, .. } => format!("creating the pod of member {name}"),
        Action::StartUpgrade { from, release, .. } => {
            format!("starting the upgrade from {from} to {}: taking a backup first", release.version)
        }
        Action::RollMember { name, release, .. } => {
            format!("upgrading {name} to {}: its container restarts on its data", release.image)
        }
        Action::MoveLeader { name, .. } => format!("moving leadership to {name}, which runs the target"),
        Action::CompleteUpgrade => "every member runs the target and the cluster version reports it".into(),
        Action::Wait(WaitReason::UpgradeSettling { member, why }) => {
            format!("upgrading: waiting for {member} to serve at the target ({why})")
        }
        Action::Wait(WaitReason::UpgradeFinishing(why)) => {
            format!("upgrading: every member runs the target; waiting for etcd to move the cluster version ({why})")
        }
        Action::Wait(WaitReason::UpgradeWaiting(why)) => format!("the upgrade waits: {why}"),
        Action::Wait(WaitReason::UpgradeStalled { member, .. }) => format!("the upgrade stopped at {member}"),
        Action::Wait(WaitReason::VersionRefused(refusal)) => format!(
            "spec.version is refused ({}): no member is created or changed for it (the UpgradeBlocked condition says \
             why)",
            refusal.reason
        ),
        Action::Promote { name, .. } => format!("promoting learner {name}"),
        Action::RemoveMember { name, .. } => format!("removing member {name}"),
        Action::DeletePod { name } => format!("deleting pod {name}, which is no member"),
        Action::StartRecovery { .. } => "choosing the backup to recover from".into(),
        Action::DeleteLostMember { name } => format!("deleting pod {name} of the cluster that lost quorum"),
        Action::CompleteRecovery => "the restored seed serves; growing back to size".into(),
        Action::AbandonRecovery { why } => format!("abandoning the recovery before anything was deleted: {why}"),
        Action::Wait(WaitReason::LostMembersTerminating) => "waiting for the lost members' pods to go".into(),
        Action::Wait(WaitReason::NoMemberAnswers(why)) => format!("blocked: no member answers ({why})"),
        Action::Wait(WaitReason::MembersUnreachable { seen, .. }) => {
            format!("blocked: member pods are Ready but the controller sees {seen}")
        }
        Action::Wait(WaitReason::NodesNotReady { nodes, .. }) => {
            format!("blocked: quorum looks lost, with member pods on nodes that are not Ready ({})", nodes.join(", "))
        }
        Action::Wait(WaitReason::NoUsableBackup(_)) => "blocked: quorum is lost and there is no backup".into(),
        Action::Wait(WaitReason::Refused { op, .. }) => format!("blocked: {op} was refused"),
        Action::Wait(WaitReason::RestoreRefused { member, .. }) => format!("blocked: the restore of {member} failed"),
        Action::Wait(WaitReason::SeedFailed { member, .. }) => format!("waiting to replace failed seed {member}"),
        Action::Wait(WaitReason::Paused) => "spec.paused is set: nothing is changed".into(),
        Action::Wait(WaitReason::LearnerNotReady(name)) => format!("waiting for learner {name} to start and catch up"),
        Action::Wait(WaitReason::EtcdUnreachable(why)) => format!("waiting for etcd: {why}"),
        Action::Wait(WaitReason::QuorumLost { .. }) => "blocked: quorum is lost".into(),
        Action::Wait(WaitReason::DataLost) => "blocked: every member is gone".into(),
        Action::Done => "the cluster has its requested size and every member is healthy".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{Member, MemberPod};
    use crate::testing::cluster;

    fn steady() -> Observed {
        Observed {
            cluster: "demo".into(),
            seeded: true,
            next_index: 3,
            pods: (0..3).map(|i| MemberPod::new(format!("demo-000{i}"), PodState::Running { ready: true })).collect(),
            etcd: EtcdView::Members(
                (0..3)
                    .map(|i| Member {
                        id: i,
                        name: format!("demo-000{i}"),
                        started: true,
                        learner: false,
                        healthy: true,
                        leader: i == 0,
                        version: crate::version::Version::parse("3.5.35"),
                        raft: (0, 0),
                        served: None,
                    })
                    .collect(),
            ),
            recovering: None,
            recovery_untouched: false,
            lost_for: None,
            refusal: None,
            restored: None,
            failure: None,
            stuck: None,
            alarms: vec![],
            alarms_read: true,
            cluster_version: crate::version::Version::parse("3.5.35"),
            upgrade: None,
        }
    }

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn a_steady_cluster_derives_the_same_status_every_time() {
        let c = cluster("demo", 3);
        let first = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &EtcdClusterStatus::default(), time(100));
        assert_eq!(first.phase, ClusterPhase::Running);
        assert_eq!(first.ready_members, 3);
        let again = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &first, time(200));
        assert_eq!(again, first, "nothing changed, so nothing is written");
    }

    /// An unhealthy member is named, with its node when the node is not Ready (a partitioned or lost node).
    #[test]
    fn unhealthy_members_are_named_with_their_lost_node() {
        let c = cluster("demo", 3);
        let mut one_down = steady();
        if let EtcdView::Members(members) = &mut one_down.etcd {
            members[2].healthy = false;
        }
        one_down.pods[2].node_down =
            Some(crate::observe::NodeDown { node: "node-c".into(), down_for: std::time::Duration::from_secs(12) });
        let status = derive(&c.spec, Some(1), &one_down, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "MemberUnhealthy"));
        assert_eq!(degraded.message, "1 of 3 voting members are unhealthy: demo-0002 (node node-c not Ready)");
    }

    #[test]
    fn lost_quorum_is_told_truthfully() {
        let c = cluster("demo", 3);
        let mut broken = steady();
        if let EtcdView::Members(members) = &mut broken.etcd {
            members[1].healthy = false;
            members[2].healthy = false;
        }
        let action = Action::Wait(WaitReason::QuorumLost { healthy: 1, voters: 3 });
        let status = derive(&c.spec, Some(1), &broken, &action, None, &EtcdClusterStatus::default(), time(1));
        assert_eq!(status.phase, ClusterPhase::QuorumLost);
        let available = status.conditions.iter().find(|c| c.type_ == "Available").unwrap();
        assert_eq!((available.status.as_str(), available.reason.as_str()), ("False", "QuorumLost"));
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.status, "True");
        assert!(degraded.message.contains("1 of 3"), "{}", degraded.message);
    }

    #[test]
    fn a_seed_restored_from_storage_is_named_once_its_fetch_reports() {
        use proto::backup::RestoreResult;
        let c = cluster("demo", 3);
        let pending = RestoredFrom { source: "s3://b/ns/old".into(), backup: "latest".into(), revision: 0 };
        let previous = EtcdClusterStatus { restored_from: Some(pending.clone()), ..Default::default() };
        let starting = Observed { restored: None, ..steady() };
        let status = derive(&c.spec, Some(1), &starting, &Action::Done, None, &previous, time(1));
        assert_eq!(status.restored_from, Some(pending.clone()), "not known until the fetch says");

        let result = RestoreResult { backup: "old-r9".into(), revision: 9, sha256: "ab".into(), size: 1 };
        let fetched = Observed { restored: Some(result.clone()), ..steady() };
        let status = derive(&c.spec, Some(1), &fetched, &Action::Done, None, &previous, time(2));
        let named = RestoredFrom { source: pending.source.clone(), backup: "old-r9".into(), revision: 9 };
        assert_eq!(status.restored_from, Some(named.clone()));

        // A recorded choice is never rewritten by what some pod reports.
        let other = RestoreResult { backup: "other-r12".into(), revision: 12, ..result };
        let previous = EtcdClusterStatus { restored_from: Some(named.clone()), ..Default::default() };
        let status = derive(
            &c.spec,
            Some(1),
            &Observed { restored: Some(other), ..steady() },
            &Action::Done,
            None,
            &previous,
            time(3),
        );
        assert_eq!(status.restored_from, Some(named));
    }

    #[test]
    fn a_seed_that_keeps_failing_stays_reported_while_it_is_replaced() {
        let c = cluster("demo", 3);
        let failing = Observed {
            seeded: false,
            pods: vec![MemberPod::new("demo-0000", PodState::Dead)],
            etcd: EtcdView::Unreachable("no member pod is running".into()),
            ..steady()
        };
        let wait = Action::Wait(WaitReason::SeedFailed {
            member: "demo-0000".into(),
            why: "fetch-backup: 403".into(),
            after: crate::plan::SEED_RETRY_AFTER,
        });
        let failed = derive(&c.spec, Some(1), &failing, &wait, None, &EtcdClusterStatus::default(), time(1));
        let reason = |s: &EtcdClusterStatus| {
            let d = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
            (d.status.clone(), d.reason.clone())
        };
        assert_eq!(reason(&failed), ("True".to_string(), "SeedFailed".to_string()));
        let replacing = Observed { pods: vec![], ..failing.clone() };
        let create = Action::CreateSeed {
            name: "demo-0001".into(),
            release: crate::pod::Release::of("quay.io/coreos/etcd", crate::version::Version::parse("3.5.35").unwrap()),
        };
        let next = derive(&c.spec, Some(1), &replacing, &create, None, &failed, time(20));
        assert_eq!(reason(&next), reason(&failed), "no flap while the replacement starts");
        let stuck = Observed {
            pods: vec![MemberPod::new("demo-0001", PodState::Pending)],
            stuck: Some(("demo-0001".into(), "fetch-backup: CreateContainerConfigError: no secret".into())),
            ..failing
        };
        let wait = Action::Wait(WaitReason::EtcdUnreachable("no member pod is running".into()));
        let status = derive(&c.spec, Some(1), &stuck, &wait, None, &EtcdClusterStatus::default(), time(30));
        assert_eq!(reason(&status), ("True".to_string(), "MemberPodStuck".to_string()));
    }

    #[test]
    fn formed_is_sticky_once_etcd_answered() {
        let c = cluster("demo", 3);
        let status = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &EtcdClusterStatus::default(), time(1));
        assert!(status.formed);
        let gone = Observed { pods: vec![], etcd: EtcdView::Unreachable("no pods".into()), ..steady() };
        let later = derive(&c.spec, Some(1), &gone, &Action::Wait(WaitReason::DataLost), None, &status, time(2));
        assert!(later.formed, "a cluster that formed stays formed");
        assert_eq!(later.phase, ClusterPhase::QuorumLost);
    }

    /// A recovery recorded at time 20, from backup demo-r7 (revision 7).
    fn recovery_of_r7() -> proto::cluster::RecoveryStatus {
        proto::cluster::RecoveryStatus {
            lost_pods: None,
            backup: "demo-r7".into(),
            revision: 7,
            reason: "the newest backup".into(),
            first_member_index: 3,
            started_at: Some(time(20)),
        }
    }

    #[test]
    fn a_recorded_recovery_is_carried_until_it_completes_even_when_the_plan_saw_an_older_object() {
        let c = cluster("demo", 3);
        let recorded = EtcdClusterStatus {
            formed: true,
            quorum_lost_since: Some(time(10)),
            recovery: Some(recovery_of_r7()),
            ..Default::default()
        };
        // The plan ran on an object without the record (StartRecovery wrote it in this very reconcile).
        let stale = Observed { pods: vec![], etcd: EtcdView::Unreachable("no pods".into()), ..steady() };
        let action = Action::StartRecovery { first_index: 3 };
        let status = derive(&c.spec, Some(1), &stale, &action, None, &recorded, time(30));
        assert_eq!(status.recovery, recorded.recovery, "never cleared behind the step's back");
        assert_eq!(status.phase, ClusterPhase::Recovering);
        assert_eq!(status.quorum_lost_since, Some(time(10)), "the loss is timed from its first sighting");
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert!(degraded.message.contains("demo-r7"), "{}", degraded.message);

        let done = derive(&c.spec, Some(1), &steady(), &Action::CompleteRecovery, None, &recorded, time(40));
        assert_eq!((done.recovery, done.quorum_lost_since), (None, None));
    }

    /// A recovery whose seed refused the recorded backup says so, and names a way out that works (the record cannot
    /// change, so "name another backup in spec.restore" would not), instead of "being seeded" for ever.
    #[test]
    fn a_recovery_whose_backup_is_refused_says_what_works() {
        let c = cluster("demo", 3);
        let recorded = EtcdClusterStatus { formed: true, recovery: Some(recovery_of_r7()), ..Default::default() };
        let refused = Observed {
            pods: vec![MemberPod::new("demo-0003", PodState::Refused)],
            etcd: EtcdView::Unreachable("no pods".into()),
            ..steady()
        };
        let why = "checksum mismatch".to_string();
        let action = Action::Wait(WaitReason::RestoreRefused { member: "demo-0003".into(), why });
        let status = derive(&c.spec, Some(1), &refused, &action, None, &recorded, time(30));
        assert_eq!(status.phase, ClusterPhase::Recovering);
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.reason, "RestoreFailed");
        for needed in ["demo-0003", "demo-r7", "checksum mismatch", "spec.restore", "delete this EtcdCluster"] {
            assert!(degraded.message.contains(needed), "{needed}: {}", degraded.message);
        }
        assert!(!degraded.message.contains("delete pod"), "deleting the seed only fails again: {}", degraded.message);
    }

    /// The defect reproduced on the test bed: the controller could not reach the members for a minute while their
    /// pods were Ready, then a readiness dip started a recovery at once. The loss is timed only while no member
    /// pod is Ready: the dip starts the grace from zero.
    #[test]
    fn the_loss_is_timed_only_while_no_member_pod_is_ready() {
        use crate::plan::{Desired, Recovery, plan};
        let mut c = cluster("demo", 3);
        c.spec.backup =
            serde_json::from_value(serde_json::json!({ "storage": { "pvc": { "claimName": "b" } } })).unwrap();
        let grace = std::time::Duration::from_secs(30);
        let desired = Desired { recovery: Recovery::Restore { grace }, ..Desired::from_spec(&c.spec) };
        let blind = Observed { etcd: EtcdView::Unreachable("timed out".into()), ..steady() };
        let mut status = EtcdClusterStatus { formed: true, ..Default::default() };
        let step = |observed: &Observed, status: &EtcdClusterStatus, now: i64| {
            let lost_for = status
                .quorum_lost_since
                .as_ref()
                .map(|since| std::time::Duration::from_secs(u64::try_from(now - since.0.as_second()).unwrap()));
            let action = plan(&desired, &Observed { lost_for, ..observed.clone() });
            (action.clone(), derive(&c.spec, Some(1), observed, &action, None, status, time(now)))
        };
        // A minute blind, members Ready: nothing timed, and status says the controller cannot reach them.
        for now in (0..=60).step_by(5) {
            let (action, next) = step(&blind, &status, now);
            assert!(matches!(action, Action::Wait(WaitReason::MembersUnreachable { .. })), "{action:?}");
            assert_eq!(next.quorum_lost_since, None, "no loss is timed while a member pod is Ready");
            assert_eq!(next.phase, ClusterPhase::Running);
            let degraded = next.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
            assert_eq!(degraded.reason, "MembersUnreachable");
            assert!(degraded.message.contains("demo-0000, demo-0001, demo-0002"), "{}", degraded.message);
            status = next;
        }
        // Readiness dips: the grace starts now, so nothing is deleted before it has run out.
        let mut dipped = blind.clone();
        dipped.pods.iter_mut().for_each(|p| p.state = PodState::Running { ready: false });
        for now in (65..95).step_by(5) {
            let (action, next) = step(&dipped, &status, now);
            assert!(matches!(action, Action::Wait(WaitReason::NoMemberAnswers(_))), "at {now}: {action:?}");
            assert_eq!(next.quorum_lost_since, Some(time(65)), "timed from the first sighting without a Ready pod");
            status = next;
        }
        // One Ready pod again restarts it from zero.
        let (_, next) = step(&blind, &status, 95);
        assert_eq!(next.quorum_lost_since, None);
        let (action, next) = step(&dipped, &next, 100);
        assert!(matches!(action, Action::Wait(_)), "{action:?}");
        assert_eq!(next.quorum_lost_since, Some(time(100)));
        // Only a loss that lasts the whole grace without a break starts the recovery.
        let (action, _) = step(&dipped, &next, 130);
        assert_eq!(action, Action::StartRecovery { first_index: 3 });
    }

    #[test]
    fn a_lost_quorum_says_what_the_policy_will_do() {
        let mut c = cluster("demo", 3);
        let action = Action::Wait(WaitReason::QuorumLost { healthy: 1, voters: 3 });
        let message = |c: &proto::cluster::EtcdCluster| {
            let status = derive(&c.spec, Some(1), &steady(), &action, None, &EtcdClusterStatus::default(), time(1));
            assert_eq!(status.quorum_lost_since, Some(time(1)));
            status.conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap().message
        };
        assert!(message(&c).contains("there are no backups"), "{}", message(&c));
        c.spec.recovery = serde_json::from_value(serde_json::json!({ "policy": "Manual" })).unwrap();
        assert!(message(&c).contains("Manual"), "{}", message(&c));
    }

    #[test]
    fn a_recovery_without_any_backup_says_so() {
        let c = cluster("demo", 3);
        let gone = Observed { pods: vec![], etcd: EtcdView::Unreachable("no pods".into()), ..steady() };
        let action = Action::Wait(WaitReason::NoUsableBackup("there is no backup to recover from".into()));
        let status = derive(&c.spec, Some(1), &gone, &action, None, &EtcdClusterStatus::default(), time(5));
        assert_eq!(status.phase, ClusterPhase::QuorumLost);
        assert_eq!(status.quorum_lost_since, Some(time(5)));
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.reason, "NoUsableBackup");
        assert!(degraded.message.contains("no backup"), "{}", degraded.message);
    }

    fn condition<'a>(status: &'a EtcdClusterStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn an_alarm_names_its_member_and_what_to_do() {
        let c = cluster("demo", 3);
        let quiet = derive(&c.spec, Some(1), &steady(), &Action::Done, None, &EtcdClusterStatus::default(), time(1));
        assert_eq!(condition(&quiet, "Alarm").status, "False");
        let mut full = steady();
        full.alarms = vec![("demo-0001".into(), "NOSPACE".into())];
        let status = derive(&c.spec, Some(1), &full, &Action::Done, None, &quiet, time(2));
        let alarm = condition(&status, "Alarm");
        assert_eq!((alarm.status.as_str(), alarm.reason.as_str()), ("True", "NOSPACE"));
        assert!(alarm.message.contains("demo-0001") && alarm.message.contains("alarm disarm"), "{}", alarm.message);
        full.alarms.push(("demo-0002".into(), "CORRUPT".into()));
        let status = derive(&c.spec, Some(1), &full, &Action::Done, None, &quiet, time(3));
        let alarm = condition(&status, "Alarm");
        assert_eq!(alarm.reason, "CORRUPT", "the worse one first");
        assert!(alarm.message.contains("demo-0002") && alarm.message.contains("delete its pod"), "{}", alarm.message);
    }

    /// Review S3 and S8: a NOSPACE alarm quotes the quota the members run with (their command), and says when the
    /// spec asks for another; alarms that could not be read are Unknown, never "no alarm".
    #[test]
    fn an_alarm_quotes_the_quota_the_members_run_and_unread_alarms_are_unknown() {
        let mut c = cluster("demo", 3);
        c.spec.etcd.quota_backend_bytes = 8_000_000_000;
        let mut full = steady();
        full.pods[1].command = vec!["etcd".into(), "--quota-backend-bytes=2147483648".into()];
        full.alarms = vec![("demo-0001".into(), "NOSPACE".into())];
        let status = derive(&c.spec, Some(1), &full, &Action::Done, None, &EtcdClusterStatus::default(), time(2));
        let alarm = condition(&status, "Alarm");
        assert!(alarm.message.contains("2147483648 bytes"), "the quota it runs: {}", alarm.message);
        assert!(alarm.message.contains("asks for 8000000000"), "the spec's, told apart: {}", alarm.message);
        let mut unread = steady();
        unread.alarms_read = false;
        let status = derive(&c.spec, Some(1), &unread, &Action::Done, None, &EtcdClusterStatus::default(), time(3));
        let alarm = condition(&status, "Alarm");
        assert_eq!((alarm.status.as_str(), alarm.reason.as_str()), ("Unknown", "NotRead"), "{alarm:?}");
    }

    /// Review A2 (until rollouts): members whose pods were created from other spec.etcd or spec.pod settings are
    /// named; pods that recorded no hash are not counted.
    #[test]
    fn members_running_older_settings_are_named() {
        let mut c = cluster("demo", 3);
        let current = crate::pod::settings_hash(&c);
        let mut observed = steady();
        for pod in &mut observed.pods {
            pod.settings = Some(current.clone());
        }
        let status = derive(&c.spec, Some(1), &observed, &Action::Done, None, &EtcdClusterStatus::default(), time(1));
        assert_eq!(condition(&status, "ConfigDrift").status, "False");
        c.spec.etcd.quota_backend_bytes *= 2;
        assert_ne!(crate::pod::settings_hash(&c), current, "the quota is a setting");
        observed.pods[2].settings = Some(crate::pod::settings_hash(&c));
        observed.pods[1].settings = None;
        let status = derive(&c.spec, Some(2), &observed, &Action::Done, None, &status, time(2));
        let drift = condition(&status, "ConfigDrift");
        assert_eq!((drift.status.as_str(), drift.reason.as_str()), ("True", "OlderSettings"));
        assert!(drift.message.starts_with("demo-0000 runs settings"), "{}", drift.message);
        // Only the disruption budget's setting changed: no pod differs.
        let mut budget = cluster("demo", 3);
        budget.spec.pod.allow_unsafe_eviction = true;
        assert_eq!(crate::pod::settings_hash(&budget), current);
    }

    /// Review S7 and issue 17 §4: a refused spec.version shows no phase Running for a cluster that never formed,
    /// and Upgrading for one whose members run mixed versions.
    #[test]
    fn a_refused_version_is_running_only_for_a_cluster_that_runs_one_version() {
        let c = cluster("demo", 3);
        let refused = Action::Wait(WaitReason::VersionRefused(crate::version::Refusal {
            reason: "Unsupported",
            message: "no".into(),
        }));
        let mut fresh = steady();
        fresh.pods.clear();
        fresh.seeded = false;
        fresh.etcd = EtcdView::Unreachable("no member pod is running".into());
        let status = derive(&c.spec, Some(1), &fresh, &refused, None, &EtcdClusterStatus::default(), time(1));
        assert_eq!(status.phase, ClusterPhase::Invalid);
        let progressing = condition(&status, "Progressing");
        assert!(!progressing.message.contains("requested size"), "{}", progressing.message);
        let formed = EtcdClusterStatus { formed: true, ..Default::default() };
        let status = derive(&c.spec, Some(1), &steady(), &refused, None, &formed, time(2));
        assert_eq!(status.phase, ClusterPhase::Running);
        let mut mixed = steady();
        if let EtcdView::Members(members) = &mut mixed.etcd {
            members[1].version = crate::version::Version::parse("3.6.16");
        }
        let status = derive(&c.spec, Some(1), &mixed, &refused, None, &formed, time(3));
        assert_eq!(status.phase, ClusterPhase::Upgrading);
    }

    #[test]
    fn members_on_nodes_that_are_not_ready_are_reported_and_no_loss_is_timed() {
        let c = cluster("demo", 3);
        let mut partitioned = steady();
        partitioned.etcd = EtcdView::Unreachable("timed out".into());
        let action = Action::Wait(WaitReason::NodesNotReady {
            nodes: vec!["node-b".into(), "node-c".into()],
            pods: vec!["demo-0001".into(), "demo-0002".into()],
            seen: "no member answers (timed out)".into(),
        });
        let status = derive(&c.spec, Some(1), &partitioned, &action, None, &EtcdClusterStatus::default(), time(5));
        assert_eq!(status.quorum_lost_since, None, "not a proven loss: its grace does not run");
        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded.reason, "MembersOnNotReadyNodes");
        assert!(degraded.message.contains("node-b, node-c") && degraded.message.contains("demo-0002"));
        assert!(degraded.message.contains("no automatic recovery"), "{}", degraded.message);
    }

    #[test]
    fn status_tells_the_versions_that_run_not_the_one_the_spec_asks_for() {
        let mut c = cluster("demo", 3);
        c.spec.version = "3.6.16".into();
        let mut mixed = steady();
        if let EtcdView::Members(members) = &mut mixed.etcd {
            members[1].version = crate::version::Version::parse("3.6.16");
        }
        let status = derive(&c.spec, Some(2), &mixed, &Action::Done, None, &EtcdClusterStatus::default(), time(100));
        assert_eq!(status.current_version.as_deref(), Some("3.5.35"), "the lowest that runs");
        assert_eq!(status.cluster_version.as_deref(), Some("3.5.0"));
        assert_eq!(status.server_versions["demo-0001"], "3.6.16");
        assert_eq!(status.server_versions["demo-0000"], "3.5.35");
        assert_eq!(condition(&status, "UpgradeBlocked").status, "False");
        // 3.5 -> 3.7 skips a minor: blocked, with what to do, whatever the step.
        c.spec.version = "3.7.3".into();
        let status = derive(&c.spec, Some(3), &steady(), &Action::Done, None, &status, time(110));
        let blocked = condition(&status, "UpgradeBlocked");
        assert_eq!((blocked.status.as_str(), blocked.reason.as_str()), ("True", "SkipsMinor"));
        assert!(blocked.message.contains("3.6.x first"), "{}", blocked.message);
        assert_eq!(status.phase, ClusterPhase::Running, "the cluster runs on, at its version");
        // No member answers: the last versions known are kept, never the spec's.
        let silent = Observed { etcd: EtcdView::Unreachable("timeout".into()), cluster_version: None, ..steady() };
        let status = derive(&c.spec, Some(3), &silent, &Action::Done, None, &status, time(120));
        assert_eq!(status.current_version.as_deref(), Some("3.5.35"));
        assert_eq!(status.cluster_version.as_deref(), Some("3.5.0"));
    }
}
