//! One reconcile of one EtcdCluster: ensure its services, observe, plan one step, act, write status if it
//! changed. The controller keeps nothing between reconciles: everything comes from the API server and etcd.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use proto::cluster::EtcdCluster;
use serde_json::json;
use tracing::Instrument;

use crate::act::{ActError, act, publish};
use crate::labels::FIELD_MANAGER;
use crate::metrics::Metrics;
use crate::observe::{ObserveError, observe};
use crate::plan::{Action, Desired, WaitReason, plan};
use crate::service::{client_service, disruption_budget, headless_service};
use crate::status::derive;

/// How long after a failed pre-upgrade backup the next attempt comes.
pub const UPGRADE_BACKUP_RETRY: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Publishes events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Timeout of etcd requests.
    pub etcd_timeout: Duration,
    /// Requeue interval of a steady cluster (jittered).
    pub resync: Duration,
    /// How long the kubelets take to put a Secret's new contents into pods (see [`crate::run::RunArgs`]).
    pub secret_propagation: Duration,
    /// Image of the backup sidecar when a cluster's spec names none.
    pub sidecar_image: String,
    /// The namespace the controller runs in, which the clusters' NetworkPolicies admit (none outside the cluster).
    pub controller_namespace: Option<String>,
    /// Called after each step that was carried out.
    pub hooks: Hooks,
    /// Steps the API server refused, each waiting out a growing pause.
    pub refusals: crate::backoff::Refusals,
}

/// A future a hook returns.
pub type HookFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A hook called with the cluster's name and the step carried out.
pub type StepHook = Arc<dyn Fn(&str, &Action) -> HookFuture + Send + Sync>;

/// Points where a test stops the controller on purpose (a fault-injection seam; `etcd-controller run` sets
/// none). `after_step(cluster, action)` runs once a step has been carried out, before status is written: a hook
/// that never returns leaves the controller exactly there, as a crash right after that step would.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Runs after each step that succeeded.
    pub after_step: Option<StepHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("after_step", &self.after_step.is_some()).finish()
    }
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Observing failed.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// Acting failed.
    #[error(transparent)]
    Act(#[from] ActError),
    /// A child object or the status could not be written.
    #[error("{op}: {source}")]
    Kube {
        /// What was being done.
        op: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    /// Stable short reason, for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Observe(_) => "ObserveFailed",
            Self::Act(error) => error.reason(),
            Self::Kube { .. } => "KubernetesApiError",
        }
    }
}

/// Whether every member pod (not terminating) serves clients over TLS (`Some(true)`), every one plain
/// (`Some(false)`), or they differ or none runs (`None`): the scheme the backup sidecar speaks to etcd.
fn members_serve_tls(observed: &crate::observe::Observed) -> Option<bool> {
    let mut schemes = observed
        .pods
        .iter()
        .filter(|p| p.state != crate::observe::PodState::Terminating)
        .map(|p| crate::peering::serves_client_tls(&p.command));
    let first = schemes.next()?;
    schemes.all(|tls| tls == first).then_some(first)
}

/// Sets to null, in `new` (a merge patch's object), each key `old` has that `new` has not, at every depth where
/// both are objects: a merge patch keeps what it does not mention.
fn null_removed(new: &mut serde_json::Value, old: &serde_json::Value) {
    let (Some(new), Some(old)) = (new.as_object_mut(), old.as_object()) else { return };
    for (key, before) in old {
        match new.get_mut(key) {
            Some(now) => null_removed(now, before),
            None => {
                new.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
}

/// Reconciles one cluster.
pub async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    // Instrumented, never entered across an await: concurrent reconciles would otherwise nest in each other's span.
    let span = tracing::info_span!("reconcile", cluster = %cluster.name_any(), namespace = ?cluster.namespace());
    reconcile_one(cluster, ctx).instrument(span).await
}

async fn reconcile_one(cluster: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let name = cluster.name_any();
    let timer = ctx.metrics.reconcile_started();
    ensure_children(&ctx.client, &cluster).await?;
    // A policy the API server refuses (an install whose RBAC predates them, an admission webhook) is reported and
    // stops nothing else: the cluster is still run, and its pods are as reachable as without the policy.
    if let Err(error) = ensure_network_policies(&ctx.client, &cluster, ctx.controller_namespace.as_deref()).await {
        tracing::warn!(cluster = %name, %error, "network policies not written");
        let mut event = crate::act::event("NetworkPolicyFailed", format!("the cluster's NetworkPolicies: {error}"));
        event.type_ = EventType::Warning;
        publish(&ctx.recorder, &cluster, event).await;
    }
    // Certificates before anything reads them: made when missing, renewed when due. A failure is reported and
    // does not stop the reconcile: status says which certificate cannot be used, and the planner waits for it.
    let (issued, outcome) = crate::certificates::ensure(&ctx.client, &cluster, ctx.secret_propagation).await;
    for issuance in issued {
        let (reason, note) = match issuance {
            crate::certificates::Issuance::NewCa(secret) => {
                ("CertificateAuthorityCreated", format!("created a CA of the cluster in Secret {secret}"))
            }
            crate::certificates::Issuance::Issued { secret, why } => {
                ("CertificateIssued", format!("issued a certificate into Secret {secret}: {why}"))
            }
            crate::certificates::Issuance::Rotation { secret, note } => {
                ("CertificateAuthorityRotation", format!("Secret {secret}: {note}"))
            }
        };
        ctx.metrics.certificate_issued(reason);
        publish(&ctx.recorder, &cluster, crate::act::event(reason, note)).await;
    }
    if let Err(why) = outcome {
        tracing::warn!(%why, "certificates not issued");
        let event = Event {
            type_: EventType::Warning,
            reason: "CertificateIssueFailed".into(),
            note: Some(why),
            action: "IssueCertificates".into(),
            secondary: None,
        };
        publish(&ctx.recorder, &cluster, event).await;
    }

    let (observed, reach) = observe(&ctx.client, &cluster, ctx.etcd_timeout).await?;
    // The CA bundles new member pods read, pinned before any is created; those no pod reads any more, deleted.
    if let Err(why) = crate::certificates::pin_trust(&ctx.client, &cluster, &observed.trust, &reach.trust_in_use).await
    {
        tracing::warn!(%why, "CA bundles not pinned");
        let event = Event {
            type_: EventType::Warning,
            reason: "TrustNotPinned".into(),
            note: Some(format!("the CA bundles new members read could not be pinned: {why}")),
            action: "PinTrust".into(),
            secondary: None,
        };
        publish(&ctx.recorder, &cluster, event).await;
    }
    let desired = Desired {
        settings: Some(crate::pod::settings_hash(&cluster, &observed.trust)),
        ..Desired::from_spec(&cluster.spec)
    };
    let action = plan(&desired, &observed);
    tracing::info!(?action, "planned");

    let previous = cluster.status.clone().unwrap_or_default();
    // A step refused a moment ago is not asked for again until its pause is over (unless the spec changed).
    // By UID: a cluster deleted and created again under its name starts without the old one's pauses.
    let key = cluster.uid().unwrap_or_else(|| format!("{}/{name}", cluster.namespace().unwrap_or_default()));
    let step = format!("{:?} {action:?}", cluster.meta().generation);
    let waiting = ctx.refusals.pending(&key, &step, std::time::Instant::now());
    let acted = match &waiting {
        Some((wait, _)) => {
            tracing::info!(?wait, "refused before: waiting out the pause");
            Ok(())
        }
        None => act(&ctx, &cluster, &observed, &reach, &action).await,
    };
    if acted.is_ok()
        && waiting.is_none()
        && let Some(hook) = &ctx.hooks.after_step
    {
        hook(&name, &action).await;
    }
    if let Err(error) = &acted {
        let event = Event {
            type_: EventType::Warning,
            reason: error.reason().into(),
            note: Some(error.to_string()),
            action: "Reconcile".into(),
            secondary: None,
        };
        publish(&ctx.recorder, &cluster, event).await;
    }
    let refused = match (&acted, &waiting) {
        (_, Some((wait, left))) => Some((wait.clone(), *left)),
        // Only creates and patches of the members' pods: a refused step of a recovery (or of anything that times a
        // lost quorum) is reported as what it is, and its own pace applies.
        (Err(error), None) if refusable(&action) => error.refusal().map(|(op, why)| {
            let wait = WaitReason::Refused { op, why };
            let pause = ctx.refusals.refused(&key, &step, wait.clone(), std::time::Instant::now());
            ctx.metrics.reconcile_failed(error.reason());
            (wait, pause)
        }),
        (Ok(()), None) => {
            ctx.refusals.clear(&key);
            None
        }
        (Err(_), None) => None,
    };
    // The backup sidecar comes after the members' step, and its trouble never fails the reconcile: a stuck
    // sidecar must not hold up healing etcd. It is reported in `BackupReady` (and an event) instead.
    let certificate_ready = observed
        .certificates
        .iter()
        .filter(|c| c.purpose == crate::certificates::Purpose::Backup.as_str())
        .all(|c| c.problem.is_none());
    let ensured = crate::backup::ensure(
        &ctx.client,
        &cluster,
        &ctx.sidecar_image,
        certificate_ready,
        members_serve_tls(&observed),
        ctx.etcd_timeout,
    )
    .await;
    let backup = match ensured {
        Ok(health) => health,
        Err(error) => {
            let event = Event {
                type_: EventType::Warning,
                reason: "BackupSidecarFailed".into(),
                note: Some(error.to_string()),
                action: "ApplyBackupSidecar".into(),
                secondary: None,
            };
            publish(&ctx.recorder, &cluster, event).await;
            Some(crate::backup::BackupHealth::NotApplied { error: error.to_string() })
        }
    };

    // Re-read: a step may have recorded a member index or token in status.
    let api: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let fresh = match api.get_status(&name).await {
        Ok(fresh) => fresh,
        // Deleted while this reconcile ran: its owned objects go with it, and there is no status to write.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            timer.finish(acted.is_ok());
            return Ok(Requeue::await_change());
        }
        Err(source) => return Err(ReconcileError::Kube { op: "reading status".into(), source }),
    };
    let base = fresh.status.unwrap_or(previous);
    // A recovery that found no backup to recover from is reported as what it is: a wait for a person.
    let shown = match (&acted, &action) {
        _ if let Some((wait, _)) = &refused => Action::Wait(wait.clone()),
        (Err(ActError::NoBackup(why)), Action::StartRecovery { .. }) => {
            Action::Wait(WaitReason::NoUsableBackup(why.clone()))
        }
        // An upgrade whose backup failed did not start: status says why, and the next reconcile tries again.
        (Err(error), Action::StartUpgrade { .. }) => Action::Wait(WaitReason::UpgradeWaiting(format!(
            "{}; it is tried again every {} s",
            without_backup_names(&error.to_string(), &name),
            UPGRADE_BACKUP_RETRY.as_secs()
        ))),
        _ => action.clone(),
    };
    let status = derive(
        &cluster.spec,
        cluster.meta().generation,
        &observed,
        &shown,
        backup.as_ref(),
        &base,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let view = crate::metrics::ClusterView::of(&cluster.spec, &observed, &shown, backup.as_ref(), &status);
    ctx.metrics.observe_cluster(&cluster.namespace().unwrap_or_default(), &name, view);
    announce_transitions(&ctx.recorder, &cluster, &base, &status).await;
    if let Some(from) = &status.restored_from
        && base.restored_from.as_ref().is_some_and(|before| before.revision == 0 && from.revision != 0)
    {
        let note =
            format!("the seed restored backup {} (revision {}) from {}", from.backup, from.revision, from.source);
        publish(&ctx.recorder, &cluster, crate::act::event("SeedRestored", note)).await;
    }
    if Some(&status) != cluster.status.as_ref() || base != cluster.status.clone().unwrap_or_default() {
        let mut body = serde_json::to_value(&status).unwrap_or_else(|_| json!({}));
        // A merge patch keeps what it does not mention: whatever the stored status has that this one has not (a
        // field cleared, an empty list left out, a member gone from serverVersions, a part of status.tls no longer
        // used) is sent as null, at every depth of objects.
        if let Ok(stored) = serde_json::to_value(&base) {
            null_removed(&mut body, &stored);
        }
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": body })))
            .await
            .map_err(|source| ReconcileError::Kube { op: "writing status".into(), source })?;
    }
    timer.finish(acted.is_ok());
    // A backup that failed before an upgrade is tried again in a while, not at the error policy's pace: each
    // attempt is a full snapshot. Status and a Warning event say why meanwhile.
    if acted.is_err() && matches!(action, Action::StartUpgrade { .. }) {
        return Ok(Requeue::requeue(UPGRADE_BACKUP_RETRY));
    }
    // A refusal is an answer, not an error to retry at the error policy's pace: status says it, and the step
    // comes back once its pause is over.
    if let Some((_, pause)) = refused {
        return Ok(Requeue::requeue(pause));
    }
    acted?;

    Ok(match action {
        Action::Done => Requeue::requeue(jitter(ctx.resync)),
        Action::Wait(WaitReason::Paused) => Requeue::requeue(ctx.resync),
        Action::Wait(_) => Requeue::requeue(Duration::from_secs(5)),
        _ => Requeue::requeue(Duration::from_secs(2)),
    })
}

/// Whether a refusal of `action` by the API server waits out a growing pause (see [`crate::backoff`]).
fn refusable(action: &Action) -> bool {
    matches!(
        action,
        Action::CreateSeed { .. }
            | Action::AddLearner { .. }
            | Action::CreateMemberPod { .. }
            | Action::RollMember { .. }
    )
}

/// `message` with every word that names a backup of `cluster` (`<cluster>-<time>...`, or a path holding one) said
/// as `<backup>`: each attempt names a new backup, and a status that changed would be written, and reconciled,
/// at once.
fn without_backup_names(message: &str, cluster: &str) -> String {
    let name = format!("{cluster}-2");
    message.split(' ').map(|word| if word.contains(&name) { "<backup>" } else { word }).collect::<Vec<_>>().join(" ")
}

/// Warning events for conditions that say a person must act, once when each turns true (or its reason changes):
/// a refused `spec.version`, and an upgrade that stopped.
async fn announce_transitions(
    recorder: &Recorder,
    cluster: &EtcdCluster,
    before: &proto::cluster::EtcdClusterStatus,
    after: &proto::cluster::EtcdClusterStatus,
) {
    let find = |status: &proto::cluster::EtcdClusterStatus, type_: &str| {
        status.conditions.iter().find(|c| c.type_ == type_ && c.status == "True").map(|c| c.reason.clone())
    };
    for (type_, reason) in [("UpgradeBlocked", None), ("Degraded", Some("UpgradeStalled"))] {
        let now = find(after, type_);
        if now.is_some() && now != find(before, type_) && reason.is_none_or(|r| now.as_deref() == Some(r)) {
            let message = after.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone());
            let event = Event {
                type_: EventType::Warning,
                reason: if type_ == "Degraded" { "UpgradeStalled".into() } else { "UpgradeBlocked".into() },
                note: message,
                action: format!("UpgradeTo{}", cluster.spec.version.trim_start_matches('v')),
                secondary: None,
            };
            publish(recorder, cluster, event).await;
        }
    }
}

/// What to do after a failed reconcile: try again soon.
pub fn error_policy(cluster: Arc<EtcdCluster>, error: &ReconcileError, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(cluster = %cluster.name_any(), reason = error.reason(), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error.reason());
    Requeue::requeue(Duration::from_secs(5))
}

/// Creates the services when they are missing (existing ones are left alone), and the disruption budget when it
/// is missing or allows other disruptions than the spec's size calls for; a steady cluster's reconcile writes
/// nothing.
async fn ensure_children(client: &kube::Client, cluster: &EtcdCluster) -> Result<(), ReconcileError> {
    let namespace = cluster.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    for service in [headless_service(cluster), client_service(cluster)] {
        apply_unless(&services, &service, |_| true).await?;
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let budget = disruption_budget(cluster);
    let allowed = budget.spec.as_ref().and_then(|s| s.max_unavailable.clone());
    apply_unless(&budgets, &budget, |existing| {
        existing.spec.as_ref().and_then(|s| s.max_unavailable.clone()) == allowed
    })
    .await
}

/// Deletes `name` if it exists and `cluster` owns it (one a user made under that name is left alone).
async fn delete_owned<K>(api: &Api<K>, name: &str, cluster: &EtcdCluster) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let op = |what: &str| format!("{what} {} {name}", K::kind(&()));
    let existing = api.get_opt(name).await.map_err(|source| ReconcileError::Kube { op: op("reading"), source })?;
    let ours = existing.is_some_and(|e| e.owner_references().iter().any(|o| Some(&o.uid) == cluster.uid().as_ref()));
    if ours {
        api.delete(name, &Default::default())
            .await
            .map_err(|source| ReconcileError::Kube { op: op("deleting"), source })?;
    }
    Ok(())
}

/// The NetworkPolicies, applied when missing or other than the spec renders; deleted when turned off (the
/// sidecar's also without backups).
async fn ensure_network_policies(
    client: &kube::Client,
    cluster: &EtcdCluster,
    controller_namespace: Option<&str>,
) -> Result<(), ReconcileError> {
    let namespace = cluster.namespace().unwrap_or_default();
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
    let name = cluster.name_any();
    let enabled = cluster.spec.network_policy.enabled;
    for (policy_name, wanted) in [
        (
            crate::network::members_policy_name(&name),
            enabled.then(|| crate::network::members_policy(cluster, controller_namespace)),
        ),
        (
            crate::network::backup_policy_name(&name),
            (enabled && cluster.spec.backup.is_some())
                .then(|| crate::network::backup_policy(cluster, controller_namespace)),
        ),
    ] {
        match wanted {
            Some(policy) => apply_unless(&policies, &policy, |existing| existing.spec == policy.spec).await?,
            None => delete_owned(&policies, &policy_name, cluster).await?,
        }
    }
    Ok(())
}

/// Applies `object` unless it exists and `current` says the existing one is as wanted.
async fn apply_unless<K>(api: &Api<K>, object: &K, current: impl Fn(&K) -> bool) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = object.name_any();
    let op = |what: &str| format!("{what} {} {name}", K::kind(&()));
    let existing = api.get_opt(&name).await.map_err(|source| ReconcileError::Kube { op: op("reading"), source })?;
    if !existing.as_ref().is_some_and(current) {
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
            .await
            .map_err(|source| ReconcileError::Kube { op: op("applying"), source })?;
    }
    Ok(())
}

/// `base` plus up to a tenth more, so clusters' resyncs spread out.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    base + base.mul_f64(f64::from(nanos % 1000) / 10_000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_backup_reads_the_same_every_attempt() {
        let say = |name: &str| {
            super::without_backup_names(
                &format!(
                    "503 backup failed: storage upload {name}.db.gz: Unable to open file /backups/up/{name}.db.gz#1: denied"
                ),
                "up",
            )
        };
        let first = say("up-20261202T071900.661Z-r3504");
        assert_eq!(first, say("up-20261202T071930.102Z-r3650"), "no new status for every attempt");
        assert_eq!(first, "503 backup failed: storage upload <backup> Unable to open file <backup> denied");
    }

    #[test]
    fn the_sidecar_speaks_the_scheme_every_member_serves_and_keeps_its_own_while_they_differ() {
        use crate::observe::{MemberPod, PodState};
        let mut observed = crate::status::tests::steady();
        let serving = |observed: &mut crate::observe::Observed, schemes: [&str; 3]| {
            for (pod, scheme) in observed.pods.iter_mut().zip(schemes) {
                pod.command = vec!["etcd".into(), format!("--listen-client-urls={scheme}://0.0.0.0:2379")];
            }
        };
        serving(&mut observed, ["http"; 3]);
        assert_eq!(super::members_serve_tls(&observed), Some(false));
        serving(&mut observed, ["https", "http", "http"]);
        assert_eq!(super::members_serve_tls(&observed), None, "while client TLS rolls: keep the sidecar's");
        serving(&mut observed, ["https"; 3]);
        assert_eq!(super::members_serve_tls(&observed), Some(true));
        // A pod on its way out does not count; no pod at all says nothing.
        let mut leaving = MemberPod::new("demo-0009", PodState::Terminating);
        leaving.command = vec!["--listen-client-urls=http://0.0.0.0:2379".into()];
        observed.pods.push(leaving);
        assert_eq!(super::members_serve_tls(&observed), Some(true));
        observed.pods.clear();
        assert_eq!(super::members_serve_tls(&observed), None);
    }

    #[test]
    fn a_status_part_no_longer_written_is_sent_as_null_at_its_depth() {
        use super::null_removed;
        use serde_json::json;
        let before =
            json!({ "peer": { "secretName": "p" }, "client": { "backupSecretName": "b" }, "clusterDomain": "d" });
        let mut now = json!({ "client": {}, "clusterDomain": "d" });
        null_removed(&mut now, &before);
        assert_eq!(now, json!({ "peer": null, "client": { "backupSecretName": null }, "clusterDomain": "d" }));
        // A whole status: a list left out when empty, a field cleared, a map entry gone.
        let stored = json!({ "phase": "Running", "certificates": [{ "purpose": "peer" }], "tls": before,
                             "serverVersions": { "a": "3.5.0", "b": "3.5.0" }, "upgrade": { "target": "3.6.0" } });
        let mut written = json!({ "phase": "Running", "serverVersions": { "a": "3.5.0" } });
        null_removed(&mut written, &stored);
        assert_eq!(
            written,
            json!({ "phase": "Running", "certificates": null, "tls": null, "serverVersions": { "a": "3.5.0", "b": null },
                    "upgrade": null })
        );
    }
}
