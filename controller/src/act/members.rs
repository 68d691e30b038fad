//! Carrying out membership steps: the seed, learners, promotions, removals, and the pods that go with them.

use super::*;
use crate::pod::{DataVolume, initial_cluster};

pub(super) async fn create_seed(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::CreateSeed { name: member, release } = action else { return Ok(()) };
    let Step { cluster, name, namespace, pods, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    let sidecar_image = step.ctx.sidecar_image.as_str();
    // The token and the next index are recorded before the pod exists, so a crash in between never
    // reuses a name.
    let token = format!("{name}-{}", cluster.uid().unwrap_or_default().get(..8).unwrap_or("local"));
    let token = format!("{token}-{}", member_index(name, member).unwrap_or_default());
    // A restored seed's backup is chosen (and `latest` resolved) once, here, and recorded with the token.
    let seed = super::recovery::seed_source(client, cluster, sidecar_image, step.ctx.etcd_timeout).await?;
    let restored = seed.as_ref().map(|(_, from)| from);
    let restore = seed.as_ref().map(|(restore, _)| restore.clone());
    let join = Join::New { token: token.clone(), restore };
    super::volumes::no_retained_claims(step)?;
    let volume = super::volumes::data_volume(step, member).await?;
    let initial = initial_cluster(cluster, std::slice::from_ref(member), &[], false);
    let pod = member_pod(cluster, member, &initial, &join, release, &volume, &step.observed.trust);
    // Admission (Pod Security, a quota, a webhook) is asked before the name is taken: a refused pod
    // burns no member name.
    try_create(pods, &pod).await?;
    reserve(client, cluster, member, Some(&token), restored).await?;
    create(pods, &pod).await?;
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
    publish(recorder, cluster, member_event("SeedCreated", note, namespace, member)).await;
    Ok(())
}

pub(super) async fn add_learner(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::AddLearner { name: member, release } = action else { return Ok(()) };
    let Step { cluster, namespace, pods, members, endpoints, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    // Admission is asked before etcd takes the member: a pod the API server refuses adds no learner
    // that could never start (and burns no name).
    let mut initial = members.clone();
    initial.push(member.clone());
    // At the peer URLs etcd lists; the new member with the scheme its peers can dial ([`initial_cluster`]).
    let initial = initial_cluster(cluster, &initial, &step.registered, step.certified);
    let url = initial.iter().find(|(m, _)| m == member).map(|(_, url)| url.clone()).unwrap_or_default();
    let volume = super::volumes::data_volume(step, member).await?;
    let pod = member_pod(cluster, member, &initial, &Join::Existing, release, &volume, &step.observed.trust);
    try_create(pods, &pod).await?;
    let mut membership = Membership::connect(endpoints, step.dial).await?;
    let id = match membership.add_learner(&url).await {
        Ok(id) => id,
        Err(error) => return not_yet(error),
    };
    // Recorded only once etcd took the member: a refused add burns no name, and a crash before this
    // line leaves the name in etcd's member list, where the next observation finds it.
    reserve(client, cluster, member, None, None).await?;
    // The guard records the member ID on its first start.
    let volume = match volume {
        DataVolume::Claim { sidecar_image, .. } => {
            DataVolume::Claim { sidecar_image, member_id: Some(id), expect_data: false }
        }
        empty => empty,
    };
    create(pods, &member_pod(cluster, member, &initial, &Join::Existing, release, &volume, &step.observed.trust))
        .await?;
    let note = format!("added {member} ({id:x}) as a learner, running etcd {}", release.version);
    publish(recorder, cluster, member_event("MemberAdded", note, namespace, member)).await;
    Ok(())
}

pub(super) async fn create_member_pod(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::CreateMemberPod { name: member, release } = action else { return Ok(()) };
    let Step { cluster, namespace, pods, members, .. } = step;
    let recorder = &step.ctx.recorder;
    let volume = super::volumes::data_volume(step, member).await?;
    let initial = initial_cluster(cluster, members, &step.registered, step.certified);
    create(pods, &member_pod(cluster, member, &initial, &Join::Existing, release, &volume, &step.observed.trust))
        .await?;
    publish(
        recorder,
        cluster,
        member_event(
            "MemberPodCreated",
            format!("created the pod of {member}, added to etcd by an earlier attempt"),
            namespace,
            member,
        ),
    )
    .await;
    Ok(())
}

pub(super) async fn switch_peer_url(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::SwitchPeerUrl { name: member, id, url } = action else { return Ok(()) };
    let Step { cluster, namespace, endpoints, .. } = step;
    let from = step.registered.iter().find(|(m, _)| m == member).map_or("", |(_, url)| url.as_str());
    if let Err(error) = Membership::connect(endpoints, step.dial).await?.update_peer_url(*id, url).await {
        return not_yet(error);
    }
    let note = format!(
        "registered {member} ({id:x}) at peer URL {url} (was {from}): its peers dial it there from now on; its pod \
         is rolled next to listen there alone"
    );
    publish(&step.ctx.recorder, cluster, member_event("PeerUrlSwitched", note, namespace, member)).await;
    Ok(())
}

pub(super) async fn promote(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::Promote { id, name: member } = action else { return Ok(()) };
    let Step { cluster, namespace, endpoints, .. } = step;
    let recorder = &step.ctx.recorder;
    if let Err(error) = Membership::connect(endpoints, step.dial).await?.promote(*id).await {
        return not_yet(error);
    }
    let note = format!("promoted {member} to a voting member");
    publish(recorder, cluster, member_event("MemberPromoted", note, namespace, member)).await;
    Ok(())
}

pub(super) async fn remove_member(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::RemoveMember { id, name: member, reason } = action else { return Ok(()) };
    let Step { cluster, observed, namespace, pods, endpoints, .. } = step;
    let recorder = &step.ctx.recorder;
    // Its claim is retired before etcd forgets the member: a pod created again while nothing answers never mounts
    // a removed member's data. A removal etcd refused before proposing it (its strict reconfiguration check: the
    // member is certainly still in its list) gives the claim back; one that fails otherwise (a timeout may have
    // gone through) leaves it retired: if its pod goes, it is replaced rather than restarted, which costs a
    // snapshot, not data.
    let retired = format!("member {member} ({id:x}) was removed from etcd");
    let was_retired = observed.claim_of(member).is_none_or(|c| c.retired);
    super::volumes::retire(step, member, &retired, false).await?;
    if let Err(error) = Membership::connect(endpoints, step.dial).await?.remove(*id).await {
        if !was_retired && error.refused_before_proposing() {
            super::volumes::unretire(step, member).await?;
        }
        return not_yet(error);
    }
    delete_member_pod(pods, observed, member).await?;
    super::volumes::retire(step, member, &retired, super::volumes::deletes_removed(cluster)).await?;
    let why = match reason {
        RemoveReason::Dead => {
            "it is dead (its pod gone or failed, its etcd in a restart loop, or its node lost); a new member \
             replaces it"
        }
        RemoveReason::ScaleDown => "the cluster is larger than its spec",
        RemoveReason::Rollout => {
            "it runs settings of an earlier spec on an emptyDir, or keeps its data on a claim of another storage \
             class than spec.storage names; a new member with the current ones replaces it"
        }
    };
    let note = format!("removed {member} ({id:x}): {why}");
    publish(recorder, cluster, member_event("MemberRemoved", note, namespace, member)).await;
    Ok(())
}

pub(super) async fn delete_pod(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::DeletePod { name: member } = action else { return Ok(()) };
    let Step { cluster, namespace, pods, .. } = step;
    let recorder = &step.ctx.recorder;
    delete(pods, member).await?;
    let note = format!("deleted pod {member}: it is no etcd member");
    publish(recorder, cluster, member_event("PodDeleted", note, namespace, member)).await;
    Ok(())
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

pub(super) async fn create(pods: &Api<Pod>, pod: &Pod) -> Result<(), ActError> {
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
pub(super) async fn delete_member_pod(pods: &Api<Pod>, observed: &Observed, name: &str) -> Result<(), ActError> {
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
