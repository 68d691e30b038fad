//! The Secrets of a TLS cluster (`spec.tls`): which it uses, the ones the controller generates (a CA per cluster and
//! the certificates it signs), made when missing and renewed when a third of their life is left, and every one read
//! and checked ([`crate::tls::check`]) at each reconcile, before anything may be rolled onto it.
//!
//! Renewal writes the Secret's new contents only: the kubelet updates the files in the member pods (mounted as
//! whole directories), and etcd reads them on each new handshake, so nothing restarts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use proto::cluster::{CertificateStatus, EtcdCluster, TlsPolicy};

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
}

impl Purpose {
    /// As status names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Server => "server",
            Self::Operator => "operator",
            Self::Application => "application",
        }
    }

    fn usage(self) -> Usage {
        match self {
            Self::Peer | Self::Server => Usage::Member,
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

/// Every Secret `cluster`'s TLS uses, in a fixed order.
pub fn used(cluster: &EtcdCluster) -> Vec<Used> {
    let name = cluster.name_any();
    let Some(tls) = &cluster.spec.tls else { return Vec::new() };
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
    }
    used
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
        cluster.spec.tls.as_ref().map_or(proto::cluster::DEFAULT_CLUSTER_DOMAIN, |t| t.cluster_domain.as_str());
    let names = tls::member_names(&name, &namespace, &client_service_name(&name), domain);
    match purpose {
        Purpose::Peer => names.peer,
        Purpose::Server => names.server,
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
    /// A certificate was issued into a Secret (missing, unusable or due for renewal before).
    Issued {
        /// The Secret.
        secret: String,
        /// Why.
        why: String,
    },
}

/// Makes the generated Secrets of `cluster` that are missing, and issues a new certificate into each one that is
/// due for renewal or no longer usable. Peer certificates and client-side ones (serving, operator, application)
/// come from two CAs, so that no client certificate is ever taken as a peer's. Secrets of those names that are
/// not the cluster's are left alone (status says so). Nothing is done while `spec.tls.certificateDuration` cannot
/// be used. Every certificate it did issue is returned even when a later step fails.
pub async fn ensure(client: &kube::Client, cluster: &EtcdCluster) -> (Vec<Issuance>, Result<(), String>) {
    let mut done = Vec::new();
    let result = ensure_into(client, cluster, &mut done).await;
    (done, result)
}

async fn ensure_into(client: &kube::Client, cluster: &EtcdCluster, done: &mut Vec<Issuance>) -> Result<(), String> {
    let Some(policy) = &cluster.spec.tls else { return Ok(()) };
    let Ok(duration) = duration(policy) else { return Ok(()) };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let now = SystemTime::now();
    for side in [Side::Peer, Side::Client] {
        let generated: Vec<Used> = used(cluster).into_iter().filter(|u| u.generated && side.signs(u.purpose)).collect();
        if generated.is_empty() {
            continue;
        }
        let ca = the_ca(&secrets, cluster, side, &generated, now, done).await?;
        for wanted in generated {
            issue_if_due(&secrets, cluster, &ca, wanted, duration, now, done).await?;
        }
    }
    Ok(())
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

/// The CA of `side`, made when the cluster has none and no certificate of that side yet.
async fn the_ca(
    secrets: &Api<Secret>,
    cluster: &EtcdCluster,
    side: Side,
    generated: &[Used],
    now: SystemTime,
    done: &mut Vec<Issuance>,
) -> Result<Issued, String> {
    let name = cluster.name_any();
    let ca_name = ca_secret(&name, side);
    match secrets.get_opt(&ca_name).await.map_err(kube_says(format!("reading Secret {ca_name}")))? {
        Some(secret) if ours(&secret, cluster) => {
            // A CA that cannot be read is never replaced behind the members' backs: every certificate they
            // trust would change at once.
            ca_in(&secret).ok_or_else(|| {
                format!("Secret {ca_name} (the cluster's CA) cannot be read: nothing is issued or renewed until it is restored")
            })
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
            Ok(ca)
        }
    }
}

/// Issues `wanted`'s certificate from `ca` when its Secret is missing, unusable or due for renewal.
async fn issue_if_due(
    secrets: &Api<Secret>,
    cluster: &EtcdCluster,
    ca: &Issued,
    wanted: Used,
    duration: Duration,
    now: SystemTime,
    done: &mut Vec<Issuance>,
) -> Result<(), String> {
    let name = cluster.name_any();
    let names = names_for(cluster, wanted.purpose);
    let existing =
        secrets.get_opt(&wanted.secret).await.map_err(kube_says(format!("reading Secret {}", wanted.secret)))?;
    let why = match &existing {
        Some(secret) if !ours(secret, cluster) => return Ok(()),
        None => "it did not exist".to_string(),
        Some(secret) => {
            let data = bytes(secret);
            let same_ca = data.get(CA_KEY).is_some_and(|c| c == ca.cert_pem.as_bytes());
            match tls::check(&data, &names, wanted.purpose.usage(), now) {
                Err(problems) => problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                // Still good, from another CA (the CA Secret was replaced): issuing from the new one now would split
                // the members' trust. Left as it is; a CA rotation is a person's decision.
                Ok(_) if !same_ca => {
                    tracing::warn!(secret = %wanted.secret, "a certificate of another CA than the cluster's is left in place");
                    return Ok(());
                }
                // Never past the CA's own end: in the CA's last stretch a new certificate would end where this one
                // does, so it is not issued again at every reconcile.
                Ok(checked) if checked.not_after + Duration::from_secs(60) >= ca.not_after => return Ok(()),
                Ok(checked) if renewal_due(checked.not_after, now, duration) => {
                    format!("it expires at {}", rfc3339(checked.not_after))
                }
                Ok(_) => return Ok(()),
            }
        }
    };
    let common_name = match wanted.purpose {
        Purpose::Peer | Purpose::Server => format!("{name} member"),
        Purpose::Operator => "kube-etcd-controller".to_string(),
        Purpose::Application => format!("{name} application"),
    };
    let issued: Issued = tls::issue(ca, &common_name, &names, wanted.purpose.usage(), now, duration)
        .map_err(|e| format!("issuing the certificate of Secret {}: {e}", wanted.secret))?;
    let mut secret = secret_of(
        cluster,
        &wanted.secret,
        "kubernetes.io/tls",
        &[(CERT_KEY, &issued.cert_pem), (KEY_KEY, &issued.key_pem), (CA_KEY, &ca.cert_pem)],
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
    tracing::info!(secret = %wanted.secret, %why, not_after = %rfc3339(issued.not_after), "issued a certificate");
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
}

/// Reads and checks every Secret `cluster`'s TLS uses, at `now`.
pub async fn observe(client: &kube::Client, cluster: &EtcdCluster, now: SystemTime) -> Result<Seen, kube::Error> {
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
    Ok(judge(cluster, &read, now))
}

/// [`observe`]'s judgement of the Secrets read (by name; `None` for one that does not exist). Pure.
pub fn judge(cluster: &EtcdCluster, read: &BTreeMap<String, Option<Secret>>, now: SystemTime) -> Seen {
    let mut certificates = Vec::new();
    let duration_problem = cluster.spec.tls.as_ref().and_then(|t| duration(t).err());
    let all = used(cluster);
    let server_ca = all
        .iter()
        .find(|u| u.purpose == Purpose::Server)
        .and_then(|u| read.get(&u.secret)?.as_ref())
        .and_then(|s| bytes(s).get(CA_KEY).cloned());
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
                        None
                    }
                    Err(problems) => Some(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
                }
            }
        };
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
    }
    Seen { certificates, identity }
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
    }

    #[test]
    fn generated_certificates_that_verify_give_the_controller_its_identity() {
        let c = generated();
        let now = SystemTime::now();
        let (ca, read) = issued_all(&c, now);
        let seen = judge(&c, &read, now);
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
        let seen = judge(&c, &read, now);
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
        let seen = judge(&c, &read, later);
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
        let seen = judge(&c, &read, now);
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
        let seen = judge(&c, &read, now);
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
        let seen = judge(&c, &read, now);
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
}
