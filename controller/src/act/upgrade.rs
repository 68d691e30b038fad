//! Carrying out an upgrade: its backup and record, each member's image change, leadership moves, its end.

use super::*;

pub(super) async fn start_upgrade(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::StartUpgrade { from, release, warning } = action else { return Ok(()) };
    let Step { ctx, cluster, name, namespace, endpoints, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    // The object the plan saw may predate a record written a moment ago: read it back first, so that a
    // record for this very target is never made twice (with a second backup), and one for another target
    // (a rollback) keeps its start, by which the members it changed are known.
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), namespace);
    let current = api.get_status(name).await.map_err(kube_error("reading status"))?;
    let existing = current.status.as_ref().and_then(|s| s.upgrade.clone());
    if existing.as_ref().is_some_and(|u| u.to_image == release.image) {
        return Ok(());
    }
    let backup = if cluster.spec.backup.is_some() {
        let target = release.version.to_string();
        let versions = (from.as_str(), target.as_str());
        Some(pre_upgrade_backup(client, cluster, endpoints, versions, step.ctx.etcd_timeout).await?)
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
    publish(recorder, cluster, upgrade_event(event("UpgradeStarted", note), &release.version.to_string())).await;
    Ok(())
}

pub(super) async fn roll_member(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::RollMember { name: member, from, release, leader, restarts } = action else { return Ok(()) };
    let Step { ctx, cluster, namespace, pods, .. } = step;
    let recorder = &step.ctx.recorder;
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
    let event = member_event("MemberUpgrading", note, namespace, member);
    publish(recorder, cluster, upgrade_event(event, &release.version.to_string())).await;
    Ok(())
}

pub(super) async fn move_leader(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::MoveLeader { from, to, name: new_leader } = action else { return Ok(()) };
    let Step { ctx, cluster, observed, addresses, .. } = step;
    let recorder = &step.ctx.recorder;
    let leader = match &observed.etcd {
        EtcdView::Members(members) => members.iter().find(|m| m.id == *from).map(|m| m.name.clone()),
        EtcdView::Unreachable(_) => None,
    };
    let Some(url) = leader.as_ref().and_then(|l| addresses.get(l)) else {
        return Ok(());
    };
    if let Err(error) = Membership::connect_to(url, step.dial).await?.move_leader(*to).await {
        return not_yet(error);
    }
    ctx.metrics.upgrade_step("leader_moved");
    let note = format!(
        "moved leadership from {} to {new_leader}, which runs the target, before the old leader is upgraded",
        leader.unwrap_or_default()
    );
    publish(recorder, cluster, upgrade_event(event("LeaderMoved", note), &desired_version(cluster))).await;
    Ok(())
}

pub(super) async fn complete_upgrade(step: &Step<'_>) -> Result<(), ActError> {
    let Step { ctx, cluster, observed, name, namespace, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    // Read back: a record already cleared (the object the plan saw was older) is not completed twice.
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), namespace);
    let current = api.get_status(name).await.map_err(kube_error("reading status"))?;
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
    let cluster_version = observed.cluster_version.map_or_else(String::new, |v| format!(", cluster version {v}"));
    let (reason, what) = if rollback { ("UpgradeRolledBack", "rollback") } else { ("UpgradeCompleted", "upgrade") };
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
