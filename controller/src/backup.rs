//! The backup sidecar of a cluster whose spec asks for backups: a Deployment of one replica running
//! `etcd-backup-sidecar serve` against the cluster's client service, a Service on port 19999, and a Secret with
//! the bearer token its API requires. The builders are pure; [`ensure`] writes only what is missing or changed,
//! and [`condition`] turns what the sidecar reports into the `BackupReady` condition.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use proto::backup::{ApiErrorBody, BackupInfo, BackupList, BackupRequest, SidecarStatus};
use proto::cluster::{BackupPolicy, BackupStorage, DEFAULT_BACKUP_EVERY, EtcdCluster, S3Storage};
use sha2::{Digest, Sha256};

use crate::labels::{CLUSTER_LABEL, FIELD_MANAGER, owner};
use crate::service::client_service_name;

/// The port of the sidecar's HTTP API.
pub const PORT: i32 = proto::backup::DEFAULT_PORT as i32;
/// The key of the token in the sidecar's Secret.
pub const TOKEN_KEY: &str = "token";
/// Where the sidecar's container finds the token.
const TOKEN_DIR: &str = "/var/run/kube-etcd-controller/backup-token";
/// Where a PVC is mounted in the sidecar's container.
pub const PVC_MOUNT: &str = "/backups";
/// Annotation holding the hash of the Deployment the controller last applied: a change of spec changes it.
const SPEC_HASH: &str = "kube-etcd-controller.dev/spec-hash";

/// Name of the sidecar's Deployment and Service: `<cluster>-backup`.
pub fn sidecar_name(cluster: &str) -> String {
    format!("{cluster}-backup")
}

/// Name of the Secret holding the sidecar's API token: `<cluster>-backup-token`.
pub fn token_secret_name(cluster: &str) -> String {
    format!("{cluster}-backup-token")
}

/// Labels of the sidecar's objects and pods. They share the cluster label (so they are found and cleaned up with
/// the cluster) but never the member labels: the sidecar is not a member and never behind the client service.
pub fn sidecar_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "etcd-backup-sidecar".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        ("app.kubernetes.io/component".to_string(), "backup".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "kube-etcd-controller".to_string()),
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
    ])
}

/// The labels that select the sidecar's pods.
pub fn sidecar_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
        ("app.kubernetes.io/name".to_string(), "etcd-backup-sidecar".to_string()),
    ])
}

fn meta(cluster: &EtcdCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(sidecar_labels(&cluster.name_any())),
        owner_references: Some(vec![owner(cluster)]),
        ..Default::default()
    }
}

/// The storage URL the sidecar writes to: `file:///backups/<subPath or cluster>` on a PVC, or
/// `s3://<bucket>/<prefix or namespace/cluster>`.
pub fn storage_url(cluster: &EtcdCluster, policy: &BackupPolicy) -> String {
    storage_url_of(cluster, &policy.storage)
}

/// The URL of `storage`, with the defaults of `cluster` (its name as PVC sub-path, `<namespace>/<name>` as prefix).
pub fn storage_url_of(cluster: &EtcdCluster, storage: &BackupStorage) -> String {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    if let Some(pvc) = &storage.pvc {
        let dir = pvc.sub_path.clone().unwrap_or(name);
        format!("file://{PVC_MOUNT}/{}", dir.trim_matches('/'))
    } else if let Some(s3) = &storage.s3 {
        let prefix = s3.prefix.clone().unwrap_or_else(|| format!("{namespace}/{name}"));
        format!("s3://{}/{}", s3.bucket, prefix.trim_matches('/'))
    } else {
        // The schema requires exactly one of the two; an object that slipped past it gets a URL the sidecar refuses.
        String::new()
    }
}

/// The sidecar's flags for an S3 bucket (never its credentials: see [`s3_credentials`]).
pub fn s3_args(s3: &S3Storage) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(endpoint) = &s3.endpoint {
        args.push(format!("--s3-endpoint={endpoint}"));
    }
    args.push(format!("--s3-region={}", s3.region.as_deref().unwrap_or("us-east-1")));
    if s3.allow_http {
        args.push("--s3-allow-http".into());
    }
    args
}

/// The AWS credential variables, taken from the bucket's Secret (never from arguments, which anyone who can read
/// the pod sees).
pub fn s3_credentials(s3: &S3Storage) -> Vec<EnvVar> {
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .into_iter()
        .map(|key| EnvVar {
            name: key.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s3.credentials_secret.clone(),
                    key: key.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// The sidecar's command line after the binary's name.
pub fn sidecar_args(cluster: &EtcdCluster, policy: &BackupPolicy, https: bool, etcd_tls: bool) -> Vec<String> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let mut args = vec![
        "serve".to_string(),
        format!(
            "--etcd-endpoints={}://{}.{namespace}.svc:2379",
            if etcd_tls { "https" } else { "http" },
            client_service_name(&name)
        ),
        format!("--storage={}", storage_url(cluster, policy)),
        format!("--listen=0.0.0.0:{PORT}"),
        format!("--cluster-name={name}"),
        format!("--auth-token-file={TOKEN_DIR}/{TOKEN_KEY}"),
    ];
    match (&policy.every, &policy.cron) {
        (_, Some(cron)) => args.push(format!("--cron={cron}")),
        (Some(every), None) => args.push(format!("--every={every}")),
        (None, None) => args.push(format!("--every={DEFAULT_BACKUP_EVERY}")),
    }
    if let Some(max) = policy.max_backups {
        args.push(format!("--max-backups={max}"));
    }
    if let Some(age) = &policy.max_age {
        args.push(format!("--max-age={age}"));
    }
    if let Some(s3) = &policy.storage.s3 {
        args.extend(s3_args(s3));
    }
    if etcd_tls {
        args.extend([
            format!("--etcd-server-name={}", crate::certificates::client_server_name(cluster)),
            format!("--etcd-ca={SERVER_CA_DIR}/ca.crt"),
            format!("--etcd-cert={OPERATOR_TLS_DIR}/tls.crt"),
            format!("--etcd-key={OPERATOR_TLS_DIR}/tls.key"),
        ]);
    }
    if https {
        args.extend([
            format!("--tls-cert-file={BACKUP_TLS_DIR}/tls.crt"),
            format!("--tls-key-file={BACKUP_TLS_DIR}/tls.key"),
        ]);
    }
    args
}

/// The longest time `policy`'s schedule leaves between two backups: its interval (`every`, default
/// [`DEFAULT_BACKUP_EVERY`]), or for `cron` the longest gap between its runs over a fixed year (the same answer
/// whenever it is asked: weekends, month ends and leap days included; at most 100 000 runs are looked at, enough
/// for a run every six minutes). `None` when it cannot be read (the sidecar refuses it, and says so).
pub fn longest_interval(policy: &BackupPolicy) -> Option<Duration> {
    if let Some(cron) = &policy.cron {
        // The answer depends on the expression alone: worked out once per expression, not at every reconcile.
        static KNOWN: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, Option<Duration>>>> =
            std::sync::OnceLock::new();
        let known = KNOWN.get_or_init(Default::default);
        if let Some(answer) = known.lock().unwrap_or_else(|p| p.into_inner()).get(cron) {
            return *answer;
        }
        let answer = longest_cron_gap(cron);
        known.lock().unwrap_or_else(|p| p.into_inner()).insert(cron.clone(), answer);
        return answer;
    }
    humantime::parse_duration(policy.every.as_deref().unwrap_or(DEFAULT_BACKUP_EVERY)).ok()
}

/// The longest gap between the runs of cron expression `cron` over a fixed year (see [`longest_interval`]).
fn longest_cron_gap(cron: &str) -> Option<Duration> {
    let cron = <croner::Cron as std::str::FromStr>::from_str(cron).ok()?;
    // 2028 is a leap year; start the last day of 2027 so that a gap across the new year counts.
    let start = chrono::DateTime::parse_from_rfc3339("2027-12-31T00:00:00Z").ok()?.with_timezone(&chrono::Utc);
    let end = start + chrono::Duration::days(367);
    let runs: Vec<_> = cron.iter_after(start).take_while(|t| *t <= end).take(100_000).collect();
    runs.windows(2).filter_map(|pair| (pair[1] - pair[0]).to_std().ok()).max()
}

/// Where the sidecar finds its own serving certificate (the backup Secret) for HTTPS.
const BACKUP_TLS_DIR: &str = "/etc/etcd/tls/backup";
/// The name of the sidecar pod's volume of its serving certificate's Secret.
const BACKUP_TLS_VOLUME: &str = "backup-tls";

/// The Secret the sidecar of `deployment` serves HTTPS with (its `ca.crt` is what clients check it against), as
/// the Deployment says; `None` for a sidecar that serves plain HTTP.
pub fn serving_secret(deployment: &Deployment) -> Option<String> {
    let spec = deployment.spec.template.spec.as_ref()?;
    let args = spec.containers.first()?.args.as_ref()?;
    if !args.iter().any(|a| a.starts_with("--tls-cert-file=")) {
        return None;
    }
    let volume = spec.volumes.as_ref()?.iter().find(|v| v.name == BACKUP_TLS_VOLUME)?;
    volume.secret.as_ref()?.secret_name.clone()
}

/// Whether the sidecar of `deployment` speaks TLS to etcd (its `--etcd-endpoints` is `https`).
pub fn etcd_tls_of(deployment: &Deployment) -> Option<bool> {
    let spec = deployment.spec.template.spec.as_ref()?;
    let args = spec.containers.first()?.args.as_ref()?;
    args.iter().find_map(|a| a.strip_prefix("--etcd-endpoints=")).map(|endpoint| endpoint.starts_with("https://"))
}

/// Where the sidecar finds its client certificate (the operator Secret) with client TLS.
const OPERATOR_TLS_DIR: &str = "/etc/etcd/tls/operator";
/// Where the sidecar finds the CA bundle of the members' serving certificates (only `ca.crt` of their Secret).
const SERVER_CA_DIR: &str = "/etc/etcd/tls/server-ca";

/// The sidecar's Deployment: one replica, replaced (never two at once, so two never write the same storage),
/// running as a non-root user, with its storage volume or credentials wired in; its API over HTTPS with client
/// TLS.
pub fn sidecar_deployment(cluster: &EtcdCluster, policy: &BackupPolicy, default_image: &str) -> Deployment {
    let https = crate::certificates::backup_secret(cluster).is_some();
    sidecar_deployment_serving(cluster, policy, default_image, https, cluster.spec.client_tls())
}

/// [`sidecar_deployment`], its API over HTTPS only when `https` (and the spec asks for it), speaking TLS to etcd
/// when `etcd_tls` (and the cluster's TLS has the client certificate for it).
pub fn sidecar_deployment_serving(
    cluster: &EtcdCluster,
    policy: &BackupPolicy,
    default_image: &str,
    https: bool,
    etcd_tls: bool,
) -> Deployment {
    let serving = crate::certificates::backup_secret(cluster).filter(|_| https);
    let etcd_tls = etcd_tls
        && crate::certificates::operator_secret(cluster).is_some()
        && crate::certificates::server_secret(cluster).is_some();
    let name = cluster.name_any();
    let mut mounts = vec![VolumeMount {
        name: "token".into(),
        mount_path: TOKEN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "token".into(),
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(token_secret_name(&name)),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }];
    // With client TLS: the client certificate, and of the members' serving Secret only its CA bundle (never
    // their key). Whole directories, so that renewed files reach the sidecar, which reads them at each dial.
    if let (Some(operator), Some(server)) =
        (crate::certificates::operator_secret(cluster), crate::certificates::server_secret(cluster))
    {
        let mut mounted = vec![
            ("operator-tls", OPERATOR_TLS_DIR, operator, None),
            (
                "server-ca",
                SERVER_CA_DIR,
                server,
                Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                    key: crate::tls::CA_KEY.into(),
                    path: crate::tls::CA_KEY.into(),
                    ..Default::default()
                }]),
            ),
        ];
        // Its own serving certificate, whole (the sidecar reads it again when it changes).
        if let Some(backup) = serving.clone() {
            mounted.push((BACKUP_TLS_VOLUME, BACKUP_TLS_DIR, backup, None));
        }
        for (volume, dir, secret, items) in mounted {
            mounts.push(VolumeMount {
                name: volume.into(),
                mount_path: dir.into(),
                read_only: Some(true),
                ..Default::default()
            });
            volumes.push(Volume {
                name: volume.into(),
                secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                    secret_name: Some(secret),
                    default_mode: Some(0o440),
                    items,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    let mut env = Vec::new();
    if let Some(pvc) = &policy.storage.pvc {
        mounts.push(VolumeMount { name: "backups".into(), mount_path: PVC_MOUNT.into(), ..Default::default() });
        volumes.push(Volume {
            name: "backups".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        });
    }
    if let Some(s3) = &policy.storage.s3 {
        env.extend(s3_credentials(s3));
    }
    env.push(EnvVar { name: "RUST_LOG".into(), value: Some("info".into()), ..Default::default() });
    // Only the members (the headless Service resolves to every member pod) are snapshotted. An environment
    // variable, not a flag: an older sidecar image pinned in spec.backup.sidecarImage ignores it.
    // Recorded in every backup, so that a cluster created again under this name never recovers from these.
    if let Some(uid) = &cluster.metadata.uid {
        env.push(EnvVar { name: "CLUSTER_UID".into(), value: Some(uid.clone()), ..Default::default() });
    }
    env.push(EnvVar {
        name: "MEMBER_HOSTS_FROM".into(),
        value: Some(format!("{}.{}.svc", cluster.name_any(), cluster.namespace().unwrap_or_else(|| "default".into()))),
        ..Default::default()
    });
    // The kubelet does not check the certificate of an HTTPS probe: no client certificate is needed either.
    let scheme = serving.as_ref().map(|_| "HTTPS".to_string());
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(PORT),
            scheme: scheme.clone(),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let container = Container {
        name: "backup".into(),
        image: Some(policy.sidecar_image.clone().unwrap_or_else(|| default_image.to_string())),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["etcd-backup-sidecar".into()]),
        args: Some(sidecar_args(cluster, policy, serving.is_some(), etcd_tls)),
        env: Some(env),
        ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: PORT, ..Default::default() }]),
        volume_mounts: Some(mounts),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        // Measured peak: under 50 MiB while streaming a 200 MiB snapshot.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
            ..Default::default()
        }),
        security_context: Some(crate::security::container_context()),
        ..Default::default()
    };
    let labels = sidecar_labels(&name);
    Deployment {
        metadata: meta(cluster, sidecar_name(&name)),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(sidecar_selector(&name)), ..Default::default() },
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    // Restricted, as member pods: the unprivileged user whatever the members run as.
                    security_context: Some(crate::security::pod_context(&Default::default())),
                    automount_service_account_token: Some(false),
                    node_selector: (!cluster.spec.pod.node_selector.is_empty())
                        .then(|| cluster.spec.pod.node_selector.clone()),
                    tolerations: (!cluster.spec.pod.tolerations.is_empty())
                        .then(|| cluster.spec.pod.tolerations.clone()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// The sidecar's Service, `<cluster>-backup:19999`.
pub fn sidecar_service(cluster: &EtcdCluster) -> Service {
    let name = cluster.name_any();
    Service {
        metadata: meta(cluster, sidecar_name(&name)),
        spec: Some(ServiceSpec {
            selector: Some(sidecar_selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: PORT,
                target_port: Some(IntOrString::Int(PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Secret with the sidecar's API token.
pub fn token_secret(cluster: &EtcdCluster, token: &str) -> Secret {
    Secret {
        metadata: meta(cluster, token_secret_name(&cluster.name_any())),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// A new random token: 32 bytes from the operating system, hex encoded.
fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Hash of what the controller wants the Deployment to be; stored in an annotation so that a steady cluster's
/// reconcile compares instead of writing.
pub fn spec_hash(deployment: &Deployment) -> String {
    let json = serde_json::to_vec(&deployment.spec).unwrap_or_default();
    hex::encode(&Sha256::digest(json)[..8])
}

/// What the controller saw of the sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupHealth {
    /// The Deployment has no available replica yet.
    Starting {
        /// Why, as a person reads it.
        why: String,
    },
    /// The sidecar runs but its status could not be read.
    Unreachable {
        /// The error.
        error: String,
    },
    /// The sidecar's own status.
    Reported(Box<SidecarStatus>),
    /// Its objects could not be written or read.
    NotApplied {
        /// The error.
        error: String,
    },
}

/// The `BackupReady` condition for what was seen: (status, reason, message).
pub fn condition(health: &BackupHealth) -> (bool, &'static str, String) {
    match health {
        BackupHealth::Starting { why } => (false, "SidecarStarting", why.clone()),
        BackupHealth::NotApplied { error } => (false, "SidecarNotApplied", format!("the backup sidecar: {error}")),
        BackupHealth::Unreachable { error } => {
            (false, "SidecarUnreachable", format!("the backup sidecar's status could not be read: {error}"))
        }
        BackupHealth::Reported(status) => match (&status.last_failure, &status.last_success) {
            (Some(failure), _) if status.consecutive_failures > 0 => (
                false,
                "BackupFailing",
                format!(
                    "{} backup attempt(s) failed in a row, the last at {} ({}): {}; the sidecar retries with backoff",
                    status.consecutive_failures,
                    failure.at.format("%Y-%m-%dT%H:%M:%SZ"),
                    failure.reason,
                    failure.error
                ),
            ),
            (_, Some(last)) => (
                true,
                "BackupSucceeded",
                format!(
                    "latest backup {} at revision {}, finished {}; {} backup(s) in {}",
                    last.name,
                    last.revision,
                    last.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    status.backup_count,
                    status.storage
                ),
            ),
            (_, None) => (false, "NoBackupYet", format!("the sidecar runs; no backup is in {} yet", status.storage)),
        },
    }
}

mod client;

pub use client::{Reach, SidecarClient, SidecarError, chain, ensure, newest_of, sidecar_exists, sidecar_reach};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster as fixture;
    use proto::backup::{BackupFailure, BackupInfo};
    use proto::cluster::{BackupStorage, PvcStorage, S3Storage};

    fn policy(storage: BackupStorage) -> BackupPolicy {
        BackupPolicy {
            every: None,
            cron: None,
            max_backups: Some(5),
            max_age: Some("7d".into()),
            storage,
            sidecar_image: None,
        }
    }

    fn pvc() -> BackupStorage {
        BackupStorage { pvc: Some(PvcStorage { claim_name: "backups".into(), sub_path: None }), s3: None }
    }

    fn s3() -> BackupStorage {
        BackupStorage {
            pvc: None,
            s3: Some(S3Storage {
                bucket: "etcd-backups".into(),
                prefix: None,
                endpoint: Some("http://minio.storage:9000".into()),
                region: None,
                credentials_secret: "s3-creds".into(),
                allow_http: true,
            }),
        }
    }

    #[test]
    fn a_pvc_sidecar_writes_under_the_cluster_name_on_the_mounted_claim() {
        let cluster = fixture("alpha", 3);
        let deployment = sidecar_deployment(&cluster, &policy(pvc()), "sidecar:1");
        let pod = deployment.spec.template.spec.unwrap();
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap();
        assert_eq!(args[0], "serve");
        assert!(args.contains(&"--storage=file:///backups/alpha".to_string()), "{args:?}");
        assert!(args.contains(&"--etcd-endpoints=http://alpha-client.ns.svc:2379".to_string()), "{args:?}");
        assert!(args.contains(&"--every=30m".to_string()), "the default schedule: {args:?}");
        assert!(args.contains(&"--max-backups=5".to_string()) && args.contains(&"--max-age=7d".to_string()));
        let claim = pod.volumes.clone().unwrap().iter().find_map(|v| v.persistent_volume_claim.clone()).unwrap();
        assert_eq!(claim.claim_name, "backups");
        assert_eq!(container.image.as_deref(), Some("sidecar:1"));
        assert_eq!(
            crate::security::restricted_violations(&pod),
            Vec::<String>::new(),
            "a restricted namespace admits it"
        );
    }

    #[test]
    fn with_client_tls_the_sidecar_serves_https_from_its_own_secret_and_says_so() {
        let mut cluster = fixture("alpha", 3);
        let plain = sidecar_deployment(&cluster, &policy(pvc()), "sidecar:1");
        assert_eq!(serving_secret(&plain), None, "no TLS: plain HTTP");
        cluster.spec.backup = Some(policy(pvc()));
        cluster.spec.tls = Some(proto::cluster::TlsPolicy {
            peer: None,
            client: Some(Default::default()),
            cluster_domain: proto::cluster::DEFAULT_CLUSTER_DOMAIN.into(),
            certificate_duration: None,
        });
        let deployment = sidecar_deployment(&cluster, &policy(pvc()), "sidecar:1");
        assert_eq!(serving_secret(&deployment).as_deref(), Some("alpha-tls-backup"), "generated, and found again");
        let pod = deployment.spec.template.spec.clone().unwrap();
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap();
        assert!(args.contains(&format!("--tls-cert-file={BACKUP_TLS_DIR}/tls.crt")), "{args:?}");
        assert!(args.contains(&format!("--tls-key-file={BACKUP_TLS_DIR}/tls.key")), "{args:?}");
        let volume = pod.volumes.clone().unwrap().into_iter().find(|v| v.name == BACKUP_TLS_VOLUME).unwrap();
        let secret = volume.secret.unwrap();
        assert_eq!(secret.items, None, "the whole Secret, as a directory: renewals reach the files");
        assert!(container.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == BACKUP_TLS_DIR));
        for probe in [&container.readiness_probe, &container.liveness_probe] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "probes over HTTPS: a plain one would fail");
        }
        assert_eq!(crate::security::restricted_violations(&pod), Vec::<String>::new());
        // Until its certificate can be used: everything else (TLS to etcd) rendered, its API not yet on HTTPS.
        let waiting = sidecar_deployment_serving(&cluster, &policy(pvc()), "sidecar:1", false, true);
        assert_eq!(serving_secret(&waiting), None);
        assert_eq!(etcd_tls_of(&waiting), Some(true));
        let args = waiting.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.iter().any(|a| a.starts_with("--etcd-cert=")), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--tls-cert-file")), "{args:?}");
        // While the members still serve plain (client TLS turned on, not rolled yet): plain to etcd, its API on
        // HTTPS all the same.
        let before = sidecar_deployment_serving(&cluster, &policy(pvc()), "sidecar:1", true, false);
        assert_eq!(etcd_tls_of(&before), Some(false));
        assert!(serving_secret(&before).is_some());
        let args = before.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"--etcd-endpoints=http://alpha-client.ns.svc:2379".to_string()), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--etcd-cert=") || a.starts_with("--etcd-ca=")), "{args:?}");
        // No client certificate to present (no client TLS at all): never TLS to etcd.
        let plain_etcd = sidecar_deployment_serving(&fixture("alpha", 3), &policy(pvc()), "sidecar:1", false, true);
        assert_eq!(etcd_tls_of(&plain_etcd), Some(false));
        // The user's own Secret, when named.
        if let Some(client) = cluster.spec.tls.as_mut().and_then(|t| t.client.as_mut()) {
            client.backup_secret_name = Some("my-backup-tls".into());
        }
        let deployment = sidecar_deployment(&cluster, &policy(pvc()), "sidecar:1");
        assert_eq!(serving_secret(&deployment).as_deref(), Some("my-backup-tls"));
        assert_eq!(
            Reach::of("alpha", "ns", serving_secret(&deployment)),
            Reach { url: "https://alpha-backup.ns.svc:19999".into(), ca_secret: Some("my-backup-tls".into()) }
        );
        assert_eq!(Reach::of("alpha", "ns", None).url, "http://alpha-backup.ns.svc:19999");
    }

    #[test]
    fn an_s3_sidecar_takes_its_credentials_from_the_secret_never_from_its_arguments() {
        let cluster = fixture("alpha", 3);
        let mut policy = policy(s3());
        policy.cron = Some("0 */6 * * *".into());
        let deployment = sidecar_deployment(&cluster, &policy, "sidecar:1");
        let container = deployment.spec.template.spec.unwrap().containers[0].clone();
        let args = container.args.unwrap();
        assert!(args.contains(&"--storage=s3://etcd-backups/ns/alpha".to_string()), "{args:?}");
        assert!(args.contains(&"--cron=0 */6 * * *".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--every")));
        assert!(args.contains(&"--s3-allow-http".to_string()));
        assert!(!args.iter().any(|a| a.contains("secret") || a.contains("access-key")), "{args:?}");
        let env = container.env.unwrap();
        let from_secret: Vec<_> = env
            .iter()
            .filter_map(|e| Some((e.name.as_str(), e.value_from.as_ref()?.secret_key_ref.as_ref()?.name.as_str())))
            .collect();
        assert_eq!(from_secret, [("AWS_ACCESS_KEY_ID", "s3-creds"), ("AWS_SECRET_ACCESS_KEY", "s3-creds")]);
        let members = env.iter().find(|e| e.name == "MEMBER_HOSTS_FROM").and_then(|e| e.value.as_deref());
        assert_eq!(members, Some("alpha.ns.svc"), "only the members, by the headless Service, are snapshotted");
        let uid = env.iter().find(|e| e.name == "CLUSTER_UID").and_then(|e| e.value.as_deref());
        assert_eq!(uid, Some("uid-alpha"), "every backup records which EtcdCluster object wrote it");
    }

    #[test]
    fn the_sidecar_is_never_taken_for_a_member() {
        let cluster = fixture("alpha", 3);
        let deployment = sidecar_deployment(&cluster, &policy(pvc()), "sidecar:1");
        let labels = deployment.spec.template.metadata.unwrap().labels.unwrap();
        let members = crate::labels::member_selector("alpha");
        assert!(!members.iter().all(|(k, v)| labels.get(k) == Some(v)), "the client service would select it");
        assert!(!labels.contains_key(crate::labels::MEMBER_LABEL));
    }

    #[test]
    fn the_hash_follows_the_spec_and_nothing_else() {
        let cluster = fixture("alpha", 3);
        let a = sidecar_deployment(&cluster, &policy(pvc()), "sidecar:1");
        assert_eq!(spec_hash(&a), spec_hash(&sidecar_deployment(&cluster, &policy(pvc()), "sidecar:1")));
        let mut changed = policy(pvc());
        changed.max_backups = Some(6);
        assert_ne!(spec_hash(&a), spec_hash(&sidecar_deployment(&cluster, &changed, "sidecar:1")));
        assert_ne!(spec_hash(&a), spec_hash(&sidecar_deployment(&cluster, &policy(pvc()), "sidecar:2")));
    }

    fn status(success: Option<i64>, failures: u32) -> SidecarStatus {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        SidecarStatus {
            cluster_name: "alpha".into(),
            storage: "file:///backups/alpha".into(),
            schedule: Some("every 30m".into()),
            next_run: Some(at),
            running: false,
            backup_count: usize::from(success.is_some()),
            last_success: success.map(|revision| BackupInfo {
                name: format!("alpha-r{revision}"),
                cluster_name: "alpha".into(),
                cluster_uid: None,
                etcd_cluster_id: "1".into(),
                etcd_member: "m".into(),
                revision,
                etcd_version: "3.5.35".into(),
                raw_size: 1,
                compressed_size: 1,
                sha256: String::new(),
                started_at: at,
                finished_at: at,
                pinned: None,
            }),
            last_success_at: success.map(|_| at),
            last_failure: (failures > 0).then(|| BackupFailure {
                at,
                reason: "etcd".into(),
                error: "connection refused".into(),
            }),
            consecutive_failures: failures,
        }
    }

    /// Recovery takes only backups its own EtcdCluster wrote: its name, and not before it was created (an earlier
    /// cluster of the same name is another cluster); newest first.
    #[test]
    fn recovery_takes_only_backups_of_this_cluster_since_it_was_created() {
        let at = |seconds: i64| chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap();
        let backup = |name: &str, cluster: &str, started: i64| BackupInfo {
            name: name.into(),
            cluster_name: cluster.into(),
            cluster_uid: None,
            etcd_cluster_id: "1".into(),
            etcd_member: "m".into(),
            revision: 1,
            etcd_version: "3.5.35".into(),
            raw_size: 1,
            compressed_size: 1,
            sha256: String::new(),
            started_at: at(started),
            finished_at: at(started + 1),
            pinned: None,
        };
        let newest_first = vec![
            backup("alphabet-new", "alphabet", 300),
            backup("alpha-2", "alpha", 200),
            backup("alpha-1", "alpha", 100),
            backup("alpha-old", "alpha", 10),
        ];
        let pick = |since| newest_of(newest_first.clone(), "alpha", None, since).map(|b| b.name);
        assert_eq!(pick(None).as_deref(), Some("alpha-2"), "never another cluster's, even one sharing the prefix");
        assert_eq!(pick(Some(at(100))).as_deref(), Some("alpha-2"));
        let only_old = vec![backup("alpha-old", "alpha", 10)];
        assert_eq!(newest_of(only_old, "alpha", None, Some(at(50))), None, "an earlier cluster of this name: not ours");

        // With UIDs recorded, the UID decides, whatever the clocks say.
        let with_uid = |name: &str, uid: &str, started: i64| BackupInfo {
            cluster_uid: Some(uid.into()),
            ..backup(name, "alpha", started)
        };
        let recorded = vec![with_uid("alpha-other", "old-uid", 500), with_uid("alpha-ours", "our-uid", 5)];
        let ours = newest_of(recorded, "alpha", Some("our-uid"), Some(at(100))).map(|b| b.name);
        assert_eq!(ours.as_deref(), Some("alpha-ours"), "our UID, though our sidecar's clock ran behind");
    }

    #[test]
    fn backup_ready_says_what_the_sidecar_says() {
        let (ready, reason, message) = condition(&BackupHealth::Reported(Box::new(status(Some(42), 0))));
        assert!(ready, "{message}");
        assert_eq!(reason, "BackupSucceeded");
        assert!(message.contains("alpha-r42") && message.contains("revision 42"), "{message}");

        let (ready, reason, message) = condition(&BackupHealth::Reported(Box::new(status(Some(42), 2))));
        assert!(!ready);
        assert_eq!(reason, "BackupFailing");
        assert!(message.contains("2 backup attempt(s)") && message.contains("connection refused"), "{message}");

        let (ready, reason, _) = condition(&BackupHealth::Reported(Box::new(status(None, 0))));
        assert_eq!((ready, reason), (false, "NoBackupYet"));
        let (ready, reason, _) = condition(&BackupHealth::Starting { why: "x".into() });
        assert_eq!((ready, reason), (false, "SidecarStarting"));
    }

    #[test]
    fn a_steady_sidecar_gives_the_same_condition_however_often_it_is_asked() {
        // The time of the last (possibly skipped) run and the next run move on every schedule tick; the condition
        // must not, or a steady cluster would write its status every time.
        let mut later = status(Some(42), 0);
        later.last_success_at = chrono::DateTime::from_timestamp(1_800_003_600, 0);
        later.next_run = chrono::DateTime::from_timestamp(1_800_005_400, 0);
        assert_eq!(
            condition(&BackupHealth::Reported(Box::new(status(Some(42), 0)))),
            condition(&BackupHealth::Reported(Box::new(later)))
        );
    }
}
