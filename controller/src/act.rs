//! Carrying out the planner's one step against Kubernetes and etcd, and telling people about it in events.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use proto::cluster::EtcdCluster;
use serde_json::json;

use crate::labels::{FIELD_MANAGER, peer_url};
use crate::membership::{Membership, MembershipError};
use crate::observe::{Endpoints, EtcdView, Observed, member_index};
use crate::plan::{Action, RemoveReason};
use crate::pod::{Join, member_pod};

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
}

impl ActError {
    /// Stable short reason, for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "KubernetesApiError",
            Self::Membership(error) => error.reason(),
        }
    }
}

fn kube_error(op: impl Into<String>) -> impl FnOnce(kube::Error) -> ActError {
    let op = op.into();
    move |source| ActError::Kube { op, source }
}

/// Carries out `action`. Membership changes go through the voting members the observation found.
pub async fn act(
    client: &kube::Client,
    recorder: &Recorder,
    cluster: &EtcdCluster,
    observed: &Observed,
    addresses: &Endpoints,
    action: &Action,
    etcd_timeout: Duration,
) -> Result<(), ActError> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let members: Vec<String> = match &observed.etcd {
        EtcdView::Members(members) => members.iter().map(|m| m.name.clone()).collect(),
        EtcdView::Unreachable(_) => Vec::new(),
    };
    let endpoints: Vec<String> = addresses.values().cloned().collect();
    let event = |reason: &str, note: String| Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };

    match action {
        Action::CreateSeed { name: member } => {
            // The token and the next index are recorded before the pod exists, so a crash in between never
            // reuses a name.
            let token = format!("{name}-{}", cluster.uid().unwrap_or_default().get(..8).unwrap_or("local"));
            let token = format!("{token}-{}", member_index(&name, member).unwrap_or_default());
            reserve(client, cluster, member, Some(&token)).await?;
            let pod = member_pod(cluster, member, std::slice::from_ref(member), &Join::New { token });
            create(&pods, &pod).await?;
            publish(recorder, cluster, event("SeedCreated", format!("created seed member {member}"))).await;
        }
        Action::AddLearner { name: member } => {
            let mut membership = Membership::connect(&endpoints, etcd_timeout).await?;
            let id = match membership.add_learner(&peer_url(member, &name, &namespace)).await {
                Ok(id) => id,
                Err(error) => return not_yet(error),
            };
            // Recorded only once etcd took the member: a refused add burns no name, and a crash before this
            // line leaves the name in etcd's member list, where the next observation finds it.
            reserve(client, cluster, member, None).await?;
            let mut initial = members.clone();
            initial.push(member.clone());
            create(&pods, &member_pod(cluster, member, &initial, &Join::Existing)).await?;
            publish(recorder, cluster, event("MemberAdded", format!("added {member} ({id:x}) as a learner"))).await;
        }
        Action::CreateMemberPod { name: member } => {
            create(&pods, &member_pod(cluster, member, &members, &Join::Existing)).await?;
            publish(
                recorder,
                cluster,
                event("MemberPodCreated", format!("created the pod of {member}, added to etcd by an earlier attempt")),
            )
            .await;
        }
        Action::Promote { id, name: member } => {
            if let Err(error) = Membership::connect(&endpoints, etcd_timeout).await?.promote(*id).await {
                return not_yet(error);
            }
            publish(recorder, cluster, event("MemberPromoted", format!("promoted {member} to a voting member"))).await;
        }
        Action::RemoveMember { id, name: member, reason } => {
            if let Err(error) = Membership::connect(&endpoints, etcd_timeout).await?.remove(*id).await {
                return not_yet(error);
            }
            delete(&pods, member).await?;
            let why = match reason {
                RemoveReason::Dead => "its pod is gone; a new member replaces it",
                RemoveReason::ScaleDown => "the cluster is larger than its spec",
            };
            publish(recorder, cluster, event("MemberRemoved", format!("removed {member} ({id:x}): {why}"))).await;
        }
        Action::DeletePod { name: member } => {
            delete(&pods, member).await?;
            publish(recorder, cluster, event("PodDeleted", format!("deleted pod {member}: it is no etcd member")))
                .await;
        }
        Action::Wait(_) | Action::Done => {}
    }
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

/// Records in status that `member`'s index is taken (and the cluster token, for a seed).
async fn reserve(
    client: &kube::Client,
    cluster: &EtcdCluster,
    member: &str,
    token: Option<&str>,
) -> Result<(), ActError> {
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let next = member_index(&cluster.name_any(), member).map_or(0, |i| i + 1);
    let mut status = json!({ "nextMemberIndex": next });
    if let Some(token) = token {
        status["clusterToken"] = json!(token);
    }
    api.patch_status(&cluster.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(kube_error(format!("recording member index {next}")))?;
    Ok(())
}

async fn create(pods: &Api<Pod>, pod: &Pod) -> Result<(), ActError> {
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match pods.create(&params, pod).await {
        Ok(_) => Ok(()),
        // Created by an earlier attempt that did not hear back.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(ActError::Kube { op: format!("creating pod {}", pod.name_any()), source }),
    }
}

async fn delete(pods: &Api<Pod>, name: &str) -> Result<(), ActError> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ActError::Kube { op: format!("deleting pod {name}"), source }),
    }
}

/// Publishes an event; an event that cannot be written is logged, never a reason to fail the step.
pub async fn publish(recorder: &Recorder, cluster: &EtcdCluster, event: Event) {
    tracing::info!(cluster = %cluster.name_any(), reason = %event.reason, note = ?event.note, "event");
    if let Err(error) = recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "could not publish an event");
    }
}
