//! The Secrets of a TLS cluster (`spec.tls`): which it uses, the ones the controller generates (a CA per cluster and
//! the certificates it signs), made when missing and renewed when a third of their life is left, and every one read
//! and checked ([`crate::tls::check`]) at each reconcile, before anything may be rolled onto it.
//!
//! Renewal writes the Secret's new contents only: the kubelet updates the files in the member pods (mounted as
//! whole directories), and etcd reads them on each new handshake, so nothing restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use proto::cluster::{CertificateStatus, ClientTls, EtcdCluster, PeerTls, TlsInUse, TlsPolicy};

use crate::dial::ClientIdentity;
use crate::labels::{FIELD_MANAGER, cluster_labels, owner};
use crate::service::client_service_name;
use crate::tls::{self, CA_KEY, CERT_KEY, Issued, KEY_KEY, Usage};

/// The key of the CA's private key in the generated CA Secret.
pub const CA_PRIVATE_KEY: &str = "ca.key";
/// How long a generated CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long generated certificates are valid when `spec.tls.certificateDuration` is not set: 90 days.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(90 * 24 * 3600);
/// The shortest `spec.tls.certificateDuration`: a renewal (at two thirds) must leave the kubelet time to put the
/// new files into the pods (about a minute) well before the old ones expire.
pub const MIN_DURATION: Duration = Duration::from_secs(10 * 60);

/// The keys of the next CA in a generated CA Secret while the CA is rotated (`ca.crt` and `ca.key` stay the CA's).
pub const NEXT_CA_KEY: &str = "next.crt";
/// See [`NEXT_CA_KEY`].
pub const NEXT_PRIVATE_KEY: &str = "next.key";
/// The annotation on a generated CA Secret that asks for a rotation of that CA (any value; removed when the
/// rotation starts).
pub const ROTATE_ANNOTATION: &str = "kube-etcd-controller.dev/rotate";

/// What a certificate of the cluster is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Every member's peer certificate.
    Peer,
    /// Every member's serving certificate on the client port.
    Server,
    /// The client certificate of the controller and the backup sidecar.
    Operator,
    /// A client certificate for applications.
    Application,
    /// The backup sidecar's serving certificate for its HTTPS API.
    Backup,
}

impl Purpose {
    /// As status names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Server => "server",
            Self::Operator => "operator",
            Self::Application => "application",
            Self::Backup => "backup",
        }
    }

    fn usage(self) -> Usage {
        match self {
            Self::Peer | Self::Server => Usage::Member,
            // Server authentication only: the client CA signs it, and members take any certificate of that CA with
            // client authentication as a client's.
            Self::Backup => Usage::Server,
            Self::Operator | Self::Application => Usage::Client,
        }
    }
}

/// A Secret the cluster's TLS uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Used {
    /// What for.
    pub purpose: Purpose,
    /// The Secret's name.
    pub secret: String,
    /// Whether the controller generates it.
    pub generated: bool,
}

/// The Secret a generated certificate for `purpose` is kept in.
pub fn generated_secret(cluster: &str, purpose: Purpose) -> String {
    format!("{cluster}-tls-{}", purpose.as_str())
}

/// The Secret of the members' peer certificate, when peer TLS is on.
pub fn peer_secret(cluster: &EtcdCluster) -> Option<String> {
    used(cluster).into_iter().find(|u| u.purpose == Purpose::Peer).map(|u| u.secret)
}

/// The Secret of the members' serving certificate, when client TLS is on.
pub fn server_secret(cluster: &EtcdCluster) -> Option<String> {
    used(cluster).into_iter().find(|u| u.purpose == Purpose::Server).map(|u| u.secret)
}

/// The Secret of the client certificate the controller and the backup sidecar use, when client TLS is on.
pub fn operator_secret(cluster: &EtcdCluster) -> Option<String> {
    used(cluster).into_iter().find(|u| u.purpose == Purpose::Operator).map(|u| u.secret)
}

/// The Secret of the backup sidecar's serving certificate, when client TLS is on and the cluster has backups.
pub fn backup_secret(cluster: &EtcdCluster) -> Option<String> {
    used(cluster).into_iter().find(|u| u.purpose == Purpose::Backup).map(|u| u.secret)
}

/// The TLS whose certificates `cluster` uses: `spec.tls`, with the peer or client part it no longer has kept from
/// `status.tls` while peer or client TLS is turned off for the running cluster (until [`still_in_use`] says no
/// member needs it): the members still presenting those certificates, and the controller still dialling members
/// that serve TLS, need them renewed, checked and read. The cluster domain and certificate duration are the spec's
/// while it has a `tls`, else the kept ones. Members are rendered with the scheme the spec asks for
/// ([`EtcdClusterSpec::peer_tls`], [`EtcdClusterSpec::client_tls`]): this says which certificates they hold.
///
/// A cluster whose status an earlier build wrote (no `status.tls`) keeps what `status.certificates` lists.
///
/// [`EtcdClusterSpec::peer_tls`]: proto::cluster::EtcdClusterSpec::peer_tls
/// [`EtcdClusterSpec::client_tls`]: proto::cluster::EtcdClusterSpec::client_tls
pub fn policy(cluster: &EtcdCluster) -> Option<TlsPolicy> {
    let spec = cluster.spec.tls.as_ref();
    let kept = kept(cluster);
    let kept_peer = kept.as_ref().and_then(|k| k.peer.clone());
    let kept_client = kept.as_ref().and_then(|k| k.client.clone());
    // A part the spec names other Secrets for than the members still use (turned off and on again before the
    // turn-off was done) keeps the members' Secrets: [`moved`] reports it, and nothing rolls meanwhile.
    let peer = match (spec.and_then(|t| t.peer.clone()), kept_peer) {
        (Some(asked), Some(running)) if asked != running => Some(running),
        (asked, running) => asked.or(running),
    };
    let client = match (spec.and_then(|t| t.client.clone()), kept_client) {
        (Some(asked), Some(running)) if !same_secrets(&asked, &running) => Some(running),
        (asked, running) => asked.or(running),
    };
    match (spec, kept) {
        (Some(spec), Some(kept))
            if spec.cluster_domain != kept.cluster_domain && (kept.peer.is_some() || kept.client.is_some()) =>
        {
            Some(TlsPolicy { peer, client, cluster_domain: kept.cluster_domain, ..spec.clone() })
        }
        (Some(spec), _) => Some(TlsPolicy { peer, client, ..spec.clone() }),
        (None, Some(kept)) if peer.is_some() || client.is_some() => Some(TlsPolicy {
            peer,
            client,
            cluster_domain: kept.cluster_domain,
            certificate_duration: kept.certificate_duration,
        }),
        (None, _) => None,
    }
}

/// What `status.certificates` of an earlier build (which wrote no `status.tls`) says the members use.
fn kept_by_earlier_build(status: &proto::cluster::EtcdClusterStatus, spec: Option<&TlsPolicy>) -> Option<TlsInUse> {
    let listed = |purpose: Purpose| status.certificates.iter().find(|c| c.purpose == purpose.as_str());
    let given = |purpose: Purpose| listed(purpose).filter(|c| !c.generated).map(|c| c.secret.clone());
    let peer = listed(Purpose::Peer).map(|_| PeerTls { secret_name: given(Purpose::Peer) });
    let client = listed(Purpose::Server).map(|_| ClientTls {
        secret_name: given(Purpose::Server),
        operator_secret_name: given(Purpose::Operator),
        application_secret_name: listed(Purpose::Application).map(|c| c.secret.clone()),
        backup_secret_name: given(Purpose::Backup),
    });
    (peer.is_some() || client.is_some()).then(|| TlsInUse {
        peer,
        client,
        cluster_domain: spec
            .map_or_else(|| proto::cluster::DEFAULT_CLUSTER_DOMAIN.into(), |t| t.cluster_domain.clone()),
        certificate_duration: spec.and_then(|t| t.certificate_duration.clone()),
    })
}

/// What the cluster's status keeps ([`policy`]): `status.tls`, or for a status of an earlier build, what its
/// `status.certificates` lists.
fn kept(cluster: &EtcdCluster) -> Option<TlsInUse> {
    let spec = cluster.spec.tls.as_ref();
    cluster.status.as_ref().and_then(|s| s.tls.clone().or_else(|| kept_by_earlier_build(s, spec)))
}

/// Whether two client TLS settings name the same Secrets for the members, the controller and applications (the
/// backup sidecar's may change).
fn same_secrets(a: &ClientTls, b: &ClientTls) -> bool {
    a.secret_name == b.secret_name
        && a.operator_secret_name == b.operator_secret_name
        && a.application_secret_name == b.application_secret_name
}

/// What the spec asks that [`policy`] does not follow: other Secrets (or another cluster domain) than the members
/// still use while that TLS is turned off, asked for again before the turn-off was done. Each is a problem of the
/// members' certificate: nothing rolls until the spec names the Secrets again, or the turn-off is done (remove the
/// part again, wait until `status.tls` no longer has it, then add it with the new Secrets).
pub fn moved(cluster: &EtcdCluster) -> Vec<(Purpose, String)> {
    let (Some(spec), Some(kept)) = (cluster.spec.tls.as_ref(), kept(cluster)) else { return Vec::new() };
    let mut moved = Vec::new();
    let wait = "moving to other Secrets is not supported: put back what the members use, or remove it again and \
                add it once status.tls no longer has it (the turn-off is done)";
    if let (Some(asked), Some(running)) = (&spec.peer, &kept.peer)
        && asked != running
    {
        let name = |p: &PeerTls| p.secret_name.clone().unwrap_or_else(|| "generated certificates".into());
        moved.push((
            Purpose::Peer,
            format!("spec.tls.peer asks for {} while the members still use {}: {wait}", name(asked), name(running)),
        ));
    }
    if let (Some(asked), Some(running)) = (&spec.client, &kept.client)
        && !same_secrets(asked, running)
    {
        moved.push((
            Purpose::Server,
            format!("spec.tls.client names other Secrets than the members still use ({running:?}): {wait}"),
        ));
    }
    if (kept.peer.is_some() || kept.client.is_some()) && spec.cluster_domain != kept.cluster_domain {
        let purpose = if kept.peer.is_some() { Purpose::Peer } else { Purpose::Server };
        moved.push((
            purpose,
            format!(
                "spec.tls.clusterDomain is {} while the members' certificates name {}: put it back",
                spec.cluster_domain, kept.cluster_domain
            ),
        ));
    }
    moved
}

/// What `status.tls` says next: [`policy`], less a part the spec no longer has once no member needs it: peer TLS
/// once etcd lists every member at a plain peer URL (`registered`: `None` while etcd cannot be asked, which keeps
/// it), client TLS once no member pod serves TLS (`serving_tls`: how many do). Pure.
pub fn still_in_use(cluster: &EtcdCluster, registered: Option<&[String]>, serving_tls: usize) -> Option<TlsInUse> {
    let policy = policy(cluster)?;
    let spec = cluster.spec.tls.as_ref();
    let peer_asked = spec.is_some_and(|t| t.peer.is_some());
    let client_asked = spec.is_some_and(|t| t.client.is_some());
    let peer_needed =
        registered.is_none_or(|urls| urls.iter().any(|url| crate::peering::PeerUrl::parse(url).is_none_or(|u| u.tls)));
    let in_use = TlsInUse {
        peer: policy.peer.filter(|_| peer_asked || peer_needed),
        client: policy.client.filter(|_| client_asked || serving_tls > 0),
        cluster_domain: policy.cluster_domain,
        certificate_duration: policy.certificate_duration,
    };
    (in_use.peer.is_some() || in_use.client.is_some()).then_some(in_use)
}

/// Every Secret `cluster`'s TLS uses ([`policy`]), in a fixed order.
pub fn used(cluster: &EtcdCluster) -> Vec<Used> {
    let name = cluster.name_any();
    let Some(tls) = policy(cluster) else { return Vec::new() };
    let either = |purpose, given: &Option<String>| Used {
        purpose,
        secret: given.clone().unwrap_or_else(|| generated_secret(&name, purpose)),
        generated: given.is_none(),
    };
    let mut used = Vec::new();
    if let Some(peer) = &tls.peer {
        used.push(either(Purpose::Peer, &peer.secret_name));
    }
    if let Some(client) = &tls.client {
        used.push(either(Purpose::Server, &client.secret_name));
        used.push(either(Purpose::Operator, &client.operator_secret_name));
        if let Some(application) = &client.application_secret_name {
            used.push(Used { purpose: Purpose::Application, secret: application.clone(), generated: true });
        }
        if cluster.spec.backup.is_some() {
            used.push(either(Purpose::Backup, &client.backup_secret_name));
        }
    }
    used
}

/// The annotation on a member pod that names the CAs it trusts ([`Trust::render`]).
pub const TRUSTED_CAS: &str = "kube-etcd-controller.dev/trusted-cas";

/// The CAs a member trusts, by key ([`tls::ca_keys`]): on its peer port (the peers' certificates) and on its client
/// port (the clients' certificates). etcd reads its CA bundles only when it starts, so a member trusts what the
/// `ca.crt` of its Secrets held when its pod was created, and a changed bundle reaches it only through a restart.
/// So the trust is rendered into the pod (an annotation, part of its settings hash), and a change of a `ca.crt` is
/// carried to every member by the rollout: one member at a time, health-gated, the leader last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// The CAs of the peer Secret's `ca.crt`.
    pub peer: BTreeSet<String>,
    /// The CAs of the serving Secret's `ca.crt`.
    pub client: BTreeSet<String>,
    /// A digest of the CA certificates of both, as they are ([`tls::bundle_digest`]): a CA made again for the same
    /// key is the same CA to the rule of [`judge`], but a new certificate for etcd to read.
    pub certificates: String,
    /// The bundles themselves (PEM), as the Secrets hold them now; empty for a trust read off a pod.
    pub bundles: Bundles,
}

/// The CA bundles (PEM) a member is given to read at start: the `ca.crt` of the peer and of the serving Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundles {
    /// The peer Secret's `ca.crt`.
    pub peer: String,
    /// The serving Secret's `ca.crt`.
    pub client: String,
}

/// The label of the ConfigMaps that pin the CA bundles member pods read at start ([`pin_trust`]).
pub const TRUST_LABEL: &str = "kube-etcd-controller.dev/trust";
/// The file of the pinned peer CA bundle.
pub const PEER_CA_FILE: &str = "peer-ca.crt";
/// The file of the pinned client CA bundle.
pub const CLIENT_CA_FILE: &str = "client-ca.crt";

/// The ConfigMap that pins the CA bundles of `trust` for members of `cluster`: named by their digest, immutable, so
/// that a member's etcd reads the same bundles whenever it starts (a container restart included), and what its
/// pod's annotation names is what it trusts.
pub fn trust_config_map(cluster: &str, trust: &Trust) -> String {
    format!("{cluster}-trust-{}", trust.certificates)
}

/// Which of `listed` (the cluster's pinned CA bundles) may be deleted: only the cluster's own, never the one new
/// members get (`current`), never one a member pod reads (`in_use`). Pure.
fn unpinned(
    cluster: &EtcdCluster,
    listed: &[k8s_openapi::api::core::v1::ConfigMap],
    current: &str,
    in_use: &BTreeSet<String>,
) -> Vec<String> {
    listed
        .iter()
        .filter(|map| map.owner_references().iter().any(|o| Some(&o.uid) == cluster.uid().as_ref()))
        .map(|map| map.name_any())
        .filter(|name| name != current && !in_use.contains(name))
        .collect()
}

/// Makes the ConfigMap that pins `trust` for new member pods of `cluster` ([`trust_config_map`]), and deletes the
/// cluster's others that no member pod uses (`in_use`: the ConfigMaps the member pods name).
pub async fn pin_trust(
    client: &kube::Client,
    cluster: &EtcdCluster,
    trust: &Trust,
    in_use: &BTreeSet<String>,
) -> Result<(), String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    // (A cluster without TLS still has its earlier bundles deleted once no pod reads them: TLS turned off.)
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let name = cluster.name_any();
    let current = trust_config_map(&name, trust);
    // Nothing to pin while the Secrets cannot be read (status says why; no member is created meanwhile).
    if !used(cluster).is_empty() && (!trust.bundles.peer.is_empty() || !trust.bundles.client.is_empty()) {
        let mut labels = cluster_labels(&name);
        labels.insert(TRUST_LABEL.into(), "true".into());
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(current.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner(cluster)]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (PEER_CA_FILE.to_string(), trust.bundles.peer.clone()),
                (CLIENT_CA_FILE.to_string(), trust.bundles.client.clone()),
            ])),
            immutable: Some(true),
            ..Default::default()
        };
        if maps.get_opt(&current).await.map_err(kube_says(format!("reading ConfigMap {current}")))?.is_none() {
            match maps
                .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &map)
                .await
            {
                Ok(_) => tracing::info!(config_map = %current, "pinned the CA bundles new members read"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(format!("creating ConfigMap {current}: {e}")),
            }
        }
    }
    let selector = format!("{}={name},{TRUST_LABEL}", crate::labels::CLUSTER_LABEL);
    let listed = maps
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(kube_says("listing the pinned CA bundles".into()))?;
    for unused in unpinned(cluster, &listed.items, &current, in_use) {
        maps.delete(&unused, &Default::default()).await.map_err(kube_says(format!("deleting ConfigMap {unused}")))?;
        tracing::info!(config_map = %unused, "deleted CA bundles no member pod reads");
    }
    Ok(())
}

impl Trust {
    /// The annotation's value on a member pod of `cluster`: `peer=<key>,<key>;client=<key>` for the sides its TLS
    /// has; `None` without TLS (a plain member renders as it always did).
    pub fn render(&self, cluster: &EtcdCluster) -> Option<String> {
        let keys = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        let mut sides = Vec::new();
        // Peer certificates are held while any member is registered at an https peer URL, also while peer TLS is
        // turned off ([`policy`]); the client side follows the scheme the spec asks for.
        if peer_secret(cluster).is_some() {
            sides.push(format!("peer={}", keys(&self.peer)));
        }
        if cluster.spec.client_tls() {
            sides.push(format!("client={}", keys(&self.client)));
        }
        if !sides.is_empty() {
            sides.push(format!("certificates={}", self.certificates));
        }
        (!sides.is_empty()).then(|| sides.join(";"))
    }

    /// The trust a member pod's annotation names; `None` for a pod without one.
    pub fn of_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<Self> {
        let value = pod.annotations().get(TRUSTED_CAS)?;
        let mut trust = Self::default();
        for side in value.split(';') {
            let (name, keys) = side.split_once('=')?;
            let keys = keys.split(',').filter(|k| !k.is_empty()).map(String::from).collect();
            match name {
                "peer" => trust.peer = keys,
                "client" => trust.client = keys,
                "certificates" => trust.certificates = keys.into_iter().next().unwrap_or_default(),
                _ => return None,
            }
        }
        Some(trust)
    }
}

/// Whether members that started trusting `running` (by member) can be restarted to trust `bundle` while
/// certificates of `signer` are presented to them: yes when the bundle still holds every CA any of them trusts (a
/// restarted member refuses nothing it accepted before), or when every one of them already trusts `signer` (what
/// the others present is trusted on both sides). Otherwise the members that do not trust `signer` are returned:
/// restarting members would leave some that refuse each other.
fn untrusting<'a>(bundle: &BTreeSet<String>, signer: &str, running: &'a [(String, BTreeSet<String>)]) -> Vec<&'a str> {
    if running.iter().all(|(_, trusted)| trusted.is_subset(bundle)) {
        return Vec::new();
    }
    running.iter().filter(|(_, trusted)| !trusted.contains(signer)).map(|(member, _)| member.as_str()).collect()
}

/// `spec.tls.certificateDuration`, or why it cannot be used.
pub fn duration(tls: &TlsPolicy) -> Result<Duration, String> {
    let Some(text) = &tls.certificate_duration else { return Ok(DEFAULT_DURATION) };
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("spec.tls.certificateDuration {text:?} is not a duration: {e}"))?;
    if duration < MIN_DURATION {
        return Err(format!(
            "spec.tls.certificateDuration {text} is shorter than {}: a renewal would not reach the pods in time",
            humantime::format_duration(MIN_DURATION)
        ));
    }
    Ok(duration)
}

/// The names a certificate for `purpose` of `cluster` must cover.
fn names_for(cluster: &EtcdCluster, purpose: Purpose) -> Vec<String> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let domain =
        policy(cluster).map_or_else(|| proto::cluster::DEFAULT_CLUSTER_DOMAIN.to_string(), |t| t.cluster_domain);
    let domain = domain.as_str();
    let names = tls::member_names(&name, &namespace, &client_service_name(&name), domain);
    match purpose {
        Purpose::Peer => names.peer,
        Purpose::Server => names.server,
        Purpose::Backup => tls::backup_names(&crate::backup::sidecar_name(&name), &namespace, domain),
        Purpose::Operator | Purpose::Application => Vec::new(),
    }
}

/// Whether a generated certificate that ends at `not_after` is due for renewal at `now`: a third of `duration`
/// or less is left.
pub fn renewal_due(not_after: SystemTime, now: SystemTime, duration: Duration) -> bool {
    not_after.duration_since(now).map_or(true, |left| left <= duration / 3)
}

/// Whether `secret` is this cluster's (owned by it, so the controller may write it).
fn ours(secret: &Secret, cluster: &EtcdCluster) -> bool {
    let uid = cluster.uid();
    secret.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref())
}

/// The successor a generated CA Secret holds while the CA is rotated (`next.crt`, `next.key`).
fn next_ca_in(secret: &Secret) -> Option<Issued> {
    let data = bytes(secret);
    let text = |key: &str| String::from_utf8(data.get(key).cloned().unwrap_or_default()).unwrap_or_default();
    tls::ca_from_pem(&text(NEXT_CA_KEY), &text(NEXT_PRIVATE_KEY))
}

/// The CA a generated CA Secret holds (`ca.crt`, `ca.key`), if it can be read as one.
fn ca_in(secret: &Secret) -> Option<Issued> {
    let data = bytes(secret);
    let text = |key: &str| String::from_utf8(data.get(key).cloned().unwrap_or_default()).unwrap_or_default();
    tls::ca_from_pem(&text(CA_KEY), &text(CA_PRIVATE_KEY))
}

fn bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

fn secret_of(cluster: &EtcdCluster, name: &str, type_: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cluster.namespace(),
            labels: Some(cluster_labels(&cluster.name_any())),
            owner_references: Some(vec![owner(cluster)]),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Default::default()
    }
}

/// What [`ensure`] did, for events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issuance {
    /// A CA was made for the cluster.
    NewCa(String),
    /// A certificate was issued into a Secret (missing, unusable or due for renewal before), or its `ca.crt`
    /// written again for a CA's rotation.
    Issued {
        /// The Secret.
        secret: String,
        /// Why.
        why: String,
    },
    /// A step of a CA's rotation was taken.
    Rotation {
        /// The CA's Secret.
        secret: String,
        /// What was done.
        note: String,
    },
}

/// Makes the generated Secrets of `cluster` that are missing, and issues a new certificate into each one that is
/// due for renewal or no longer usable. Peer certificates and client-side ones (serving, operator, application)
/// come from two CAs, so that no client certificate is ever taken as a peer's. Secrets of those names that are
/// not the cluster's are left alone (status says so). Nothing is done while `spec.tls.certificateDuration` cannot
/// be used. Every certificate it did issue is returned even when a later step fails.
pub async fn ensure(
    client: &kube::Client,
    cluster: &EtcdCluster,
    propagation: Duration,
) -> (Vec<Issuance>, Result<(), String>) {
    let mut done = Vec::new();
    let result = ensure_into(client, cluster, propagation, &mut done).await;
    (done, result)
}

async fn ensure_into(
    client: &kube::Client,
    cluster: &EtcdCluster,
    propagation: Duration,
    done: &mut Vec<Issuance>,
) -> Result<(), String> {
    let Some(policy) = policy(cluster) else { return Ok(()) };
    let Ok(duration) = duration(&policy) else { return Ok(()) };
    let namespace = cluster.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let now = SystemTime::now();
    let mut running = None;
    for side in [Side::Peer, Side::Client] {
        let generated: Vec<Used> = used(cluster).into_iter().filter(|u| u.generated && side.signs(u.purpose)).collect();
        if generated.is_empty() {
            continue;
        }
        let (ca_holder, mut cas) = the_ca(&secrets, cluster, side, &generated, now, done).await?;
        let mut leaves = Vec::new();
        for wanted in generated {
            let existing = secrets
                .get_opt(&wanted.secret)
                .await
                .map_err(kube_says(format!("reading Secret {}", wanted.secret)))?;
            leaves.push((wanted, existing));
        }
        // What the members trust, as their pods say: read once, and only while a CA has a successor.
        let trusting: Vec<Option<BTreeSet<String>>> = if cas.next.is_some() {
            if running.is_none() {
                running = Some(member_trust(client, cluster).await?);
            }
            running.iter().flatten().map(|t| t.as_ref().map(|t| side.of(t).clone())).collect()
        } else {
            Vec::new()
        };
        // Secrets of those names that are not the cluster's are left alone, and hold no rotation up.
        let states: Vec<Leaf> = leaves
            .iter()
            .filter(|(_, existing)| existing.as_ref().is_none_or(|s| ours(s, cluster)))
            .map(|(wanted, existing)| Leaf::of(existing.as_ref(), &names_for(cluster, wanted.purpose), wanted, now))
            .collect();
        let requested = ca_holder.as_ref().is_some_and(|s| s.annotations().contains_key(ROTATE_ANNOTATION));
        let step = match rotation(&cas, requested, &states, &trusting, propagation, now) {
            // A paused cluster is changed in nothing: its rotation waits where it is.
            _ if cluster.spec.paused && cas.next.is_some() => Rotation::TrustBoth,
            _ if cluster.spec.paused => Rotation::Idle,
            step => step,
        };
        if let Some(holder) = ca_holder {
            cas = rotate(&secrets, cluster, side, holder, cas, &step, now, done).await?;
        }
        let signer = match (&cas.next, &step) {
            (Some(next), Rotation::SignWithNext) => next,
            _ => &cas.current,
        };
        for (wanted, existing) in leaves {
            issue_if_due(&secrets, cluster, &cas, signer, wanted, existing, duration, now, done).await?;
        }
    }
    Ok(())
}

/// The trust of each member pod of `cluster` ([`Trust::of_pod`]; `None` for a pod that does not say).
async fn member_trust(client: &kube::Client, cluster: &EtcdCluster) -> Result<Vec<Option<Trust>>, String> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let selector = format!("{}={},{}", crate::labels::CLUSTER_LABEL, cluster.name_any(), crate::labels::MEMBER_LABEL);
    let listed = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(kube_says("listing the member pods".into()))?;
    Ok(listed.items.iter().map(Trust::of_pod).collect())
}

/// A generated CA, and its successor while it is rotated.
#[derive(Clone, Debug)]
struct Cas {
    current: Issued,
    next: Option<Issued>,
}

impl Cas {
    /// The `ca.crt` of the certificates they sign: both CAs while rotating.
    fn bundle(&self) -> String {
        let mut bundle = self.current.cert_pem.clone();
        if let Some(next) = &self.next {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(&next.cert_pem);
        }
        bundle
    }

    /// The keys of both ([`tls::ca_keys`]).
    fn keys(&self) -> BTreeSet<String> {
        tls::ca_keys(self.bundle().as_bytes())
    }
}

/// The key of a CA ([`tls::ca_keys`]).
fn key_of(ca: &Issued) -> String {
    tls::ca_keys(ca.cert_pem.as_bytes()).into_iter().next().unwrap_or_default()
}

/// A generated certificate as its Secret holds it, as far as a CA's rotation is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leaf {
    /// The CA it chains to, when it can be used.
    signer: Option<String>,
    /// The CA keys of its Secret's `ca.crt`.
    bundle: BTreeSet<String>,
    /// When it was written (its validity's start, which is backdated).
    written: SystemTime,
}

impl Leaf {
    fn of(secret: Option<&Secret>, names: &[String], wanted: &Used, now: SystemTime) -> Self {
        let data = secret.map(bytes).unwrap_or_default();
        let checked = tls::check(&data, names, wanted.purpose.usage(), now).ok();
        Self {
            signer: checked.as_ref().map(|c| c.signer.clone()),
            bundle: data.get(CA_KEY).map(|ca| tls::ca_keys(ca)).unwrap_or_default(),
            written: checked.map_or(now, |c| c.not_before + tls::BACKDATE),
        }
    }
}

/// Where a generated CA's rotation is, and what comes next. A CA is changed in three steps, each carried to the
/// members before the next: its successor made and put next to it in every `ca.crt` (the members are restarted
/// by the rollout to trust both), then the certificates issued by the successor (served without a restart: both
/// sides trust it), then, once those reached the pods, the old CA dropped (restarted again).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rotation {
    /// None under way, and none due.
    Idle,
    /// Make the successor: asked for (the Secret's annotation), or a third of the CA's life left.
    Start,
    /// Certificates from the current CA with both CAs in `ca.crt`, until every member trusts the successor.
    TrustBoth,
    /// Every member trusts both: certificates from the successor.
    SignWithNext,
    /// Every certificate is the successor's and reached the pods: it becomes the CA, the old one is dropped.
    Finish,
}

/// The step of a CA's rotation, from the CAs, whether one was asked for, the certificates it signs and what each
/// member pod trusts on that side (`None`: the pod does not say). Pure.
fn rotation(
    cas: &Cas,
    requested: bool,
    leaves: &[Leaf],
    running: &[Option<BTreeSet<String>>],
    propagation: Duration,
    now: SystemTime,
) -> Rotation {
    let Some(next) = &cas.next else {
        return if requested || renewal_due(cas.current.not_after, now, CA_VALIDITY) {
            Rotation::Start
        } else {
            Rotation::Idle
        };
    };
    let next_key = key_of(next);
    // A member pod that does not say what it trusts is taken as one that does not trust the successor yet.
    if !running.iter().all(|trusted| trusted.as_ref().is_some_and(|t| t.contains(&next_key))) {
        return Rotation::TrustBoth;
    }
    let keys = cas.keys();
    let moved = leaves.iter().all(|leaf| {
        leaf.signer.as_ref() == Some(&next_key) && leaf.bundle == keys && now >= leaf.written + propagation
    });
    if moved { Rotation::Finish } else { Rotation::SignWithNext }
}

/// Writes `holder` (the CA Secret) for `step`: the successor made, or made the CA. Returns the CAs from then on.
#[allow(clippy::too_many_arguments)]
async fn rotate(
    secrets: &Api<Secret>,
    cluster: &EtcdCluster,
    side: Side,
    holder: Secret,
    cas: Cas,
    step: &Rotation,
    now: SystemTime,
    done: &mut Vec<Issuance>,
) -> Result<Cas, String> {
    let ca_name = ca_secret(&cluster.name_any(), side);
    let (written, note) = match (step, &cas.next) {
        (Rotation::Start, None) => {
            let next = tls::new_ca(&cluster.namespace().unwrap_or_default(), &cluster.name_any(), now, CA_VALIDITY)
                .map_err(|e| e.to_string())?;
            let why = if holder.annotations().contains_key(ROTATE_ANNOTATION) {
                "asked for (annotation)".to_string()
            } else {
                format!("it ends at {}", rfc3339(cas.current.not_after))
            };
            let note = format!(
                "started rotating the CA ({why}): a new CA is trusted next to it, and the members are restarted one \
                 at a time to read both"
            );
            (Cas { current: cas.current, next: Some(next) }, note)
        }
        (Rotation::Finish, Some(next)) => (
            Cas { current: next.clone(), next: None },
            "finished rotating the CA: every certificate is the new CA's, the old CA is dropped (the members are \
             restarted one at a time to trust only the new one)"
                .to_string(),
        ),
        _ => return Ok(cas),
    };
    let mut data =
        vec![(CA_KEY, written.current.cert_pem.as_str()), (CA_PRIVATE_KEY, written.current.key_pem.as_str())];
    if let Some(next) = &written.next {
        data.extend([(NEXT_CA_KEY, next.cert_pem.as_str()), (NEXT_PRIVATE_KEY, next.key_pem.as_str())]);
    }
    let mut secret = secret_of(cluster, &ca_name, "Opaque", &data);
    // Its labels and annotations kept (the request for a rotation taken as done); replaced only as read: a write in
    // between makes this one fail, and the next reconcile looks again.
    let mut metadata = holder.metadata;
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.remove(ROTATE_ANNOTATION);
    }
    let mut labels = metadata.labels.take().unwrap_or_default();
    labels.extend(secret.metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    secret.metadata = metadata;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    secrets.replace(&ca_name, &params, &secret).await.map_err(kube_says(format!("writing Secret {ca_name}")))?;
    tracing::info!(secret = %ca_name, %note, "CA rotation");
    done.push(Issuance::Rotation { secret: ca_name, note });
    Ok(written)
}

/// Which of the cluster's two CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Signs the members' peer certificates only.
    Peer,
    /// Signs the serving certificates and every client certificate.
    Client,
}

impl Side {
    /// As status names its CA.
    pub fn purpose(self) -> &'static str {
        match self {
            Side::Peer => "peer-ca",
            Side::Client => "client-ca",
        }
    }

    fn signs(self, purpose: Purpose) -> bool {
        (purpose == Purpose::Peer) == (self == Side::Peer)
    }

    /// What a member trusts on this side.
    fn of(self, trust: &Trust) -> &BTreeSet<String> {
        match self {
            Side::Peer => &trust.peer,
            Side::Client => &trust.client,
        }
    }
}

/// The Secret of the CA the controller generates for `cluster`'s `side`.
pub fn ca_secret(cluster: &str, side: Side) -> String {
    match side {
        Side::Peer => format!("{cluster}-tls-peer-ca"),
        Side::Client => format!("{cluster}-tls-client-ca"),
    }
}

fn kube_says(op: String) -> impl FnOnce(kube::Error) -> String {
    move |e| format!("{op}: {e}")
}

/// The CAs of `side` (with the Secret that holds them, `None` when it was made just now), made when the cluster
/// has none and no certificate of that side yet.
async fn the_ca(
    secrets: &Api<Secret>,
    cluster: &EtcdCluster,
    side: Side,
    generated: &[Used],
    now: SystemTime,
    done: &mut Vec<Issuance>,
) -> Result<(Option<Secret>, Cas), String> {
    let name = cluster.name_any();
    let ca_name = ca_secret(&name, side);
    match secrets.get_opt(&ca_name).await.map_err(kube_says(format!("reading Secret {ca_name}")))? {
        Some(secret) if ours(&secret, cluster) => {
            // A CA that cannot be read is never replaced behind the members' backs: every certificate they
            // trust would change at once.
            let current = ca_in(&secret).ok_or_else(|| {
                format!("Secret {ca_name} (the cluster's CA) cannot be read: nothing is issued or renewed until it is restored")
            })?;
            let next = match bytes(&secret).contains_key(NEXT_CA_KEY) {
                true => Some(next_ca_in(&secret).ok_or_else(|| {
                    format!(
                        "Secret {ca_name} holds a successor CA ({NEXT_CA_KEY}, {NEXT_PRIVATE_KEY}) that cannot be read: \
                         the CA's rotation and renewals wait until it is restored"
                    )
                })?),
                false => None,
            };
            Ok((Some(secret), Cas { current, next }))
        }
        Some(_) => Err(format!(
            "Secret {ca_name} is not this cluster's: the controller does not use it as the cluster's CA, and issues \
             nothing (delete it if it is left from elsewhere)"
        )),
        None => {
            // A new CA only for a cluster that has no generated certificate of that side yet. Leaves signed by a CA
            // that is gone keep working; a new CA now would give each member, as the kubelet updates its files, a
            // certificate its peers do not trust (etcd reads its CA bundle only when it starts).
            for wanted in generated {
                let existing = secrets
                    .get_opt(&wanted.secret)
                    .await
                    .map_err(kube_says(format!("reading Secret {}", wanted.secret)))?;
                if existing.is_some_and(|s| ours(&s, cluster)) {
                    return Err(format!(
                        "Secret {ca_name} (the cluster's CA) is gone while certificates it signed are in use: no new \
                         CA is made behind the members' backs, and nothing is renewed until it is restored"
                    ));
                }
            }
            let ca = tls::new_ca(&cluster.namespace().unwrap_or_default(), &name, now, CA_VALIDITY)
                .map_err(|e| e.to_string())?;
            let secret =
                secret_of(cluster, &ca_name, "Opaque", &[(CA_KEY, &ca.cert_pem), (CA_PRIVATE_KEY, &ca.key_pem)]);
            // Created, never applied over: a Secret someone made under that name a moment ago is not overwritten.
            secrets
                .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &secret)
                .await
                .map_err(kube_says(format!("creating Secret {ca_name}")))?;
            done.push(Issuance::NewCa(ca_name));
            Ok((None, Cas { current: ca, next: None }))
        }
    }
}

/// What a generated certificate's Secret needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    /// Nothing.
    Nothing,
    /// A new certificate from the signing CA, for this reason.
    Issue(String),
    /// The same certificate with the CAs' bundle as its `ca.crt`, for this reason.
    Bundle(String),
}

/// What the Secret `data` of a generated certificate for `names` needs, with `cas` the cluster's CAs of its side
/// and `signer` the one that signs now. Pure.
fn need(
    data: Option<&BTreeMap<String, Vec<u8>>>,
    names: &[String],
    usage: Usage,
    cas: &Cas,
    signer: &Issued,
    duration: Duration,
    now: SystemTime,
) -> Need {
    let Some(data) = data else { return Need::Issue("it did not exist".into()) };
    let checked = match tls::check(data, names, usage, now) {
        Err(problems) => return Need::Issue(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
        Ok(checked) => checked,
    };
    let bundled = data.get(CA_KEY).is_some_and(|ca| tls::ca_keys(ca) == cas.keys());
    if !cas.keys().contains(&checked.signer) {
        // Still good, from another CA (the CA Secret was replaced): issuing from the new one now would split the
        // members' trust. Left as it is; putting another CA in place is a person's decision.
        return Need::Nothing;
    }
    // Moved to the successor once every member trusts it; never moved back (a rotation held back keeps
    // certificates of either CA).
    let forward = cas.next.as_ref().is_some_and(|next| key_of(next) == key_of(signer));
    if forward && checked.signer == key_of(&cas.current) {
        return Need::Issue("the CA is rotated: a certificate of the new CA, which every member trusts now".into());
    }
    if !bundled {
        return Need::Bundle(if cas.next.is_some() {
            "the CA is rotated: its ca.crt holds the new CA next to the old one".into()
        } else {
            "the CA is rotated: its ca.crt holds only the new CA".into()
        });
    }
    // Never past the CA's own end: in the CA's last stretch a new certificate would end where this one does, so it
    // is not issued again at every reconcile.
    if checked.not_after + Duration::from_secs(60) >= signer.not_after {
        return Need::Nothing;
    }
    if renewal_due(checked.not_after, now, duration) {
        return Need::Issue(format!("it expires at {}", rfc3339(checked.not_after)));
    }
    Need::Nothing
}

/// Issues `wanted`'s certificate from `signer` when its Secret (`existing`) is missing, unusable, due for renewal
/// or of the CA a rotation moves from, or writes its `ca.crt` again when a rotation changed the bundle.
#[allow(clippy::too_many_arguments)]
async fn issue_if_due(
    secrets: &Api<Secret>,
    cluster: &EtcdCluster,
    cas: &Cas,
    signer: &Issued,
    wanted: Used,
    existing: Option<Secret>,
    duration: Duration,
    now: SystemTime,
    done: &mut Vec<Issuance>,
) -> Result<(), String> {
    let name = cluster.name_any();
    let names = names_for(cluster, wanted.purpose);
    if existing.as_ref().is_some_and(|s| !ours(s, cluster)) {
        return Ok(());
    }
    let data = existing.as_ref().map(bytes);
    let bundle = cas.bundle();
    let (cert_pem, key_pem, not_after, why) =
        match need(data.as_ref(), &names, wanted.purpose.usage(), cas, signer, duration, now) {
            Need::Nothing => return Ok(()),
            Need::Bundle(why) => {
                let data = data.unwrap_or_default();
                let text = |key: &str| String::from_utf8_lossy(data.get(key).map_or(&[][..], |v| v)).into_owned();
                (text(CERT_KEY), text(KEY_KEY), None, why)
            }
            Need::Issue(why) => {
                let common_name = match wanted.purpose {
                    Purpose::Peer | Purpose::Server => format!("{name} member"),
                    Purpose::Operator => "kube-etcd-controller".to_string(),
                    Purpose::Application => format!("{name} application"),
                    Purpose::Backup => format!("{name} backup"),
                };
                let issued = tls::issue(signer, &common_name, &names, wanted.purpose.usage(), now, duration)
                    .map_err(|e| format!("issuing the certificate of Secret {}: {e}", wanted.secret))?;
                (issued.cert_pem, issued.key_pem, Some(issued.not_after), why)
            }
        };
    let mut secret = secret_of(
        cluster,
        &wanted.secret,
        "kubernetes.io/tls",
        &[(CERT_KEY, &cert_pem), (KEY_KEY, &key_pem), (CA_KEY, &bundle)],
    );
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match existing {
        // Created, never applied over a Secret someone made under that name a moment ago.
        None => secrets.create(&params, &secret).await,
        // Replaced only as read: a write in between makes this one fail, and the next reconcile looks again.
        Some(current) => {
            secret.metadata.resource_version = current.metadata.resource_version;
            secrets.replace(&wanted.secret, &params, &secret).await
        }
    }
    .map_err(kube_says(format!("writing Secret {}", wanted.secret)))?;
    match not_after {
        Some(until) => {
            tracing::info!(secret = %wanted.secret, %why, not_after = %rfc3339(until), "issued a certificate")
        }
        None => tracing::info!(secret = %wanted.secret, %why, "wrote a certificate's CA bundle"),
    }
    done.push(Issuance::Issued { secret: wanted.secret, why });
    Ok(())
}

fn rfc3339(at: SystemTime) -> String {
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(i64::MAX))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| seconds.to_string())
}

/// What [`observe`] found: each certificate's state, and how the controller dials the members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Each certificate the cluster uses, with its problem if it has one.
    pub certificates: Vec<CertificateStatus>,
    /// The controller's client TLS, when client TLS is on and its certificates can be used.
    pub identity: Option<ClientIdentity>,
    /// What a member created now trusts: the CAs of the `ca.crt` of the peer and serving Secrets.
    pub trust: Trust,
}

/// Reads and checks every Secret `cluster`'s TLS uses, at `now`, for members that run trusting `running` (each
/// member pod's [`Trust`], by member name).
pub async fn observe(
    client: &kube::Client,
    cluster: &EtcdCluster,
    running: &[(String, Trust)],
    now: SystemTime,
) -> Result<Seen, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let mut read = BTreeMap::new();
    let generated_cas = [Side::Peer, Side::Client]
        .into_iter()
        .filter(|side| used(cluster).iter().any(|u| u.generated && side.signs(u.purpose)))
        .map(|side| ca_secret(&cluster.name_any(), side));
    for name in used(cluster).into_iter().map(|u| u.secret).chain(generated_cas) {
        let secret = secrets.get_opt(&name).await?;
        read.insert(name, secret);
    }
    Ok(judge(cluster, &read, running, now))
}

/// [`observe`]'s judgement of the Secrets read (by name; `None` for one that does not exist), for members that run
/// trusting `running`. Pure.
pub fn judge(
    cluster: &EtcdCluster,
    read: &BTreeMap<String, Option<Secret>>,
    running: &[(String, Trust)],
    now: SystemTime,
) -> Seen {
    let mut certificates = Vec::new();
    let duration_problem = policy(cluster).and_then(|t| duration(&t).err());
    let all = used(cluster);
    let server_ca = all
        .iter()
        .find(|u| u.purpose == Purpose::Server)
        .and_then(|u| read.get(&u.secret)?.as_ref())
        .and_then(|s| bytes(s).get(CA_KEY).cloned());
    let bundle_of = |purpose: Purpose| {
        let secret = all.iter().find(|u| u.purpose == purpose).and_then(|u| read.get(&u.secret)?.as_ref());
        secret.and_then(|s| bytes(s).get(CA_KEY).cloned()).unwrap_or_default()
    };
    // Members read the client CA bundle only while they serve TLS: while client TLS is turned off, a member is
    // rendered trusting none (so its trust does not change once the serving Secret is no longer used).
    let served_bundle = bundle_of(Purpose::Server);
    let client_bundle = if cluster.spec.client_tls() { served_bundle.clone() } else { Vec::new() };
    let peer_bundle = bundle_of(Purpose::Peer);

    let trust = Trust {
        peer: tls::ca_keys(&peer_bundle),
        client: tls::ca_keys(&client_bundle),
        certificates: format!("{}{}", tls::bundle_digest(&peer_bundle), tls::bundle_digest(&client_bundle)),
        bundles: Bundles {
            peer: String::from_utf8_lossy(&peer_bundle).into_owned(),
            client: String::from_utf8_lossy(&client_bundle).into_owned(),
        },
    };
    // What the members serving TLS are restarted to trust on their client port: the serving Secret's bundle, also
    // while client TLS is turned off (a member rolled to serve plain trusts none, and checks no certificate).
    let served_trust = Trust { client: tls::ca_keys(&served_bundle), ..trust.clone() };
    // Other Secrets the spec asks for mid-turn-off: problems of the members' certificates ([`moved`]).
    let moved = moved(cluster);
    let mut identity = None;
    for used in &all {
        let mut status = CertificateStatus {
            purpose: used.purpose.as_str().into(),
            secret: used.secret.clone(),
            generated: used.generated,
            ..Default::default()
        };
        let secret = read.get(&used.secret).cloned().flatten();
        status.problem = match (&secret, &duration_problem) {
            (_, Some(problem)) if used.generated => Some(problem.clone()),
            (None, _) if used.generated => Some("not issued yet".into()),
            (None, _) => Some(format!("Secret {} does not exist", used.secret)),
            (Some(secret), _) if used.generated && !ours(secret, cluster) => Some(format!(
                "Secret {} exists and is not this cluster's: the controller does not overwrite it (delete it, or \
                 choose another name)",
                used.secret
            )),
            (Some(secret), _) => {
                let mut data = bytes(secret);
                // A client certificate must chain to what the members trust: the serving Secret's CA bundle.
                if matches!(used.purpose, Purpose::Operator | Purpose::Application)
                    && let Some(ca) = &server_ca
                {
                    data.insert(CA_KEY.into(), ca.clone());
                }
                // A member refuses a certificate of a CA it did not trust when it started: the peers' (peer
                // port), the controller's (client port). Whether the members can be restarted to the trust of the
                // Secrets now, with the certificates the Secrets hold now.
                let of = |side: fn(&Trust) -> &BTreeSet<String>| {
                    (side(&served_trust), running.iter().map(|(m, t)| (m.clone(), side(t).clone())).collect::<Vec<_>>())
                };
                let side = match used.purpose {
                    Purpose::Peer => Some(of(|t| &t.peer)),
                    Purpose::Operator => Some(of(|t| &t.client)),
                    Purpose::Server | Purpose::Application | Purpose::Backup => None,
                };
                let refused_by = |signer: &str| match &side {
                    Some((bundle, running)) => {
                        untrusting(bundle, signer, running).into_iter().map(String::from).collect::<Vec<_>>()
                    }
                    None => Vec::new(),
                };
                match tls::check(&data, &names_for(cluster, used.purpose), used.purpose.usage(), now) {
                    Ok(checked) => {
                        status.subject = Some(checked.subject);
                        status.not_after = Some(time(checked.not_after));
                        if used.purpose == Purpose::Operator
                            && let Some(ca) = &server_ca
                        {
                            identity = Some(ClientIdentity {
                                ca_pem: ca.clone(),
                                cert_pem: data.get(CERT_KEY).cloned().unwrap_or_default(),
                                key_pem: data.get(KEY_KEY).cloned().unwrap_or_default(),
                                server_name: client_server_name(cluster),
                            });
                        }
                        let members = refused_by(&checked.signer);
                        let refused = match used.purpose {
                            Purpose::Operator => "they would refuse the controller and the backup sidecar",
                            _ => "members would refuse each other",
                        };
                        (!members.is_empty()).then(|| {
                            format!(
                                "it is signed by a CA that {} did not trust when they started, and ca.crt no longer \
                                 holds every CA they trust: restarted, {refused}, so nothing is restarted. Running \
                                 members never read ca.crt again but read this certificate on each new connection: \
                                 put back certificates of a CA they trust (both CAs in ca.crt), then change the CA in \
                                 three steps: both CAs in ca.crt (the members are restarted one at a time to trust \
                                 both), then certificates of the new CA, then the old CA out of ca.crt",
                                members.join(", ")
                            )
                        })
                    }
                    Err(problems) => Some(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
                }
            }
        };
        let asked: Vec<String> = moved.iter().filter(|(p, _)| *p == used.purpose).map(|(_, m)| m.clone()).collect();
        if !asked.is_empty() {
            status.problem = Some(status.problem.into_iter().chain(asked).collect::<Vec<_>>().join("; "));
        }
        if status.problem.is_some() {
            status.problem =
                status.problem.map(|p| format!("{} certificate ({}): {p}", used.purpose.as_str(), used.secret));
        }
        certificates.push(status);
    }
    // The generated CAs: their end, and any trouble that stops renewals (which holds nothing else up).
    for side in [Side::Peer, Side::Client] {
        let leaves: Vec<&Used> = all.iter().filter(|u| u.generated && side.signs(u.purpose)).collect();
        if leaves.is_empty() {
            continue;
        }
        let secret = ca_secret(&cluster.name_any(), side);
        let mut status = CertificateStatus {
            purpose: side.purpose().into(),
            secret: secret.clone(),
            generated: true,
            ..Default::default()
        };
        let in_use = leaves.iter().any(|u| read.get(&u.secret).cloned().flatten().is_some_and(|s| ours(&s, cluster)));
        let problem = match read.get(&secret).cloned().flatten() {
            None if in_use => Some(
                "the Secret is gone while certificates it signed are in use: nothing is renewed until it is restored"
                    .to_string(),
            ),
            None => Some("not made yet".to_string()),
            Some(found) if !ours(&found, cluster) => Some(
                "the Secret is not this cluster's: nothing is issued from it (delete it if it is left from elsewhere)"
                    .into(),
            ),
            Some(found) => match ca_in(&found) {
                Some(ca) => {
                    status.not_after = Some(time(ca.not_after));
                    None
                }
                None => Some("the Secret cannot be read as a CA: nothing is renewed until it is restored".into()),
            },
        };
        status.problem = problem.map(|p| format!("{} ({secret}): {p}", side.purpose()));
        certificates.push(status);
        // While the CA is rotated, its successor too.
        if let Some(next) =
            read.get(&secret).cloned().flatten().filter(|s| ours(s, cluster)).as_ref().and_then(next_ca_in)
        {
            certificates.push(CertificateStatus {
                purpose: format!("{}-next", side.purpose()),
                secret: secret.clone(),
                generated: true,
                not_after: Some(time(next.not_after)),
                ..Default::default()
            });
        }
    }
    Seen { certificates, identity, trust }
}

/// Whether a problem of a certificate of this purpose (as status names it) holds the cluster's steps up: the
/// members' and the controller's own do; an application's, and a CA's (which only stops renewals), do not.
pub fn holds_up(purpose: &str) -> bool {
    [Purpose::Peer, Purpose::Server, Purpose::Operator].iter().any(|p| p.as_str() == purpose)
}

/// The name the controller checks the members' serving certificates against: the client Service's `.svc` name.
pub fn client_server_name(cluster: &EtcdCluster) -> String {
    format!("{}.{}.svc", client_service_name(&cluster.name_any()), cluster.namespace().unwrap_or_default())
}

fn time(at: SystemTime) -> Time {
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    Time(k8s_openapi::jiff::Timestamp::from_second(i64::try_from(seconds).unwrap_or(0)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster;

    const HOUR: Duration = Duration::from_secs(3600);

    fn tls_cluster(tls: serde_json::Value) -> EtcdCluster {
        let mut c = cluster("demo", 3);
        c.spec.tls = Some(serde_json::from_value(tls).unwrap());
        c
    }

    fn generated() -> EtcdCluster {
        tls_cluster(serde_json::json!({ "peer": {}, "client": { "applicationSecretName": "demo-app" } }))
    }

    #[test]
    fn tls_turned_off_keeps_its_certificates_until_no_member_needs_them() {
        let mut c = tls_cluster(serde_json::json!({
            "peer": { "secretName": "peers" },
            "client": {},
            "clusterDomain": "corp.example",
            "certificateDuration": "720h",
        }));
        c.spec.backup = Some(
            serde_json::from_value(serde_json::json!({ "storage": { "pvc": { "claimName": "backups" } } })).unwrap(),
        );
        let before = used(&c);
        let https = ["https://demo-0000.demo.ns.svc:2380".to_string(), "http://demo-0001.demo.ns.svc:2382".into()];
        let plain = ["http://demo-0000.demo.ns.svc:2382".to_string(), "http://demo-0001.demo.ns.svc:2382".into()];
        // Written while TLS is on: what the spec has.
        let in_use = still_in_use(&c, Some(&https), 3).expect("TLS in use");
        assert_eq!(still_in_use(&c, Some(&plain), 0), Some(in_use.clone()), "asked for: kept whatever runs");
        assert_eq!(in_use.cluster_domain, "corp.example");
        // The spec drops all of TLS: the same Secrets are used, with the same names to cover, while members need them.
        c.spec.tls = None;
        assert!(used(&c).is_empty(), "no status: nothing kept");
        c.status = Some(proto::cluster::EtcdClusterStatus { tls: Some(in_use.clone()), ..Default::default() });
        assert_eq!(used(&c), before);
        assert!(names_for(&c, Purpose::Peer).iter().any(|n| n.ends_with(".svc.corp.example")));
        assert_eq!(policy(&c).and_then(|p| p.certificate_duration).as_deref(), Some("720h"));
        // Peer: kept while any member is registered https, or etcd cannot be asked; client: while a pod serves TLS.
        assert_eq!(still_in_use(&c, Some(&https), 1), Some(in_use.clone()));
        assert_eq!(still_in_use(&c, None, 1), Some(in_use.clone()));
        let peer_gone = still_in_use(&c, Some(&plain), 1).expect("client TLS still served");
        assert_eq!((peer_gone.peer, peer_gone.client), (None, in_use.client.clone()));
        let client_gone = still_in_use(&c, Some(&https), 0).expect("peers still registered https");
        assert_eq!((client_gone.peer, client_gone.client), (in_use.peer.clone(), None));
        assert_eq!(still_in_use(&c, Some(&plain), 0), None);
        // Only the part the spec dropped goes: client TLS kept on, peer TLS off.
        c.spec.tls =
            Some(serde_json::from_value(serde_json::json!({ "client": {}, "clusterDomain": "corp.example" })).unwrap());
        assert_eq!(used(&c), before);
        let left = still_in_use(&c, Some(&plain), 0).expect("client TLS asked for");
        assert_eq!((left.peer, left.client), (None, in_use.client.clone()));
    }

    #[test]
    fn members_rolled_to_serve_plain_do_not_make_the_controllers_certificate_refused() {
        let now = SystemTime::now();
        let mut c = generated();
        let (ca, read) = issued_all(&c, now);
        let in_use = still_in_use(&c, None, 3).unwrap();
        c.spec.tls = None;
        c.status = Some(proto::cluster::EtcdClusterStatus { tls: Some(in_use), ..Default::default() });
        // One member rolled to serve plain (it trusts no client CA), two still serving TLS and trusting the CA.
        let key = tls::ca_keys(ca.cert_pem.as_bytes());
        let serving = Trust { peer: key.clone(), client: key.clone(), ..Default::default() };
        let rolled = Trust { peer: key, ..Default::default() };
        let running =
            [("demo-0000".to_string(), serving.clone()), ("demo-0001".into(), rolled), ("demo-0002".into(), serving)];
        let seen = judge(&c, &read, &running, now);
        let problems: Vec<_> = seen.certificates.iter().filter_map(|c| c.problem.clone()).collect();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(seen.identity.is_some(), "the controller still dials the members that serve TLS");
        assert!(seen.trust.client.is_empty(), "a member rendered now trusts no client CA");
    }

    #[test]
    fn other_secrets_asked_for_before_a_turn_off_is_done_are_refused_and_the_members_keep_theirs() {
        let now = SystemTime::now();
        let mut c = tls_cluster(serde_json::json!({ "peer": {}, "client": {} }));
        let in_use = still_in_use(&c, None, 3).unwrap();
        c.status = Some(proto::cluster::EtcdClusterStatus { tls: Some(in_use), ..Default::default() });
        let before = used(&c);
        assert!(moved(&c).is_empty(), "what runs is what is asked");
        // Peer TLS removed, and added back with a Secret of the user's before the members were all plain.
        c.spec.tls = Some(
            serde_json::from_value(serde_json::json!({ "peer": { "secretName": "mine" }, "client": {} })).unwrap(),
        );
        assert_eq!(used(&c), before, "the members keep the Secrets they use");
        let (_, read) = issued_all(&c, now);
        let seen = judge(&c, &read, &[], now);
        let peer = seen.certificates.iter().find(|s| s.purpose == "peer").unwrap();
        let problem = peer.problem.clone().unwrap_or_default();
        assert!(problem.contains("asks for mine while the members still use generated certificates"), "{problem}");
        assert!(holds_up(&peer.purpose), "nothing rolls meanwhile");
        // The backup sidecar's Secret may change; the cluster domain may not.
        c.spec.tls = Some(
            serde_json::from_value(serde_json::json!({ "peer": {}, "client": { "backupSecretName": "b" } })).unwrap(),
        );
        assert!(moved(&c).is_empty());
        c.spec.tls = Some(
            serde_json::from_value(serde_json::json!({ "peer": {}, "client": {}, "clusterDomain": "corp.example" }))
                .unwrap(),
        );
        assert_eq!(moved(&c).len(), 1);
        assert!(
            names_for(&c, Purpose::Peer).iter().any(|n| n.ends_with(".svc.cluster.local")),
            "the members' domain kept"
        );
    }

    #[test]
    fn a_status_of_an_earlier_build_keeps_the_certificates_it_lists() {
        let mut c = tls_cluster(serde_json::json!({
            "client": { "secretName": "srv", "operatorSecretName": "op" },
            "peer": {},
        }));
        let listed: Vec<CertificateStatus> = used(&c)
            .into_iter()
            .map(|u| CertificateStatus {
                purpose: u.purpose.as_str().into(),
                secret: u.secret,
                generated: u.generated,
                ..Default::default()
            })
            .collect();
        let before = used(&c);
        c.spec.tls = None;
        c.status = Some(proto::cluster::EtcdClusterStatus { certificates: listed, ..Default::default() });
        assert_eq!(used(&c), before, "the generated peer Secret and the user's client Secrets");
    }

    fn owned(c: &EtcdCluster, name: &str, data: [(&str, &str); 3]) -> Secret {
        secret_of(c, name, "kubernetes.io/tls", &data)
    }

    /// The Secrets `ensure` would write for `c` at `now`, signed by one CA.
    fn issued_all(c: &EtcdCluster, now: SystemTime) -> (Issued, BTreeMap<String, Option<Secret>>) {
        let ca = tls::new_ca("ns", "demo", now, CA_VALIDITY).unwrap();
        let mut read = BTreeMap::new();
        for used in used(c) {
            let leaf =
                tls::issue(&ca, "x", &names_for(c, used.purpose), used.purpose.usage(), now, DEFAULT_DURATION).unwrap();
            let secret =
                owned(c, &used.secret, [(CERT_KEY, &leaf.cert_pem), (KEY_KEY, &leaf.key_pem), (CA_KEY, &ca.cert_pem)]);
            read.insert(used.secret, Some(secret));
        }
        for side in [Side::Peer, Side::Client] {
            let name = ca_secret("demo", side);
            let secret = secret_of(c, &name, "Opaque", &[(CA_KEY, &ca.cert_pem), (CA_PRIVATE_KEY, &ca.key_pem)]);
            read.insert(name, Some(secret));
        }
        (ca, read)
    }

    #[test]
    fn a_cluster_uses_the_secrets_its_spec_names_or_generated_ones() {
        let names =
            |c: &EtcdCluster| used(c).into_iter().map(|u| (u.purpose, u.secret, u.generated)).collect::<Vec<_>>();
        assert_eq!(names(&cluster("demo", 3)), vec![], "no TLS, no Secrets");
        assert_eq!(
            names(&generated()),
            vec![
                (Purpose::Peer, "demo-tls-peer".into(), true),
                (Purpose::Server, "demo-tls-server".into(), true),
                (Purpose::Operator, "demo-tls-operator".into(), true),
                (Purpose::Application, "demo-app".into(), true),
            ]
        );
        let given = tls_cluster(serde_json::json!({
            "client": { "secretName": "mine", "operatorSecretName": "mine-client" }
        }));
        assert_eq!(
            names(&given),
            vec![(Purpose::Server, "mine".into(), false), (Purpose::Operator, "mine-client".into(), false)]
        );
        // With backups, the sidecar's serving certificate too: generated, or the Secret named.
        let mut backed_up = generated();
        backed_up.spec.backup =
            Some(serde_json::from_value(serde_json::json!({ "storage": { "pvc": { "claimName": "b" } } })).unwrap());
        assert_eq!(names(&backed_up).last(), Some(&(Purpose::Backup, "demo-tls-backup".into(), true)));
        assert_eq!(backup_secret(&backed_up).as_deref(), Some("demo-tls-backup"));
        let mut given = given.clone();
        given.spec.backup = backed_up.spec.backup.clone();
        if let Some(client) = given.spec.tls.as_mut().and_then(|t| t.client.as_mut()) {
            client.backup_secret_name = Some("mine-backup".into());
        }
        assert_eq!(names(&given).last(), Some(&(Purpose::Backup, "mine-backup".into(), false)));
        let mut peer_only = backed_up.clone();
        peer_only.spec.tls.as_mut().unwrap().client = None;
        assert_eq!(backup_secret(&peer_only), None, "the sidecar speaks HTTPS only where clients speak TLS");
    }

    #[test]
    fn the_backup_certificate_covers_the_sidecar_service_and_is_checked_like_the_others() {
        let mut c = generated();
        c.spec.backup =
            Some(serde_json::from_value(serde_json::json!({ "storage": { "pvc": { "claimName": "b" } } })).unwrap());
        assert_eq!(
            names_for(&c, Purpose::Backup),
            [
                "demo-backup",
                "demo-backup.ns",
                "demo-backup.ns.svc",
                "demo-backup.ns.svc.cluster.local",
                "localhost",
                "127.0.0.1"
            ]
        );
        let now = SystemTime::now();
        let (ca, mut read) = issued_all(&c, now);
        let seen = judge(&c, &read, &[], now);
        let backup = seen.certificates.iter().find(|s| s.purpose == "backup").expect("in status");
        assert_eq!((backup.problem.as_ref(), backup.generated), (None, true));
        // One that does not cover the Service is refused in status; it holds no member step up.
        let wrong = tls::issue(&ca, "x", &["elsewhere".to_string()], Usage::Member, now, DEFAULT_DURATION).unwrap();
        let secret = owned(
            &c,
            "demo-tls-backup",
            [(CERT_KEY, &wrong.cert_pem), (KEY_KEY, &wrong.key_pem), (CA_KEY, &ca.cert_pem)],
        );
        read.insert("demo-tls-backup".into(), Some(secret));
        let seen = judge(&c, &read, &[], now);
        let backup = seen.certificates.iter().find(|s| s.purpose == "backup").unwrap();
        let problem = backup.problem.clone().expect("refused");
        assert!(problem.contains("demo-backup.ns.svc"), "{problem}");
        assert!(!holds_up("backup"), "a member's steps never wait for the sidecar's certificate");
    }

    #[test]
    fn generated_certificates_that_verify_give_the_controller_its_identity() {
        let c = generated();
        let now = SystemTime::now();
        let (ca, read) = issued_all(&c, now);
        let seen = judge(&c, &read, &[], now);
        assert!(seen.certificates.iter().all(|s| s.problem.is_none()), "{:?}", seen.certificates);
        let purposes: Vec<&str> = seen.certificates.iter().map(|s| s.purpose.as_str()).collect();
        assert_eq!(purposes, ["peer", "server", "operator", "application", "peer-ca", "client-ca"]);
        assert!(seen.certificates.iter().all(|s| s.not_after.is_some() && s.generated));
        let identity = seen.identity.expect("the operator certificate");
        assert_eq!(identity.ca_pem, ca.cert_pem.as_bytes());
        assert_eq!(identity.server_name, "demo-client.ns.svc");
    }

    #[test]
    fn each_bad_secret_is_reported_with_what_is_wrong_and_gives_no_identity() {
        let c = tls_cluster(serde_json::json!({
            "peer": { "secretName": "peer" },
            "client": { "secretName": "server", "operatorSecretName": "client" }
        }));
        let now = SystemTime::now();
        let ca = tls::new_ca("ns", "demo", now, CA_VALIDITY).unwrap();
        let other_ca = tls::new_ca("ns", "other", now, CA_VALIDITY).unwrap();
        let names = tls::member_names("demo", "ns", "demo-client", "cluster.local");
        // Peer: a certificate for another cluster's names.
        let wrong_names = tls::member_names("other", "ns", "other-client", "cluster.local");
        let peer = tls::issue(&ca, "p", &wrong_names.peer, Usage::Member, now, HOUR).unwrap();
        // Server: the key of another certificate.
        let server = tls::issue(&ca, "s", &names.server, Usage::Member, now, HOUR).unwrap();
        let stranger = tls::issue(&ca, "s", &names.server, Usage::Member, now, HOUR).unwrap();
        // Client: signed by a CA the members do not trust.
        let client = tls::issue(&other_ca, "c", &[], Usage::Client, now, HOUR).unwrap();
        let user = |name: &str, cert: &str, key: &str, ca: &str| {
            let mut secret = owned(&c, name, [(CERT_KEY, cert), (KEY_KEY, key), (CA_KEY, ca)]);
            secret.metadata.owner_references = None;
            (name.to_string(), Some(secret))
        };
        let read = BTreeMap::from([
            user("peer", &peer.cert_pem, &peer.key_pem, &ca.cert_pem),
            user("server", &server.cert_pem, &stranger.key_pem, &ca.cert_pem),
            user("client", &client.cert_pem, &client.key_pem, &other_ca.cert_pem),
        ]);
        let seen = judge(&c, &read, &[], now);
        let problem = |purpose: &str| {
            seen.certificates.iter().find(|s| s.purpose == purpose).and_then(|s| s.problem.clone()).unwrap_or_default()
        };
        assert!(problem("peer").contains("does not cover *.demo.ns.svc"), "{}", problem("peer"));
        assert!(problem("server").contains("tls.key is not the key"), "{}", problem("server"));
        assert!(problem("operator").contains("does not verify against ca.crt"), "{}", problem("operator"));
        assert!(seen.identity.is_none(), "no dial with a client certificate the members refuse");
        for status in &seen.certificates {
            let text = format!("{status:?}");
            assert!(!text.contains("PRIVATE KEY") && !text.contains(stranger.key_pem.lines().nth(1).unwrap()));
        }

        // Expired, and missing.
        let later = now + 2 * HOUR;
        let read =
            BTreeMap::from([user("peer", &peer.cert_pem, &peer.key_pem, &ca.cert_pem), ("server".to_string(), None)]);
        let seen = judge(&c, &read, &[], later);
        let problem = |purpose: &str| {
            seen.certificates.iter().find(|s| s.purpose == purpose).and_then(|s| s.problem.clone()).unwrap_or_default()
        };
        assert!(problem("peer").contains("expired"), "{}", problem("peer"));
        assert!(problem("server").contains("Secret server does not exist"), "{}", problem("server"));
    }

    #[test]
    fn a_generated_name_held_by_a_secret_of_someone_else_is_reported_not_taken() {
        let c = generated();
        let now = SystemTime::now();
        let (_, mut read) = issued_all(&c, now);
        if let Some(Some(secret)) = read.get_mut("demo-app") {
            secret.metadata.owner_references = None;
        }
        let seen = judge(&c, &read, &[], now);
        let app = seen.certificates.iter().find(|s| s.purpose == "application").unwrap();
        assert!(app.problem.as_deref().unwrap_or_default().contains("is not this cluster's"), "{app:?}");
        assert!(!ours(read["demo-app"].as_ref().unwrap(), &c), "ensure leaves it alone");
    }

    #[test]
    fn renewal_comes_when_a_third_is_left_and_short_durations_are_refused() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        assert!(!renewal_due(now + 61 * day, now, 90 * day));
        assert!(renewal_due(now + 30 * day, now, 90 * day));
        assert!(renewal_due(now - day, now, 90 * day), "an expired one");
        let mut policy: TlsPolicy = serde_json::from_value(serde_json::json!({ "peer": {} })).unwrap();
        assert_eq!(duration(&policy), Ok(DEFAULT_DURATION));
        policy.certificate_duration = Some("15m".into());
        assert_eq!(duration(&policy), Ok(Duration::from_secs(900)));
        policy.certificate_duration = Some("5m".into());
        assert!(duration(&policy).unwrap_err().contains("shorter than 10m"));
        let mut c = generated();
        c.spec.tls = Some(policy);
        let (_, read) = issued_all(&c, now);
        let seen = judge(&c, &read, &[], now);
        let leaves: Vec<_> = seen.certificates.iter().filter(|s| !s.purpose.ends_with("-ca")).collect();
        assert_eq!(leaves.len(), 1, "the peer certificate: {leaves:?}");
        assert!(leaves[0].problem.as_deref().is_some_and(|p| p.contains("shorter")), "{leaves:?}");
    }

    #[test]
    fn a_ca_gone_while_its_certificates_are_in_use_is_reported_and_holds_nothing_up() {
        let c = generated();
        let now = SystemTime::now();
        let (_, mut read) = issued_all(&c, now);
        read.insert(ca_secret("demo", Side::Client), None);
        let seen = judge(&c, &read, &[], now);
        let ca = seen.certificates.iter().find(|s| s.purpose == "client-ca").unwrap();
        let problem = ca.problem.clone().unwrap_or_default();
        assert!(problem.contains("gone while certificates it signed are in use"), "{problem}");
        assert!(!holds_up(&ca.purpose), "renewals stop; the members' certificates still work");
        let peer_ca = seen.certificates.iter().find(|s| s.purpose == "peer-ca").unwrap();
        assert!(peer_ca.problem.is_none() && peer_ca.not_after.is_some(), "{peer_ca:?}");
        assert!(seen.identity.is_some());
        for purpose in ["peer", "server", "operator"] {
            assert!(holds_up(purpose));
        }
        assert!(!holds_up("application"));
    }

    #[test]
    fn a_ca_changed_in_three_steps_is_rolled_and_one_switched_at_once_holds_everything_up() {
        let c = tls_cluster(serde_json::json!({
            "peer": { "secretName": "peer" },
            "client": { "secretName": "server", "operatorSecretName": "client" }
        }));
        let now = SystemTime::now();
        let (old, new) =
            (tls::new_ca("ns", "old", now, CA_VALIDITY).unwrap(), tls::new_ca("ns", "new", now, CA_VALIDITY).unwrap());
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        let names = tls::member_names("demo", "ns", "demo-client", "cluster.local");
        // The Secrets with certificates of `signer` and `bundle` as their ca.crt.
        let secrets = |signer: &Issued, bundle: &str| {
            let mut read = BTreeMap::new();
            for (name, for_names, usage) in [
                ("peer", &names.peer, Usage::Member),
                ("server", &names.server, Usage::Member),
                ("client", &vec![], Usage::Client),
            ] {
                let leaf = tls::issue(signer, name, for_names, usage, now, DEFAULT_DURATION).unwrap();
                let mut secret =
                    owned(&c, name, [(CERT_KEY, &leaf.cert_pem), (KEY_KEY, &leaf.key_pem), (CA_KEY, bundle)]);
                secret.metadata.owner_references = None;
                read.insert(name.to_string(), Some(secret));
            }
            read
        };
        let keys = |pem: &str| tls::ca_keys(pem.as_bytes());
        let trusting = |members: &[(&str, &str)]| {
            members
                .iter()
                .map(|(m, pem)| (m.to_string(), Trust { peer: keys(pem), client: keys(pem), ..Default::default() }))
                .collect::<Vec<_>>()
        };
        let problems = |seen: &Seen| {
            seen.certificates.iter().filter_map(|s| Some((s.purpose.clone(), s.problem.clone()?))).collect::<Vec<_>>()
        };
        assert_eq!(keys(&both).len(), 2);
        assert!(keys(&both).is_superset(&keys(&old.cert_pem)));

        // 1. Both CAs in ca.crt, the certificates still the old CA's: what a member created now trusts changes
        //    (its pod renders it, so the rollout restarts the members), nothing is held up.
        let running = trusting(&[("m0", &old.cert_pem), ("m1", &old.cert_pem), ("m2", &old.cert_pem)]);
        let seen = judge(&c, &secrets(&old, &both), &running, now);
        assert_eq!(problems(&seen), vec![]);
        assert_eq!((&seen.trust.peer, &seen.trust.client), (&keys(&both), &keys(&both)));
        // 2. The new CA's certificates, even before every member was restarted: ca.crt still holds every CA the
        //    members trust, so restarting the rest refuses nothing.
        let half = trusting(&[("m0", &old.cert_pem), ("m1", &both), ("m2", &both)]);
        assert_eq!(problems(&judge(&c, &secrets(&new, &both), &half, now)), vec![]);
        // 3. The old CA out, once every member trusts the new one.
        let rolled = trusting(&[("m0", &both), ("m1", &both), ("m2", &both)]);
        let seen = judge(&c, &secrets(&new, &new.cert_pem), &rolled, now);
        assert_eq!(problems(&seen), vec![]);
        assert_eq!(seen.trust.peer, keys(&new.cert_pem));
        // The old CA out while a member still trusts only the old one: it would refuse the others.
        let seen = judge(&c, &secrets(&new, &new.cert_pem), &half, now);
        let found = problems(&seen);
        assert_eq!(found.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["peer", "operator"], "{found:?}");
        assert!(found.iter().all(|(_, p)| p.contains("signed by a CA that m0 did not trust")), "{found:?}");
        assert!(seen.identity.is_some(), "the controller still tries its certificate");
        // Both switched at once (the CA and the certificates): every member would refuse the others.
        let at_once = judge(&c, &secrets(&new, &new.cert_pem), &running, now);
        let found = problems(&at_once);
        assert!(
            found.iter().any(|(p, text)| p == "peer" && text.contains("m0, m1, m2") && text.contains("three steps"))
        );
        assert!(found.iter().all(|(p, _)| holds_up(p)), "nothing is restarted: {found:?}");
        // A cluster that never recorded trust (no running member) is judged by its Secrets alone.
        assert_eq!(problems(&judge(&c, &secrets(&new, &new.cert_pem), &[], now)), vec![]);
    }

    #[test]
    fn the_trust_a_pod_records_reads_back_and_a_plain_member_records_none() {
        let trust = Trust {
            peer: BTreeSet::from(["aa".into(), "bb".into()]),
            client: BTreeSet::from(["cc".into()]),
            certificates: "0123".into(),
            ..Default::default()
        };
        let c = generated();
        let value = trust.render(&c).unwrap();
        assert_eq!(value, "peer=aa,bb;client=cc;certificates=0123");
        let mut pod = k8s_openapi::api::core::v1::Pod::default();
        pod.metadata.annotations = Some(BTreeMap::from([(TRUSTED_CAS.to_string(), value)]));
        assert_eq!(Trust::of_pod(&pod), Some(trust.clone()));
        assert_eq!(trust.render(&cluster("demo", 3)), None, "no TLS, no annotation");
        let peer_only = tls_cluster(serde_json::json!({ "peer": {} }));
        assert_eq!(trust.render(&peer_only).as_deref(), Some("peer=aa,bb;certificates=0123"));
        assert_eq!(Trust::of_pod(&k8s_openapi::api::core::v1::Pod::default()), None);
    }

    #[test]
    fn a_generated_ca_is_rotated_in_three_steps_each_waiting_for_the_members() {
        const PROPAGATION: Duration = Duration::from_secs(120);
        let c = generated();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let (old, new) = (
            tls::new_ca("ns", "demo", now, CA_VALIDITY).unwrap(),
            tls::new_ca("ns", "demo", now, CA_VALIDITY).unwrap(),
        );
        let names = names_for(&c, Purpose::Peer);
        let peer = Used { purpose: Purpose::Peer, secret: "demo-tls-peer".into(), generated: true };
        let data = |signer: &Issued, bundle: &str, at: SystemTime| {
            let leaf = tls::issue(signer, "m", &names, Usage::Member, at, DEFAULT_DURATION).unwrap();
            BTreeMap::from([
                (CERT_KEY.to_string(), leaf.cert_pem.into_bytes()),
                (KEY_KEY.to_string(), leaf.key_pem.into_bytes()),
                (CA_KEY.to_string(), bundle.as_bytes().to_vec()),
            ])
        };
        let leaf = |data: &BTreeMap<String, Vec<u8>>, at: SystemTime| {
            let secret = Secret {
                data: Some(data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()),
                ..Default::default()
            };
            Leaf::of(Some(&secret), &names, &peer, at)
        };
        let need_at = |data: &BTreeMap<String, Vec<u8>>, cas: &Cas, signer: &Issued, at: SystemTime| {
            need(Some(data), &names, Usage::Member, cas, signer, DEFAULT_DURATION, at)
        };
        let keys = |pem: &str| tls::ca_keys(pem.as_bytes());
        let is_bundle = |n: &Need| matches!(n, Need::Bundle(_));
        let is_issue = |n: &Need| matches!(n, Need::Issue(_));

        // A young CA, nothing asked: nothing to do.
        let idle = Cas { current: old.clone(), next: None };
        let as_issued = data(&old, &old.cert_pem, now);
        assert_eq!(
            rotation(&idle, false, &[leaf(&as_issued, now)], &[Some(keys(&old.cert_pem))], PROPAGATION, now),
            Rotation::Idle
        );
        assert_eq!(need_at(&as_issued, &idle, &old, now), Need::Nothing);
        // Asked for, or a third of its life left: a successor is made.
        assert_eq!(rotation(&idle, true, &[], &[], PROPAGATION, now), Rotation::Start);
        assert_eq!(rotation(&idle, false, &[], &[], PROPAGATION, now + CA_VALIDITY * 2 / 3 + day), Rotation::Start);

        // 1. Both CAs in ca.crt, the certificate unchanged, until every member pod trusts both.
        let rotating = Cas { current: old.clone(), next: Some(new.clone()) };
        let expected: BTreeSet<String> = keys(&old.cert_pem).union(&keys(&new.cert_pem)).cloned().collect();
        assert_eq!(keys(&rotating.bundle()), expected);
        assert!(is_bundle(&need_at(&as_issued, &rotating, &old, now)));
        let both = data(&old, &rotating.bundle(), now);
        let half = [Some(keys(&rotating.bundle())), Some(keys(&old.cert_pem))];
        assert_eq!(rotation(&rotating, false, &[leaf(&both, now)], &half, PROPAGATION, now), Rotation::TrustBoth);
        assert_eq!(need_at(&both, &rotating, &old, now), Need::Nothing, "signed by the current CA meanwhile");
        // 2. Every member trusts both: certificates of the new CA.
        let trusting = [Some(keys(&rotating.bundle())), Some(keys(&rotating.bundle()))];
        assert_eq!(
            rotation(&rotating, false, &[leaf(&both, now)], &trusting, PROPAGATION, now),
            Rotation::SignWithNext
        );
        assert!(is_issue(&need_at(&both, &rotating, &new, now)));
        // 3. Once every certificate is the new CA's and had time to reach the pods: the old CA dropped.
        let switched = data(&new, &rotating.bundle(), now);
        let soon = now + Duration::from_secs(10);
        assert_eq!(
            rotation(&rotating, false, &[leaf(&switched, soon)], &trusting, PROPAGATION, soon),
            Rotation::SignWithNext
        );
        assert_eq!(need_at(&switched, &rotating, &new, soon), Need::Nothing);
        let later = now + PROPAGATION;
        assert_eq!(
            rotation(&rotating, false, &[leaf(&switched, later)], &trusting, PROPAGATION, later),
            Rotation::Finish
        );
        assert_eq!(
            rotation(&rotating, false, &[leaf(&switched, later), leaf(&both, later)], &trusting, PROPAGATION, later),
            Rotation::SignWithNext,
            "not while one certificate is still the old CA's"
        );
        let done = Cas { current: new.clone(), next: None };
        assert!(is_bundle(&need_at(&switched, &done, &new, later)), "ca.crt with the new CA alone");
        let finished = data(&new, &new.cert_pem, later);
        assert_eq!(need_at(&finished, &done, &new, later), Need::Nothing);
        assert_eq!(rotation(&done, false, &[leaf(&finished, later)], &trusting, PROPAGATION, later), Rotation::Idle);
        // A member pod that does not say what it trusts holds the switch back.
        let unknown = [Some(keys(&rotating.bundle())), None];
        assert_eq!(rotation(&rotating, false, &[leaf(&both, now)], &unknown, PROPAGATION, now), Rotation::TrustBoth);
        // Held back after the switch (a member that trusts only the old CA): certificates are never moved back.
        assert_eq!(need_at(&switched, &rotating, &old, soon), Need::Nothing);
        // A member created meanwhile with the old trust only holds the switch back again.
        assert_eq!(rotation(&rotating, false, &[leaf(&both, now)], &half, PROPAGATION, later), Rotation::TrustBoth);
        // A certificate of a CA that is neither: left alone.
        let stranger = tls::new_ca("ns", "other", now, CA_VALIDITY).unwrap();
        assert_eq!(need_at(&data(&stranger, &stranger.cert_pem, now), &rotating, &new, now), Need::Nothing);
    }

    #[test]
    fn a_pinned_bundle_is_deleted_only_when_it_is_the_clusters_and_no_pod_or_new_member_reads_it() {
        let c = generated();
        let map = |name: &str, owned: bool| {
            let mut map = k8s_openapi::api::core::v1::ConfigMap::default();
            map.metadata.name = Some(name.into());
            map.metadata.owner_references = owned.then(|| vec![owner(&c)]);
            map
        };
        let listed = [map("demo-trust-a", true), map("demo-trust-b", true), map("demo-trust-c", true)];
        let in_use = BTreeSet::from(["demo-trust-b".to_string()]);
        assert_eq!(unpinned(&c, &listed, "demo-trust-c", &in_use), ["demo-trust-a"]);
        // Each piece of evidence withheld: a pod reads it, new members get it, or it is not the cluster's.
        let all_read = BTreeSet::from(["demo-trust-a".to_string(), "demo-trust-b".to_string()]);
        assert!(unpinned(&c, &listed, "demo-trust-c", &all_read).is_empty());
        assert!(unpinned(&c, &listed[..1], "demo-trust-a", &BTreeSet::new()).is_empty());
        assert!(unpinned(&c, &[map("demo-trust-a", false)], "demo-trust-c", &BTreeSet::new()).is_empty());
    }
}
