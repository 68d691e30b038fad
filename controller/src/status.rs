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
    let phase = phase(spec, observed, action, previous, recovering, &versions);

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
    set("Available", truth(available), available_reason, available_message.clone());
    // A rollout of settings names the members not on the current spec yet.
    // As the planner is given it: rendered with the certificates the cluster uses (status.tls too).
    let wanted = crate::pod::settings_hash(&with_status(spec, observed, previous), &observed.trust);
    let mut drifted = crate::plan::drifted(observed, &wanted);
    if let Some(class) = spec.storage.as_ref().and_then(|s| s.storage_class_name.as_deref()) {
        let other = observed.claims.iter().filter(|c| c.usable() && c.class.as_deref().is_some_and(|c| c != class));
        drifted.extend(other.map(|c| c.member.as_str()));
        drifted.sort();
        drifted.dedup();
    }
    let rolling = previous.upgrade.is_none()
        && !drifted.is_empty()
        && matches!(
            action,
            Action::RollPod { .. }
                | Action::MoveLeader { .. }
                | Action::RemoveMember { reason: RemoveReason::Rollout, .. }
                | Action::Wait(WaitReason::RolloutWaiting(_))
        );
    let (progress_reason, progress_message) = if rolling {
        let reason = if matches!(action, Action::Wait(_)) { "RolloutWaiting" } else { "RollingOut" };
        (reason, format!("{}; not on the current spec yet: {}", progress_message(action), drifted.join(", ")))
    } else {
        (progress_reason(action), progress_message(action))
    };
    // Ready: serving at the size the spec asks, every member Ready, nothing under way and nothing degraded; what
    // `kubectl wait --for=condition=Ready` and GitOps health checks read.
    let size = usize::try_from(spec.size).unwrap_or(0);
    let (alarmed, alarm_reason, alarm_message) = alarm(spec, observed);
    let settled = matches!(phase, ClusterPhase::Running | ClusterPhase::Paused);
    let (ready, ready_reason, ready_message) = if !available {
        (false, "NotAvailable", format!("not serving: {available_message}"))
    } else if progressing {
        (false, "Progressing", format!("a step is under way: {progress_message}"))
    } else if voters != size || names.ready.len() != size {
        (
            false,
            "NotAllMembersReady",
            format!("{} of {size} members are Ready ({voters} voting members)", names.ready.len()),
        )
    } else if degraded {
        (false, "Degraded", degraded_message.clone())
    } else if alarmed {
        (false, "Alarm", alarm_message.clone())
    } else if !settled {
        (false, "NotSettled", format!("the cluster is {phase:?}"))
    } else {
        (true, "Serving", format!("all {size} members are Ready and serve; nothing is under way"))
    };
    set("Progressing", truth(progressing), progress_reason, progress_message);
    set("Degraded", truth(degraded), degraded_reason, degraded_message);
    set("Ready", truth(ready), ready_reason, ready_message);
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
    let (drift, drift_reason, drift_message) = config_drift(spec, observed, &wanted);
    set("ConfigDrift", truth(drift), drift_reason, drift_message);
    let (blocked, blocked_reason, blocked_message) = version_verdict(spec, observed, action, previous);
    set("UpgradeBlocked", truth(blocked), &blocked_reason, blocked_message);
    // The certificates of the TLS still in use (one just turned off is neither listed nor judged).
    let tls = tls_in_use(spec, observed, previous);
    let certificates = certificates_of(tls.as_ref(), observed);
    if spec.tls.is_some() || !certificates.is_empty() {
        let (blocking, other): (Vec<_>, Vec<_>) = certificates
            .iter()
            .filter(|c| c.problem.is_some())
            .partition(|c| crate::certificates::holds_up(&c.purpose));
        let problems: Vec<String> = blocking.iter().filter_map(|c| c.problem.clone()).collect();
        let others: Vec<String> = other.iter().filter_map(|c| c.problem.clone()).collect();
        if problems.is_empty() && !others.is_empty() {
            let message = format!(
                "{}. The members' and the controller's certificates can be used: nothing else is held up",
                others.join("; ")
            );
            set("CertificatesReady", "False", "CertificateTrouble", message);
        } else if problems.is_empty() {
            let soonest = certificates.iter().filter_map(|c| c.not_after.as_ref()).min_by_key(|t| t.0);
            let message = match soonest {
                Some(at) => format!(
                    "every certificate of the cluster's TLS can be used; the first to expire ends at {} (generated ones are \
                     renewed when a third of their life is left)",
                    at.0
                ),
                None => "every certificate of the cluster's TLS can be used".into(),
            };
            set("CertificatesReady", "True", "CertificatesValid", message);
        } else {
            let message = format!(
                "{}. Nothing is created, rolled or removed until this is fixed; running members keep running",
                problems.iter().chain(&others).cloned().collect::<Vec<_>>().join("; ")
            );
            set("CertificatesReady", "False", "CertificateInvalid", message);
        }
    }
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
        peer_urls: match members {
            Some(members) => {
                members.iter().filter_map(|m| Some((m.name.clone(), m.peer_urls.first()?.clone()))).collect()
            }
            None => previous.peer_urls.clone(),
        },
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
        claims: claims(observed),
        certificates,
        tls,
        conditions,
    }
}

/// `status.tls`: the TLS whose certificates the members use ([`crate::certificates::still_in_use`]), judged from
/// the peer URLs etcd lists (unknown while etcd cannot be asked or lists no member) and the member pods that serve
/// TLS.
fn tls_in_use(
    spec: &EtcdClusterSpec,
    observed: &Observed,
    previous: &EtcdClusterStatus,
) -> Option<proto::cluster::TlsInUse> {
    let registered: Option<Vec<String>> = match &observed.etcd {
        EtcdView::Members(members) if !members.is_empty() => {
            Some(members.iter().flat_map(|m| m.peer_urls.iter().cloned()).collect())
        }
        _ => None,
    };
    let serving_tls = observed.pods.iter().filter(|p| crate::peering::serves_client_tls(&p.command)).count();
    crate::certificates::still_in_use(&with_status(spec, observed, previous), registered.as_deref(), serving_tls)
}

/// The certificates observed of the parts of TLS still in use (`tls`): one just turned off is no longer listed
/// (nor read from status again, as a status of an earlier build is).
fn certificates_of(
    tls: Option<&proto::cluster::TlsInUse>,
    observed: &Observed,
) -> Vec<proto::cluster::CertificateStatus> {
    let peer = tls.is_some_and(|t| t.peer.is_some());
    let client = tls.is_some_and(|t| t.client.is_some());
    observed
        .certificates
        .iter()
        .filter(|c| if c.purpose.starts_with("peer") { peer } else { client })
        .cloned()
        .collect()
}

/// The cluster as reconciled: `spec`, with the status it had (`status.tls` says which certificates it uses).
fn with_status(spec: &EtcdClusterSpec, observed: &Observed, previous: &EtcdClusterStatus) -> EtcdCluster {
    let mut cluster = EtcdCluster::new(&observed.cluster, spec.clone());
    cluster.status = Some(previous.clone());
    cluster
}

/// Each member claim as the API server shows it, with its guard's refusal.
fn claims(observed: &Observed) -> Vec<proto::cluster::MemberClaim> {
    let mut claims: Vec<proto::cluster::MemberClaim> = observed
        .claims
        .iter()
        .map(|c| proto::cluster::MemberClaim {
            member: c.member.clone(),
            claim: c.name.clone(),
            phase: match c.phase {
                _ if c.deleting => "Terminating",
                _ if !c.ours => "NotOurs",
                _ if c.retired => "Retired",
                crate::observe::ClaimPhase::Pending => "Pending",
                crate::observe::ClaimPhase::Bound => "Bound",
                crate::observe::ClaimPhase::Lost => "Lost",
            }
            .into(),
            capacity: c.capacity.clone(),
            requested: c.requested.map(bytes_in_words),
            storage_class: c.class.clone(),
            refused: observed.pods.iter().find(|p| p.name == c.member).and_then(|p| p.volume_refused.clone()),
        })
        .collect();
    claims.sort_by(|a, b| a.member.cmp(&b.member));
    claims
}

/// A size in bytes as Kubernetes would write it: the largest binary unit that divides it (`2Gi`, `1536Mi`), else
/// bytes.
pub fn bytes_in_words(bytes: u64) -> String {
    let units = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    match units.iter().find(|(_, shift)| bytes != 0 && bytes.trailing_zeros() >= *shift) {
        Some((unit, shift)) => format!("{}{unit}", bytes >> shift),
        None => bytes.to_string(),
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

/// The phase: what the cluster is doing, from the step taken (a lost quorum and a recovery first).
fn phase(
    spec: &EtcdClusterSpec,
    observed: &Observed,
    action: &Action,
    previous: &EtcdClusterStatus,
    recovering: bool,
    versions: &[crate::version::Version],
) -> ClusterPhase {
    match action {
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
            let mut distinct = versions.to_vec();
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
        // A leader moved for a rollout of settings is no upgrade.
        Action::MoveLeader { .. } if previous.upgrade.is_none() => ClusterPhase::Running,
        _ if upgrading(action) => ClusterPhase::Upgrading,
        _ if previous.phase == ClusterPhase::Creating || !previous.formed => ClusterPhase::Creating,
        Action::RemoveMember { reason: RemoveReason::Dead, .. } | Action::CreateMemberPod { .. } => {
            ClusterPhase::Healing
        }
        _ => ClusterPhase::Scaling,
    }
}

mod conditions;

use conditions::{alarm, config_drift, degraded, progress_message, progress_reason, version_verdict};

#[cfg(test)]
pub(crate) mod tests;
