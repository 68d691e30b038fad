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
use crate::labels::FIELD_MANAGER;
use crate::membership::{self, Membership, MembershipError};
use crate::observe::{Endpoints, EtcdView, Observed, PodState, Reach, member_index};
use crate::plan::{Action, RemoveReason};
use crate::pod::{Join, SeedRestore, member_pod};
use crate::recovery::Survivor;

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
    /// A member's claim cannot be used (retained from an earlier cluster of the same name, or retired): nothing
    /// was created.
    #[error("{0}")]
    VolumeRefused(String),
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
            Self::VolumeRefused(_) => "VolumeRefused",
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
            Self::VolumeRefused(why) => Some(("mounting a member's claim".into(), shorten(why, 400))),
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

/// What every step is carried out with: the controller's context, the cluster and what was observed of it.
pub(crate) struct Step<'a> {
    ctx: &'a crate::reconcile::Context,
    cluster: &'a EtcdCluster,
    observed: &'a Observed,
    /// Where each running member is reached.
    addresses: &'a Endpoints,
    /// How members are dialled.
    dial: &'a crate::dial::Dial,
    /// The cluster's name and namespace.
    name: String,
    namespace: String,
    /// Its member pods' API.
    pods: Api<Pod>,
    /// The members etcd lists, by name (empty when it could not be asked).
    members: Vec<String>,
    /// Their peer URLs as etcd lists them (a member's first), by name.
    registered: Vec<(String, String)>,
    /// Whether every member's pod holds the peer certificates its dials present.
    certified: bool,
    /// Every running member's client URL.
    endpoints: Vec<String>,
}

/// Each member's peer URL, by name: as etcd lists it, or, while etcd cannot be asked (every member restarting on
/// its claim), as status last recorded it. A member that turned peer TLS on while running is registered on
/// another port and scheme than a new member of its spec would be: a pod created again from a guess would listen
/// where no peer dials it.
fn registered(cluster: &EtcdCluster, observed: &Observed) -> Vec<(String, String)> {
    match &observed.etcd {
        EtcdView::Members(members) => {
            members.iter().filter_map(|m| Some((m.name.clone(), m.peer_urls.first()?.clone()))).collect()
        }
        EtcdView::Unreachable(_) => cluster
            .status
            .as_ref()
            .map(|s| s.peer_urls.iter().map(|(name, url)| (name.clone(), url.clone())).collect())
            .unwrap_or_default(),
    }
}

/// Whether every member etcd lists has a pod that holds the peer certificates its dials present.
fn certified(observed: &Observed) -> bool {
    let EtcdView::Members(members) = &observed.etcd else { return false };
    members.iter().all(|m| {
        observed.pods.iter().any(|p| p.name == m.name && p.command.iter().any(|a| a.starts_with("--peer-cert-file=")))
    })
}

/// Carries out `action`. Membership changes go through the voting members the observation found.
pub async fn act(
    ctx: &crate::reconcile::Context,
    cluster: &EtcdCluster,
    observed: &Observed,
    reach: &Reach,
    action: &Action,
) -> Result<(), ActError> {
    let addresses = &reach.addresses;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let step = Step {
        ctx,
        cluster,
        observed,
        addresses,
        dial: &reach.dial,
        pods: Api::namespaced(ctx.client.clone(), &namespace),
        name,
        namespace,
        members: match &observed.etcd {
            EtcdView::Members(members) => members.iter().map(|m| m.name.clone()).collect(),
            EtcdView::Unreachable(_) => Vec::new(),
        },
        registered: registered(cluster, observed),
        certified: certified(observed),
        endpoints: addresses.values().cloned().collect(),
    };
    match action {
        Action::CreateSeed { .. } => members::create_seed(&step, action).await?,
        Action::AddLearner { .. } => members::add_learner(&step, action).await?,
        Action::CreateMemberPod { .. } => members::create_member_pod(&step, action).await?,
        Action::Promote { .. } => members::promote(&step, action).await?,
        Action::RemoveMember { .. } => members::remove_member(&step, action).await?,
        Action::DeletePod { .. } => members::delete_pod(&step, action).await?,
        Action::RestartOnClaim { .. } => volumes::restart_on_claim(&step, action).await?,
        Action::DeleteFailedPod { .. } => volumes::delete_failed_pod(&step, action).await?,
        Action::RecordMemberId { .. } => volumes::record_member_id(&step, action).await?,
        Action::RetireClaim { .. } => volumes::retire_claim(&step, action).await?,
        Action::RollPod { .. } => volumes::roll_pod(&step, action).await?,
        Action::RetireLostClaim { .. } => volumes::retire_lost_claim(&step, action).await?,
        Action::SetClaimOwner { .. } => volumes::set_claim_owner(&step, action).await?,
        Action::ExpandClaim { .. } => volumes::expand_claim(&step, action).await?,
        Action::StartRecovery { .. } => recovery::start_recovery(&step, action).await?,
        Action::DeleteLostMember { .. } => recovery::delete_lost_member(&step, action).await?,
        Action::AbandonRecovery { .. } => recovery::abandon_recovery(&step, action).await?,
        Action::CompleteRecovery => recovery::complete_recovery(&step).await?,
        Action::StartUpgrade { .. } => upgrade::start_upgrade(&step, action).await?,
        Action::RollMember { .. } => upgrade::roll_member(&step, action).await?,
        Action::MoveLeader { .. } => upgrade::move_leader(&step, action).await?,
        Action::CompleteUpgrade => upgrade::complete_upgrade(&step).await?,
        Action::SwitchPeerUrl { .. } => members::switch_peer_url(&step, action).await?,
        Action::Wait(_) | Action::Done => {}
    }
    Ok(())
}

/// What a recovery starts from.
struct RecoveryInput<'a> {
    /// Where the running members are reached.
    addresses: &'a Endpoints,
    /// How they are dialled.
    dial: &'a crate::dial::Dial,
    /// The new cluster's first member index.
    first_index: u32,
    /// The lost cluster's pods, recorded.
    lost: Vec<String>,
    /// The member pods that may hold data no backup has (running, or in a restart loop).
    holding: Vec<String>,
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

mod events;
mod members;
mod recovery;
mod upgrade;
mod volumes;

pub use events::{EVENT_NOTE_MAX, event, member_event, publish};
pub use recovery::{RESTORE_TOKEN_LABEL, max_backup_age, restore_token};

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

    #[test]
    fn peer_urls_come_from_etcd_or_while_it_cannot_be_asked_from_status_and_certificates_from_every_pod() {
        let mut c = cluster("demo", 3);
        let mut observed = crate::status::tests::steady();
        if let EtcdView::Members(members) = &mut observed.etcd {
            members[1].peer_urls = vec!["https://demo-0001.demo.ns.svc:2382".into()];
        }
        assert_eq!(registered(&c, &observed), [("demo-0001".to_string(), "https://demo-0001.demo.ns.svc:2382".into())]);
        // Every member restarting on its claim: etcd cannot be asked, status recorded where each is dialled.
        let blind = Observed { etcd: EtcdView::Unreachable("no member pod is running".into()), ..observed.clone() };
        assert!(registered(&c, &blind).is_empty(), "nothing recorded, nothing guessed");
        let mut status = proto::cluster::EtcdClusterStatus::default();
        status.peer_urls.insert("demo-0001".into(), "https://demo-0001.demo.ns.svc:2382".into());
        c.status = Some(status);
        assert_eq!(registered(&c, &blind), registered(&c, &observed));
        // A pod re-created from it listens where its peers dial it.
        c.spec.tls = Some(serde_json::from_value(serde_json::json!({ "peer": {} })).unwrap());
        let initial = crate::pod::initial_cluster(&c, &["demo-0001".to_string()], &registered(&c, &blind), false);
        assert_eq!(initial[0].1, "https://demo-0001.demo.ns.svc:2382");
        // Certified: every listed member's pod holds a peer certificate.
        assert!(!certified(&observed));
        for pod in &mut observed.pods {
            pod.command = vec!["etcd".into(), "--peer-cert-file=/etc/etcd/tls/peer/tls.crt".into()];
        }
        assert!(certified(&observed));
        observed.pods.pop();
        assert!(!certified(&observed), "a member without a pod holds nothing");
        assert!(!certified(&blind));
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
