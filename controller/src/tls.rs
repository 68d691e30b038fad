//! Certificates of a TLS cluster: the names a member is reached by, a per-cluster CA and the certificates it signs
//! (generated with `rcgen`), and the checks a certificate must pass before any member is rolled onto it (the chain
//! and the validity period by `rustls-webpki`, the key against the certificate by `rustls`). Pure: no Secret is
//! read or written here.
//! [`crate::certificates`] reads and writes the Secrets with these.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The keys of a `kubernetes.io/tls` Secret, as cert-manager writes them.
pub const CERT_KEY: &str = "tls.crt";
/// See [`CERT_KEY`].
pub const KEY_KEY: &str = "tls.key";
/// See [`CERT_KEY`].
pub const CA_KEY: &str = "ca.crt";

/// The names certificates of a cluster's members must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberNames {
    /// Peer certificates: every member by its headless-Service name, with and without the cluster domain (etcd
    /// matches a peer's certificate against the reverse lookup of its address, which gives the long form).
    pub peer: Vec<String>,
    /// Serving (client) certificates: the peer names, the client Service in every form a client may use, and the
    /// loopback names a probe or the member itself uses.
    pub server: Vec<String>,
}

/// The names of the members of cluster `cluster` in `namespace`, reached through its headless Service (named as
/// the cluster), its client Service `client_service`, and `cluster_domain` (`cluster.local` unless the cluster
/// is configured otherwise).
pub fn member_names(cluster: &str, namespace: &str, client_service: &str, cluster_domain: &str) -> MemberNames {
    let headless = format!("{cluster}.{namespace}.svc");
    let peer = vec![format!("*.{headless}"), format!("*.{headless}.{cluster_domain}")];
    let mut server = peer.clone();
    server.extend([
        client_service.to_string(),
        format!("{client_service}.{namespace}"),
        format!("{client_service}.{namespace}.svc"),
        format!("{client_service}.{namespace}.svc.{cluster_domain}"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]);
    MemberNames { peer, server }
}

/// The names the backup sidecar's serving certificate covers: its Service `service` (short, with the namespace,
/// `.svc`, and with `cluster_domain`), and `localhost` and `127.0.0.1`.
pub fn backup_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// What a certificate is for, which sets its extended key usages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A member's peer or serving certificate: server and client authentication (a member dials its peers, and
    /// etcd's gateway dials its own client port, with it).
    Member,
    /// A client's certificate (the controller, the backup sidecar, an application): client authentication only.
    Client,
    /// A server's only (the backup sidecar's API): server authentication only, so that it is never taken as a
    /// client's by members that trust its CA.
    Server,
}

/// A certificate and its private key, PEM-encoded, and when it stops being valid.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8). Never logged: [`Issued`]'s `Debug` leaves it out.
    pub key_pem: String,
    /// The end of its validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// Why a certificate cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// rcgen refused the parameters or the key.
    #[error("making a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The CA has expired: it signs nothing more.
    #[error("the CA expired: a new one is needed")]
    CaExpired,
}

/// How far before `now` a new certificate's validity starts: clocks of the nodes may be behind the controller's.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

fn params(
    common_name: &str,
    names: &[String],
    now: SystemTime,
    validity: Duration,
) -> Result<rcgen::CertificateParams, IssueError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.subject_alt_names = names
        .iter()
        .map(|name| {
            Ok(match name.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(name.clone().try_into()?),
            })
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + validity).into();
    let serial: [u8; 16] = rand_bytes();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes[0] &= 0x7f; // a positive serial number
    bytes
}

/// A new CA for cluster `cluster` of `namespace`, valid from (a little before) `now` for `validity`: it signs
/// only that cluster's certificates (a per-cluster CA, so a certificate of another cluster is never trusted).
pub fn new_ca(namespace: &str, cluster: &str, now: SystemTime, validity: Duration) -> Result<Issued, IssueError> {
    let mut params = params(&format!("kube-etcd-controller CA {namespace}/{cluster}"), &[], now, validity)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after: now + validity })
}

/// The CA a Secret holds (its certificate and key, PEM), with the end of its validity; `None` when either does not
/// parse or the key is not the certificate's.
pub fn ca_from_pem(cert_pem: &str, key_pem: &str) -> Option<Issued> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
    let not_after =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(parsed.validity().not_after.timestamp()).ok()?);
    let key = rcgen::KeyPair::from_pem(key_pem).ok()?;
    rcgen::Issuer::from_ca_cert_pem(cert_pem, key).ok()?;
    Some(Issued { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), not_after })
}

/// A certificate for `common_name` and `names` (DNS names or IP addresses), signed by `ca`, valid from (a little
/// before) `now` for `validity` (never past the CA's own end).
pub fn issue(
    ca: &Issued,
    common_name: &str,
    names: &[String],
    usage: Usage,
    now: SystemTime,
    validity: Duration,
) -> Result<Issued, IssueError> {
    let until = (now + validity).min(ca.not_after);
    let Ok(left) = until.duration_since(now) else { return Err(IssueError::CaExpired) };
    if left.is_zero() {
        return Err(IssueError::CaExpired);
    }
    let mut params = params(common_name, names, now, left)?;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = match usage {
        Usage::Member => vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Client => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Server => vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
    };
    params.use_authority_key_identifier_extension = true;
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after: until })
}

/// What a checked certificate holds, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Its subject.
    pub subject: String,
    /// The end of its validity.
    pub not_after: SystemTime,
    /// The start of its validity (its own, not bounded by its CA's).
    pub not_before: SystemTime,
    /// The CA of `ca.crt` it chains to, by its key ([`ca_keys`]).
    pub signer: String,
}

/// The key identity of a CA: the first 16 hex digits of the SHA-256 of its public key (the SubjectPublicKeyInfo a
/// trust anchor holds). A CA certificate made again for the same key is the same CA to a verifier, and so here.
fn key_id(spki: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(spki).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A digest (16 hex digits) of the certificates of a PEM bundle, as they are: a CA certificate made again for the
/// same key changes it (etcd holds the certificates it read at start, and refuses one that expired).
pub fn bundle_digest(bundle: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for der in CertificateDer::pem_slice_iter(bundle).filter_map(Result::ok) {
        digest.update(der.as_ref());
    }
    digest.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The key identities ([`Checked::signer`]) of the CAs of a PEM bundle (a `ca.crt`), what a member that reads it
/// trusts. A certificate of the bundle that cannot be read as a CA is left out.
pub fn ca_keys(bundle: &[u8]) -> std::collections::BTreeSet<String> {
    CertificateDer::pem_slice_iter(bundle)
        .filter_map(Result::ok)
        .filter_map(|der| webpki::anchor_from_trusted_cert(&der).ok().map(|a| key_id(&a.subject_public_key_info)))
        .collect()
}

/// Why a Secret's certificate is refused. Each names what to fix; none holds key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A key of the Secret is missing or empty.
    #[error("the Secret has no {0}")]
    Missing(&'static str),
    /// A key does not hold what it should.
    #[error("{key} cannot be read: {why}")]
    Unreadable {
        /// The Secret's key.
        key: &'static str,
        /// What the parser said.
        why: String,
    },
    /// The private key is not the certificate's.
    #[error("tls.key is not the key of the certificate in tls.crt")]
    KeyMismatch,
    /// The certificate is not yet valid.
    #[error("the certificate is not valid before {not_before}")]
    NotYetValid {
        /// Its start, RFC 3339.
        not_before: String,
    },
    /// The certificate has expired.
    #[error("the certificate expired at {not_after}")]
    Expired {
        /// Its end, RFC 3339.
        not_after: String,
    },
    /// The certificate was not issued by a CA of `ca.crt`, or its chain is not valid for the usage.
    #[error("the certificate does not verify against ca.crt for {usage}: {why}")]
    Untrusted {
        /// The usage checked.
        usage: &'static str,
        /// What the verifier said.
        why: String,
    },
    /// A name a member is reached by is not covered.
    #[error("the certificate does not cover {0}")]
    NameNotCovered(String),
    /// No CA certificate of `ca.crt` is valid now (etcd, as Go does, refuses a chain to an expired root).
    #[error("no CA certificate in ca.crt is valid now: {0}")]
    CaNotValid(String),
}

/// Checks the data of a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`) as a certificate for `usage`
/// at `now`: the key is the certificate's, the certificate is valid now and chains to a CA of `ca.crt` for that
/// usage, and it covers every name of `names`. A wildcard name (`*.demo.ns.svc`) is checked with a member name it
/// must cover, so that a member added later is covered too. Every problem found is returned.
pub fn check(
    data: &BTreeMap<String, Vec<u8>>,
    names: &[String],
    usage: Usage,
    now: SystemTime,
) -> Result<Checked, Vec<Problem>> {
    let mut problems = Vec::new();
    let present = |key: &'static str| data.get(key).filter(|v| !v.is_empty());
    let (Some(cert), Some(key), Some(ca)) = (present(CERT_KEY), present(KEY_KEY), present(CA_KEY)) else {
        return Err([CERT_KEY, KEY_KEY, CA_KEY]
            .into_iter()
            .filter(|k| present(k).is_none())
            .map(Problem::Missing)
            .collect());
    };
    let unreadable = |key: &'static str, why: String| Problem::Unreadable { key, why };
    let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>()
    {
        Ok(chain) if !chain.is_empty() => chain,
        Ok(_) => return Err(vec![unreadable(CERT_KEY, "no PEM certificate".into())]),
        Err(e) => return Err(vec![unreadable(CERT_KEY, e.to_string())]),
    };
    let anchors_der: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(ca).collect::<Result<Vec<_>, _>>() {
            Ok(anchors) if !anchors.is_empty() => anchors,
            Ok(_) => return Err(vec![unreadable(CA_KEY, "no PEM certificate".into())]),
            Err(e) => return Err(vec![unreadable(CA_KEY, e.to_string())]),
        };
    let (subject, not_before, not_after) = match x509_parser::parse_x509_certificate(&chain[0]) {
        Ok((_, parsed)) => (
            parsed.subject().to_string(),
            parsed.validity().not_before.timestamp(),
            parsed.validity().not_after.timestamp(),
        ),
        Err(e) => return Err(vec![unreadable(CERT_KEY, e.to_string())]),
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // What the parsers say about a key is never repeated: some of their errors quote the bytes they read.
    let bad_key =
        || unreadable(KEY_KEY, "not a PEM private key (PKCS#8, PKCS#1 or SEC1) this controller can use".into());
    match PrivateKeyDer::from_pem_slice(key) {
        Err(_) => problems.push(bad_key()),
        Ok(key) => match provider.key_provider.load_private_key(key) {
            Err(_) => problems.push(bad_key()),
            Ok(signing) => {
                let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
                if certified.keys_match().is_err() {
                    problems.push(Problem::KeyMismatch);
                }
            }
        },
    }
    let at = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0).map(|t| t.to_rfc3339()).unwrap_or_else(|| seconds.to_string())
    };
    let now_seconds = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    if not_before > not_after {
        return Err(vec![unreadable(
            CERT_KEY,
            format!("its validity ends ({}) before it starts ({})", at(not_after), at(not_before)),
        )]);
    }
    if now_seconds < not_before {
        problems.push(Problem::NotYetValid { not_before: at(not_before) });
    } else if now_seconds > not_after {
        problems.push(Problem::Expired { not_after: at(not_after) });
    }
    // The CA's own validity, which the chain check leaves out (a trust anchor's dates are not checked by webpki,
    // but Go's verifier, etcd's, refuses an expired root). The earliest end among the valid ones bounds the leaf's.
    let mut ca_not_after: Option<i64> = None;
    let mut ca_invalid = Vec::new();
    for der in &anchors_der {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, parsed)) => {
                let (from, until) = (parsed.validity().not_before.timestamp(), parsed.validity().not_after.timestamp());
                if (from..=until).contains(&now_seconds) {
                    ca_not_after = Some(ca_not_after.map_or(until, |earliest| earliest.min(until)));
                } else {
                    ca_invalid.push(format!("{} (valid {} to {})", parsed.subject(), at(from), at(until)));
                }
            }
            Err(e) => problems.push(unreadable(CA_KEY, e.to_string())),
        }
    }
    if ca_not_after.is_none() && !ca_invalid.is_empty() {
        problems.push(Problem::CaNotValid(ca_invalid.join("; ")));
    }
    let mut anchors = Vec::new();
    for der in &anchors_der {
        match webpki::anchor_from_trusted_cert(der) {
            Ok(anchor) => anchors.push(anchor.to_owned()),
            Err(e) => problems.push(unreadable(CA_KEY, format!("{e:?}"))),
        }
    }
    let (eku, usage_name) = match usage {
        Usage::Member | Usage::Server => (webpki::KeyUsage::server_auth(), "server authentication"),
        Usage::Client => (webpki::KeyUsage::client_auth(), "client authentication"),
    };
    let mut signer = None;
    match webpki::EndEntityCert::try_from(&chain[0]) {
        Err(e) => problems.push(unreadable(CERT_KEY, format!("{e:?}"))),
        Ok(leaf) => {
            // Validity was judged above with its dates; the chain is checked at a moment inside it, so that an
            // expired certificate is not also reported as untrusted.
            let inside =
                UnixTime::since_unix_epoch(Duration::from_secs(now_seconds.clamp(not_before, not_after) as u64));
            let mut checks = vec![(eku, usage_name)];
            if usage == Usage::Member {
                // A member also dials its peers (and etcd's gateway its own port) with it.
                checks.push((webpki::KeyUsage::client_auth(), "client authentication"));
            }
            for (eku, name) in checks {
                let verified = leaf.verify_for_usage(
                    provider.signature_verification_algorithms.all,
                    &anchors,
                    &chain[1..],
                    inside,
                    eku,
                    None,
                    None,
                );
                match verified {
                    Ok(path) => signer = Some(key_id(&path.anchor().subject_public_key_info)),
                    Err(e) => problems.push(Problem::Untrusted { usage: name, why: format!("{e:?}") }),
                }
            }
            for name in names {
                // A label no member is named by: only the wildcard itself covers it.
                let example = name.strip_prefix("*.").map(|rest| format!("x--any-member.{rest}"));
                let wanted = example.as_deref().unwrap_or(name);
                let covered = ServerName::try_from(wanted)
                    .map(|server| leaf.verify_is_valid_for_subject_name(&server).is_ok())
                    .unwrap_or(false);
                if !covered {
                    problems.push(Problem::NameNotCovered(name.clone()));
                }
            }
        }
    }
    match signer {
        Some(signer) if problems.is_empty() => {
            let until = ca_not_after.map_or(not_after, |ca| ca.min(not_after));
            let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(until.max(0) as u64);
            let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(not_before.max(0) as u64);
            Ok(Checked { subject, not_after, not_before, signer })
        }
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn secret(leaf: &Issued, ca: &Issued) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (CERT_KEY.to_string(), leaf.cert_pem.clone().into_bytes()),
            (KEY_KEY.to_string(), leaf.key_pem.clone().into_bytes()),
            (CA_KEY.to_string(), ca.cert_pem.clone().into_bytes()),
        ])
    }

    #[test]
    fn members_are_named_by_their_headless_service_with_and_without_the_cluster_domain() {
        let names = member_names("demo", "ns", "demo-client", "example.org");
        assert_eq!(names.peer, ["*.demo.ns.svc", "*.demo.ns.svc.example.org"]);
        for name in ["*.demo.ns.svc.example.org", "demo-client.ns", "demo-client.ns.svc.example.org", "localhost"] {
            assert!(names.server.contains(&name.to_string()), "{name}: {:?}", names.server);
        }
        assert!(names.server.contains(&"127.0.0.1".to_string()), "probes reach the member over loopback");
    }

    #[test]
    fn a_generated_member_certificate_passes_every_check_for_every_name_it_is_reached_by() {
        let now = SystemTime::now();
        let ca = new_ca("ns", "demo", now, 365 * DAY).unwrap();
        let names = member_names("demo", "ns", "demo-client", "cluster.local");
        let leaf = issue(&ca, "demo member", &names.server, Usage::Member, now, 30 * DAY).unwrap();
        let checked = check(&secret(&leaf, &ca), &names.server, Usage::Member, now).unwrap();
        assert!(checked.subject.contains("demo member"), "{checked:?}");
        let days_left = checked.not_after.duration_since(now).unwrap().as_secs() / DAY.as_secs();
        assert!((29..=30).contains(&days_left), "{days_left}");
        // A client certificate authenticates clients only: it is no member certificate.
        let client = issue(&ca, "etcd-controller", &[], Usage::Client, now, 30 * DAY).unwrap();
        check(&secret(&client, &ca), &[], Usage::Client, now).unwrap();
        let refused = check(&secret(&client, &ca), &[], Usage::Member, now).unwrap_err();
        assert!(matches!(&refused[..], [Problem::Untrusted { usage: "server authentication", .. }]), "{refused:?}");
        // A server-only certificate (the backup sidecar's) serves, and is never a client's.
        let server = issue(&ca, "demo backup", &names.server, Usage::Server, now, 30 * DAY).unwrap();
        check(&secret(&server, &ca), &names.server, Usage::Server, now).unwrap();
        let refused = check(&secret(&server, &ca), &[], Usage::Client, now).unwrap_err();
        assert!(matches!(&refused[..], [Problem::Untrusted { usage: "client authentication", .. }]), "{refused:?}");
        // A leaf never outlives its CA.
        let short_ca = new_ca("ns", "demo", now, 2 * DAY).unwrap();
        let capped = issue(&short_ca, "m", &names.peer, Usage::Member, now, 30 * DAY).unwrap();
        assert_eq!(capped.not_after, short_ca.not_after);
        assert!(!format!("{capped:?}").contains("PRIVATE KEY"), "a key is never in a Debug print");
    }

    #[test]
    fn a_certificate_that_does_not_cover_every_name_is_refused_naming_each_missing_one() {
        let now = SystemTime::now();
        let ca = new_ca("ns", "demo", now, 365 * DAY).unwrap();
        let names = member_names("demo", "ns", "demo-client", "cluster.local");
        // Only the short wildcard, and the members listed one by one: the long form and a future member are missing.
        let partial = vec![
            "*.demo.ns.svc".to_string(),
            "demo-0000.demo.ns.svc.cluster.local".into(),
            "member-0.demo.ns.svc.cluster.local".into(),
        ];
        let leaf = issue(&ca, "m", &partial, Usage::Member, now, 30 * DAY).unwrap();
        let refused = check(&secret(&leaf, &ca), &names.peer, Usage::Member, now).unwrap_err();
        assert_eq!(refused, [Problem::NameNotCovered("*.demo.ns.svc.cluster.local".into())]);
        // Another cluster's names: every one of this cluster's is missing.
        let other = issue(
            &ca,
            "m",
            &member_names("other", "ns", "other-client", "cluster.local").peer,
            Usage::Member,
            now,
            DAY,
        )
        .unwrap();
        assert_eq!(check(&secret(&other, &ca), &names.peer, Usage::Member, now).unwrap_err().len(), 2);
    }

    #[test]
    fn a_mismatched_key_another_ca_missing_keys_and_dates_outside_the_validity_are_each_refused() {
        let now = SystemTime::now();
        let ca = new_ca("ns", "demo", now, 365 * DAY).unwrap();
        let names = member_names("demo", "ns", "demo-client", "cluster.local").peer;
        let leaf = issue(&ca, "m", &names, Usage::Member, now, 30 * DAY).unwrap();
        let other = issue(&ca, "m", &names, Usage::Member, now, 30 * DAY).unwrap();

        let mut swapped = secret(&leaf, &ca);
        swapped.insert(KEY_KEY.into(), other.key_pem.clone().into_bytes());
        assert_eq!(check(&swapped, &names, Usage::Member, now).unwrap_err(), [Problem::KeyMismatch]);

        let stranger = new_ca("ns", "demo", now, 365 * DAY).unwrap();
        let untrusted = check(&secret(&leaf, &stranger), &names, Usage::Member, now).unwrap_err();
        assert!(
            untrusted.iter().all(|p| matches!(p, Problem::Untrusted { .. })) && !untrusted.is_empty(),
            "{untrusted:?}"
        );

        let expired = check(&secret(&leaf, &ca), &names, Usage::Member, now + 31 * DAY).unwrap_err();
        assert!(matches!(&expired[..], [Problem::Expired { .. }]), "{expired:?}");
        let early = check(&secret(&leaf, &ca), &names, Usage::Member, now - DAY).unwrap_err();
        // (So is the CA, made at the same moment.)
        assert!(matches!(&early[..], [Problem::NotYetValid { .. }, Problem::CaNotValid(_)]), "{early:?}");

        let mut missing = secret(&leaf, &ca);
        missing.remove(CA_KEY);
        missing.insert(KEY_KEY.into(), Vec::new());
        assert_eq!(
            check(&missing, &names, Usage::Member, now).unwrap_err(),
            [Problem::Missing(KEY_KEY), Problem::Missing(CA_KEY)]
        );
        let mut garbage = secret(&leaf, &ca);
        garbage.insert(CERT_KEY.into(), b"not a certificate".to_vec());
        assert!(matches!(
            &check(&garbage, &names, Usage::Member, now).unwrap_err()[..],
            [Problem::Unreadable { key: "tls.crt", .. }]
        ));
        // A key on one line (PEM that lost its line breaks): refused without quoting a byte of it.
        let body: String = leaf.key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut one_line = secret(&leaf, &ca);
        one_line.insert(KEY_KEY.into(), format!("-----BEGIN PRIVATE KEY-----{body}").into_bytes());
        let refused = check(&one_line, &names, Usage::Member, now).unwrap_err();
        assert!(matches!(&refused[..], [Problem::Unreadable { key: "tls.key", .. }]), "{refused:?}");
        assert!(!refused[0].to_string().contains(&body[..16]), "{}", refused[0]);
        // An expired CA: Go's verifier (etcd's) refuses the chain, so the check does too; and it signs nothing.
        let old_ca = new_ca("ns", "demo", now - 10 * DAY, 5 * DAY).unwrap();
        let late = Issued { not_after: now + DAY, ..old_ca.clone() };
        let leaf_of_old = issue(&late, "m", &names, Usage::Member, now, DAY).unwrap();
        let refused = check(&secret(&leaf_of_old, &old_ca), &names, Usage::Member, now).unwrap_err();
        assert!(refused.iter().any(|p| matches!(p, Problem::CaNotValid(_))), "{refused:?}");
        assert!(matches!(issue(&old_ca, "m", &names, Usage::Member, now, DAY), Err(IssueError::CaExpired)));
    }

    #[test]
    fn a_ca_bundle_with_the_old_and_the_new_ca_trusts_leaves_of_both_as_a_rotation_needs() {
        let now = SystemTime::now();
        let old = new_ca("ns", "demo", now, 365 * DAY).unwrap();
        let new = new_ca("ns", "demo", now, 365 * DAY).unwrap();
        let names = member_names("demo", "ns", "demo-client", "cluster.local").peer;
        let bundle = Issued { cert_pem: format!("{}{}", old.cert_pem, new.cert_pem), ..old.clone() };
        for ca in [&old, &new] {
            let leaf = issue(ca, "m", &names, Usage::Member, now, DAY).unwrap();
            check(&secret(&leaf, &bundle), &names, Usage::Member, now).unwrap();
        }
    }
}
