//! Carrying out the planner's one step against Kubernetes and etcd, and telling people about it in events.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use proto::cluster::{EtcdCluster, RecoveryStatus, RestoredFrom};
use serde_json::json;

use crate::backup::{self, SidecarClient};
use crate::labels::{FIELD_MANAGER, peer_url};
use crate::membership::{self, Membership, MembershipError};
use crate::observe::{Endpoints, EtcdView, Observed, PodState, member_index};
use crate::plan::{Action, RemoveReason};
use crate::pod::{Join, SeedRestore, member_pod};
use crate::recovery::{self, Survivor};

/// Errors carrying out a step.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// The API server refused or failed.
    #[error("{op}: {source}")]
    Kube {
        /// What was being done.
        op: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// etcd refused or failed a membership change.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// A backup sidecar could not be asked.
    #[error(transparent)]
    Sidecar(#[from] crate::backup::SidecarError),
    /// There is no backup to restore from.
    #[error("{0}")]
    NoBackup(String),
    /// The backup an upgrade takes before it starts failed: the upgrade does not start.
    #[error("the backup before the upgrade failed, so the upgrade did not start: {0}")]
    UpgradeBackup(String),
    /// `spec.restore` cannot be used as it stands (a Secret that did not opt in, a source that does not exist):
    /// nothing was created.
    #[error("{0}")]
    SeedSource(String),
}

impl ActError {
    /// Stable short reason, for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "KubernetesApiError",
            Self::Membership(error) => error.reason(),
            Self::Sidecar(_) => "BackupSidecarUnreachable",
            Self::NoBackup(_) => "NoUsableBackup",
            Self::UpgradeBackup(_) => "UpgradeBackupFailed",
            Self::SeedSource(_) => "RestoreSourceRefused",
        }
    }

    /// For a step that was refused rather than failed (the API server refused a create or patch as invalid or
    /// forbidden, or the seed's source cannot be used): what was being done, and why (shortened). Asking again
    /// at once would get the same answer.
    pub fn refusal(&self) -> Option<(String, String)> {
        match self {
            Self::Kube { op, source: kube::Error::Api(status) } if matches!(status.code, 400 | 403 | 422) => {
                Some((op.clone(), shorten(&status.message, 400)))
            }
            Self::SeedSource(why) => Some(("creating the seed".into(), shorten(why, 400))),
            _ => None,
        }
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn kube_error(op: impl Into<String>) -> impl FnOnce(kube::Error) -> ActError {
    let op = op.into();
    move |source| ActError::Kube { op, source }
}

/// Carries out `action`. Membership changes go through the voting members the observation found.
pub async fn act(
    ctx: &crate::reconcile::Context,
    cluster: &EtcdCluster,
    observed: &Observed,
    addresses: &Endpoints,
    action: &Action,
) -> Result<(), ActError> {
    let (client, recorder, etcd_timeout) = (&ctx.client, &ctx.recorder, ctx.etcd_timeout);
    let sidecar_image = ctx.sidecar_image.as_str();
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let members: Vec<String> = match &observed.etcd {
        EtcdView::Members(members) => members.iter().map(|m| m.name.clone()).collect(),
        EtcdView::Unreachable(_) => Vec::new(),
    };
    let endpoints: Vec<String> = addresses.values().cloned().collect();
    match action {
        Action::CreateSeed { name: member, release } => {
            // The token and the next index are recorded before the pod exists, so a crash in between never
            // reuses a name.
            let token = format!("{name}-{}", cluster.uid().unwrap_or_default().get(..8).unwrap_or("local"));
            let token = format!("{token}-{}", member_index(&name, member).unwrap_or_default());
            // A restored seed's backup is chosen (and `latest` resolved) once, here, and recorded with the token.
            let seed = seed_source(client, cluster, sidecar_image, etcd_timeout).await?;
            let restored = seed.as_ref().map(|(_, from)| from);
            let restore = seed.as_ref().map(|(restore, _)| restore.clone());
            let join = Join::New { token: token.clone(), restore };
            let pod = member_pod(cluster, member, std::slice::from_ref(member), &join, release);
            // Admission (Pod Security, a quota, a webhook) is asked before the name is taken: a refused pod
            // burns no member name.
            try_create(&pods, &pod).await?;
            reserve(client, cluster, member, Some(&token), restored).await?;
            create(&pods, &pod).await?;
            let note = match restored {
                Some(from) if from.revision == 0 => {
                    format!("created seed member {member}, restoring backup {:?} from {}", from.backup, from.source)
                }
                Some(from) => format!(
                    "created seed member {member}, restoring backup {} (revision {}) from {}",
                    from.backup, from.revision, from.source
                ),
                None => format!("created seed member {member}"),
            };
            let note = format!("{note} (etcd {})", release.version);
            publish(recorder, cluster, member_event("SeedCreated", note, &namespace, member)).await;
        }
        Action::AddLearner { name: member, release } => {
            // Admission is asked before etcd takes the member: a pod the API server refuses adds no learner
            // that could never start (and burns no name).
            let mut initial = members.clone();
            initial.push(member.clone());
            let pod = member_pod(cluster, member, &initial, &Join::Existing, release);
            try_create(&pods, &pod).await?;
            let mut membership = Membership::connect(&endpoints, etcd_timeout).await?;
            let id = match membership.add_learner(&peer_url(member, &name, &namespace)).await {
                Ok(id) => id,
                Err(error) => return not_yet(error),
            };
            // Recorded only once etcd took the member: a refused add burns no name, and a crash before this
            // line leaves the name in etcd's member list, where the next observation finds it.
            reserve(client, cluster, member, None, None).await?;
            create(&pods, &pod).await?;
            let note = format!("added {member} ({id:x}) as a learner, running etcd {}", release.version);
            publish(recorder, cluster, member_event("MemberAdded", note, &namespace, member)).await;
        }
        Action::CreateMemberPod { name: member, release } => {
            create(&pods, &member_pod(cluster, member, &members, &Join::Existing, release)).await?;
            publish(
                recorder,
                cluster,
                member_event(
                    "MemberPodCreated",
                    format!("created the pod of {member}, added to etcd by an earlier attempt"),
                    &namespace,
                    member,
                ),
            )
            .await;
        }
        Action::Promote { id, name: member } => {
            if let Err(error) = Membership::connect(&endpoints, etcd_timeout).await?.promote(*id).await {
                return not_yet(error);
            }
            let note = format!("promoted {member} to a voting member");
            publish(recorder, cluster, member_event("MemberPromoted", note, &namespace, member)).await;
        }
        Action::RemoveMember { id, name: member, reason } => {
            if let Err(error) = Membership::connect(&endpoints, etcd_timeout).await?.remove(*id).await {
                return not_yet(error);
            }
            delete_member_pod(&pods, observed, member).await?;
            let why = match reason {
                RemoveReason::Dead => {
                    "it is dead (its pod gone or failed, its etcd in a restart loop, or its node lost); a new member \
                     replaces it"
                }
                RemoveReason::ScaleDown => "the cluster is larger than its spec",
            };
            let note = format!("removed {member} ({id:x}): {why}");
            publish(recorder, cluster, member_event("MemberRemoved", note, &namespace, member)).await;
        }
        Action::DeletePod { name: member } => {
            delete(&pods, member).await?;
            let note = format!("deleted pod {member}: it is no etcd member");
            publish(recorder, cluster, member_event("PodDeleted", note, &namespace, member)).await;
        }
        Action::StartRecovery { first_index } => {
            // Pods already terminating are going anyway; recording them would make the recovery look touched.
            let lost =
                observed.pods.iter().filter(|p| p.state != PodState::Terminating).map(|p| p.name.clone()).collect();
            // Pods whose etcd may have run on data that no backup holds: running (answering or not) or in a
            // restart loop. Only pods that failed for good, never started, or are being deleted hold nothing.
            let holding: Vec<String> = observed
                .pods
                .iter()
                .filter(|p| matches!(p.state, PodState::Running { .. } | PodState::CrashLooping))
                .map(|p| p.name.clone())
                .collect();
            let recovery = RecoveryInput { addresses, first_index: *first_index, lost, holding };
            if let Some(fresh) = start_recovery(client, recorder, cluster, recovery, etcd_timeout).await? {
                ctx.metrics.recovery_started(if fresh { "fresh" } else { "newest" });
            }
        }
        Action::DeleteLostMember { name: member } => {
            // The object this step was planned from may predate an abandoned (cleared) or a different recovery:
            // delete only while the very record the plan saw is still there.
            let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
            let current = api.get_status(&cluster.name_any()).await.map_err(kube_error("reading status"))?;
            let record = |s: Option<&proto::cluster::EtcdClusterStatus>| {
                s.and_then(|s| s.recovery.as_ref()).map(|r| (r.backup.clone(), r.first_member_index))
            };
            let planned = record(cluster.status.as_ref());
            if planned.is_none() || record(current.status.as_ref()) != planned {
                tracing::info!(%member, "the recovery record changed since this step was planned; nothing deleted");
                return Ok(());
            }
            delete_member_pod(&pods, observed, member).await?;
            publish(
                recorder,
                cluster,
                member_event(
                    "LostMemberDeleted",
                    format!("deleted pod {member} of the cluster that lost quorum"),
                    &namespace,
                    member,
                ),
            )
            .await;
        }
        Action::AbandonRecovery { why } => {
            let backup = cluster.status.as_ref().and_then(|s| s.recovery.as_ref()).map(|r| r.backup.clone());
            patch_status(
                client,
                cluster,
                json!({ "recovery": null, "quorumLostSince": null }),
                "abandoning the recovery",
            )
            .await?;
            let note = format!(
                "recovery from backup {} abandoned before anything was deleted: {why}; the cluster is kept",
                backup.unwrap_or_default()
            );
            ctx.metrics.recovery_abandoned();
            publish(recorder, cluster, event("RecoveryAbandoned", note)).await;
        }
        Action::CompleteRecovery => {
            let status = cluster.status.clone().unwrap_or_default();
            let since = status.quorum_lost_since.as_ref().map(|t| t.0);
            let took = since.map_or_else(String::new, |since| {
                let seconds = k8s_openapi::jiff::Timestamp::now().duration_since(since).as_secs_f64();
                format!(" {seconds:.0} s after quorum was lost")
            });
            let backup = status.recovery.as_ref().map_or_else(String::new, |r| r.backup.clone());
            patch_status(client, cluster, json!({ "recovery": null, "quorumLostSince": null }), "ending the recovery")
                .await?;
            publish(
                recorder,
                cluster,
                event(
                    "RecoveryCompleted",
                    format!("the cluster serves again from backup {backup}{took}; growing back to its size"),
                ),
            )
            .await;
        }
        Action::StartUpgrade { from, release, warning } => {
            // The object the plan saw may predate a record written a moment ago: read it back first, so that a
            // record for this very target is never made twice (with a second backup), and one for another target
            // (a rollback) keeps its start, by which the members it changed are known.
            let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
            let current = api.get_status(&name).await.map_err(kube_error("reading status"))?;
            let existing = current.status.as_ref().and_then(|s| s.upgrade.clone());
            if existing.as_ref().is_some_and(|u| u.to_image == release.image) {
                return Ok(());
            }
            let backup = if cluster.spec.backup.is_some() {
                let target = release.version.to_string();
                let versions = (from.as_str(), target.as_str());
                Some(pre_upgrade_backup(client, cluster, &endpoints, versions, etcd_timeout).await?)
            } else {
                None
            };
            let record = proto::cluster::UpgradeStatus {
                from: from.clone(),
                to_image: release.image.clone(),
                to_version: release.version.to_string(),
                started_at: existing.and_then(|u| u.started_at).or_else(|| {
                    Some(Time(
                        k8s_openapi::jiff::Timestamp::now()
                            .round(k8s_openapi::jiff::Unit::Second)
                            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
                    ))
                }),
                backup: backup.clone(),
                warning: warning.clone(),
            };
            // Every field, unset ones as null: a merge patch would keep an older record's backup or warning.
            let record = json!({
                "from": record.from,
                "toImage": record.to_image,
                "toVersion": record.to_version,
                "startedAt": record.started_at,
                "backup": record.backup,
                "warning": record.warning,
            });
            patch_status(client, cluster, json!({ "upgrade": record }), "recording the upgrade").await?;
            ctx.metrics.upgrade_step("started");
            let backup = backup.map_or_else(|| "no backups are configured".to_string(), |b| format!("backup {b}"));
            let warning = warning.as_ref().map_or_else(String::new, |w| format!("; warning: {w}"));
            let note = format!(
                "upgrading from {from} to {} ({}), one member at a time, the leader last; taken before it: {backup}{warning}",
                release.version, release.image
            );
            publish(recorder, cluster, upgrade_event(event("UpgradeStarted", note), &release.version.to_string()))
                .await;
        }
        Action::RollMember { name: member, from, release, leader, restarts } => {
            use crate::observe::{ROLLED_AT, ROLLED_FOR, ROLLED_FROM, ROLLED_RESTARTS, ROLLED_TO};
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let record = cluster.status.as_ref().and_then(|s| s.upgrade.as_ref()?.started_at.clone());
            let annotations = json!({
                ROLLED_FOR: record.map(|t| t.0.to_string()),
                ROLLED_AT: now,
                ROLLED_FROM: from,
                ROLLED_TO: release.image,
                ROLLED_RESTARTS: restarts.to_string(),
            });
            let patch = json!({
                "metadata": { "annotations": annotations },
                "spec": { "containers": [{ "name": crate::observe::ETCD_CONTAINER, "image": release.image }] },
            });
            pods.patch(member, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(kube_error(format!("changing the image of pod {member}")))?;
            ctx.metrics.upgrade_step(if *leader { "leader" } else { "member" });
            let role = if *leader { "the leader (no other member)" } else { "a follower" };
            let note = format!(
                "restarting {member}, {role}, on its own data with {} (was {from}): etcd {}",
                release.image, release.version
            );
            let event = member_event("MemberUpgrading", note, &namespace, member);
            publish(recorder, cluster, upgrade_event(event, &release.version.to_string())).await;
        }
        Action::MoveLeader { from, to, name: new_leader } => {
            let leader = match &observed.etcd {
                EtcdView::Members(members) => members.iter().find(|m| m.id == *from).map(|m| m.name.clone()),
                EtcdView::Unreachable(_) => None,
            };
            let Some(url) = leader.as_ref().and_then(|l| addresses.get(l)) else {
                return Ok(());
            };
            if let Err(error) = Membership::connect_to(url, etcd_timeout).await?.move_leader(*to).await {
                return not_yet(error);
            }
            ctx.metrics.upgrade_step("leader_moved");
            let note = format!(
                "moved leadership from {} to {new_leader}, which runs the target, before the old leader is upgraded",
                leader.unwrap_or_default()
            );
            publish(recorder, cluster, upgrade_event(event("LeaderMoved", note), &desired_version(cluster))).await;
        }
        Action::CompleteUpgrade => {
            // Read back: a record already cleared (the object the plan saw was older) is not completed twice.
            let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
            let current = api.get_status(&name).await.map_err(kube_error("reading status"))?;
            let Some(record) = current.status.and_then(|s| s.upgrade) else {
                return Ok(());
            };
            let wanted = crate::plan::WantedEtcd::new(&cluster.spec.repository, &cluster.spec.version);
            if record.to_image != wanted.image {
                // The spec went back before the target was reached: every member runs what the spec asks now.
                patch_status(client, cluster, json!({ "upgrade": null }), "ending the upgrade").await?;
                ctx.metrics.upgrade_step("cancelled");
                let note = format!(
                    "upgrade to {} cancelled: spec.version is {} again, and every member runs {}",
                    record.to_version, cluster.spec.version, wanted.image
                );
                publish(recorder, cluster, upgrade_event(event("UpgradeCancelled", note), &record.to_version)).await;
                return Ok(());
            }
            let took = record.started_at.as_ref().map(|t| {
                let seconds = k8s_openapi::jiff::Timestamp::now().duration_since(t.0).as_secs_f64();
                ctx.metrics.upgrade_completed(seconds);
                format!(" in {seconds:.0} s")
            });
            // A target the cluster ran when the record was made is a rollback, and is called one.
            let rollback = record.from.split(", ").any(|v| v == record.to_version);
            let last = proto::cluster::LastUpgrade {
                from: record.from.clone(),
                to_version: record.to_version.clone(),
                rollback,
                completed_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                backup: record.backup.clone(),
            };
            let done = json!({ "upgrade": null, "lastUpgrade": last });
            patch_status(client, cluster, done, "ending the upgrade").await?;
            let cluster_version =
                observed.cluster_version.map_or_else(String::new, |v| format!(", cluster version {v}"));
            let (reason, what) =
                if rollback { ("UpgradeRolledBack", "rollback") } else { ("UpgradeCompleted", "upgrade") };
            let note = format!(
                "{what} from {} to {} completed{}: every member runs {}{cluster_version}{}",
                record.from,
                record.to_version,
                took.unwrap_or_default(),
                record.to_image,
                record.backup.as_ref().map_or_else(String::new, |b| format!(
                    "; the backup taken before it, {b}, \
                    stays pinned (status.lastUpgrade) until a later upgrade pins its own"
                )),
            );
            publish(recorder, cluster, upgrade_event(event(reason, note), &record.to_version)).await;
        }
        Action::Wait(_) | Action::Done => {}
    }
    Ok(())
}

/// An upgrade's event, told apart from the same step of another upgrade: events with the same reason, object and
/// action are folded into one series (keeping the first note), so the action names the target version.
fn upgrade_event(event: Event, version: &str) -> Event {
    Event { action: format!("UpgradeTo{version}"), ..event }
}

/// The version the spec asks for, as written.
fn desired_version(cluster: &EtcdCluster) -> String {
    cluster.spec.version.trim_start_matches('v').to_string()
}

/// Takes a backup for an upgrade through the cluster's sidecar and checks that storage holds it, as it was
/// written (the sidecar publishes a backup only once it has verified its snapshot and checksum); its name.
async fn pre_upgrade_backup(
    client: &kube::Client,
    cluster: &EtcdCluster,
    endpoints: &[String],
    (from, target): (&str, &str),
    timeout: Duration,
) -> Result<String, ActError> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let sidecar =
        SidecarClient::for_cluster(client, &namespace, &name, (timeout * 60).max(Duration::from_secs(60))).await?;
    let failed = |why: String| ActError::UpgradeBackup(why);
    let taken = sidecar.trigger(endpoints).await.map_err(|e| failed(e.to_string()))?;
    match sidecar.find(&taken.name).await.map_err(|e| failed(e.to_string()))? {
        Some(stored) if stored.sha256 == taken.sha256 && stored.raw_size == taken.raw_size => {}
        Some(_) => return Err(failed(format!("backup {} in storage differs from the one taken", taken.name))),
        None => return Err(failed(format!("backup {} is not in storage after it was taken", taken.name))),
    }
    // The rollback point: retention keeps it until a later upgrade pins its own.
    let reason = format!("taken before the upgrade to {target} (from {from})");
    sidecar.pin(&taken.name, &reason).await.map_err(|e| failed(format!("pinning {}: {e}", taken.name)))?;
    Ok(taken.name)
}

/// Where a new seed's data comes from: the recorded recovery's backup from the cluster's own sidecar, or
/// `spec.restore` (with `latest` resolved now). `None` for a seed that starts empty.
async fn seed_source(
    client: &kube::Client,
    cluster: &EtcdCluster,
    sidecar_image: &str,
    timeout: Duration,
) -> Result<Option<(SeedRestore, RestoredFrom)>, ActError> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let image =
        cluster.spec.backup.as_ref().and_then(|b| b.sidecar_image.clone()).unwrap_or_else(|| sidecar_image.into());
    if let Some(recovery) = cluster.status.as_ref().and_then(|s| s.recovery.as_ref()) {
        let source = backup::sidecar_url(&name, &namespace);
        let restore = SeedRestore {
            source: source.clone(),
            token_secret: Some(backup::token_secret_name(&name)),
            backup: recovery.backup.clone(),
            storage: None,
            sidecar_image: image,
        };
        let from = RestoredFrom { source, backup: recovery.backup.clone(), revision: recovery.revision };
        return Ok(Some((restore, from)));
    }
    let Some(spec) = &cluster.spec.restore else { return Ok(None) };
    if let Some(storage) = &spec.storage {
        // No sidecar to ask: the fetch resolves `latest` itself and reports what it restored (name, revision) in
        // its termination message, which the status picks up. Until then the revision reads 0.
        let source = backup::storage_url_of(cluster, storage);
        let restore = SeedRestore {
            source: source.clone(),
            token_secret: None,
            backup: spec.backup.clone(),
            storage: Some(Box::new(storage.clone())),
            sidecar_image: image,
        };
        return Ok(Some((restore, RestoredFrom { source, backup: spec.backup.clone(), revision: 0 })));
    }
    let (sidecar, source, token_secret) = match (&spec.cluster, &spec.url) {
        (Some(other), _) if !backup::sidecar_exists(client, &namespace, other).await? => {
            return Err(ActError::SeedSource(format!(
                "spec.restore.cluster names {other}, which has no backup sidecar in namespace {namespace} (no \
                 EtcdCluster of that name with spec.backup); nothing was created"
            )));
        }
        (Some(other), _) => (
            SidecarClient::for_cluster(client, &namespace, other, timeout).await?,
            backup::sidecar_url(other, &namespace),
            Some(backup::token_secret_name(other)),
        ),
        (None, Some(url)) => {
            let token = match &spec.token_secret {
                Some(secret) => read_token(client, &namespace, secret).await?,
                None => None,
            };
            (SidecarClient::new(url.clone(), token, timeout)?, url.clone(), spec.token_secret.clone())
        }
        (None, None) => {
            return Err(ActError::NoBackup("spec.restore names no cluster, url or storage".into()));
        }
    };
    let info = sidecar.find(&spec.backup).await?.ok_or_else(|| {
        ActError::SeedSource(format!("spec.restore: {source} has no backup {:?}; nothing was created", spec.backup))
    })?;
    if let Some(target) = crate::version::Version::parse(&cluster.spec.version)
        && let Some(why) = recovery::seed_refused(&info.name, &info.etcd_version, target)
    {
        return Err(ActError::SeedSource(format!("spec.restore: {why}")));
    }
    let restore = SeedRestore {
        source: source.clone(),
        token_secret,
        backup: info.name.clone(),
        storage: None,
        sidecar_image: image,
    };
    Ok(Some((restore, RestoredFrom { source, backup: info.name, revision: info.revision })))
}

async fn read_token(client: &kube::Client, namespace: &str, secret: &str) -> Result<Option<String>, ActError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let stored = secrets.get_opt(secret).await.map_err(kube_error(format!("reading secret {secret}")))?;
    let stored = stored.ok_or_else(|| {
        ActError::SeedSource(format!("spec.restore.tokenSecret names Secret {secret}, which does not exist"))
    })?;
    restore_token(&stored).map_err(ActError::SeedSource)
}

/// The label a Secret must carry, set to `"true"`, before the controller reads it as `spec.restore.tokenSecret`
/// and sends its `token` to `spec.restore.url`: whoever may create an EtcdCluster must not be able to make the
/// controller send any Secret of the namespace (another cluster's backup token, a ServiceAccount token) anywhere.
pub const RESTORE_TOKEN_LABEL: &str = "kube-etcd-controller.dev/restore-token";

/// The `token` of a restore token Secret, if it opted in ([`RESTORE_TOKEN_LABEL`]).
pub fn restore_token(secret: &Secret) -> Result<Option<String>, String> {
    let name = secret.name_any();
    if secret.labels().get(RESTORE_TOKEN_LABEL).map(String::as_str) != Some("true") {
        return Err(format!(
            "Secret {name} (spec.restore.tokenSecret) is not labelled {RESTORE_TOKEN_LABEL}=true: the controller \
             sends only a Secret that opted in to spec.restore.url; label it if it holds that server's token"
        ));
    }
    let token = secret.data.as_ref().and_then(|d| d.get(backup::TOKEN_KEY));
    let token =
        token.ok_or_else(|| format!("Secret {name} (spec.restore.tokenSecret) has no key {:?}", backup::TOKEN_KEY))?;
    String::from_utf8(token.0.clone())
        .map(Some)
        .map_err(|_| format!("the {:?} of Secret {name} is not text", backup::TOKEN_KEY))
}

/// The oldest backup an automatic recovery restores (`spec.recovery.maxBackupAge`): by default three backup
/// intervals, or [`proto::cluster::DEFAULT_CRON_MAX_BACKUP_AGE`] for a cron schedule.
pub fn max_backup_age(spec: &proto::cluster::EtcdClusterSpec) -> Duration {
    let parse = |d: &str| humantime::parse_duration(d).ok();
    if let Some(age) = spec.recovery.as_ref().and_then(|r| r.max_backup_age.as_deref()).and_then(parse) {
        return age;
    }
    let backup = spec.backup.as_ref();
    if backup.is_some_and(|b| b.cron.is_some()) {
        return parse(proto::cluster::DEFAULT_CRON_MAX_BACKUP_AGE).unwrap_or(Duration::from_secs(72 * 3600));
    }
    let every = backup.and_then(|b| b.every.as_deref()).unwrap_or(proto::cluster::DEFAULT_BACKUP_EVERY);
    parse(every).unwrap_or(Duration::from_secs(1800)) * 3
}

/// What a recovery starts from.
struct RecoveryInput<'a> {
    /// Where the running members are reached.
    addresses: &'a Endpoints,
    /// The new cluster's first member index.
    first_index: u32,
    /// The lost cluster's pods, recorded.
    lost: Vec<String>,
    /// The member pods that may hold data no backup has (running, or in a restart loop).
    holding: Vec<String>,
}

/// Chooses the backup a lost cluster is recovered from and records the choice, before anything is deleted: a
/// fresh backup from the most advanced member that still runs (so nothing the survivors acknowledged is lost);
/// with no member pod left that may hold data, the newest backup of this cluster if it is recent enough; else
/// nothing ([`ActError::NoBackup`], which status reports). Returns whether the backup is a fresh one, or `None`
/// when a recovery was already recorded.
async fn start_recovery(
    client: &kube::Client,
    recorder: &Recorder,
    cluster: &EtcdCluster,
    input: RecoveryInput<'_>,
    timeout: Duration,
) -> Result<Option<bool>, ActError> {
    let RecoveryInput { addresses, first_index, lost: lost_pods, holding } = input;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    // The object this step was planned from may predate a recovery already recorded: never choose twice.
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    let current = api.get_status(&name).await.map_err(kube_error("reading status"))?;
    let current = current.status.unwrap_or_default();
    if current.recovery.is_some() {
        return Ok(None);
    }
    // A snapshot takes longer than an etcd request: give the sidecar time.
    let sidecar =
        SidecarClient::for_cluster(client, &namespace, &name, (timeout * 60).max(Duration::from_secs(60))).await?;
    // Only backups of this EtcdCluster: one deleted and created again under its name starts anew.
    let created = cluster.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    let since = created.and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0));
    let uid = cluster.metadata.uid.as_deref();
    // The survivors may have committed different amounts: the backup comes from the voter that committed the
    // most, and from no other (falling back to a less advanced one would delete the pod that holds more).
    let endpoints: Vec<String> = addresses.values().cloned().collect();
    let survivors: Vec<Survivor> = membership::survey(&endpoints, timeout)
        .await
        .into_iter()
        .map(|(endpoint, progress)| {
            let name = addresses.iter().find(|(_, url)| **url == endpoint).map_or(endpoint.clone(), |(n, _)| n.clone());
            Survivor { name, endpoint, progress }
        })
        .collect();
    // What this cluster's backups reached, read before the fresh one exists.
    let stored = sidecar.own(&name, uid, since).await?;
    let mut fresh = match recovery::fresh_source(&survivors, &holding) {
        Ok(source) => match sidecar.trigger(std::slice::from_ref(&source.endpoint)).await {
            Ok(info) => Ok((info, source)),
            Err(error) => {
                tracing::warn!(member = %source.name, %error, "no fresh backup from the most advanced voter");
                Err(format!("the most advanced voting member, {}, gave no backup: {error}", source.name))
            }
        },
        Err(why) => Err(why),
    };
    // A backup behind what this etcd cluster is known to have reached would give up acknowledged writes. A stored
    // backup of the same etcd cluster at a higher revision holds everything the lagging member applied, and more:
    // that one is restored instead, if it is not behind itself.
    let seen = current.highest_revision_seen.as_ref();
    let mut instead = None;
    if let Ok((info, source)) = &fresh
        && let Some(why) = recovery::behind(info, &stored, seen)
    {
        match recovery::better_stored(info, &stored, seen) {
            Some(better) => {
                tracing::warn!(fresh = %info.name, stored = %better.name, %why, "a stored backup holds more");
                let from = format!(
                    "backup {} (revision {}) of the same etcd cluster: the most advanced voting member that runs, {}, \
                     gave revision {} only, so the stored backup holds everything it held; writes after that backup \
                     are lost",
                    better.name, better.revision, source.name, info.revision
                );
                instead = Some((better.clone(), from));
            }
            None => {
                tracing::warn!(backup = %info.name, %why, "fresh backup refused");
                fresh = Err(why);
            }
        }
    }
    let fresh = fresh.map(|(info, source)| {
        let index = source.progress.map_or(0, |p| p.raft_index);
        let others: Vec<String> = survivors
            .iter()
            .filter(|s| s.name != source.name)
            .map(|s| format!("{} at {}", s.name, s.progress.map_or(0, |p| p.raft_index)))
            .collect();
        let others = if others.is_empty() { String::new() } else { format!(" (the others: {})", others.join(", ")) };
        let from = format!(
            "{} at raft index {index}, the voting member that committed the most of those that run{others}; writes \
             that only the lost members held, if any, are not in it",
            source.name
        );
        instead.unwrap_or((info, from))
    });
    let was_fresh = fresh.is_ok();
    let (info, reason) = match fresh {
        Ok((info, from)) => {
            let reason = format!(
                "a fresh backup from the member pods still running ({}), taken from {from}",
                addresses.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            (info, reason)
        }
        Err(why) => {
            // A member whose etcd runs may hold writes newer than any backup: it is not given up for an older
            // one while it may still answer another way (or a person decides to).
            if !holding.is_empty() {
                return Err(ActError::NoBackup(format!(
                    "member pods {} run (or restart) and may hold writes newer than any backup, but no fresh backup \
                     could be taken from them ({why}); nothing was deleted. Make them reachable from the backup \
                     sidecar, or delete those pods (giving up their data) to recover from the newest backup",
                    holding.join(", ")
                )));
            }
            let newest = sidecar.newest_of(&name, uid, since).await?.ok_or_else(|| {
                ActError::NoBackup(format!(
                    "quorum is lost and there is no backup of this cluster to recover from (a fresh one failed: \
                     {why}); nothing was deleted. Backups of an earlier cluster of this name are not restored \
                     automatically: restore one into a new EtcdCluster (spec.restore) if you want its data"
                ))
            })?;
            // A quiet cluster's newest backup may be old and still hold everything: the sidecar skips a backup
            // while etcd's revision has not moved, and says when it last found that backup current.
            let confirmed = sidecar.status().await.ok().and_then(|status| {
                let same = status.last_success.as_ref().is_some_and(|b| b.name == newest.name);
                same.then_some(status.last_success_at).flatten()
            });
            let current_at = confirmed.map_or(newest.finished_at, |at| at.max(newest.finished_at));
            let age = k8s_openapi::jiff::Timestamp::now().as_second() - current_at.timestamp();
            let age = Duration::from_secs(u64::try_from(age).unwrap_or(0));
            let max_age = max_backup_age(&cluster.spec);
            if age > max_age {
                return Err(ActError::NoBackup(format!(
                    "the newest backup, {}, was last known current {} ago, longer ago than \
                     spec.recovery.maxBackupAge ({}): \
                     restoring it would give up everything written since, so that is for a person to decide; \
                     nothing was deleted. Raise maxBackupAge to restore it, or restore into a new EtcdCluster",
                    newest.name,
                    humantime::format_duration(age),
                    humantime::format_duration(max_age)
                )));
            }
            let reason = format!(
                "the newest backup, finished {} and last known current {} ago: writes after that are lost (a \
                 fresh backup failed: {why})",
                newest.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                humantime::format_duration(age)
            );
            (newest, reason)
        }
    };
    // The seed runs spec.version: a backup it cannot run is refused before anything is deleted.
    if let Some(target) = crate::version::Version::parse(&cluster.spec.version)
        && let Some(why) = recovery::seed_refused(&info.name, &info.etcd_version, target)
    {
        return Err(ActError::NoBackup(why));
    }
    let recovery = RecoveryStatus {
        started_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        backup: info.name.clone(),
        revision: info.revision,
        reason: reason.clone(),
        first_member_index: i32::try_from(first_index).unwrap_or(i32::MAX),
        lost_pods: Some(lost_pods),
    };
    patch_status(client, cluster, json!({ "recovery": recovery }), "recording the recovery").await?;
    let note = format!(
        "quorum lost: recovering from backup {} (revision {}), {reason}; the lost members' pods are deleted and a \
         new cluster is seeded from it",
        info.name, info.revision
    );
    let warning = Event {
        type_: EventType::Warning,
        reason: "RecoveryStarted".into(),
        note: Some(note),
        action: "RecoverFromBackup".into(),
        secondary: None,
    };
    publish(recorder, cluster, warning).await;
    Ok(Some(was_fresh))
}

async fn patch_status(
    client: &kube::Client,
    cluster: &EtcdCluster,
    status: serde_json::Value,
    op: &str,
) -> Result<(), ActError> {
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    api.patch_status(&cluster.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(kube_error(op))?;
    Ok(())
}

/// A change etcd refuses for now (a learner still catching up, the leader not yet connected to every voter for
/// long enough) is no failure: the reconcile comes back in a moment. Anything else is.
fn not_yet(error: MembershipError) -> Result<(), ActError> {
    match error {
        MembershipError::NotCaughtUp(_) | MembershipError::NotReady { .. } => {
            tracing::info!(reason = error.reason(), %error, "etcd is not ready for the change yet");
            Ok(())
        }
        other => Err(other.into()),
    }
}

/// Records in status that `member`'s index is taken (and the cluster token and the backup, for a seed).
async fn reserve(
    client: &kube::Client,
    cluster: &EtcdCluster,
    member: &str,
    token: Option<&str>,
    restored: Option<&RestoredFrom>,
) -> Result<(), ActError> {
    let next = member_index(&cluster.name_any(), member).map_or(0, |i| i + 1);
    let mut status = json!({ "nextMemberIndex": next });
    if let Some(token) = token {
        status["clusterToken"] = json!(token);
    }
    if let Some(restored) = restored {
        status["restoredFrom"] = json!(restored);
    }
    patch_status(client, cluster, status, &format!("recording member index {next}")).await
}

/// Asks the API server whether it would create `pod` (validation and admission, nothing stored).
async fn try_create(pods: &Api<Pod>, pod: &Pod) -> Result<(), ActError> {
    post(pods, pod, true).await
}

async fn create(pods: &Api<Pod>, pod: &Pod) -> Result<(), ActError> {
    post(pods, pod, false).await
}

async fn post(pods: &Api<Pod>, pod: &Pod, dry_run: bool) -> Result<(), ActError> {
    let params = PostParams { dry_run, field_manager: Some(FIELD_MANAGER.into()) };
    match pods.create(&params, pod).await {
        Ok(_) => Ok(()),
        // Created by an earlier attempt that did not hear back.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(ActError::Kube { op: format!("creating pod {}", pod.name_any()), source }),
    }
}

/// Deletes the pod of a member that is no longer one (removed from etcd, or of a lost cluster). On a node that is
/// not Ready the kubelet can never confirm a deletion, and the pod would stay Terminating for as long as the Node
/// object exists, naming a member that is gone: it is deleted at once (its data belongs to no member any more, and
/// a container still running there is no member of anything the client Service routes to).
async fn delete_member_pod(pods: &Api<Pod>, observed: &Observed, name: &str) -> Result<(), ActError> {
    let on_lost_node = observed.pods.iter().any(|p| p.name == name && p.node_down.is_some());
    if !on_lost_node {
        return delete(pods, name).await;
    }
    tracing::info!(pod = %name, "its node is not Ready: deleted without waiting for the kubelet");
    match pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ActError::Kube { op: format!("deleting pod {name}"), source }),
    }
}

async fn delete(pods: &Api<Pod>, name: &str) -> Result<(), ActError> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ActError::Kube { op: format!("deleting pod {name}"), source }),
    }
}

/// The longest note Kubernetes accepts in an event.
pub const EVENT_NOTE_MAX: usize = 1024;

/// A normal event whose action is its reason.
pub fn event(reason: &str, note: String) -> Event {
    Event { type_: EventType::Normal, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None }
}

/// An event about member `member` (its pod, in `namespace`) of the cluster. The member is the event's related
/// object, so events of one reason about different members are never folded into one series (which would show
/// the first member's note for all of them); the note names the member too.
pub fn member_event(reason: &str, note: String, namespace: &str, member: &str) -> Event {
    let pod = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(member.into()),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    Event { secondary: Some(pod), ..event(reason, note) }
}

/// Publishes an event; an event that cannot be written is logged, never a reason to fail the step.
pub async fn publish(recorder: &Recorder, cluster: &EtcdCluster, mut event: Event) {
    tracing::info!(cluster = %cluster.name_any(), reason = %event.reason, note = ?event.note, "event");
    // Kubernetes refuses an event whose note passes 1 KiB: cut, never dropped.
    event.note = event.note.map(|note| shorten(&note, EVENT_NOTE_MAX));
    if let Err(error) = recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster;

    fn secret(labels: &[(&str, &str)], token: Option<&str>) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some("other-backup-token".into());
        secret.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
        secret.data = token.map(|t| {
            [(backup::TOKEN_KEY.to_string(), k8s_openapi::ByteString(t.as_bytes().to_vec()))].into_iter().collect()
        });
        secret
    }

    #[test]
    fn a_restore_token_is_read_only_from_a_secret_that_opted_in() {
        let why = restore_token(&secret(&[], Some("s3cret"))).unwrap_err();
        assert!(why.contains(RESTORE_TOKEN_LABEL) && !why.contains("s3cret"), "{why}");
        assert!(restore_token(&secret(&[(RESTORE_TOKEN_LABEL, "false")], Some("s3cret"))).is_err());
        let opted = secret(&[(RESTORE_TOKEN_LABEL, "true")], Some("s3cret"));
        assert_eq!(restore_token(&opted).unwrap().as_deref(), Some("s3cret"));
        assert!(restore_token(&secret(&[(RESTORE_TOKEN_LABEL, "true")], None)).unwrap_err().contains("no key"));
    }

    fn api_error(code: u16, message: &str) -> ActError {
        let mut status = kube::core::Status::failure(message, "Forbidden");
        status.code = code;
        ActError::Kube { op: "creating pod demo-0000".into(), source: kube::Error::Api(status.boxed()) }
    }

    #[test]
    fn a_refusal_is_told_from_a_failure_and_shortened() {
        let long = "violates PodSecurity \"restricted:latest\": ".to_string() + &"x".repeat(5000);
        let (op, why) = api_error(403, &long).refusal().unwrap();
        assert_eq!(op, "creating pod demo-0000");
        assert!(why.len() <= 400 && why.starts_with("violates PodSecurity"), "{why}");
        assert!(api_error(422, "quantities must match").refusal().is_some());
        assert!(api_error(500, "etcdserver: request timed out").refusal().is_none(), "a failure is retried");
        assert!(api_error(409, "already exists").refusal().is_none());
        assert!(ActError::SeedSource("no such secret".into()).refusal().is_some());
        assert_eq!(shorten("ééé", 5), "é...");
        assert_eq!(shorten("short", 1024), "short");
    }

    #[test]
    fn the_oldest_backup_restored_automatically_is_three_intervals_old_unless_the_spec_says() {
        let mut c = cluster("demo", 3);
        let policy = |every: Option<&str>, cron: Option<&str>| {
            serde_json::from_value::<proto::cluster::BackupPolicy>(serde_json::json!({
                "every": every, "cron": cron, "storage": { "pvc": { "claimName": "b" } }
            }))
            .unwrap()
        };
        c.spec.backup = Some(policy(None, None));
        assert_eq!(max_backup_age(&c.spec), Duration::from_secs(90 * 60), "three default intervals of 30m");
        c.spec.backup = Some(policy(Some("6h"), None));
        assert_eq!(max_backup_age(&c.spec), Duration::from_secs(18 * 3600));
        c.spec.backup = Some(policy(None, Some("0 3 * * *")));
        assert_eq!(max_backup_age(&c.spec), Duration::from_secs(72 * 3600));
        c.spec.recovery = Some(serde_json::from_value(serde_json::json!({ "maxBackupAge": "10m" })).unwrap());
        assert_eq!(max_backup_age(&c.spec), Duration::from_secs(600), "the spec's own");
    }
}
