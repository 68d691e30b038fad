//! The conditions status carries, each derived from what was observed and the step taken, and their words.

use super::*;

/// The `UpgradeBlocked` condition: whether `spec.version` (or the change to it) is refused, from the same rules
/// the plan follows, whatever step the plan took (a heal goes on while the spec is refused). While a member does
/// not report its version, the verdict is kept as it was: judged without it, it would flap.
pub(super) fn version_verdict(
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

/// What a person can do about a lost quorum, given the recovery policy.
pub(super) fn recovery_hint(spec: &EtcdClusterSpec) -> String {
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

pub(super) fn degraded(
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
        Action::Wait(WaitReason::MembersOnVolumes { members, voters }) => (
            true,
            "QuorumLost",
            format!(
                "quorum is lost; {} of {voters} voting members ({}) have their data on their claims, and come back as \
                 the same members when their pods run again: no restore from a backup is started",
                members.len(),
                members.join(", ")
            ),
        ),
        _ if observed.pods.iter().any(|p| p.volume_refused.as_deref().is_some_and(crate::observe::data_intact)) => {
            let unusable: Vec<String> = observed
                .pods
                .iter()
                .filter_map(|p| {
                    let why = p.volume_refused.as_deref().filter(|w| crate::observe::data_intact(w))?;
                    Some(format!("{} on claim {} ({why})", p.name, crate::pod::claim_name(&p.name)))
                })
                .collect();
            (
                true,
                "VolumeUnusable",
                format!(
                    "the pod's user cannot use the files on the volume of {}: etcd is not started on it; its data \
                     is intact, and the member is neither replaced nor restored from a backup. Give the files to the \
                     member's user (spec.pod.securityContext, 65532 by default) on the node, or set \
                     spec.pod.securityContext to the user that wrote them: its pod is then created again",
                    unusable.join("; ")
                ),
            )
        }
        _ if observed.pods.iter().any(|p| p.volume_refused.is_some()) => {
            let refused: Vec<String> = observed
                .pods
                .iter()
                .filter_map(|p| {
                    let why = p.volume_refused.as_ref()?;
                    Some(format!("{} on claim {} ({why})", p.name, crate::pod::claim_name(&p.name)))
                })
                .collect();
            (
                true,
                "VolumeRefused",
                format!(
                    "the guard refused the volume of {}: etcd is not started on it, and the member is not replaced \
                     (the volume may hold another cluster's data). Bind the claim to the member's own volume, or \
                     delete the member's pod and claim to have it replaced",
                    refused.join("; ")
                ),
            )
        }
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
pub(super) fn alarm(spec: &EtcdClusterSpec, observed: &Observed) -> (bool, &'static str, String) {
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
pub(super) fn running_quota(command: &[String]) -> Option<i64> {
    command.iter().find_map(|a| a.strip_prefix("--quota-backend-bytes=")?.parse().ok())
}

/// The `ConfigDrift` condition: member pods created from other settings (`spec.etcd`, `spec.pod`) than the spec
/// holds now, by the hash each pod carries. A pod cannot change them while it lives.
pub(super) fn config_drift(spec: &EtcdClusterSpec, observed: &Observed, wanted: &str) -> (bool, &'static str, String) {
    let mut older: Vec<&str> = observed
        .pods
        .iter()
        .filter(|p| p.state != PodState::Terminating && p.settings.as_deref().is_some_and(|h| h != wanted))
        .map(|p| p.name.as_str())
        .collect();
    older.sort();
    let unknown = observed.pods.iter().filter(|p| p.settings.is_none()).count();
    if !older.is_empty() {
        // What the rollout will cost each of them: a restart on its claim, or a replacement (a new member).
        // As the rollout rung decides it: on a usable claim that records the member, of the class the spec names.
        let desired = crate::plan::Desired::from_spec(spec);
        let members = listed_members(observed);
        let voters = members.iter().filter(|m| !m.learner).count();
        let on_claim = |name: &str| match members.iter().find(|m| m.name == name) {
            Some(m) => {
                observed.claim_of(name).is_some_and(|c| c.usable() && c.member_id == Some(m.id))
                    && !(crate::plan::other_class(&desired, observed, m) && voters >= 3)
            }
            // etcd did not answer: the claim's record is what is known.
            None => observed.claim_of(name).is_some_and(|c| c.usable() && c.member_id.is_some()),
        };
        let (restarted, replaced): (Vec<&str>, Vec<&str>) = older.iter().partition(|name| on_claim(name));
        let mut cost = Vec::new();
        if !restarted.is_empty() {
            cost.push(format!(
                "restarted on {} claim{}: {}",
                if restarted.len() == 1 { "its" } else { "their" },
                if restarted.len() == 1 { "" } else { "s" },
                restarted.join(", ")
            ));
        }
        if !replaced.is_empty() {
            cost.push(format!(
                "replaced by new members (their data is on an emptyDir, or not yet recorded on a claim), from three \
                 members up: {}",
                replaced.join(", ")
            ));
        }
        return (
            true,
            "OlderSettings",
            format!(
                "{} run{} settings of an earlier spec (spec.etcd, spec.pod, spec.storage, or a ca.crt changed since): a pod's command, resources \
                 and placement cannot change while it lives, so they are rolled out one member at a time, each \
                 serving again before the next — {}. Progressing says where the rollout is",
                older.join(", "),
                if older.len() == 1 { "s" } else { "" },
                cost.join("; ")
            ),
        );
    }
    if let Some(drift) = storage_drift(spec, observed) {
        return drift;
    }
    // Review S10: a member born at 3.4 keeps its exec probe after an upgrade (a probe cannot change in place), and
    // that probe fails under NOSPACE, taking the member out of the client Service.
    let runs_newer = |p: &&crate::observe::MemberPod| {
        let version =
            p.image.as_deref().and_then(|i| i.rsplit_once(':')).and_then(|(_, t)| crate::version::Version::parse(t));
        version.is_some_and(|v| v.minor >= 5)
    };
    // The names of the pods (not being deleted) that `which` picks, sorted.
    let pods_where = |which: &dyn Fn(&crate::observe::MemberPod) -> bool| {
        let mut names: Vec<&str> = observed
            .pods
            .iter()
            .filter(|p| p.state != PodState::Terminating && which(p))
            .map(|p| p.name.as_str())
            .collect();
        names.sort();
        names
    };
    let probed = pods_where(&|p| p.exec_probe && runs_newer(&p));
    if !probed.is_empty() {
        return (
            true,
            "ProbeOfOlderVersion",
            format!(
                "{} kept the readiness probe of etcd 3.4 (`etcdctl endpoint health`, which fails under a NOSPACE \
                 alarm and would take every such member out of the client Service) after their upgrade: a probe \
                 cannot change while its pod lives. Delete one such pod at a time while the others keep a quorum: \
                 on a claim it comes back as the same member with `/health?exclude=NOSPACE`; on an emptyDir it is \
                 replaced",
                probed.join(", ")
            ),
        );
    }
    // Members of an earlier build run as root: not rolled for the hardening alone (their volume's driver may not
    // give their files to the new user), which the spec asks for all the same. Said, with what moving them takes.
    if spec.pod.security_context.run_as_user != 0 {
        let root = pods_where(&|p| p.runs_as_root);
        if !root.is_empty() {
            return (
                true,
                "RunsAsRoot",
                format!(
                    "{} run{} etcd as root, as pods of an earlier controller did: they are not restarted for that \
                     alone, and move to the hardened pod (user {}) when next created (any change to spec.pod or \
                     spec.etcd rolls them, one at a time). On a volume whose driver does not apply fsGroup \
                     (hostPath, local-path, NFS) first give the files to that user, or set \
                     spec.pod.securityContext.runAsUser to 0 to keep root",
                    root.join(", "),
                    if root.len() == 1 { "s" } else { "" },
                    spec.pod.security_context.run_as_user
                ),
            );
        }
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

/// The members etcd lists (none when it did not answer).
fn listed_members(observed: &Observed) -> &[crate::observe::Member] {
    match &observed.etcd {
        crate::observe::EtcdView::Members(members) => members,
        crate::observe::EtcdView::Unreachable(_) => &[],
    }
}

/// Member claims of another storage class than `spec.storage` names, or asking for less than its size, if any.
fn storage_drift(spec: &EtcdClusterSpec, observed: &Observed) -> Option<(bool, &'static str, String)> {
    let storage = spec.storage.as_ref()?;
    let members = listed_members(observed);
    // A member's claim, even retired while the member is still listed (its removal did not finish).
    let claims: Vec<&crate::observe::Claim> = observed
        .claims
        .iter()
        .filter(|c| c.ours && !c.deleting && (!c.retired || members.iter().any(|m| m.name == c.member)))
        .collect();
    if let Some(wanted) = storage.storage_class_name.as_deref() {
        let mut other: Vec<String> = claims
            .iter()
            .filter(|c| c.class.as_deref().is_some_and(|class| class != wanted))
            .map(|c| format!("{} ({})", c.member, c.class.as_deref().unwrap_or_default()))
            .collect();
        if !other.is_empty() {
            other.sort();
            let voters = members.iter().filter(|m| !m.learner).count();
            let (reason, what) = match observed.wanted_class_exists {
                Some(false) => (
                    "StorageClassNotFound",
                    format!("storage class {wanted} does not exist: nothing is moved until it does"),
                ),
                None => (
                    "StorageClassUnknown",
                    format!("whether storage class {wanted} exists could not be read: nothing is moved until it can"),
                ),
                Some(true) if voters < 3 && !members.is_empty() => (
                    "OtherStorageClass",
                    format!(
                        "a claim's class cannot change, and moving a member means replacing it, which a cluster of \
                         {voters} leaves no margin for: grow the cluster to three members first"
                    ),
                ),
                Some(true) => (
                    "OtherStorageClass",
                    format!(
                        "a claim's class cannot change, so each such member is replaced, one at a time, by a new \
                         member on a claim of {wanted}. Progressing says where the rollout is"
                    ),
                ),
            };
            return Some((
                true,
                reason,
                format!(
                    "{} keep{} their data on claims of another storage class than {wanted}: {what}",
                    other.join(", "),
                    if other.len() == 1 { "s" } else { "" }
                ),
            ));
        }
    }
    let claims: Vec<&crate::observe::Claim> = claims.into_iter().filter(|c| c.usable()).collect();
    let size = storage.bytes()?;
    let mut smaller: Vec<&&crate::observe::Claim> =
        claims.iter().filter(|c| c.requested.is_some_and(|r| r < size)).collect();
    smaller.sort_by(|a, b| a.name.cmp(&b.name));
    let expanding: Vec<&str> = claims.iter().filter(|c| c.expanding()).map(|c| c.name.as_str()).collect();
    if smaller.is_empty() && expanding.is_empty() {
        return None;
    }
    let names =
        |claims: &[&&crate::observe::Claim]| claims.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let refused: Vec<&&crate::observe::Claim> =
        smaller.iter().filter(|c| c.expandable == Some(false)).copied().collect();
    if !refused.is_empty() {
        let classes: std::collections::BTreeSet<&str> = refused.iter().filter_map(|c| c.class.as_deref()).collect();
        return Some((
            true,
            "VolumeExpansionNotAllowed",
            format!(
                "{} ask{} for less than spec.storage.size ({}), and storage class {} does not allow expanding \
                 volumes (allowVolumeExpansion): they stay as they are. To grow the members' volumes, move them to a \
                 class that allows it (spec.storage.storageClassName: each member is replaced onto a claim of it)",
                names(&refused),
                if refused.len() == 1 { "s" } else { "" },
                storage.size,
                classes.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let unknown: Vec<&&crate::observe::Claim> = smaller.iter().filter(|c| c.expandable.is_none()).copied().collect();
    if !unknown.is_empty() {
        return Some((
            true,
            "VolumeExpansionUnknown",
            format!(
                "{} ask{} for less than spec.storage.size ({}), and whether their storage class allows expanding \
                 volumes could not be read: they stay as they are until it can",
                names(&unknown),
                if unknown.len() == 1 { "s" } else { "" },
                storage.size
            ),
        ));
    }
    let growing: Vec<&str> = smaller.iter().map(|c| c.name.as_str()).chain(expanding.iter().copied()).collect();
    let mut growing: Vec<&str> = growing.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    growing.sort();
    Some((
        true,
        "VolumesGrowing",
        format!(
            "{} {} to grow to {}: one claim at a time, each once the one before has its size (status.claims shows \
             each claim's capacity). Progressing says where it is",
            growing.join(", "),
            if growing.len() == 1 { "is" } else { "are" },
            storage.size
        ),
    ))
}

pub(super) fn progress_reason(action: &Action) -> &'static str {
    match action {
        Action::CreateSeed { .. } => "CreatingSeed",
        Action::AddLearner { .. } => "AddingMember",
        Action::CreateMemberPod { .. } => "FinishingMemberAdd",
        Action::Promote { .. } => "PromotingLearner",
        Action::RemoveMember { reason: RemoveReason::Dead, .. } => "ReplacingDeadMember",
        Action::RemoveMember { reason: RemoveReason::Rollout, .. } | Action::RollPod { .. } => "RollingOut",
        Action::SwitchPeerUrl { .. } => "SwitchingPeerUrl",
        Action::Wait(WaitReason::RolloutWaiting(_)) => "RolloutWaiting",
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
        Action::RestartOnClaim { .. } | Action::DeleteFailedPod { .. } => "RestartingMemberOnClaim",
        Action::RecordMemberId { .. } => "RecordingClaim",
        Action::RetireClaim { .. } | Action::RetireLostClaim { .. } => "RetiringClaim",
        Action::SetClaimOwner { .. } => "ApplyingClaimPolicy",
        Action::ExpandClaim { .. } | Action::Wait(WaitReason::ClaimExpanding { .. }) => "ExpandingVolumes",
        Action::Wait(WaitReason::MembersOnVolumes { .. }) => "WaitingForMembersOnVolumes",
        Action::StartUpgrade { .. }
        | Action::RollMember { .. }
        | Action::MoveLeader { .. }
        | Action::Wait(WaitReason::UpgradeSettling { .. } | WaitReason::UpgradeFinishing(_)) => "Upgrading",
        Action::CompleteUpgrade => "UpgradeCompleted",
        Action::Wait(WaitReason::UpgradeWaiting(_)) => "UpgradeWaiting",
        Action::Wait(WaitReason::UpgradeStalled { .. }) => "UpgradeStalled",
        Action::Wait(WaitReason::VersionRefused(_)) => "VersionRefused",
        Action::Wait(WaitReason::CertificatesInvalid(_)) => "CertificatesInvalid",
        Action::Wait(_) => "Blocked",
        Action::Done => "Converged",
    }
}

pub(super) fn progress_message(action: &Action) -> String {
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
        Action::MoveLeader { name, .. } => format!("moving leadership to {name}, which runs the target (or settings)"),
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
        Action::RemoveMember { name, reason: RemoveReason::Rollout, .. } => {
            format!(
                "replacing {name} (on an emptyDir, or a claim of another storage class) with a new member on the current settings"
            )
        }
        Action::RemoveMember { name, .. } => format!("removing member {name}"),
        Action::RollPod { name, .. } => {
            format!("restarting {name} on its claim (its pod is created again from the current spec)")
        }
        Action::Wait(WaitReason::RolloutWaiting(why)) => format!("the rollout waits: {why}"),
        Action::SwitchPeerUrl { name, url, .. } => format!(
            "registering {name} at peer URL {url} (peer TLS turned on: every pod listens on both schemes; its pod is \
             rolled next to listen there alone)"
        ),
        Action::ExpandClaim { claim, size } => {
            format!("asking claim {claim} for {} (spec.storage.size grew): its driver expands the volume", size)
        }
        Action::Wait(WaitReason::ClaimExpanding { claim, error: None }) => format!(
            "waiting for claim {claim} to get the size it asks for (its driver expands the volume) before the next"
        ),
        Action::Wait(WaitReason::ClaimExpanding { claim, error: Some(error) }) => format!(
            "claim {claim} does not get the size it asks for: {error}; the next waits (a person looks at the \
             volume's driver)"
        ),
        Action::DeletePod { name } => format!("deleting pod {name}, which is no member"),
        Action::RestartOnClaim { name, .. } => {
            format!("creating the pod of {name} again on its claim {}", crate::pod::claim_name(name))
        }
        Action::DeleteFailedPod { name, .. } => {
            format!("deleting the failed pod of {name}, to create it again on its claim")
        }
        Action::RecordMemberId { name, id } => format!("recording member ID {id:x} on the claim of {name}"),
        Action::RetireClaim { name, delete: true } => format!("deleting the claim of removed member {name}"),
        Action::RetireClaim { name, delete: false } => format!("retiring the claim of removed member {name}"),
        Action::RetireLostClaim { name } => format!("retiring (and keeping) the claim of lost member {name}"),
        Action::SetClaimOwner { name, owned } => format!(
            "applying whenDeleted to the claim of {name}: {}",
            if *owned { "deleted with the cluster" } else { "kept when the cluster is deleted" }
        ),
        Action::Wait(WaitReason::MembersOnVolumes { members, .. }) => {
            format!("quorum is lost: waiting for {} to run again on their claims", members.join(", "))
        }
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
        Action::Wait(WaitReason::CertificatesInvalid(problems)) => format!(
            "blocked: nothing is created, rolled or removed while a certificate cannot be used: {}",
            problems.join("; ")
        ),
        Action::Wait(WaitReason::LearnerNotReady(name)) => format!("waiting for learner {name} to start and catch up"),
        Action::Wait(WaitReason::EtcdUnreachable(why)) => format!("waiting for etcd: {why}"),
        Action::Wait(WaitReason::QuorumLost { .. }) => "blocked: quorum is lost".into(),
        Action::Wait(WaitReason::DataLost) => "blocked: every member is gone".into(),
        Action::Done => "the cluster has its requested size and every member is healthy".into(),
    }
}
