//! The `EtcdCluster` custom resource: what a user asks for (spec) and what the controller reports (status).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group the project owns.
pub const API_GROUP: &str = "kube-etcd-controller.dev";
/// The etcd version a cluster runs when its spec names none.
pub const DEFAULT_ETCD_VERSION: &str = "3.5.35";
/// The image repository etcd runs from when the spec names none; the tag is `v<version>`.
pub const DEFAULT_REPOSITORY: &str = "quay.io/coreos/etcd";
/// The backup interval when `spec.backup` names neither `every` nor `cron`.
pub const DEFAULT_BACKUP_EVERY: &str = "30m";

/// A managed etcd cluster.
// Several `printcolumn`s are meant, not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-etcd-controller.dev",
    version = "v1alpha1",
    kind = "EtcdCluster",
    plural = "etcdclusters",
    shortname = "etcd",
    namespaced,
    status = "EtcdClusterStatus",
    derive = "PartialEq",
    doc = "A managed etcd cluster: its members run as pods that the controller creates, heals, resizes and backs up.",
    scale(spec_replicas_path = ".spec.size", status_replicas_path = ".status.size"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".spec.size"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyMembers"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("!has(oldSelf.storage) || has(self.storage)").message("spec.storage cannot be removed once set: the members keep their data on their claims"))]
#[x_kube(validation = Rule::new("!has(self.backup) || !has(self.tls) || !has(self.tls.client) || !has(self.tls.client.secretName) || has(self.tls.client.backupSecretName)").message("with your own client Secrets (spec.tls.client.secretName) and backups, name the backup sidecar's serving certificate too (spec.tls.client.backupSecretName, signed by your CA): the controller has no key of your CA to sign one"))]
#[x_kube(validation = Rule::new("(has(self.tls) && has(self.tls.peer)) == (has(oldSelf.tls) && has(oldSelf.tls.peer)) && (has(self.tls) && has(self.tls.client)) == (has(oldSelf.tls) && has(oldSelf.tls.client)) || has(self.storage) || self.size >= 3").message("turning TLS on or off for a running cluster restarts every member, and a member on an emptyDir is replaced, which needs three members: set spec.storage or grow the cluster to three first"))]
pub struct EtcdClusterSpec {
    /// Number of voting members, 1 to 9. Odd sizes tolerate as many failures as the next even size, for less.
    #[schemars(range(min = 1, max = 9))]
    pub size: i32,
    /// etcd version, `3.MINOR.PATCH` (3.4 to 3.7). Default: [`DEFAULT_ETCD_VERSION`].
    #[serde(default = "default_version")]
    #[schemars(regex(pattern = r"^v?3\.[4-7]\.[0-9]+$"))]
    pub version: String,
    /// Image repository of etcd; the image is `<repository>:v<version>`. Default: [`DEFAULT_REPOSITORY`].
    #[serde(default = "default_repository")]
    #[schemars(regex(pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$"))]
    pub repository: String,
    /// While true the controller changes nothing in the cluster (it still reports status).
    #[serde(default)]
    pub paused: bool,
    /// How member pods are placed and sized.
    #[serde(default)]
    pub pod: PodPolicy,
    /// etcd's space quota and compaction.
    #[serde(default)]
    pub etcd: EtcdOptions,
    /// Scheduled backups by a sidecar beside the cluster; absent means no backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupPolicy>,
    /// Seed the new cluster from a backup instead of starting it empty. Read only when the seed member is
    /// created; a running cluster ignores later changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSource>,
    /// What happens when the cluster loses quorum. Default: restore from the newest backup when `backup` is
    /// set, otherwise wait for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryPolicy>,
    /// A PersistentVolumeClaim per member, mounted as its data directory: a member whose pod is deleted (or every
    /// member at once) comes back on its volume as the same member, with its data. Absent: members keep their data
    /// in an emptyDir, which dies with the pod (for tests and caches only: deleting every member pod at once then
    /// leaves the data only in backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<MemberStorage>,
    /// TLS for the members' peer and client traffic, from Secrets you provide (as cert-manager writes them) or
    /// generated by the controller (a CA per cluster, certificates renewed well before they expire). Absent: plain
    /// HTTP, which anyone on the pod network can read and write (for tests only). Can be added to or removed from
    /// a running cluster (`peer` and `client` each, rolled out member by member), not moved to other Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsPolicy>,
    /// Who may reach the cluster's pods: NetworkPolicies the controller writes (on by default).
    #[serde(default)]
    pub network_policy: NetworkAccess,
}

/// The NetworkPolicies of a cluster (`spec.networkPolicy`). Ingress only, and enforced only where the network
/// plugin enforces NetworkPolicies: members reach each other's peer ports; the client port admits the members, the
/// backup sidecar, the controller's namespace and `clients`; the metrics and health port (2381) admits anyone;
/// the backup sidecar's API admits the controller's namespace, member pods of the namespace (restores) and
/// `backupClients`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAccess {
    /// Write the policies. `false`: none, and those written before are deleted.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Who may reach the members' client port (2379) besides the cluster's own pods and the controller, as
    /// NetworkPolicy peers (`podSelector`, `namespaceSelector`, `ipBlock`). Absent: every pod of the cluster's
    /// namespace. `[]`: no one else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>>,
    /// Who may reach the backup sidecar's API (port 19999) besides the controller and member pods of the
    /// namespace (a seed restoring a backup), as NetworkPolicy peers: where you run `curl` or `kubectl-etcd` from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_clients: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

fn enabled() -> bool {
    true
}

impl Default for NetworkAccess {
    fn default() -> Self {
        Self { enabled: true, clients: None, backup_clients: Vec::new() }
    }
}

impl EtcdClusterSpec {
    /// Whether members talk TLS to each other.
    pub fn peer_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.peer.is_some())
    }

    /// Whether the members' client port speaks TLS (and asks clients for certificates).
    pub fn client_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.client.is_some())
    }
}

/// TLS of a cluster (`spec.tls`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("!has(self.certificateDuration) || duration(self.certificateDuration) >= duration('10m')").message("spec.tls.certificateDuration must be at least 10m: a renewal must reach the pods well before the certificate it replaces expires"))]
#[x_kube(validation = Rule::new("self.clusterDomain == oldSelf.clusterDomain").message("spec.tls.clusterDomain cannot change: the peers' certificates name it"))]
#[x_kube(validation = Rule::new("!has(oldSelf.peer) || !has(self.peer) || self.peer == oldSelf.peer").message("spec.tls.peer cannot move to another Secret once set (moving a running cluster to other Secrets is not supported yet; removing spec.tls.peer turns peer TLS off): renew certificates, or change a CA in three steps (README: Changing a CA), by updating the contents of the Secret"))]
#[x_kube(validation = Rule::new("!has(oldSelf.client) || !has(self.client) || (has(self.client.secretName) == has(oldSelf.client.secretName) && (!has(self.client.secretName) || (self.client.secretName == oldSelf.client.secretName && self.client.operatorSecretName == oldSelf.client.operatorSecretName)) && has(self.client.applicationSecretName) == has(oldSelf.client.applicationSecretName) && (!has(self.client.applicationSecretName) || self.client.applicationSecretName == oldSelf.client.applicationSecretName))").message("spec.tls.client's secretName, operatorSecretName and applicationSecretName cannot change once set (backupSecretName may; moving a running cluster to other Secrets is not supported yet; removing spec.tls.client turns client TLS off): renew certificates, or change a CA in three steps (README: Changing a CA), by updating the contents of the Secrets"))]
pub struct TlsPolicy {
    /// TLS between members, with mutual certificate authentication. Absent: peers talk plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerTls>,
    /// TLS on the members' client port, with client-certificate authentication: only clients with a certificate
    /// the cluster's CA signed are served. Absent: clients talk plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientTls>,
    /// The DNS domain of the Kubernetes cluster, for the long names in certificates. Default: `cluster.local`.
    #[serde(default = "default_cluster_domain")]
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"))]
    pub cluster_domain: String,
    /// How long certificates the controller generates are valid (`2160h`; at least `10m`); each is renewed when
    /// a third of it is left, without restarting anything. Default: 90 days. The CAs that sign them are valid for
    /// ten years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub certificate_duration: Option<String>,
}

/// Default of `spec.tls.clusterDomain`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

fn default_cluster_domain() -> String {
    DEFAULT_CLUSTER_DOMAIN.into()
}

/// Peer TLS (`spec.tls.peer`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeerTls {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`) whose certificate every member uses as its
    /// peer certificate: valid for server and client authentication, covering `*.<cluster>.<namespace>.svc` and
    /// `*.<cluster>.<namespace>.svc.<clusterDomain>`. Absent: generated by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Client TLS (`spec.tls.client`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("has(self.secretName) == has(self.operatorSecretName)").message("spec.tls.client: set secretName and operatorSecretName together (with your own serving certificate, the controller needs a client certificate your CA signed), or neither for generated certificates"))]
#[x_kube(validation = Rule::new("!has(self.secretName) || !has(self.applicationSecretName)").message("spec.tls.client.applicationSecretName needs generated certificates: with your own CA, issue application certificates with it"))]
pub struct ClientTls {
    /// A `kubernetes.io/tls` Secret whose certificate every member serves clients with, covering the members'
    /// names and the client Service's (`<cluster>-client`, `.<namespace>`, `.svc`, `.svc.<clusterDomain>`) and
    /// `localhost` and `127.0.0.1`; its `ca.crt` is what client certificates must chain to (use another CA than
    /// the peer Secret's: etcd takes any certificate its peer CA signed as a peer's). Absent: generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// With `secretName`: a `kubernetes.io/tls` Secret with the client certificate the controller and the backup
    /// sidecar present to the members (signed by a CA of `secretName`'s `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_secret_name: Option<String>,
    /// The controller writes a client certificate for applications into a Secret of this name (`tls.crt`,
    /// `tls.key`, `ca.crt`), renewed like the members' (generated certificates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_secret_name: Option<String>,
    /// With `spec.backup`: a `kubernetes.io/tls` Secret the backup sidecar serves its API over HTTPS with
    /// (server authentication), covering `<cluster>-backup`, `.<namespace>`, `.svc`, `.svc.<clusterDomain>`,
    /// `localhost` and `127.0.0.1`; clients of the API (the controller, restoring seeds) check it against its
    /// `ca.crt`. Required with `secretName`; absent: generated, signed by the cluster's client CA. May change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_secret_name: Option<String>,
}

/// The claim each member gets, shaped after a StatefulSet's `volumeClaimTemplates` entry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0").message("spec.storage.size cannot shrink: a claim can only grow"))]
pub struct MemberStorage {
    /// Requested size of each member's volume (`8Gi`). Keep `spec.etcd.quotaBackendBytes` well below it: etcd's
    /// database, its WAL and snapshots share the volume.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// Storage class of the claims; absent: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes of the claims. Default: `ReadWriteOnce`.
    #[serde(default = "default_access_modes")]
    #[schemars(length(min = 1))]
    pub access_modes: Vec<AccessMode>,
    /// Selects which existing volumes the claims may bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Extra labels on the claims (the controller's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What happens to claims when their member is removed or the cluster deleted.
    #[serde(default)]
    pub retention_policy: ClaimRetention,
}

/// A claim's access mode.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMode {
    /// Mounted read-write by one node.
    ReadWriteOnce,
    /// Mounted read-write by one pod.
    ReadWriteOncePod,
}

impl AccessMode {
    /// As Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

impl MemberStorage {
    /// `size` in bytes (`None` if it does not parse).
    pub fn bytes(&self) -> Option<u64> {
        quantity_bytes(&self.size)
    }
}

/// A storage quantity as Kubernetes writes it (`8Gi`, `500M`, `1.5Gi`, `1073741824`), in bytes (a fraction of a
/// byte rounded up, as Kubernetes does); `None` for what does not parse as one.
pub fn quantity_bytes(quantity: &str) -> Option<u64> {
    let split = quantity.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut bytes = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let digits: u32 = fraction.len().try_into().ok()?;
        let scale = 10u64.checked_pow(digits)?;
        let part = u128::from(fraction.parse::<u64>().ok()?) * u128::from(multiplier);
        bytes = bytes.checked_add(u64::try_from(part.div_ceil(u128::from(scale))).ok()?)?;
    }
    Some(bytes)
}

fn default_access_modes() -> Vec<AccessMode> {
    vec![AccessMode::ReadWriteOnce]
}

/// What happens to member claims, as a StatefulSet's `persistentVolumeClaimRetentionPolicy` says it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRetention {
    /// The claim of a member removed from the cluster (a scale-down, or a member replaced because it could not
    /// come back on its volume). Default: `Delete` (a removed member's data can never rejoin: etcd refuses it).
    #[serde(default = "delete")]
    pub when_scaled: Retention,
    /// The claims when the EtcdCluster is deleted. Default: `Retain` (deleting the resource never deletes data
    /// unless asked); retained claims are never used by a later cluster of the same name (their guard refuses).
    #[serde(default = "retain")]
    pub when_deleted: Retention,
}

impl Default for ClaimRetention {
    fn default() -> Self {
        Self { when_scaled: Retention::Delete, when_deleted: Retention::Retain }
    }
}

fn delete() -> Retention {
    Retention::Delete
}

fn retain() -> Retention {
    Retention::Retain
}

/// Keep or delete.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Keep the claim (and its data).
    Retain,
    /// Delete the claim (its volume follows its storage class's reclaim policy).
    Delete,
}

/// etcd's space quota and history compaction, for every member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdOptions {
    /// `--quota-backend-bytes`: once the database reaches it, etcd raises the NOSPACE alarm and takes only reads,
    /// deletes and compaction until space is freed (compact, defragment, disarm). Between 64 MiB and 8 GiB
    /// (etcd's suggested maximum). Default: [`DEFAULT_QUOTA_BACKEND_BYTES`] (etcd's own default, made explicit so
    /// that it shows in every pod and can be raised).
    #[serde(default = "default_quota")]
    #[schemars(range(min = 67_108_864_i64, max = 8_589_934_592_i64))]
    pub quota_backend_bytes: i64,
    /// `--auto-compaction-retention` in periodic mode: how much key history etcd keeps, as a duration (`1h`,
    /// `30m`); `0` turns auto-compaction off (for clients that compact themselves, as Kubernetes' API server
    /// does). Default: [`DEFAULT_COMPACTION_RETENTION`], without which an etcd written to steadily reaches its
    /// quota.
    #[serde(default = "default_retention")]
    #[schemars(regex(pattern = r"^(0|([0-9]+(s|m|h))+)$"))]
    pub auto_compaction_retention: String,
}

/// See [`EtcdOptions::quota_backend_bytes`]: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: i64 = 2 * 1024 * 1024 * 1024;
/// See [`EtcdOptions::auto_compaction_retention`].
pub const DEFAULT_COMPACTION_RETENTION: &str = "1h";

fn default_quota() -> i64 {
    DEFAULT_QUOTA_BACKEND_BYTES
}

fn default_retention() -> String {
    DEFAULT_COMPACTION_RETENTION.to_string()
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self { quota_backend_bytes: default_quota(), auto_compaction_retention: default_retention() }
    }
}

/// Where a seeded cluster's data comes from: a backup sidecar, named by its cluster or by URL, or the storage
/// backups were written to (which outlives the cluster that wrote them).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("[has(self.cluster), has(self.url), has(self.storage)].filter(x, x).size() == 1").message("restore needs exactly one of cluster, url and storage"))]
pub struct RestoreSource {
    /// Another EtcdCluster in this namespace whose backup sidecar serves the backup (its token is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub cluster: Option<String>,
    /// Base URL of a backup sidecar, e.g. `http://other-backup.team-a.svc:19999`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// Secret in this namespace whose key `token` is the sidecar's bearer token (for `url`; `cluster` uses
    /// that cluster's own token). It must be labelled `kube-etcd-controller.dev/restore-token: "true"`: the
    /// controller sends no other Secret to a URL a spec names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Storage holding backups, with the same shape as `backup.storage`: an S3 bucket (with its credentials
    /// Secret) or a PersistentVolumeClaim. The S3 prefix and the PVC sub-path default to this cluster's own
    /// (`<namespace>/<name>` and `<name>`), so a cluster re-created under its old name finds its old backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<BackupStorage>,
    /// The backup's name, or `latest` (resolved when the seed is created and recorded in status; for `storage`,
    /// resolved by the seed's restore and recorded once it reports).
    #[serde(default = "default_latest")]
    #[schemars(length(min = 1))]
    pub backup: String,
}

fn default_latest() -> String {
    "latest".to_string()
}

/// How the controller answers a lost quorum.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPolicy {
    /// `Restore` (seed a new cluster from a fresh or the newest backup; needs `backup`) or `Manual` (delete
    /// nothing, report, wait for a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RecoveryMode>,
    /// How long quorum must stay lost before the controller acts, e.g. `2m`. Long enough that a rolling change or
    /// a slow pod start is never taken for a loss; never zero. Default: [`DEFAULT_QUORUM_LOSS_GRACE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0*[1-9][0-9]*(s|m|h))+$"))]
    pub quorum_loss_grace: Option<String>,
    /// The oldest backup an automatic recovery may restore when no member is left to take a fresh one from, e.g.
    /// `90m`: an older one waits for a person (status says so), since restoring it gives up everything written
    /// since. Default: three backup intervals (`backup.every`; [`DEFAULT_CRON_MAX_BACKUP_AGE`] with `cron`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub max_backup_age: Option<String>,
}

/// The default `maxBackupAge` of a cluster whose backups follow a cron schedule.
pub const DEFAULT_CRON_MAX_BACKUP_AGE: &str = "72h";

/// The grace period before a lost quorum is recovered, when the spec names none.
pub const DEFAULT_QUORUM_LOSS_GRACE: &str = "2m";

/// Recovery policies.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Seed a new cluster from a backup.
    Restore,
    /// Delete nothing; report and wait for a person.
    Manual,
}

fn default_version() -> String {
    DEFAULT_ETCD_VERSION.to_string()
}

fn default_repository() -> String {
    DEFAULT_REPOSITORY.to_string()
}

fn default_true() -> bool {
    true
}

/// Placement and resources of member pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodPolicy {
    /// Compute resources of the etcd container: `requests` and `limits`, each a map of resource names to
    /// quantities (`500m`, `1Gi`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Extra labels on member pods (the controller's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on member pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of member pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Affinity of member pods; when set, it replaces the default spread (`antiAffinity`), as it takes over
    /// placement (put an anti-affinity of your own in it, or set `topologySpreadConstraints` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints of member pods; when set, they replace the default spread (see `antiAffinity`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Tolerations of member pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Spread members over nodes and zones. Default: true. Per node it is a rule: a member is never scheduled onto a
    /// node that already holds more members than another schedulable node does (a topology spread constraint on
    /// `kubernetes.io/hostname`, maxSkew 1, DoNotSchedule, honouring taints and node affinity). With at least as many
    /// nodes as members, that is one member per node; with more members than nodes it relaxes to an even spread
    /// (5 members on 3 nodes: 2, 2, 1), and when a node is lost its replacement goes to the least loaded node
    /// left. Per zone (`topology.kubernetes.io/zone`) it is a preference (ScheduleAnyway). False: no spread at all.
    /// Not applied when `affinity` or `topologySpreadConstraints` is set.
    #[serde(default = "default_true")]
    pub anti_affinity: bool,
    /// Let a voluntary disruption (a drain, an eviction) take one member even where that loses the quorum: the
    /// only member of a one-member cluster, one of two. Its data goes with its pod, and the cluster is restored
    /// from a backup (or lost). Default: false, so the disruption budget allows no eviction at those sizes (and
    /// one at a time from three members on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsafe_eviction: bool,
    /// The user, group and volume group every container of a member pod runs as. Member pods pass the
    /// `restricted` Pod Security Standard: not root, no capabilities, no privilege escalation, the runtime's
    /// default seccomp profile, a read-only root file system, no ServiceAccount token. Default: user, group and
    /// fsGroup 65532, so the volume's files are given to that group when the pod starts (where the volume's driver
    /// applies fsGroup: most block CSI drivers do; hostPath, local-path, NFS and drivers with fsGroupPolicy None do
    /// not). A member whose files its user cannot use is stopped before etcd starts (Degraded=VolumeUnusable), its
    /// data untouched; set this to the user that wrote them to start it again.
    #[serde(default)]
    pub security_context: MemberSecurity,
}

/// Who a member pod's containers run as (`spec.pod.securityContext`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemberSecurity {
    /// The user ID. 0 (root) is allowed only as a way out for data a root etcd wrote on a volume whose driver does
    /// not apply fsGroup; a namespace that enforces the `restricted` Pod Security Standard refuses such pods.
    #[serde(default = "default_unprivileged_id")]
    #[schemars(range(min = 0))]
    pub run_as_user: i64,
    /// The primary group ID.
    #[serde(default = "default_unprivileged_id")]
    #[schemars(range(min = 0))]
    pub run_as_group: i64,
    /// The group the pod's volumes are given to (Kubernetes' `fsGroup`).
    #[serde(default = "default_unprivileged_id")]
    #[schemars(range(min = 0))]
    pub fs_group: i64,
}

/// The user and group member pods run as by default: the `nonroot` user of distroless images.
pub const UNPRIVILEGED_ID: i64 = 65532;

fn default_unprivileged_id() -> i64 {
    UNPRIVILEGED_ID
}

impl Default for MemberSecurity {
    fn default() -> Self {
        Self { run_as_user: UNPRIVILEGED_ID, run_as_group: UNPRIVILEGED_ID, fs_group: UNPRIVILEGED_ID }
    }
}

impl Default for PodPolicy {
    fn default() -> Self {
        Self {
            resources: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            node_selector: BTreeMap::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            tolerations: Vec::new(),
            anti_affinity: true,
            allow_unsafe_eviction: false,
            security_context: MemberSecurity::default(),
        }
    }
}

/// Scheduled backups of the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("!(has(self.every) && has(self.cron))").message("set at most one of backup.every and backup.cron"))]
pub struct BackupPolicy {
    /// Interval between backups, e.g. `30m`, `6h` (never zero). Default: [`DEFAULT_BACKUP_EVERY`] when `cron` is
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0*[1-9][0-9]*(s|m|h|d))+$"))]
    pub every: Option<String>,
    /// Cron expression (five fields, UTC: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or `JAN`, day of
    /// week 0-7 or `MON`; each `*`, a value or a range, with an optional `/step`, in comma-separated lists) naming
    /// when backups are taken, e.g. `0 */6 * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(\*|[0-5]?[0-9](-[0-5]?[0-9])?)(/[0-9]+)?(,(\*|[0-5]?[0-9](-[0-5]?[0-9])?)(/[0-9]+)?)* +(\*|([01]?[0-9]|2[0-3])(-([01]?[0-9]|2[0-3]))?)(/[0-9]+)?(,(\*|([01]?[0-9]|2[0-3])(-([01]?[0-9]|2[0-3]))?)(/[0-9]+)?)* +(\*|(0?[1-9]|[12][0-9]|3[01])(-(0?[1-9]|[12][0-9]|3[01]))?)(/[0-9]+)?(,(\*|(0?[1-9]|[12][0-9]|3[01])(-(0?[1-9]|[12][0-9]|3[01]))?)(/[0-9]+)?)* +(\*|(0?[1-9]|1[0-2]|[A-Za-z]{3})(-(0?[1-9]|1[0-2]|[A-Za-z]{3}))?)(/[0-9]+)?(,(\*|(0?[1-9]|1[0-2]|[A-Za-z]{3})(-(0?[1-9]|1[0-2]|[A-Za-z]{3}))?)(/[0-9]+)?)* +(\*|([0-7]|[A-Za-z]{3})(-([0-7]|[A-Za-z]{3}))?)(/[0-9]+)?(,(\*|([0-7]|[A-Za-z]{3})(-([0-7]|[A-Za-z]{3}))?)(/[0-9]+)?)*$"
    ))]
    pub cron: Option<String>,
    /// Keep at most this many backups (the newest is always kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_backups: Option<i32>,
    /// Keep only backups younger than this, e.g. `7d` (the newest is always kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub max_age: Option<String>,
    /// Where backups are stored.
    pub storage: BackupStorage,
    /// Image of the backup sidecar; default: the image the controller was built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
    ))]
    pub sidecar_image: Option<String>,
}

/// Where backups are (written by the sidecar, or read by a restore): exactly one of `pvc` and `s3`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(cel, validation = Rule::new("has(self.pvc) != has(self.s3)").message("storage needs exactly one of pvc and s3"))]
pub struct BackupStorage {
    /// A PersistentVolumeClaim, mounted into the sidecar (or, read-only, into a restoring seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcStorage>,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
}

/// Backups on a PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcStorage {
    /// Name of the claim, in the cluster's namespace.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Directory inside the volume. Default: the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// Backups in an S3-compatible bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Bucket name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix inside the bucket. Default: `<namespace>/<cluster>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://minio.storage:9000`. Default: AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    /// Region. Default: `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret in the cluster's namespace with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
    /// Allow a plain-http endpoint.
    #[serde(default)]
    pub allow_http: bool,
}

/// The lifecycle phase the controller reports.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClusterPhase {
    /// The seed member is being started or the cluster is growing to its first full size.
    #[default]
    Creating,
    /// All members are healthy and the cluster has its requested size.
    Running,
    /// Members are being added or removed to reach a new size.
    Scaling,
    /// A dead member is being replaced.
    Healing,
    /// Fewer than a majority of members are healthy: the cluster cannot serve writes.
    QuorumLost,
    /// Quorum was lost: a new cluster is being seeded from a backup.
    Recovering,
    /// Members are being moved to another etcd version (or image), one at a time.
    Upgrading,
    /// The controller changes nothing (`spec.paused`).
    Paused,
    /// The spec cannot be acted on; see the `Degraded` condition.
    Invalid,
}

/// What the controller observed and did, as of `observedGeneration`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    /// The lifecycle phase.
    #[serde(default)]
    pub phase: ClusterPhase,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Voting members in etcd's member list.
    #[serde(default)]
    pub size: i32,
    /// Members whose pods are ready.
    #[serde(default)]
    pub ready_members: i32,
    /// The etcd version the members run, as they report it: the lowest while an upgrade is under way (what the
    /// cluster behaves as), never what the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// The cluster version etcd reports (`/version`'s `etcdcluster`): the minor every member supports, which moves
    /// up a few seconds after the last member of an upgrade runs the new minor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_version: Option<String>,
    /// The server version each member that answered reports, by member name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_versions: BTreeMap<String, String>,
    /// The peer URL etcd lists for each member, by member name: where its peers dial it (`https` once peer TLS is
    /// on for it; a member that turned peer TLS on while running keeps port 2382). Kept from before while etcd
    /// cannot be asked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_urls: BTreeMap<String, String>,
    /// An upgrade (or a move to another image) in progress: recorded once its preconditions held and its backup
    /// was taken, before the first member is touched; cleared when the cluster version reports the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// Members by name.
    #[serde(default)]
    pub members: MemberNames,
    /// The service clients use (`<cluster>-client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_service: Option<String>,
    /// The token the cluster was seeded with; set once, when the seed member is created. A cluster with a
    /// token whose members are all gone has lost its data and is never silently re-seeded empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_token: Option<String>,
    /// Whether etcd ever answered with a member list. Sticky: a cluster that formed and then lost every member
    /// has lost its data, and is never silently seeded again, empty.
    #[serde(default)]
    pub formed: bool,
    /// The index the next member's name gets (`<cluster>-0007`): names are never reused.
    #[serde(default)]
    pub next_member_index: i32,
    /// The backup this cluster was seeded from, recorded before its seed member was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// Since when fewer than a majority of members are healthy (cleared once the cluster serves again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_lost_since: Option<Time>,
    /// A recovery from lost quorum in progress: recorded before anything is deleted, so a restarted controller
    /// carries on with the same choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
    /// The last upgrade (or rollback) that completed, with the backup taken before it: pinned in storage, it is the
    /// way back once the cluster version moved (restore it into a new cluster), until a later upgrade pins its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<LastUpgrade>,
    /// The highest revision the controller has seen this etcd cluster serve (a member with a leader reported it):
    /// a recovery never restores a backup below it, which would give up writes the cluster acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_revision_seen: Option<ServedRevision>,
    /// Each member's claim (`spec.storage`), as the API server shows it: what the members run on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<MemberClaim>,
    /// The TLS whose certificates the members and the controller use: `spec.tls`'s, and while peer or client TLS is
    /// turned off for a running cluster, the one it had until no member needs it (peer: every member registered at a
    /// plain peer URL; client: no member pod serves TLS). The controller reads its Secrets from here meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInUse>,
    /// The certificates the cluster's TLS uses (`status.tls`), as their Secrets hold them: what the members and the
    /// controller read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateStatus>,
    /// `Available`, `Progressing`, `Degraded` and `BackupReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The TLS whose certificates a cluster uses (`status.tls`): the parts of [`TlsPolicy`] the controller needs to keep
/// reading, renewing and presenting them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsInUse {
    /// Peer TLS: `spec.tls.peer`, or what it was while peer TLS is turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerTls>,
    /// Client TLS: `spec.tls.client`, or what it was while client TLS is turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientTls>,
    /// The cluster domain the certificates name.
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// How long generated certificates are valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_duration: Option<String>,
}

/// A certificate of the cluster's TLS.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// What it is for: `peer` (between members), `server` (the members' client port), `operator` (the controller's
    /// and the backup sidecar's client certificate) or `application` (`spec.tls.client.applicationSecretName`).
    pub purpose: String,
    /// The Secret that holds it.
    pub secret: String,
    /// Whether the controller generates and renews it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
    /// Its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The end of its validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Why it cannot be used, when it cannot (nothing is rolled onto it, and the controller changes nothing in
    /// the cluster while any certificate has a problem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A member's PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberClaim {
    /// The member.
    pub member: String,
    /// The claim.
    pub claim: String,
    /// Its phase (`Pending`, `Bound`, `Lost`); or `Terminating`; `Retired` (its member was removed, and the policy
    /// keeps it); `NotOurs` (retained from an earlier cluster of the same name: never used).
    pub phase: String,
    /// Its capacity, once bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// The size the claim asks for (more than its capacity while it is being expanded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// Its storage class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Why its member cannot run on it, when it cannot (its guard refused the volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// An upgrade that completed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LastUpgrade {
    /// The version (or versions) the members ran when it started.
    pub from: String,
    /// The version every member runs since.
    pub to_version: String,
    /// Whether it went back to a version the cluster ran when it started (a rollback of a mixed cluster).
    #[serde(default)]
    pub rollback: bool,
    /// When it completed.
    pub completed_at: Option<Time>,
    /// The backup taken before it (pinned), unset when the cluster has no backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

/// A revision an etcd cluster served.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServedRevision {
    /// etcd's cluster ID (hex, as backups record it): a restored cluster gets a new one and starts over.
    pub etcd_cluster_id: String,
    /// The revision.
    pub revision: i64,
    /// When the controller recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<Time>,
}

/// An upgrade in progress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// The version (or versions, while mixed) the members ran when it started.
    pub from: String,
    /// The image every member is moved to (`<repository>:v<version>`).
    pub to_image: String,
    /// The target version.
    pub to_version: String,
    /// When it started.
    pub started_at: Option<Time>,
    /// The backup taken and verified just before the first member was touched; restore it into a new cluster to
    /// go back once the cluster version has moved on. Unset when the cluster has no backups configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// A warning etcd's upgrade guide calls for (a patch below the recommended floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A backup a cluster was seeded from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// The sidecar it came from (base URL).
    pub source: String,
    /// The backup's name.
    pub backup: String,
    /// The etcd revision the backup holds.
    pub revision: i64,
}

/// A recovery from lost quorum.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    /// When the controller decided to recover.
    pub started_at: Option<Time>,
    /// The backup the new cluster is seeded from.
    pub backup: String,
    /// Its etcd revision.
    pub revision: i64,
    /// How the backup was chosen, and what may be lost.
    pub reason: String,
    /// Members with a lower index belong to the lost cluster and are removed; the new seed gets this index.
    pub first_member_index: i32,
    /// The lost cluster's member pods when the recovery was recorded. While every one of them is still there and
    /// no seed exists, nothing has been deleted, and the recovery may still be abandoned (the quorum came back,
    /// or the policy is no longer `Restore`). Unset in a record written by an older controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_pods: Option<Vec<String>>,
}

/// Member names, by readiness.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberNames {
    /// Members whose pods are ready.
    #[serde(default)]
    pub ready: Vec<String>,
    /// Members that exist but are not ready (starting, dead, or learners catching up).
    #[serde(default)]
    pub unready: Vec<String>,
}

/// What the API server accepts as a resource quantity (`resource.Quantity`), the pattern Kubernetes' own CRD
/// generator writes: a quantity it cannot parse is refused when the EtcdCluster is written, not when a member pod
/// is created from it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// The schema of `spec.pod.resources`: requests and limits whose quantities are checked by pattern.
fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = |what: &str| {
        serde_json::json!({
            "description": what,
            "type": "object",
            "additionalProperties": {
                "pattern": QUANTITY_PATTERN,
                "x-kubernetes-int-or-string": true,
            },
        })
    };
    schemars::json_schema!({
        "description": "Compute resources of the etcd container: `requests` and `limits`, each a map of resource names to quantities (`500m`, `1Gi`, `2`).",
        "type": "object",
        "nullable": true,
        "properties": {
            "requests": quantities("The least of each resource the etcd container is given."),
            "limits": quantities("The most of each resource the etcd container may use."),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::quantity_bytes;

    #[test]
    fn storage_quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(quantity_bytes("8Gi"), Some(8 << 30));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1073741824"), Some(1 << 30));
        assert_eq!(quantity_bytes("2k"), Some(2000));
        assert_eq!(quantity_bytes(".5Ki"), Some(512));
        assert_eq!(quantity_bytes("1.5"), Some(2), "rounded up");
        assert_eq!(quantity_bytes("1.0000000001Ki"), Some(1025));
        for bad in ["", "Gi", "1GB", "-1Gi", "99999999999Ei"] {
            assert_eq!(quantity_bytes(bad), None, "{bad}");
        }
        assert_eq!(quantity_bytes("1.0"), Some(1));
    }
}
