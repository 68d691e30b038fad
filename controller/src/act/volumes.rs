//! Carrying out the volume steps: member claims made before their pods, pods created again on their claims, and
//! claims recorded, retired and deleted.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use super::*;
use crate::pod::{CLAIM_MEMBER_ID, CLAIM_RETIRED, DataVolume, claim_name, member_claim};

/// What the pod of `member` mounts as its data: its claim when it has one (made now when `spec.storage` is set and
/// there is none yet), else an emptyDir. A claim retained from an earlier cluster of the same name, or retired, is
/// never used: the step is refused, and status says why.
pub(super) async fn data_volume(step: &Step<'_>, member: &str) -> Result<DataVolume, ActError> {
    let claim = match step.observed.claim_of(member) {
        Some(claim) => Some(claim.clone()),
        None if step.cluster.spec.storage.is_some() => Some(create_claim(step, member).await?),
        None => None,
    };
    let Some(claim) = claim else { return Ok(DataVolume::EmptyDir) };
    if !claim.ours {
        return Err(ActError::VolumeRefused(format!(
            "claim {} was made for an earlier cluster named {} (retained by whenDeleted: Retain): its data is not \
             used for a new cluster. Delete the claim to start {member} empty, or restore that data into a new \
             cluster from a backup",
            claim.name, step.name
        )));
    }
    if claim.retired || claim.deleting {
        return Err(ActError::VolumeRefused(format!(
            "claim {} belongs to a removed member: it is never used again (waiting for it to be deleted, or delete \
             it)",
            claim.name
        )));
    }
    Ok(DataVolume::Claim {
        sidecar_image: step.ctx.sidecar_image.clone(),
        member_id: claim.member_id,
        // A member that started on it wrote its data there: an empty volume now is a lost one.
        expect_data: claim.member_id.is_some(),
    })
}

/// A new cluster is not created beside claims retained from an earlier cluster of the same name: they hold that
/// cluster's data, which the new one would not use, and a person decides (delete them to start empty, or restore
/// that data from a backup).
pub(super) fn no_retained_claims(step: &Step<'_>) -> Result<(), ActError> {
    if step.observed.seeded || step.observed.recovering.is_some() {
        return Ok(());
    }
    let retained: Vec<&str> = step.observed.claims.iter().filter(|c| !c.ours).map(|c| c.name.as_str()).collect();
    if retained.is_empty() {
        return Ok(());
    }
    Err(ActError::VolumeRefused(format!(
        "claims {} were made for an earlier cluster named {} (retained by whenDeleted: Retain): a new cluster does \
         not start beside them, nor on them. Delete them to start empty, or create the cluster with spec.restore \
         from that cluster's backups",
        retained.join(", "),
        step.name
    )))
}

async fn create_claim(step: &Step<'_>, member: &str) -> Result<crate::observe::Claim, ActError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(step.ctx.client.clone(), &step.namespace);
    let Some(claim) = member_claim(step.cluster, member) else {
        return Err(ActError::VolumeRefused("spec.storage is not set".into()));
    };
    let params = PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.into()) };
    let name = claim_name(member);
    let made = match api.create(&params, &claim).await {
        Ok(made) => {
            let note = format!("created claim {name} for {member}");
            publish(&step.ctx.recorder, step.cluster, member_event("ClaimCreated", note, &step.namespace, member))
                .await;
            made
        }
        // Made by an earlier attempt, or left by an earlier cluster: read it, and judge it as found.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            api.get(&name).await.map_err(kube_error(format!("reading claim {name}")))?
        }
        Err(source) => return Err(ActError::Kube { op: format!("creating claim {name}"), source }),
    };
    let uid = step.cluster.uid().unwrap_or_default();
    crate::observe::claim_of(&made, &uid)
        .ok_or_else(|| ActError::VolumeRefused(format!("claim {name} exists without this controller's labels")))
}

pub(super) async fn restart_on_claim(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::RestartOnClaim { name: member, id, release } = action else { return Ok(()) };
    let volume = data_volume(step, member).await?;
    // The data directory holds the membership: etcd ignores --initial-cluster on a restart. Named anyway, as
    // etcd lists the members (or as the claims record them when it cannot be asked).
    let mut initial = step.members.clone();
    if initial.is_empty() {
        initial = step
            .observed
            .claims
            .iter()
            .filter(|c| c.usable() && c.member_id.is_some())
            .map(|c| c.member.clone())
            .collect();
    }
    if !initial.contains(member) {
        initial.push(member.clone());
    }
    let volume = match volume {
        DataVolume::Claim { sidecar_image, .. } => {
            DataVolume::Claim { sidecar_image, member_id: Some(*id), expect_data: true }
        }
        DataVolume::EmptyDir => return Err(ActError::VolumeRefused(format!("{member} has no claim"))),
    };
    super::members::create(
        &step.pods,
        &member_pod(
            step.cluster,
            member,
            &crate::pod::initial_cluster(step.cluster, &initial, &step.registered, step.certified),
            &Join::Existing,
            release,
            &volume,
            &step.observed.trust,
        ),
    )
    .await?;
    let note = format!(
        "created the pod of {member} ({id:x}) again on its claim {}: etcd restarts as the same member, on its data \
         (etcd {})",
        claim_name(member),
        release.version
    );
    publish(&step.ctx.recorder, step.cluster, member_event("MemberRestarted", note, &step.namespace, member)).await;
    Ok(())
}

pub(super) async fn delete_failed_pod(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::DeleteFailedPod { name: member, .. } = action else { return Ok(()) };
    super::members::delete_member_pod(&step.pods, step.observed, member).await?;
    let note = format!("deleted the failed pod of {member}: it is created again on its claim {}", claim_name(member));
    publish(&step.ctx.recorder, step.cluster, member_event("FailedPodDeleted", note, &step.namespace, member)).await;
    Ok(())
}

pub(super) async fn roll_pod(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::RollPod { name: member, id } = action else { return Ok(()) };
    super::members::delete_member_pod(&step.pods, step.observed, member).await?;
    let note = format!(
        "deleted the pod of {member} ({id:x}) to roll it (settings of an earlier spec, a changed ca.crt, or a volume its pod must mount \
         again to grow): it is created again on its claim {} from the current spec, as the same member",
        claim_name(member)
    );
    publish(&step.ctx.recorder, step.cluster, member_event("MemberRolling", note, &step.namespace, member)).await;
    Ok(())
}

pub(super) async fn retire_lost_claim(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::RetireLostClaim { name: member } = action else { return Ok(()) };
    retire_lost(step, member).await
}

/// Retires the claim of `member` of a cluster that lost quorum and is being restored from a backup: never mounted
/// again, and never deleted automatically (it may hold writes the backup does not).
pub(super) async fn retire_lost(step: &Step<'_>, member: &str) -> Result<(), ActError> {
    let Some(claim) = step.observed.claim_of(member).filter(|c| c.ours && !c.retired) else { return Ok(()) };
    let why = format!(
        "{}its cluster lost quorum and was restored from a backup; kept, as it may hold writes the backup does not",
        crate::pod::LOST_PREFIX
    );
    annotate(step, member, CLAIM_RETIRED, &why).await?;
    let note = format!("retired claim {} of lost member {member}: kept for a person to inspect or delete", claim.name);
    publish(&step.ctx.recorder, step.cluster, member_event("ClaimRetained", note, &step.namespace, member)).await;
    Ok(())
}

pub(super) async fn set_claim_owner(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::SetClaimOwner { name: member, owned } = action else { return Ok(()) };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(step.ctx.client.clone(), &step.namespace);
    let name = claim_name(member);
    let owners = if *owned { json!([crate::labels::owner(step.cluster)]) } else { serde_json::Value::Null };
    let patch = json!({ "metadata": { "ownerReferences": owners } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(kube_error(format!("setting the owner of claim {name}")))?;
    let note = if *owned {
        format!("claim {name} is deleted with the EtcdCluster from now on (whenDeleted: Delete)")
    } else {
        format!("claim {name} is kept when the EtcdCluster is deleted from now on (whenDeleted: Retain)")
    };
    publish(&step.ctx.recorder, step.cluster, member_event("ClaimPolicyApplied", note, &step.namespace, member)).await;
    Ok(())
}

pub(super) async fn record_member_id(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::RecordMemberId { name: member, id } = action else { return Ok(()) };
    annotate(step, member, CLAIM_MEMBER_ID, &format!("{id:x}")).await
}

pub(super) async fn retire_claim(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::RetireClaim { name: member, delete } = action else { return Ok(()) };
    retire(step, member, "its member is no longer in etcd's member list", *delete).await
}

/// Marks the claim of `member` (removed from etcd) retired, and deletes it when `delete`. Nothing when it has none.
pub(super) async fn retire(step: &Step<'_>, member: &str, why: &str, delete: bool) -> Result<(), ActError> {
    let Some(claim) = step.observed.claim_of(member).filter(|c| c.ours) else { return Ok(()) };
    if !claim.retired {
        annotate(step, member, CLAIM_RETIRED, why).await?;
    }
    let name = claim.name.clone();
    if delete {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(step.ctx.client.clone(), &step.namespace);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(ActError::Kube { op: format!("deleting claim {name}"), source }),
        }
        let note = format!("deleted claim {name} of removed member {member} (whenScaled: Delete)");
        publish(&step.ctx.recorder, step.cluster, member_event("ClaimDeleted", note, &step.namespace, member)).await;
    } else if !claim.retired {
        let note =
            format!("retained claim {name} of removed member {member} (whenScaled: Retain); it is never used again");
        publish(&step.ctx.recorder, step.cluster, member_event("ClaimRetained", note, &step.namespace, member)).await;
    }
    Ok(())
}

/// Whether the policy deletes the claims of removed members.
pub(super) fn deletes_removed(cluster: &EtcdCluster) -> bool {
    cluster.spec.storage.as_ref().is_some_and(|s| s.retention_policy.when_scaled == proto::cluster::Retention::Delete)
}

/// Gives the claim of `member` back (its retirement removed): etcd refused to remove the member, which it still
/// lists.
pub(super) async fn unretire(step: &Step<'_>, member: &str) -> Result<(), ActError> {
    set_annotation(step, member, CLAIM_RETIRED, serde_json::Value::Null).await
}

async fn annotate(step: &Step<'_>, member: &str, key: &str, value: &str) -> Result<(), ActError> {
    set_annotation(step, member, key, value.into()).await
}

/// Sets annotation `key` of the claim of `member` to `value` (`null` removes it).
async fn set_annotation(step: &Step<'_>, member: &str, key: &str, value: serde_json::Value) -> Result<(), ActError> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(step.ctx.client.clone(), &step.namespace);
    let name = claim_name(member);
    let patch = json!({ "metadata": { "annotations": { key: value } } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(kube_error(format!("annotating claim {name}")))?;
    Ok(())
}

pub(super) async fn expand_claim(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::ExpandClaim { claim: name, size } = action else { return Ok(()) };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(step.ctx.client.clone(), &step.namespace);
    let patch = json!({ "spec": { "resources": { "requests": { "storage": size } } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(kube_error(format!("expanding claim {name}")))?;
    let claim = step.observed.claims.iter().find(|c| &c.name == name);
    let member = claim.map_or_else(String::new, |c| c.member.clone());
    let has = claim.and_then(|c| c.capacity.clone()).unwrap_or_else(|| "unknown".into());
    let note = format!(
        "asked claim {name} for {size} (its volume has {has}): its storage class's driver expands the volume; the \
         next claim waits until this one has its size"
    );
    publish(&step.ctx.recorder, step.cluster, member_event("ClaimExpanding", note, &step.namespace, &member)).await;
    Ok(())
}
