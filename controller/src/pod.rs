//! The member pod: one etcd process on its data directory (the member's claim with `spec.storage`, else an emptyDir),
//! reachable by a stable DNS name through the headless service. A crashed or OOM-killed etcd restarts in place on
//! its data (`restartPolicy: Always`); only a restored seed runs with `restartPolicy: Never`, because its restore
//! (etcd's tool refuses a data directory that exists) cannot run a second time when the kubelet re-runs init
//! containers. A pod on a claim is disposable: created again under the same name on the claim, it is the same
//! member.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Probe,
    SecretVolumeSource, TCPSocketAction, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use proto::cluster::{BackupStorage, EtcdCluster};

use crate::backup;
use crate::certificates::{TRUSTED_CAS, Trust};
use crate::labels::{MEMBER_LABEL, client_url, cluster_labels, member_selector, owner, peer_url};
use crate::observe::{ETCD_CONTAINER, FETCH_CONTAINER, GUARD_CONTAINER, RESTORE_CONTAINER};
use crate::version::Version;

/// Where the member's volume is mounted.
const VOLUME_DIR: &str = "/var/lib/etcd";
/// Where etcd keeps its data inside the pod: a directory in the volume, so that a restore can create it (etcd 3.4's
/// restore refuses a data directory that exists, even empty).
pub const DATA_DIR: &str = "/var/lib/etcd/data";
/// Where a seed's restore puts the verified snapshot.
const SNAPSHOT_DIR: &str = "/var/lib/etcd-restore";
/// Where the restore finds the sidecar's bearer token.
const RESTORE_TOKEN_DIR: &str = "/var/run/kube-etcd-controller/restore-token";
/// Where the restore's fetch finds the CA bundle of an HTTPS sidecar's certificate.
const RESTORE_CA_DIR: &str = "/var/run/kube-etcd-controller/restore-ca";
/// Where a container's termination message is written (the Kubernetes default path).
const TERMINATION_LOG: &str = "/dev/termination-log";
/// How far a restore moves the revision on, so that watchers never see it go backwards (Kubernetes' own advice).
const BUMP_REVISION: u64 = 1_000_000_000;

/// The default spread of a cluster's members (`spec.pod.antiAffinity`): per node a rule, per zone a preference. Both
/// count only this cluster's members; a node whose taints the pod does not tolerate (a lost node is tainted
/// unreachable) or that its node affinity excludes is not counted, so a replacement is never held back by a node
/// it cannot go to.
pub fn default_spread(cluster: &str) -> Vec<TopologySpreadConstraint> {
    let spread = |topology_key: &str, when_unsatisfiable: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: topology_key.into(),
        when_unsatisfiable: when_unsatisfiable.into(),
        label_selector: Some(LabelSelector { match_labels: Some(member_selector(cluster)), ..Default::default() }),
        node_affinity_policy: Some("Honor".into()),
        node_taints_policy: Some("Honor".into()),
        ..Default::default()
    };
    vec![spread("kubernetes.io/hostname", "DoNotSchedule"), spread("topology.kubernetes.io/zone", "ScheduleAnyway")]
}

/// What the etcd container requests when `spec.pod.resources` is not set: enough for a small cluster's etcd
/// (about 50 MiB resident with little data), so member pods are Burstable and the last the kubelet evicts under
/// memory pressure after Guaranteed pods. No limits: an OOM kill from a limit set too low costs more than
/// sharing a node's spare memory. Set `spec.pod.resources` with limits equal to requests for Guaranteed QoS.
pub fn default_resources() -> ResourceRequirements {
    let requests = [("cpu", "100m"), ("memory", "128Mi")];
    ResourceRequirements {
        requests: Some(requests.into_iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()),
        ..Default::default()
    }
}

/// Where a member's peer certificate Secret is mounted.
pub const PEER_TLS_DIR: &str = "/etc/etcd/tls/peer";
/// Where a member's serving certificate Secret is mounted.
pub const SERVER_TLS_DIR: &str = "/etc/etcd/tls/server";
/// Where the CA bundles a member reads at start are mounted, pinned ([`crate::certificates::trust_config_map`]).
pub const TRUST_DIR: &str = "/etc/etcd/trust";

/// The etcd flags of a cluster's TLS: certificates from the mounted Secrets (read again on each handshake), the CA
/// bundles from the pinned ones (read only at start), and client certificates required on each side that speaks
/// TLS. (Every member has a plain listener for metrics and health beside: probes and Prometheus have no
/// certificate.)
pub fn tls_flags(peer: bool, client: bool) -> Vec<String> {
    let mut flags = Vec::new();
    if peer {
        flags.extend([
            format!("--peer-cert-file={PEER_TLS_DIR}/tls.crt"),
            format!("--peer-key-file={PEER_TLS_DIR}/tls.key"),
            format!("--peer-trusted-ca-file={TRUST_DIR}/{}", crate::certificates::PEER_CA_FILE),
            "--peer-client-cert-auth".to_string(),
        ]);
    }
    if client {
        flags.extend([
            format!("--cert-file={SERVER_TLS_DIR}/tls.crt"),
            format!("--key-file={SERVER_TLS_DIR}/tls.key"),
            format!("--trusted-ca-file={TRUST_DIR}/{}", crate::certificates::CLIENT_CA_FILE),
            "--client-cert-auth".to_string(),
        ]);
    }
    flags
}

/// A volume of Secret `secret`, its files readable by the pod's group only (`fsGroup`).
fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A seed restored from a backup before etcd starts.
#[derive(Clone, Debug, PartialEq)]
pub struct SeedRestore {
    /// Base URL of the sidecar serving the backup, as pods reach it, or the storage URL the backup is read from.
    pub source: String,
    /// Secret (key `token`) with the sidecar's bearer token, if it needs one.
    pub token_secret: Option<String>,
    /// Secret whose `ca.crt` an `https://` sidecar's certificate is checked against (only that key is mounted).
    pub ca_secret: Option<String>,
    /// The backup's name; `latest` only when read straight from storage, where the fetch resolves it.
    pub backup: String,
    /// The storage `source` names, when the backup is read from it without a sidecar: its volume or credentials.
    pub storage: Option<Box<BackupStorage>>,
    /// Image with `etcd-backup-sidecar`, which downloads and verifies it.
    pub sidecar_image: String,
}

/// How a member joins.
#[derive(Clone, Debug, PartialEq)]
pub enum Join {
    /// The seed of a new cluster, with its unique token; empty, or restored from a backup.
    New {
        /// `--initial-cluster-token`.
        token: String,
        /// Where its data comes from, when it does not start empty.
        restore: Option<SeedRestore>,
    },
    /// A member added to a running cluster (as a learner).
    Existing,
}

/// The etcd a member runs: its image and the version it holds, which sets its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The container image (`quay.io/coreos/etcd:v3.5.35`).
    pub image: String,
    /// Its etcd version.
    pub version: Version,
}

impl Release {
    /// `repository:v<version>`.
    pub fn of(repository: &str, version: Version) -> Self {
        Self { image: format!("{repository}:{}", version.tag()), version }
    }
}

/// The annotation on a member pod that holds the hash of the settings it was rendered with ([`settings_of`]).
pub const SETTINGS_HASH: &str = "kube-etcd-controller.dev/settings-hash";

/// Flags whose values name the member or how it joined: no setting, and no reason to call a pod different.
const PER_MEMBER_FLAGS: &[&str] =
    &["--name=", "--advertise-client-urls=", "--initial-advertise-peer-urls=", "--initial-cluster"];

/// A hash (SHA-256, hex, first 16 characters) of what a rendered member pod holds that comes from the spec and the
/// controller's rendering, not from the member or the etcd version: the etcd command without its per-member flags
/// and without the flags of its version (an upgrade changes those), the container's resources, the pod's labels,
/// annotations and placement, and whether its data is on a claim. A pod's command, resources and placement cannot
/// change while it lives, so a pod whose hash differs from the one the spec renders now runs older settings, and is
/// rolled. The readiness probe is rendered per version (as the version's flags are) and left out.
pub fn settings_of(pod: &Pod) -> String {
    use sha2::{Digest, Sha256};
    let spec = pod.spec.clone().unwrap_or_default();
    let etcd = spec.containers.iter().find(|c| c.name == ETCD_CONTAINER).cloned().unwrap_or_default();
    let version =
        etcd.image.as_deref().and_then(|i| i.rsplit_once(':')).and_then(|(_, tag)| crate::version::Version::parse(tag));
    let version_flags = version.map(crate::version::version_flags).unwrap_or_default();
    // Where a member listens for peers follows its registered peer URL ([`crate::peering`]): only the scheme its
    // certificates say is a setting (written as a member created with it listens, so earlier hashes hold).
    let peer_tls = etcd.command.iter().flatten().any(|a| a.starts_with("--peer-cert-file="));
    let listen_peers = format!("--listen-peer-urls={}://0.0.0.0:2380", if peer_tls { "https" } else { "http" });
    // The plain metrics listener every member has came to plain-client members later than to TLS ones (where it
    // always was): no setting of its own, so members created before it are not rolled for it (they get it when
    // they are next created), and a TLS member's hash stays the one earlier builds wrote.
    let client_tls = etcd.command.iter().flatten().any(|a| a == "--client-cert-auth");
    let command: Vec<&String> = etcd
        .command
        .iter()
        .flatten()
        .filter(|a| !PER_MEMBER_FLAGS.iter().any(|f| a.starts_with(f)) && !version_flags.contains(a))
        .filter(|a| client_tls || !a.starts_with("--listen-metrics-urls="))
        .map(|a| if a.starts_with("--listen-peer-urls=") { &listen_peers } else { a })
        .collect();
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    labels.remove(MEMBER_LABEL);
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(SETTINGS_HASH);
    let rendered = serde_json::json!({
        "command": command,
        "resources": etcd.resources,
        // The readiness probe is rendered per version, like the version's flags: not a setting. (A member born at
        // 3.4 keeps its exec probe after an upgrade; the ConfigDrift condition names it, review S10.)
        "labels": labels,
        "annotations": annotations,
        "affinity": spec.affinity,
        "tolerations": spec.tolerations,
        "nodeSelector": spec.node_selector,
        // Moving a member between an emptyDir and a claim is a change of what it runs on.
        "claim": spec.volumes.iter().flatten().any(|v| v.name == "data" && v.persistent_volume_claim.is_some()),
        "topologySpreadConstraints": spec.topology_spread_constraints,
        // Who the member runs as, when the user chose it (spec.pod.securityContext other than the default). The
        // hardened default is no setting of its own: a member of an earlier build (root, no security context) is
        // not rolled for it alone, since moving a volume's files to another user can fail on drivers that ignore
        // fsGroup. It moves to the hardened pod when it is next created (a rollout, a restart on its claim).
        "securityContext": spec.security_context.as_ref().filter(|c| {
            **c != crate::security::pod_context(&proto::cluster::MemberSecurity::default())
        }),
    });
    let digest = Sha256::digest(rendered.to_string().as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{SETTINGS_SCHEME}{hex}")
}

/// The prefix of the settings hashes this controller writes. A hash of another scheme (an earlier build, which
/// hashed other fields) says nothing about the settings as this build renders them: such a pod is taken as one that
/// recorded none, and is not rolled for it, so that upgrading the controller never rolls every member.
pub const SETTINGS_SCHEME: &str = "s2-";

/// The settings hash recorded on a pod, if it is of this controller's scheme.
pub fn recorded_settings(pod: &Pod) -> Option<String> {
    pod.annotations().get(SETTINGS_HASH).filter(|h| h.starts_with(SETTINGS_SCHEME)).cloned()
}

/// The settings hash a member pod of `cluster` gets if it is created now, trusting `trust` ([`settings_of`] of a
/// rendered pod).
pub fn settings_hash(cluster: &EtcdCluster, trust: &Trust) -> String {
    let version = crate::version::Version::parse(&cluster.spec.version)
        .unwrap_or(crate::version::Version { minor: 5, patch: 35 });
    let release = Release::of(&cluster.spec.repository, version);
    // The owner reference (which needs a UID) is no part of the hash.
    let mut cluster = cluster.clone();
    cluster.metadata.uid.get_or_insert_with(|| "settings".into());
    let volume = DataVolume::of_spec(&cluster.spec, "settings");
    let pod = member_pod(&cluster, "member", &[], &Join::Existing, &release, &volume, trust);
    pod.metadata.annotations.and_then(|mut a| a.remove(SETTINGS_HASH)).unwrap_or_default()
}

/// The pod of member `member` of `cluster`, running `release`; `initial_cluster` names every member etcd lists at
/// start, this one included, with its peer URL as etcd lists it ([`initial_cluster`]), trusting the CAs `trust`
/// names ([`TRUSTED_CAS`]). It carries the hash of its settings ([`SETTINGS_HASH`]).
pub fn member_pod(
    cluster: &EtcdCluster,
    member: &str,
    initial_cluster: &[(String, String)],
    join: &Join,
    release: &Release,
    volume: &DataVolume,
    trust: &Trust,
) -> Pod {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let spec = &cluster.spec;
    let policy = &spec.pod;
    let mut labels = policy.labels.clone();
    labels.extend(cluster_labels(&name));
    labels.insert(MEMBER_LABEL.to_string(), member.to_string());

    // The schemes the spec asks for; peer certificates are held while any member may still be registered at an
    // https peer URL (turning peer TLS off: [`crate::certificates::policy`]).
    let (peer_tls, client_tls) = (spec.peer_tls(), spec.client_tls());
    let peer_certificates = crate::certificates::peer_secret(cluster).is_some();
    let initial = initial_cluster.iter().map(|(m, url)| format!("{m}={url}")).collect::<Vec<_>>().join(",");
    // Its peer URL as etcd lists it (a new seed: the spec's), and where it listens while that has another scheme
    // than the spec asks for ([`crate::peering`]).
    let registered = initial_cluster.iter().find(|(m, _)| m == member).map(|(_, url)| url.as_str());
    let advertised = registered.map_or_else(|| peer_url(member, &name, &namespace, peer_tls), str::to_string);
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    let listen_peers = crate::peering::listen(registered, peer_tls);
    let mut peer_ports: Vec<i32> = listen_peers.iter().filter_map(|url| url.rsplit_once(':')?.1.parse().ok()).collect();
    peer_ports.sort_unstable();
    let mut command = vec![
        "etcd".to_string(),
        format!("--name={member}"),
        format!("--data-dir={DATA_DIR}"),
        format!("--listen-client-urls={}://0.0.0.0:2379", scheme(client_tls)),
        format!("--advertise-client-urls={}", client_url(member, &name, &namespace, client_tls)),
        format!("--listen-peer-urls={}", listen_peers.join(",")),
        format!("--initial-advertise-peer-urls={advertised}"),
        format!("--initial-cluster={initial}"),
        format!("--quota-backend-bytes={}", spec.etcd.quota_backend_bytes),
        "--auto-compaction-mode=periodic".to_string(),
        format!("--auto-compaction-retention={}", spec.etcd.auto_compaction_retention),
    ];
    command.extend(tls_flags(peer_certificates, client_tls));
    // etcd's own metrics and health, plain, on the port named `metrics` (the chart's PodMonitor scrapes it). After
    // the TLS flags: where a client-TLS member of an earlier build had it, so its settings hash is unchanged.
    command.push(format!("--listen-metrics-urls=http://0.0.0.0:{}", crate::version::METRICS_PORT));
    command.extend(crate::version::version_flags(release.version));
    match join {
        Join::New { token, .. } => {
            command.push("--initial-cluster-state=new".into());
            command.push(format!("--initial-cluster-token={token}"));
        }
        Join::Existing => command.push("--initial-cluster-state=existing".into()),
    }
    let image = release.image.clone();
    let data = match volume {
        DataVolume::EmptyDir => {
            Volume { name: "data".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }
        }
        DataVolume::Claim { .. } => Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(member),
                read_only: None,
            }),
            ..Default::default()
        },
    };
    let mut volumes = vec![data];
    let mut mounts = vec![VolumeMount { name: "data".into(), mount_path: VOLUME_DIR.into(), ..Default::default() }];
    // Whole Secret directories (never subPath, which the kubelet does not update): a renewed certificate reaches
    // etcd, which reads the files again on each new handshake, without a restart.
    for (volume_name, dir, secret) in [
        ("peer-tls", PEER_TLS_DIR, crate::certificates::peer_secret(cluster)),
        ("server-tls", SERVER_TLS_DIR, crate::certificates::server_secret(cluster).filter(|_| client_tls)),
    ] {
        let Some(secret) = secret else { continue };
        volumes.push(secret_volume(volume_name, &secret));
        mounts.push(VolumeMount {
            name: volume_name.into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // The CA bundles, pinned: etcd reads them at each start, and reads what the pod's annotation names.
    if peer_certificates || client_tls {
        volumes.push(Volume {
            name: "trust".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: crate::certificates::trust_config_map(&name, trust),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "trust".into(),
            mount_path: TRUST_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let mut init_containers = Vec::new();
    if let DataVolume::Claim { sidecar_image, member_id, expect_data } = volume {
        init_containers.push(guard_container(cluster, member, sidecar_image, *member_id, *expect_data));
    }
    if let Join::New { token, restore: Some(restore) } = join {
        let (containers, extra) = restore_containers(cluster, member, token, restore, release);
        init_containers.extend(containers);
        volumes.extend(extra);
    }
    // A restored seed's restore cannot run twice (etcd's tool refuses a data directory that exists).
    let restores = matches!(join, Join::New { restore: Some(_), .. });

    let container = Container {
        name: ETCD_CONTAINER.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        // The peer ports it listens on: 2380, and 2382 while (or since) peer TLS was turned on for it running.
        ports: Some(
            [("client", 2379)]
                .into_iter()
                .chain(peer_ports.iter().map(|&port| (if port == 2380 { "peer" } else { "peer-switch" }, port)))
                .chain([("metrics", crate::version::METRICS_PORT)])
                .map(|(name, port)| ContainerPort {
                    name: Some(name.into()),
                    container_port: port,
                    ..Default::default()
                })
                .collect(),
        ),
        volume_mounts: Some(mounts),
        resources: Some(policy.resources.clone().unwrap_or_else(default_resources)),
        // Ready when this member serves: `/health` needs quorum, which is right for taking traffic. A NOSPACE
        // alarm does not count (from etcd 3.5; older versions ignore the parameter): a cluster out of space serves
        // reads still, and the compaction and deletes that free space must reach it through the client Service.
        readiness_probe: Some(match crate::version::readiness(release.version, client_tls.then_some(SERVER_TLS_DIR)) {
            crate::version::Readiness::Http(path, port) => Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(path.into()),
                    port: IntOrString::Int(port),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                failure_threshold: Some(3),
                ..Default::default()
            },
            crate::version::Readiness::Exec(command) => Probe {
                exec: Some(ExecAction { command: Some(command) }),
                period_seconds: Some(5),
                timeout_seconds: Some(3),
                failure_threshold: Some(3),
                ..Default::default()
            },
        }),
        // Alive while the process listens. Never a quorum check: during an outage every member would fail it and
        // be killed, turning a recoverable quorum loss into the loss of every member.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(2379), ..Default::default() }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        security_context: Some(crate::security::container_context()),
        ..Default::default()
    };

    // The user's own placement replaces the default spread: their constraints, or their affinity (which may hold
    // an anti-affinity of their own, and always did replace the default).
    let spread = if !policy.topology_spread_constraints.is_empty() {
        policy.topology_spread_constraints.clone()
    } else if policy.anti_affinity && policy.affinity.is_none() {
        default_spread(&name)
    } else {
        Vec::new()
    };

    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(member.to_string()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: (!policy.annotations.is_empty()).then(|| policy.annotations.clone()),
            owner_references: Some(vec![owner(cluster)]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            hostname: Some(member.to_string()),
            subdomain: Some(name.clone()),
            restart_policy: Some(if restores { "Never" } else { "Always" }.into()),
            init_containers: (!init_containers.is_empty()).then_some(init_containers),
            containers: vec![container],
            volumes: Some(volumes),
            affinity: policy.affinity.clone(),
            topology_spread_constraints: (!spread.is_empty()).then_some(spread),
            node_selector: (!policy.node_selector.is_empty()).then(|| policy.node_selector.clone()),
            tolerations: Some(tolerations(&policy.tolerations)),
            // etcd never calls the API server: no token to steal from a member pod.
            automount_service_account_token: Some(false),
            security_context: Some(crate::security::pod_context(&policy.security_context)),
            ..Default::default()
        }),
        status: None,
    };
    // The CAs it trusts: etcd reads its CA bundles only at start, so a changed bundle is a setting to roll.
    if let Some(trusted) = trust.render(cluster) {
        pod.metadata.annotations.get_or_insert_with(Default::default).insert(TRUSTED_CAS.into(), trusted);
    }
    let settings = settings_of(&pod);
    pod.metadata.annotations.get_or_insert_with(Default::default).insert(SETTINGS_HASH.into(), settings);
    pod
}

/// The `--initial-cluster` of a member of `cluster`: `members` (by name) at the peer URLs etcd lists for them
/// (`registered`), or, for one it does not list yet, at the URL it is added with: TLS when the spec asks for it and
/// no member is registered plain or every member's pod holds peer certificates (`certified`,
/// [`crate::peering::joins_with_tls`]).
pub fn initial_cluster(
    cluster: &EtcdCluster,
    members: &[String],
    registered: &[(String, String)],
    certified: bool,
) -> Vec<(String, String)> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let urls: Vec<&str> = registered.iter().map(|(_, url)| url.as_str()).collect();
    let tls = crate::peering::joins_with_tls(&urls, cluster.spec.peer_tls(), certified);
    members
        .iter()
        .map(|m| {
            let url = registered.iter().find(|(r, _)| r == m).map(|(_, url)| url.clone());
            (m.clone(), url.unwrap_or_else(|| peer_url(m, &name, &namespace, tls)))
        })
        .collect()
}

/// What a member's data directory lives on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataVolume {
    /// An emptyDir: the data dies with the pod.
    EmptyDir,
    /// Its claim ([`claim_name`]), checked by a guard before etcd starts.
    Claim {
        /// The image with `etcd-backup-sidecar`, which runs the guard.
        sidecar_image: String,
        /// The member's etcd ID, when known: the guard records it, and refuses a volume of another member ID.
        member_id: Option<u64>,
        /// Whether the member ran on it before (its claim records it): the guard then refuses an empty volume (etcd
        /// would start as that member with no log, forgetting its votes).
        expect_data: bool,
    },
}

impl DataVolume {
    /// What a new member of a cluster with `spec` gets: a claim when `spec.storage` is set.
    pub fn of_spec(spec: &proto::cluster::EtcdClusterSpec, sidecar_image: &str) -> Self {
        match spec.storage {
            Some(_) => Self::Claim { sidecar_image: sidecar_image.into(), member_id: None, expect_data: false },
            None => Self::EmptyDir,
        }
    }
}

/// The claim of member `member`: `data-<member>`.
pub fn claim_name(member: &str) -> String {
    format!("data-{member}")
}

/// The annotation on a member's claim naming the UID of the EtcdCluster it was made for.
pub const CLAIM_CLUSTER_UID: &str = "kube-etcd-controller.dev/cluster-uid";
/// The annotation on a member's claim naming its member's etcd ID (hex), once etcd listed the member as started:
/// from then on the claim holds that member's data, and a pod created again on it restarts that member.
pub const CLAIM_MEMBER_ID: &str = "kube-etcd-controller.dev/member-id";

/// The annotation on a claim whose member was removed from etcd (its value says why): its data can never rejoin, and
/// it is never mounted again; it stays only when the retention policy keeps it.
pub const CLAIM_RETIRED: &str = "kube-etcd-controller.dev/retired";
/// How the [`CLAIM_RETIRED`] reason of a claim of a cluster that lost quorum (and was restored) starts: such a claim
/// may hold writes the backup does not, and is never deleted automatically.
pub const LOST_PREFIX: &str = "lost: ";

/// The claim of member `member` of `cluster` (`spec.storage`, which must be set): labelled as the cluster's and the
/// member's, annotated with the cluster's UID, and owned by the EtcdCluster only when `whenDeleted` is `Delete` (so
/// that deleting it deletes them).
pub fn member_claim(cluster: &EtcdCluster, member: &str) -> Option<PersistentVolumeClaim> {
    let storage = cluster.spec.storage.as_ref()?;
    let mut labels = storage.labels.clone();
    labels.extend(cluster_labels(&cluster.name_any()));
    labels.insert(MEMBER_LABEL.to_string(), member.to_string());
    let delete_with_cluster = storage.retention_policy.when_deleted == proto::cluster::Retention::Delete;
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(member)),
            namespace: cluster.namespace(),
            labels: Some(labels),
            annotations: Some([(CLAIM_CLUSTER_UID.to_string(), cluster.uid().unwrap_or_default())].into()),
            owner_references: delete_with_cluster.then(|| vec![owner(cluster)]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(storage.access_modes.iter().map(|m| m.as_str().to_string()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(storage.size.clone()))].into()),
                ..Default::default()
            }),
            storage_class_name: storage.storage_class_name.clone(),
            selector: storage.selector.clone(),
            ..Default::default()
        }),
        status: None,
    })
}

/// The init container that checks, before etcd starts, that the claim mounted is this member's
/// (`etcd-backup-sidecar guard`): it claims an empty volume, and refuses (exit 4, the reason in its termination
/// message) one that belongs to another cluster or member or holds data it did not write.
fn guard_container(
    cluster: &EtcdCluster,
    member: &str,
    sidecar_image: &str,
    member_id: Option<u64>,
    expect_data: bool,
) -> Container {
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let mut command = vec![
        "etcd-backup-sidecar".to_string(),
        "guard".into(),
        format!("--volume={VOLUME_DIR}"),
        format!("--data-dir={DATA_DIR}"),
        format!("--cluster-uid={}", cluster.uid().unwrap_or_default()),
        format!("--cluster={namespace}/{}", cluster.name_any()),
        format!("--member={member}"),
        format!("--result-file={TERMINATION_LOG}"),
    ];
    if let Some(id) = member_id {
        command.push(format!("--member-id={id:x}"));
    }
    if expect_data {
        command.push("--expect-data".into());
    }
    Container {
        name: GUARD_CONTAINER.into(),
        image: Some(sidecar_image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: VOLUME_DIR.into(),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some([("cpu", "10m"), ("memory", "16Mi")].map(|(k, v)| (k.into(), Quantity(v.into()))).into()),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(crate::security::container_context()),
        ..Default::default()
    }
}

/// The node conditions under which Kubernetes' taint manager would evict a member (300 s by default), which a
/// member tolerates without a time limit: a partitioned majority keeps serving, and its pods are not killed when
/// the partition heals. The controller itself replaces a member whose node is lost while quorum holds.
pub const UNEVICTED_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// The user's tolerations, and [`UNEVICTED_TAINTS`] as `NoExecute` without `tolerationSeconds` (replacing any
/// toleration of the user's for those keys and that effect, which would bring the eviction back).
fn tolerations(user: &[Toleration]) -> Vec<Toleration> {
    let ours = |t: &Toleration| {
        t.key.as_deref().is_some_and(|k| UNEVICTED_TAINTS.contains(&k))
            && t.effect.as_deref().is_none_or(|e| e == "NoExecute")
    };
    let mut all: Vec<Toleration> = user.iter().filter(|t| !ours(t)).cloned().collect();
    all.extend(UNEVICTED_TAINTS.iter().map(|key| Toleration {
        key: Some((*key).into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: None,
        ..Default::default()
    }));
    all
}

/// The init containers that restore a seed before etcd starts, and the volumes they need: the sidecar downloads,
/// decompresses and verifies the backup (nothing is written to the data directory unless that succeeds), then
/// etcd's own tool makes this member's data directory from it, with a new cluster token.
fn restore_containers(
    cluster: &EtcdCluster,
    member: &str,
    token: &str,
    restore: &SeedRestore,
    release: &Release,
) -> (Vec<Container>, Vec<Volume>) {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let snapshot = format!("{SNAPSHOT_DIR}/snapshot.db");
    let mut volumes =
        vec![Volume { name: "restore".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }];
    let mut fetch_mounts =
        vec![VolumeMount { name: "restore".into(), mount_path: SNAPSHOT_DIR.into(), ..Default::default() }];
    let mut fetch_command = vec![
        "etcd-backup-sidecar".to_string(),
        "restore".into(),
        format!("--from={}", restore.source),
        format!("--backup={}", restore.backup),
        format!("--output={snapshot}"),
    ];
    let mut fetch_env = Vec::new();
    if let Some(storage) = &restore.storage {
        // Only a restore from storage resolves `latest` itself and needs to report what it found (a flag that
        // older sidecar images, pinned in spec.backup.sidecarImage, would refuse).
        fetch_command.push(format!("--result-file={TERMINATION_LOG}"));
        // No sidecar was asked which etcd version the backup came from: the fetch checks the seed version rule.
        fetch_command.push(format!("--seed-version={}", release.version));
        if let Some(pvc) = &storage.pvc {
            volumes.push(Volume {
                name: "restore-backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: pvc.claim_name.clone(),
                    read_only: Some(true),
                }),
                ..Default::default()
            });
            fetch_mounts.push(VolumeMount {
                name: "restore-backups".into(),
                mount_path: backup::PVC_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        if let Some(s3) = &storage.s3 {
            fetch_command.extend(backup::s3_args(s3));
            fetch_env.extend(backup::s3_credentials(s3));
        }
    }
    if let Some(secret) = &restore.token_secret {
        volumes.push(Volume {
            name: "restore-token".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret.clone()), ..Default::default() }),
            ..Default::default()
        });
        fetch_mounts.push(VolumeMount {
            name: "restore-token".into(),
            mount_path: RESTORE_TOKEN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        fetch_command.push(format!("--auth-token-file={RESTORE_TOKEN_DIR}/token"));
    }
    if let Some(secret) = &restore.ca_secret {
        // Only the CA bundle of the sidecar's serving Secret, never its key.
        volumes.push(Volume {
            name: "restore-ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                    key: crate::tls::CA_KEY.into(),
                    path: crate::tls::CA_KEY.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        fetch_mounts.push(VolumeMount {
            name: "restore-ca".into(),
            mount_path: RESTORE_CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        fetch_command.push(format!("--ca-file={RESTORE_CA_DIR}/{}", crate::tls::CA_KEY));
    }
    let fetch = Container {
        name: FETCH_CONTAINER.into(),
        image: Some(restore.sidecar_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(fetch_command),
        env: (!fetch_env.is_empty()).then_some(fetch_env),
        volume_mounts: Some(fetch_mounts),
        // The controller reads from here which backup was restored (the result file) or why it failed (the log).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(crate::security::container_context()),
        ..Default::default()
    };

    let mut restore_command = vec![
        release.version.restore_tool().to_string(),
        "snapshot".into(),
        "restore".into(),
        snapshot,
        format!("--name={member}"),
        format!("--initial-cluster={member}={}", peer_url(member, &name, &namespace, cluster.spec.peer_tls())),
        format!("--initial-cluster-token={token}"),
        format!("--initial-advertise-peer-urls={}", peer_url(member, &name, &namespace, cluster.spec.peer_tls())),
        format!("--data-dir={DATA_DIR}"),
    ];
    if release.version.restores_with_bump() {
        restore_command.push(format!("--bump-revision={BUMP_REVISION}"));
        restore_command.push("--mark-compacted".into());
    }
    let restore_data = Container {
        name: RESTORE_CONTAINER.into(),
        image: Some(release.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(restore_command),
        env: Some(vec![EnvVar { name: "ETCDCTL_API".into(), value: Some("3".into()), ..Default::default() }]),
        volume_mounts: Some(vec![
            VolumeMount { name: "data".into(), mount_path: VOLUME_DIR.into(), ..Default::default() },
            VolumeMount { name: "restore".into(), mount_path: SNAPSHOT_DIR.into(), ..Default::default() },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(crate::security::container_context()),
        ..Default::default()
    };
    (vec![fetch, restore_data], volumes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster;

    /// The pod `member_pod` renders for the release the cluster's spec names.
    fn pod_of(c: &EtcdCluster, member: &str, initial: &[String], join: &Join) -> Pod {
        let release = Release::of(&c.spec.repository, Version::parse(&c.spec.version).unwrap());
        member_pod(
            c,
            member,
            &initial_cluster(c, initial, &[], false),
            join,
            &release,
            &DataVolume::EmptyDir,
            &Trust::default(),
        )
    }

    fn command(pod: &Pod) -> Vec<String> {
        pod.spec.as_ref().unwrap().containers[0].command.clone().unwrap()
    }

    #[test]
    fn the_seed_starts_a_new_cluster_with_its_token() {
        let c = cluster("demo", 3);
        let pod = pod_of(&c, "demo-0000", &["demo-0000".into()], &Join::New { token: "tok-1".into(), restore: None });
        let args = command(&pod);
        assert!(args.contains(&"--initial-cluster-state=new".into()));
        assert!(args.contains(&"--initial-cluster-token=tok-1".into()));
        assert!(args.contains(&"--initial-cluster=demo-0000=http://demo-0000.demo.ns.svc:2380".into()));
        assert!(args.contains(&"--advertise-client-urls=http://demo-0000.demo.ns.svc:2379".into()));
        assert!(args.contains(&format!("--quota-backend-bytes={}", 2u64 << 30)), "etcd's quota, explicit");
        assert!(args.contains(&"--auto-compaction-mode=periodic".into()));
        assert!(args.contains(&"--auto-compaction-retention=1h".into()));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"), "a crashed etcd restarts on its data");
        assert_eq!(spec.hostname.as_deref(), Some("demo-0000"));
        assert_eq!(spec.subdomain.as_deref(), Some("demo"), "the headless service gives it its DNS name");
        assert!(spec.volumes.unwrap()[0].empty_dir.is_some());
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("quay.io/coreos/etcd:v3.5.35"));
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    }

    #[test]
    fn members_outlast_a_partition_kubernetes_would_evict_them_for_and_mount_no_token() {
        let mut c = cluster("demo", 3);
        let user = |key: &str, effect: &str, seconds: Option<i64>| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            toleration_seconds: seconds,
            ..Default::default()
        };
        c.spec.pod.tolerations = vec![
            user("dedicated", "NoSchedule", None),
            user("node.kubernetes.io/unreachable", "NoExecute", Some(60)),
            user("node.kubernetes.io/not-ready", "NoSchedule", None),
        ];
        let spec = pod_of(&c, "demo-0000", &["demo-0000".into()], &Join::New { token: "t".into(), restore: None })
            .spec
            .unwrap();
        let tolerations = spec.tolerations.unwrap();
        for key in UNEVICTED_TAINTS {
            let no_execute: Vec<_> = tolerations
                .iter()
                .filter(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some("NoExecute"))
                .collect();
            assert_eq!(no_execute.len(), 1, "{key}: {tolerations:?}");
            assert_eq!(no_execute[0].toleration_seconds, None, "{key} tolerated without a time limit");
            assert_eq!(no_execute[0].operator.as_deref(), Some("Exists"));
        }
        assert!(tolerations.iter().any(|t| t.key.as_deref() == Some("dedicated")), "the user's own are kept");
        assert!(
            tolerations.iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")
                && t.effect.as_deref() == Some("NoSchedule")),
            "a toleration of another effect is the user's business"
        );
        assert_eq!(spec.automount_service_account_token, Some(false));
    }

    /// The settings hash names what the spec renders, not the member, how it joined, or its etcd version: every
    /// member of one spec carries the one the status compares with, and a changed setting changes it.
    #[test]
    fn every_member_of_one_spec_carries_the_same_settings_hash() {
        let mut c = cluster("demo", 3);
        let wanted = settings_hash(&c, &Trust::default());
        let hash = |pod: &Pod| pod.metadata.annotations.as_ref().unwrap()[SETTINGS_HASH].clone();
        let seed = pod_of(&c, "demo-0000", &["demo-0000".into()], &Join::New { token: "t".into(), restore: None });
        let joiner = pod_of(&c, "demo-0004", &["demo-0000".into(), "demo-0004".into()], &Join::Existing);
        assert_eq!(hash(&seed), wanted);
        assert_eq!(hash(&joiner), wanted);
        let at = |c: &EtcdCluster, version: &str| {
            let release = Release::of("quay.io/coreos/etcd", Version::parse(version).unwrap());
            let (initial, trust) = (initial_cluster(c, &["demo-0001".to_string()], &[], false), Trust::default());
            member_pod(c, "demo-0001", &initial, &Join::Existing, &release, &DataVolume::EmptyDir, &trust)
        };
        for version in ["3.6.16", "3.7.3"] {
            assert_eq!(hash(&at(&c, version)), wanted, "{version}: its version's flags are the upgrade's business");
        }
        // Born at 3.4, it keeps the exec probe that fails under NOSPACE (review S10: ConfigDrift names it).
        let born_at_34 = at(&c, "3.4.23");
        assert_eq!(hash(&born_at_34), wanted, "the probe is its version's: the upgrade's business, not a rollout's");
        c.spec.etcd.auto_compaction_retention = "2h".into();
        assert_ne!(settings_hash(&c, &Trust::default()), wanted, "compaction is a setting");
        let mut placed = cluster("demo", 3);
        placed.spec.pod.node_selector.insert("disk".into(), "ssd".into());
        assert_ne!(settings_hash(&placed, &Trust::default()), wanted, "placement is a setting");
    }

    #[test]
    fn a_joining_member_lists_every_member_and_joins_the_existing_cluster() {
        let c = cluster("demo", 3);
        let members = ["demo-0000".to_string(), "demo-0001".into(), "demo-0004".into()];
        let args = command(&pod_of(&c, "demo-0004", &members, &Join::Existing));
        assert!(args.contains(&"--initial-cluster-state=existing".into()));
        let pod = pod_of(&c, "demo-0004", &members, &Join::Existing);
        assert_eq!(pod.spec.as_ref().unwrap().restart_policy.as_deref(), Some("Always"));
        assert!(!args.iter().any(|a| a.starts_with("--initial-cluster-token")));
        let initial = args.iter().find(|a| a.starts_with("--initial-cluster=")).unwrap();
        assert_eq!(initial.matches("=http://").count(), 3, "{initial}");
    }

    #[test]
    fn liveness_never_depends_on_quorum_but_readiness_does() {
        let pod = pod_of(&cluster("demo", 1), "demo-0000", &["demo-0000".into()], &Join::Existing);
        let container = &pod.spec.unwrap().containers[0];
        let liveness = container.liveness_probe.as_ref().unwrap();
        assert!(liveness.tcp_socket.is_some() && liveness.http_get.is_none() && liveness.exec.is_none());
        let readiness = container.readiness_probe.as_ref().unwrap();
        assert_eq!(readiness.http_get.as_ref().unwrap().path.as_deref(), Some("/health?exclude=NOSPACE"));
    }

    #[test]
    fn a_3_4_member_is_probed_with_a_v3_read_that_leaves_nothing_in_its_raft_log() {
        let mut c = cluster("demo", 1);
        c.spec.version = "3.4.23".into();
        let pod = pod_of(&c, "demo-0000", &["demo-0000".into()], &Join::Existing);
        let readiness = pod.spec.unwrap().containers[0].readiness_probe.clone().unwrap();
        assert!(readiness.http_get.is_none(), "3.4's /health is a v2 quorum read, which etcd 3.6 refuses to replay");
        let command = readiness.exec.unwrap().command.unwrap();
        assert_eq!(&command[..1], ["etcdctl"]);
        assert!(command.ends_with(&["endpoint".to_string(), "health".to_string()]));
    }

    #[test]
    fn pods_carry_labels_owner_and_a_spread_over_nodes_and_zones() {
        let mut c = cluster("demo", 3);
        c.spec.pod.labels.insert("team".into(), "storage".into());
        c.spec.pod.labels.insert(MEMBER_LABEL.into(), "spoofed".into());
        let pod = pod_of(&c, "demo-0002", &["demo-0002".into()], &Join::Existing);
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["team"], "storage");
        assert_eq!(labels[MEMBER_LABEL], "demo-0002", "the controller's labels win");
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("EtcdCluster", "demo", Some(true)));
        let spec = pod.spec.unwrap();
        let spread = spec.topology_spread_constraints.unwrap();
        let rule = |key: &str| spread.iter().find(|s| s.topology_key == key).unwrap().clone();
        let node = rule("kubernetes.io/hostname");
        assert_eq!((node.max_skew, node.when_unsatisfiable.as_str()), (1, "DoNotSchedule"), "per node a rule");
        assert_eq!(
            node.node_taints_policy.as_deref(),
            Some("Honor"),
            "a lost (tainted) node must not hold a replacement back"
        );
        assert_eq!(rule("topology.kubernetes.io/zone").when_unsatisfiable, "ScheduleAnyway", "per zone a preference");
        // Only this cluster's members count: the selector matches this pod's labels, and names the cluster.
        let selector = node.label_selector.unwrap().match_labels.unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)), "{selector:?} must select {labels:?}");
        assert!(selector.values().any(|v| v == "demo"));
        assert!(spec.affinity.is_none());

        // An affinity of the user's replaces the default spread, as it replaced the default anti-affinity before.
        let mut with_affinity = c.clone();
        with_affinity.spec.pod.affinity = Some(Default::default());
        let spec = pod_of(&with_affinity, "demo-0002", &["demo-0002".into()], &Join::Existing).spec.unwrap();
        assert!(spec.affinity.is_some() && spec.topology_spread_constraints.is_none());

        // The user's own constraints replace the default, beside the user's affinity.
        let mut own = c.clone();
        own.spec.pod.topology_spread_constraints = vec![TopologySpreadConstraint {
            max_skew: 2,
            topology_key: "rack".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            ..Default::default()
        }];
        own.spec.pod.affinity = Some(Default::default());
        let spec = pod_of(&own, "demo-0002", &["demo-0002".into()], &Join::Existing).spec.unwrap();
        assert_eq!(spec.topology_spread_constraints.unwrap(), own.spec.pod.topology_spread_constraints);
        assert!(spec.affinity.is_some());

        c.spec.pod.anti_affinity = false;
        let pod = pod_of(&c, "demo-0002", &["demo-0002".into()], &Join::Existing);
        assert!(pod.spec.unwrap().topology_spread_constraints.is_none());
    }

    #[test]
    fn members_request_resources_by_default_and_take_the_specs_when_set() {
        let mut c = cluster("demo", 3);
        let pod = pod_of(&c, "demo-0001", &["demo-0001".into()], &Join::Existing);
        let resources = pod.spec.unwrap().containers[0].resources.clone().unwrap();
        let requests = resources.requests.unwrap();
        assert_eq!((requests["cpu"].0.as_str(), requests["memory"].0.as_str()), ("100m", "128Mi"), "Burstable");
        assert!(resources.limits.is_none(), "no limit to be OOM-killed at by default");
        let guaranteed = ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("1Gi".into()))].into()),
            requests: Some([("memory".to_string(), Quantity("1Gi".into()))].into()),
            ..Default::default()
        };
        c.spec.pod.resources = Some(guaranteed.clone());
        let pod = pod_of(&c, "demo-0001", &["demo-0001".into()], &Join::Existing);
        assert_eq!(pod.spec.unwrap().containers[0].resources, Some(guaranteed));
    }

    fn restore() -> SeedRestore {
        SeedRestore {
            source: "http://src-backup.ns.svc:19999".into(),
            token_secret: Some("src-backup-token".into()),
            ca_secret: None,
            backup: "src-20261125T000000.000Z-r42".into(),
            storage: None,
            sidecar_image: "sidecar:1".into(),
        }
    }

    #[test]
    fn a_seed_fetching_from_an_https_sidecar_checks_it_with_only_the_ca_of_its_secret() {
        let c = cluster("demo", 3);
        let https = SeedRestore {
            source: "https://src-backup.ns.svc:19999".into(),
            ca_secret: Some("src-tls-backup".into()),
            ..restore()
        };
        let join = Join::New { token: "t".into(), restore: Some(https) };
        let spec = pod_of(&c, "demo-0000", &["demo-0000".into()], &join).spec.unwrap();
        let fetch = &spec.init_containers.clone().unwrap()[0];
        let command = fetch.command.clone().unwrap();
        assert!(command.contains(&"--from=https://src-backup.ns.svc:19999".to_string()), "{command:?}");
        assert!(command.contains(&format!("--ca-file={RESTORE_CA_DIR}/ca.crt")), "{command:?}");
        let volume = spec.volumes.unwrap().into_iter().find(|v| v.name == "restore-ca").expect("the CA volume");
        let secret = volume.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("src-tls-backup"));
        let items: Vec<String> = secret.items.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(items, ["ca.crt"], "never the sidecar's key");
        assert!(fetch.volume_mounts.as_ref().unwrap().iter().any(|m| m.mount_path == RESTORE_CA_DIR));
        // A plain sidecar: no CA.
        let join = Join::New { token: "t".into(), restore: Some(restore()) };
        let command = pod_of(&c, "demo-0000", &["demo-0000".into()], &join).spec.unwrap().init_containers.unwrap()[0]
            .command
            .clone()
            .unwrap();
        assert!(!command.iter().any(|a| a.starts_with("--ca-file")), "{command:?}");
    }

    #[test]
    fn a_seed_restored_from_storage_reads_it_with_the_buckets_credentials_or_the_claim_read_only() {
        use proto::cluster::{PvcStorage, S3Storage};
        let c = cluster("demo", 3);
        let s3 = S3Storage {
            bucket: "etcd-backups".into(),
            prefix: Some("ns/old".into()),
            endpoint: Some("http://minio:9000".into()),
            region: None,
            credentials_secret: "s3-creds".into(),
            allow_http: true,
        };
        let from_s3 = SeedRestore {
            source: "s3://etcd-backups/ns/old".into(),
            token_secret: None,
            ca_secret: None,
            backup: "latest".into(),
            storage: Some(Box::new(BackupStorage { pvc: None, s3: Some(s3) })),
            sidecar_image: "sidecar:1".into(),
        };
        let join = Join::New { token: "t".into(), restore: Some(from_s3.clone()) };
        let pod = pod_of(&c, "demo-0000", &["demo-0000".into()], &join);
        let fetch = &pod.spec.unwrap().init_containers.unwrap()[0];
        let command = fetch.command.clone().unwrap();
        for flag in ["--from=s3://etcd-backups/ns/old", "--backup=latest", "--s3-endpoint=http://minio:9000"] {
            assert!(command.contains(&flag.to_string()), "{flag} in {command:?}");
        }
        assert!(command.contains(&"--s3-allow-http".to_string()) && command.contains(&"--s3-region=us-east-1".into()));
        assert!(command.contains(&format!("--result-file={TERMINATION_LOG}")), "the result is reported back");
        let seed_version = format!("--seed-version={}", c.spec.version.trim_start_matches('v'));
        assert!(command.contains(&seed_version), "no sidecar checked the version rule: the fetch does: {command:?}");
        assert!(!command.iter().any(|a| a.starts_with("--auth-token-file")), "no sidecar, no token");
        assert!(!command.iter().any(|a| a.contains("ACCESS_KEY")), "credentials never in arguments");
        let env = fetch.env.clone().unwrap();
        let from_secret: Vec<_> = env
            .iter()
            .map(|e| {
                let key = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
                (e.name.as_str(), key.name.as_str())
            })
            .collect();
        assert_eq!(from_secret, [("AWS_ACCESS_KEY_ID", "s3-creds"), ("AWS_SECRET_ACCESS_KEY", "s3-creds")]);

        let claim = PvcStorage { claim_name: "old-backups".into(), sub_path: Some("old".into()) };
        let from_pvc = SeedRestore {
            source: format!("file://{}/old", backup::PVC_MOUNT),
            storage: Some(Box::new(BackupStorage { pvc: Some(claim), s3: None })),
            ..from_s3
        };
        let join = Join::New { token: "t".into(), restore: Some(from_pvc) };
        let spec = pod_of(&c, "demo-0000", &["demo-0000".into()], &join).spec.unwrap();
        let fetch = &spec.init_containers.as_ref().unwrap()[0];
        let mount = fetch.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == backup::PVC_MOUNT).unwrap();
        assert_eq!(mount.read_only, Some(true), "a restore never writes to the backups");
        let volume = spec.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
        assert_eq!(volume.persistent_volume_claim.unwrap().claim_name, "old-backups");
        assert!(fetch.command.as_ref().unwrap().contains(&"--from=file:///backups/old".to_string()));
        assert!(spec.containers[0].volume_mounts.as_ref().unwrap().iter().all(|m| m.mount_path != backup::PVC_MOUNT));
    }

    #[test]
    fn a_restored_seed_fetches_and_verifies_its_backup_then_restores_it_before_etcd_starts() {
        let c = cluster("demo", 3);
        let join = Join::New { token: "tok-2".into(), restore: Some(restore()) };
        let pod = pod_of(&c, "demo-0003", &["demo-0003".into()], &join);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"), "a restore cannot run twice on its data");
        let init = spec.init_containers.unwrap();
        assert_eq!(init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), [FETCH_CONTAINER, RESTORE_CONTAINER]);
        let fetch = init[0].command.clone().unwrap();
        assert_eq!(fetch[..2], ["etcd-backup-sidecar".to_string(), "restore".into()]);
        assert!(fetch.contains(&"--backup=src-20261125T000000.000Z-r42".into()), "a named backup, never latest");
        assert!(fetch.contains(&"--from=http://src-backup.ns.svc:19999".into()));
        assert!(fetch.iter().any(|a| a.starts_with("--auth-token-file=")));
        assert!(!fetch.iter().any(|a| a.starts_with("--result-file")), "a named backup needs no report");
        assert_eq!(init[0].image.as_deref(), Some("sidecar:1"));
        let restore = init[1].command.clone().unwrap();
        assert_eq!(restore[0], "etcdutl", "3.5 restores with etcdutl");
        assert!(restore.contains(&"--initial-cluster-token=tok-2".into()));
        assert!(restore.contains(&"--name=demo-0003".into()));
        assert!(restore.contains(&format!("--data-dir={DATA_DIR}")));
        assert!(
            restore.contains(&"--mark-compacted".into()) && restore.iter().any(|a| a.starts_with("--bump-revision="))
        );
        let etcd = spec.containers[0].command.clone().unwrap();
        assert!(etcd.contains(&format!("--data-dir={DATA_DIR}")), "etcd starts on the restored directory");
        assert!(
            spec.volumes
                .unwrap()
                .iter()
                .any(|v| v.secret.as_ref().is_some_and(|s| s.secret_name.as_deref() == Some("src-backup-token")))
        );
    }

    #[test]
    fn etcd_34_restores_with_etcdctl_and_bumps_the_revision_only_where_it_can() {
        let mut c = cluster("demo", 1);
        c.spec.version = "3.4.23".into();
        let join = Join::New { token: "t".into(), restore: Some(restore()) };
        let pod = pod_of(&c, "demo-0000", &["demo-0000".into()], &join);
        let restore_cmd = pod.spec.unwrap().init_containers.unwrap()[1].command.clone().unwrap();
        assert_eq!(restore_cmd[0], "etcdctl");
        assert!(!restore_cmd.iter().any(|a| a.starts_with("--bump-revision")), "3.4.23 has no --bump-revision");
        c.spec.version = "3.4.27".into();
        let pod = pod_of(&c, "demo-0000", &["demo-0000".into()], &join);
        let restore_cmd = pod.spec.unwrap().init_containers.unwrap()[1].command.clone().unwrap();
        assert!(restore_cmd.iter().any(|a| a.starts_with("--bump-revision")));
    }

    #[test]
    fn a_member_on_a_claim_mounts_it_behind_a_guard_and_the_claim_follows_the_retention_policy() {
        let mut c = cluster("demo", 3);
        c.spec.storage = Some(
            serde_json::from_value(serde_json::json!({ "size": "8Gi", "storageClassName": "zonal", "labels": {
                "team": "a", "kube-etcd-controller.dev/cluster": "spoofed"
            } }))
            .unwrap(),
        );
        let release = Release::of("quay.io/coreos/etcd", Version { minor: 5, patch: 35 });
        let volume = DataVolume::Claim { sidecar_image: "sidecar:1".into(), member_id: Some(0xabc), expect_data: true };
        let pod = member_pod(&c, "demo-0001", &[], &Join::Existing, &release, &volume, &Trust::default());
        let spec = pod.spec.unwrap();
        let data = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "data").unwrap();
        assert_eq!(data.persistent_volume_claim.as_ref().unwrap().claim_name, "data-demo-0001");
        assert!(data.empty_dir.is_none());
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"), "a crash restarts etcd on its volume");
        let guard = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(guard.name, GUARD_CONTAINER);
        assert_eq!(guard.image.as_deref(), Some("sidecar:1"));
        let command = guard.command.clone().unwrap();
        for arg in [
            "guard",
            "--cluster-uid=uid-demo",
            "--cluster=ns/demo",
            "--member=demo-0001",
            "--member-id=abc",
            "--expect-data",
        ] {
            assert!(command.contains(&arg.to_string()), "{arg} in {command:?}");
        }
        assert!(
            command.contains(&format!("--data-dir={DATA_DIR}")) && command.contains(&format!("--volume={VOLUME_DIR}"))
        );

        let claim = member_claim(&c, "demo-0001").unwrap();
        assert_eq!(claim.metadata.name.as_deref(), Some("data-demo-0001"));
        let labels = claim.metadata.labels.unwrap();
        assert_eq!(labels[crate::labels::CLUSTER_LABEL], "demo", "the controller's labels win");
        assert_eq!((labels[MEMBER_LABEL].as_str(), labels["team"].as_str()), ("demo-0001", "a"));
        assert_eq!(claim.metadata.annotations.unwrap()[CLAIM_CLUSTER_UID], "uid-demo");
        assert!(
            claim.metadata.owner_references.is_none(),
            "whenDeleted: Retain by default: deleting the cluster keeps it"
        );
        let claim_spec = claim.spec.unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("zonal"));
        assert_eq!(claim_spec.access_modes.unwrap(), vec!["ReadWriteOnce".to_string()]);
        assert_eq!(claim_spec.resources.unwrap().requests.unwrap()["storage"].0, "8Gi");
        c.spec.storage.as_mut().unwrap().retention_policy.when_deleted = proto::cluster::Retention::Delete;
        let owned = member_claim(&c, "demo-0001").unwrap();
        assert_eq!(owned.metadata.owner_references.unwrap()[0].uid, "uid-demo", "deleted with the cluster when asked");
        c.spec.storage = None;
        assert!(member_claim(&c, "demo-0001").is_none());
    }

    #[test]
    fn a_hash_of_an_earlier_scheme_counts_as_none() {
        let c = cluster("demo", 3);
        let mut pod = pod_of(&c, "demo-0001", &["demo-0001".into()], &Join::Existing);
        assert_eq!(recorded_settings(&pod), Some(settings_hash(&c, &Trust::default())));
        pod.metadata.annotations.as_mut().unwrap().insert(SETTINGS_HASH.into(), "0123456789abcdef".into());
        assert_eq!(recorded_settings(&pod), None, "an earlier build's hash: not rolled for it");
    }

    #[test]
    fn moving_members_onto_claims_is_a_change_of_settings() {
        let mut c = cluster("demo", 3);
        let without = settings_hash(&c, &Trust::default());
        c.spec.storage = Some(serde_json::from_value(serde_json::json!({ "size": "1Gi" })).unwrap());
        assert_ne!(settings_hash(&c, &Trust::default()), without);
        // The member ID the guard is given is the member's, no setting.
        let release = Release::of("quay.io/coreos/etcd", Version { minor: 5, patch: 35 });
        let on =
            |id: Option<u64>| DataVolume::Claim { sidecar_image: "s".into(), member_id: id, expect_data: id.is_some() };
        let a = member_pod(&c, "demo-0001", &[], &Join::Existing, &release, &on(None), &Trust::default());
        let b = member_pod(&c, "demo-0002", &[], &Join::Existing, &release, &on(Some(7)), &Trust::default());
        assert_eq!(settings_of(&a), settings_of(&b));
        assert_eq!(settings_of(&a), settings_hash(&c, &Trust::default()));
    }

    #[test]
    fn every_member_pod_and_its_init_containers_pass_the_restricted_pod_security_standard() {
        use proto::cluster::{PvcStorage, S3Storage};
        let mut c = cluster("demo", 3);
        c.spec.storage = Some(serde_json::from_value(serde_json::json!({ "size": "1Gi" })).unwrap());
        let from = |storage: BackupStorage| SeedRestore {
            source: "s3://b/p".into(),
            token_secret: Some("token".into()),
            ca_secret: None,
            backup: "latest".into(),
            storage: Some(Box::new(storage)),
            sidecar_image: "sidecar:1".into(),
        };
        let s3 = S3Storage {
            bucket: "b".into(),
            prefix: None,
            endpoint: None,
            region: None,
            credentials_secret: "s3".into(),
            allow_http: false,
        };
        let pvc = PvcStorage { claim_name: "backups".into(), sub_path: None };
        let joins = [
            Join::Existing,
            Join::New { token: "t".into(), restore: None },
            Join::New { token: "t".into(), restore: Some(restore()) },
            Join::New { token: "t".into(), restore: Some(from(BackupStorage { pvc: None, s3: Some(s3) })) },
            Join::New { token: "t".into(), restore: Some(from(BackupStorage { pvc: Some(pvc), s3: None })) },
        ];
        let claim = DataVolume::Claim { sidecar_image: "sidecar:1".into(), member_id: Some(7), expect_data: true };
        let mut with_tls = c.clone();
        with_tls.spec.tls = Some(serde_json::from_value(serde_json::json!({ "peer": {}, "client": {} })).unwrap());
        for version in ["3.4.23", "3.5.35", "3.6.6"] {
            let release = Release::of("quay.io/coreos/etcd", Version::parse(version).unwrap());
            for (join, c) in joins.iter().flat_map(|j| [(j, &c), (j, &with_tls)]) {
                for volume in [&DataVolume::EmptyDir, &claim] {
                    let pod = member_pod(c, "demo-0000", &[], join, &release, volume, &Trust::default());
                    let spec = pod.spec.unwrap();
                    let refused = crate::security::restricted_violations(&spec);
                    assert!(refused.is_empty(), "{version} {join:?} {volume:?}: {refused:?}");
                    let context = spec.security_context.unwrap();
                    assert_eq!((context.run_as_user, context.fs_group), (Some(65532), Some(65532)));
                    for container in spec.init_containers.iter().flatten().chain(&spec.containers) {
                        let own = container.security_context.clone().unwrap();
                        assert_eq!(own.read_only_root_filesystem, Some(true), "{}", container.name);
                    }
                    assert_eq!(spec.automount_service_account_token, Some(false));
                }
            }
        }
        // The renderer of the check is no rubber stamp: a pod as this controller rendered it before is refused.
        let release = Release::of("quay.io/coreos/etcd", Version { minor: 5, patch: 35 });
        let mut spec =
            member_pod(&c, "demo-0000", &[], &Join::Existing, &release, &claim, &Trust::default()).spec.unwrap();
        spec.security_context = None;
        spec.containers[0].security_context = None;
        let refused = crate::security::restricted_violations(&spec);
        assert!(
            refused.iter().any(|r| r.contains("root")) && refused.iter().any(|r| r.contains("seccomp")),
            "{refused:?}"
        );
        assert!(refused.iter().any(|r| r == "etcd does not drop every capability"), "{refused:?}");
    }

    #[test]
    fn who_a_member_runs_as_is_a_setting_when_the_user_names_it_and_root_is_only_their_explicit_choice() {
        let mut c = cluster("demo", 3);
        let hardened = settings_hash(&c, &Trust::default());
        c.spec.pod.security_context.run_as_user = 0;
        assert_ne!(settings_hash(&c, &Trust::default()), hardened, "moving to (or off) another user rolls the members");
        let pod = pod_of(&c, "demo-0000", &[], &Join::Existing);
        assert!(crate::observe::runs_as_root(&pod), "as asked");
        let context = pod.spec.unwrap().security_context.unwrap();
        assert_eq!((context.run_as_user, context.run_as_non_root), (Some(0), Some(false)));
        // A member pod of an earlier build (no security context, root) is not rolled for the hardening alone (its
        // volume's driver may not give the files to the new user), but it is for a user the spec names.
        let hardened = cluster("demo", 3);
        let mut old = pod_of(&hardened, "demo-0001", &[], &Join::Existing);
        let spec = old.spec.as_mut().unwrap();
        spec.security_context = None;
        spec.containers[0].security_context = None;
        assert!(crate::observe::runs_as_root(&old), "no user named: the image's, root");
        assert!(!crate::observe::runs_as_root(&pod_of(&hardened, "demo-0002", &[], &Join::Existing)));
        assert_eq!(settings_of(&old), settings_hash(&hardened, &Trust::default()));
        assert_ne!(settings_of(&old), settings_hash(&c, &Trust::default()));
    }

    #[test]
    fn a_member_runs_the_release_it_is_given_with_that_versions_flags() {
        let c = cluster("demo", 3);
        let at = |version: &str| {
            let release = Release::of("quay.io/coreos/etcd", Version::parse(version).unwrap());
            member_pod(&c, "demo-0001", &[], &Join::Existing, &release, &DataVolume::EmptyDir, &Trust::default())
        };
        let image = |pod: &Pod| pod.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
        assert_eq!(image(&at("3.4.23")), "quay.io/coreos/etcd:v3.4.23", "not the spec's version: the plan's choice");
        assert!(command(&at("3.4.23")).contains(&"--logger=zap".into()));
        assert!(!command(&at("3.5.35")).iter().any(|a| a.starts_with("--logger") || a.starts_with("--feature-gates")));
        let gates = "--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true".to_string();
        assert!(command(&at("3.6.16")).contains(&gates) && command(&at("3.7.3")).contains(&gates));
        // No flag etcd 3.7 refuses, whatever the version a member was created at: it may be upgraded in place.
        for version in ["3.4.23", "3.5.35", "3.6.16", "3.7.3"] {
            let later = Version::parse("3.7.3").unwrap();
            let rendered = command(&at(version));
            for flag in rendered.iter().skip(1) {
                let name = flag.split('=').next().unwrap();
                assert!(crate::version::known_flag(name), "{name} is not in the version table");
            }
            assert_eq!(crate::version::refused_flag(&rendered, later), None, "{version}");
        }
    }

    #[test]
    fn a_member_turning_peer_tls_on_listens_on_both_schemes_at_its_registered_url_and_is_no_other_setting() {
        let mut c = cluster("demo", 3);
        c.spec.tls = Some(serde_json::from_value(serde_json::json!({ "peer": {} })).unwrap());
        let wanted = settings_hash(&c, &Trust::default());
        let registered = [
            ("demo-0000".to_string(), "https://demo-0000.demo.ns.svc:2382".to_string()),
            ("demo-0001".to_string(), "http://demo-0001.demo.ns.svc:2380".to_string()),
        ];
        let release = Release::of(&c.spec.repository, Version::parse(&c.spec.version).unwrap());
        let render = |member: &str, registered: &[(String, String)]| {
            let names = ["demo-0000".to_string(), "demo-0001".to_string(), "demo-0002".to_string()];
            let initial = initial_cluster(&c, &names, registered, false);
            member_pod(&c, member, &initial, &Join::Existing, &release, &DataVolume::EmptyDir, &Trust::default())
        };
        let pod = render("demo-0001", &registered);
        let args = command(&pod);
        for flag in [
            "--listen-peer-urls=http://0.0.0.0:2380,https://0.0.0.0:2382",
            "--initial-advertise-peer-urls=http://demo-0001.demo.ns.svc:2380",
            // Every member at the URL etcd lists; one it does not list yet joins plain while any member is.
            "--initial-cluster=demo-0000=https://demo-0000.demo.ns.svc:2382,demo-0001=http://demo-0001.demo.ns.svc:2380,\
             demo-0002=http://demo-0002.demo.ns.svc:2380",
            "--peer-cert-file=/etc/etcd/tls/peer/tls.crt",
        ] {
            assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
        }
        let switched = command(&render("demo-0000", &registered));
        assert!(switched.contains(&"--listen-peer-urls=https://0.0.0.0:2382".to_string()), "{switched:?}");
        let ports = |pod: &Pod| -> Vec<i32> {
            pod.spec.as_ref().unwrap().containers[0].ports.iter().flatten().map(|p| p.container_port).collect()
        };
        assert_eq!(ports(&pod), [2379, 2380, 2382, 2381], "the ports it listens on, named");
        assert_eq!(ports(&render("demo-0000", &registered)), [2379, 2382, 2381]);
        // etcd's metrics on a plain listener named `metrics`, TLS or not (Prometheus has no client certificate).
        assert!(args.contains(&"--listen-metrics-urls=http://0.0.0.0:2381".to_string()), "{args:?}");
        let named = pod.spec.as_ref().unwrap().containers[0].ports.iter().flatten().find(|p| p.container_port == 2381);
        assert_eq!(named.and_then(|p| p.name.as_deref()), Some("metrics"));
        // Where it listens follows its member; its settings are the spec's all along: no second rollout for it.
        let hash = |pod: &Pod| pod.metadata.annotations.as_ref().unwrap()[SETTINGS_HASH].clone();
        assert_eq!(hash(&pod), wanted);
        assert_eq!(hash(&render("demo-0000", &registered)), wanted);
        assert_ne!(wanted, settings_hash(&cluster("demo", 3), &Trust::default()), "turning peer TLS on is a setting");
        // Once no member is registered plain, a new one joins with TLS on 2380.
        let all_tls: Vec<(String, String)> =
            registered.iter().map(|(m, _)| (m.clone(), format!("https://{m}.demo.ns.svc:2382"))).collect();
        let initial = initial_cluster(&c, &["demo-0003".to_string()], &all_tls, false);
        assert_eq!(initial, [("demo-0003".to_string(), "https://demo-0003.demo.ns.svc:2380".to_string())]);
        // So does one that replaces a member while every pod holds peer certificates (an emptyDir member rolled).
        let initial = initial_cluster(&c, &["demo-0003".to_string()], &registered, true);
        assert_eq!(initial, [("demo-0003".to_string(), "https://demo-0003.demo.ns.svc:2380".to_string())]);
    }

    #[test]
    fn a_member_turning_tls_off_holds_its_peer_certificates_until_every_member_is_plain_and_serves_clients_plain() {
        // Created with peer and client TLS; the spec drops both; status.tls keeps what the members use.
        let mut c = cluster("demo", 3);
        let tls: proto::cluster::TlsPolicy =
            serde_json::from_value(serde_json::json!({ "peer": {}, "client": {} })).unwrap();
        c.spec.tls = Some(tls.clone());
        let with_tls = settings_hash(&c, &Trust::default());
        c.spec.tls = None;
        let in_use = proto::cluster::TlsInUse {
            peer: tls.peer.clone(),
            client: tls.client.clone(),
            cluster_domain: tls.cluster_domain.clone(),
            certificate_duration: None,
        };
        c.status = Some(proto::cluster::EtcdClusterStatus { tls: Some(in_use.clone()), ..Default::default() });
        let release = Release::of(&c.spec.repository, Version::parse(&c.spec.version).unwrap());
        let registered = [
            ("demo-0000".to_string(), "https://demo-0000.demo.ns.svc:2380".to_string()),
            ("demo-0001".to_string(), "http://demo-0001.demo.ns.svc:2382".to_string()),
        ];
        let render = |c: &EtcdCluster, member: &str| {
            let names = ["demo-0000".to_string(), "demo-0001".to_string()];
            let initial = initial_cluster(c, &names, &registered, true);
            member_pod(c, member, &initial, &Join::Existing, &release, &DataVolume::EmptyDir, &Trust::default())
        };
        let pod = render(&c, "demo-0000");
        let args = command(&pod);
        for flag in [
            "--listen-peer-urls=https://0.0.0.0:2380,http://0.0.0.0:2382",
            "--peer-cert-file=/etc/etcd/tls/peer/tls.crt",
            "--listen-client-urls=http://0.0.0.0:2379",
        ] {
            assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--cert-file") || a == "--client-cert-auth"), "{args:?}");
        let mounted: Vec<String> =
            pod.spec.as_ref().unwrap().volumes.iter().flatten().map(|v| v.name.clone()).collect();
        assert!(
            mounted.contains(&"peer-tls".to_string()) && !mounted.contains(&"server-tls".to_string()),
            "{mounted:?}"
        );
        // The one switched already listens plain alone, and still presents its certificate to the others.
        let switched = command(&render(&c, "demo-0001"));
        assert!(switched.contains(&"--listen-peer-urls=http://0.0.0.0:2382".to_string()), "{switched:?}");
        assert!(switched.contains(&"--peer-cert-file=/etc/etcd/tls/peer/tls.crt".to_string()));
        // Its settings are peer TLS's until the certificates go: no second roll while the URLs are switched.
        let peer_only = {
            let mut p = cluster("demo", 3);
            p.spec.tls = Some(serde_json::from_value(serde_json::json!({ "peer": {} })).unwrap());
            settings_hash(&p, &Trust::default())
        };
        assert_eq!(settings_hash(&c, &Trust::default()), peer_only);
        assert_ne!(peer_only, with_tls, "client TLS off is a setting: every pod is rolled to serve plain");
        // What it trusts: the peer CAs while it holds peer certificates, no client CA once it serves plain.
        let keys = |k: &str| std::collections::BTreeSet::from([k.to_string()]);
        let trust = Trust { peer: keys("kp"), client: keys("kc"), certificates: "d".into(), ..Default::default() };
        assert_eq!(trust.render(&c).as_deref(), Some("peer=kp;certificates=d"));
        // Once every member is registered plain, status.tls drops the peer part: plain pods, as if never TLS.
        let mut done = c.clone();
        done.status = Some(proto::cluster::EtcdClusterStatus {
            tls: Some(proto::cluster::TlsInUse { peer: None, ..in_use }),
            ..Default::default()
        });
        assert_eq!(settings_hash(&done, &Trust::default()), settings_hash(&cluster("demo", 3), &Trust::default()));
        assert!(!command(&render(&done, "demo-0001")).iter().any(|a| a.starts_with("--peer-cert-file")));
        assert_eq!(trust.render(&done), None, "no trust annotation, as a member never on TLS");
    }

    #[test]
    fn a_tls_member_speaks_https_with_its_secrets_mounted_whole_and_probes_a_plain_listener() {
        let mut c = cluster("demo", 3);
        c.spec.tls = Some(
            serde_json::from_value(
                serde_json::json!({ "peer": {}, "client": { "secretName": "mine", "operatorSecretName": "op" } }),
            )
            .unwrap(),
        );
        let plain_hash = settings_hash(&cluster("demo", 3), &Trust::default());
        let pod = pod_of(&c, "demo-0001", &["demo-0000".into(), "demo-0001".into()], &Join::Existing);
        let args = command(&pod);
        for flag in [
            "--listen-client-urls=https://0.0.0.0:2379",
            "--advertise-client-urls=https://demo-0001.demo.ns.svc:2379",
            "--listen-peer-urls=https://0.0.0.0:2380",
            "--initial-advertise-peer-urls=https://demo-0001.demo.ns.svc:2380",
            "--initial-cluster=demo-0000=https://demo-0000.demo.ns.svc:2380,demo-0001=https://demo-0001.demo.ns.svc:2380",
            "--peer-cert-file=/etc/etcd/tls/peer/tls.crt",
            "--peer-trusted-ca-file=/etc/etcd/trust/peer-ca.crt",
            "--peer-client-cert-auth",
            "--cert-file=/etc/etcd/tls/server/tls.crt",
            "--trusted-ca-file=/etc/etcd/trust/client-ca.crt",
            "--client-cert-auth",
            "--listen-metrics-urls=http://0.0.0.0:2381",
        ] {
            assert!(args.contains(&flag.to_string()), "{flag} missing from {args:?}");
        }
        for arg in args.iter().skip(1) {
            let name = arg.split('=').next().unwrap();
            assert!(crate::version::known_flag(name), "{name} is in the flag table");
        }
        let spec = pod.spec.clone().unwrap();
        let secret_of = |volume: &str| {
            spec.volumes.iter().flatten().find(|v| v.name == volume).and_then(|v| v.secret.clone()).unwrap()
        };
        assert_eq!(secret_of("peer-tls").secret_name.as_deref(), Some("demo-tls-peer"), "generated");
        assert_eq!(secret_of("server-tls").secret_name.as_deref(), Some("mine"), "the user's");
        assert!(secret_of("server-tls").items.is_none(), "whole Secrets, so renewed files reach etcd");
        let etcd = &spec.containers[0];
        let mounts = etcd.volume_mounts.clone().unwrap();
        assert!(mounts.iter().all(|m| m.sub_path.is_none()), "no subPath: the kubelet never updates those");
        assert!(mounts.iter().any(|m| m.mount_path == "/etc/etcd/tls/peer" && m.read_only == Some(true)));
        // The CA bundles from the pinned ConfigMap its annotation names: the same at every start of etcd.
        let trust = spec.volumes.iter().flatten().find(|v| v.name == "trust").and_then(|v| v.config_map.clone());
        assert_eq!(trust.map(|m| m.name), Some("demo-trust-".to_string()), "named by the trust's digest");
        assert!(mounts.iter().any(|m| m.mount_path == "/etc/etcd/trust" && m.read_only == Some(true)));
        let probe = etcd.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(probe.port, IntOrString::Int(2381), "the kubelet has no client certificate");
        assert!(
            !spec
                .volumes
                .iter()
                .flatten()
                .any(|v| v.secret.as_ref().is_some_and(|s| s.secret_name.as_deref() == Some("op"))),
            "the controller's own certificate is not given to members"
        );
        assert_ne!(settings_hash(&c, &Trust::default()), plain_hash, "TLS is a setting");
        // The CAs it trusts, which etcd reads only at start: a changed ca.crt is a setting, rolled out.
        let old = Trust {
            peer: ["aa".into()].into(),
            client: ["cc".into()].into(),
            certificates: "01".into(),
            ..Default::default()
        };
        let both = Trust { peer: ["aa".to_string(), "bb".to_string()].into(), ..old.clone() };
        let renewed = Trust { certificates: "02".into(), ..old.clone() };
        let release = Release::of(&c.spec.repository, Version::parse(&c.spec.version).unwrap());
        let trusting = member_pod(&c, "demo-0001", &[], &Join::Existing, &release, &DataVolume::EmptyDir, &old);
        assert_eq!(trusting.annotations()[TRUSTED_CAS], "peer=aa;client=cc;certificates=01");
        assert_eq!(settings_of(&trusting), settings_hash(&c, &old));
        assert_ne!(settings_hash(&c, &both), settings_hash(&c, &old), "a CA added to ca.crt restarts the members");
        assert_ne!(
            settings_hash(&c, &renewed),
            settings_hash(&c, &old),
            "a CA certificate made again for its key too: etcd holds the one it read, until it expires"
        );
        assert_eq!(
            settings_hash(&cluster("demo", 3), &both),
            plain_hash,
            "a plain member trusts no CA, whatever the Secrets hold"
        );

        // 3.4 probes with etcdctl (a v3 read), over TLS with the member's own certificate.
        let release = Release::of("quay.io/coreos/etcd", Version { minor: 4, patch: 23 });
        let pod = member_pod(&c, "demo-0001", &[], &Join::Existing, &release, &DataVolume::EmptyDir, &Trust::default());
        let exec = pod.spec.unwrap().containers[0].readiness_probe.clone().unwrap().exec.unwrap().command.unwrap();
        assert!(exec.contains(&"--endpoints=https://127.0.0.1:2379".to_string()), "{exec:?}");
        assert!(exec.contains(&"--cert=/etc/etcd/tls/server/tls.crt".to_string()), "{exec:?}");

        // Plain clusters render no TLS flag; their plain metrics listener is no setting (see the hash test below).
        let plain = command(&pod_of(&cluster("demo", 3), "demo-0001", &["demo-0001".into()], &Join::Existing));
        assert!(!plain.iter().any(|a| a.contains("https") || a.contains("cert")), "{plain:?}");
        assert!(plain.contains(&"--listen-metrics-urls=http://0.0.0.0:2381".to_string()), "{plain:?}");
    }

    #[test]
    fn a_plain_clusters_settings_hash_is_the_one_earlier_builds_wrote() {
        // Read off the build before TLS (7835eac): a hash that moves rolls every member of every cluster when the
        // controller is upgraded. A change that must move it changes SETTINGS_SCHEME instead.
        assert_eq!(settings_hash(&cluster("demo", 3), &Trust::default()), "s2-24eb5ee0a94f767a");
        let mut on_claims = cluster("demo", 3);
        on_claims.spec.storage = Some(serde_json::from_value(serde_json::json!({ "size": "1Gi" })).unwrap());
        assert_eq!(settings_hash(&on_claims, &Trust::default()), "s2-d3fbb408871c015d");
        // A client-TLS member had its metrics listener all along, last after its TLS flags: the same command, the
        // hash earlier builds wrote (read off 8bf35be), so a controller upgrade rolls no TLS member either.
        let mut tls = cluster("demo", 3);
        tls.spec.tls = Some(serde_json::from_value(serde_json::json!({ "peer": {}, "client": {} })).unwrap());
        let pod = pod_of(&tls, "demo-0001", &["demo-0001".into()], &Join::Existing);
        let command = pod.spec.as_ref().unwrap().containers[0].command.clone().unwrap();
        let at = command.iter().position(|a| a == "--client-cert-auth").unwrap();
        assert_eq!(command[at + 1], "--listen-metrics-urls=http://0.0.0.0:2381", "{command:?}");
        assert_eq!(settings_hash(&tls, &Trust::default()), "s2-56bf2b279a25bae9");
        // A plain member created before every member had a metrics listener is not rolled for it.
        let mut earlier = pod_of(&cluster("demo", 3), "demo-0001", &["demo-0001".into()], &Join::Existing);
        let command = earlier.spec.as_mut().unwrap().containers[0].command.as_mut().unwrap();
        command.retain(|a| !a.starts_with("--listen-metrics-urls="));
        assert_eq!(settings_of(&earlier), "s2-24eb5ee0a94f767a");
    }

    #[test]
    fn an_empty_seed_has_no_restore() {
        let pod = pod_of(
            &cluster("demo", 1),
            "demo-0000",
            &["demo-0000".into()],
            &Join::New { token: "t".into(), restore: None },
        );
        assert!(pod.spec.unwrap().init_containers.is_none());
    }
}
