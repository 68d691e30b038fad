//! The backup manifest stored beside every snapshot, and the backup sidecar's HTTP request and response types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The port the backup sidecar's HTTP API listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 19999;

/// Response header carrying the etcd revision a backup holds (see [`BackupInfo::revision`]).
pub const HEADER_REVISION: &str = "x-etcd-revision";
/// Response header carrying the version of the etcd server the backup was taken from.
pub const HEADER_ETCD_VERSION: &str = "x-etcd-version";
/// Response header carrying the hex SHA-256 of the uncompressed snapshot.
pub const HEADER_SHA256: &str = "x-snapshot-sha256";
/// Response header carrying the backup's name.
pub const HEADER_BACKUP_NAME: &str = "x-backup-name";

/// The version of the manifest format this crate writes; readers refuse newer ones.
pub const MANIFEST_FORMAT: u32 = 1;

/// What is known about one published backup. The API returns it, and the manifest stores it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    /// Unique name of the backup, used in URLs (`/v1/backups/{name}`). Names are not ordered: sort on
    /// [`BackupInfo::finished_at`] and [`BackupInfo::revision`].
    pub name: String,
    /// Name of the etcd cluster (the EtcdCluster resource) the backup belongs to.
    pub cluster_name: String,
    /// UID of that EtcdCluster object, when the sidecar was told it (`CLUSTER_UID`): a cluster deleted and created
    /// again under the same name is another object, and its automatic recovery never takes the old one's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_uid: Option<String>,
    /// etcd's cluster ID (hex) at the time of the backup; a restored cluster gets a new one.
    pub etcd_cluster_id: String,
    /// The client URL of the member the snapshot was streamed from.
    pub etcd_member: String,
    /// The etcd revision read from the same member just before its snapshot was opened: every write up to and
    /// including this revision is in the backup.
    pub revision: i64,
    /// Version of the etcd server the snapshot was taken from, e.g. `3.5.17`.
    pub etcd_version: String,
    /// Size in bytes of the raw snapshot (etcd's bolt database followed by its 32-byte SHA-256 trailer).
    pub raw_size: u64,
    /// Size in bytes of the gzip object in storage.
    pub compressed_size: u64,
    /// Lower-case hex SHA-256 of the raw snapshot (the uncompressed bytes, trailer included).
    pub sha256: String,
    /// When the snapshot was opened.
    pub started_at: DateTime<Utc>,
    /// When the snapshot was completely written to storage and verified.
    pub finished_at: DateTime<Utc>,
    /// Why this backup is kept whatever the retention says (`POST /v1/backups/{name}/pin`): the controller pins the
    /// backup it takes before an upgrade, the only way back once the cluster version moved. Retention never
    /// deletes the newest pinned backup of a cluster; an older pinned one (a later upgrade pinned its own) counts
    /// as any other backup again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// The JSON document written next to a snapshot object, last, to publish it. An object without one is an
/// incomplete backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupManifest {
    /// Format version of this document ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// Storage key of the compressed snapshot, relative to the storage prefix.
    pub object: String,
    /// The backup itself.
    #[serde(flatten)]
    pub info: BackupInfo,
}

/// Response of `GET /v1/backups`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupList {
    /// Published backups, newest first (by finish time, then revision).
    pub backups: Vec<BackupInfo>,
}

/// A backup attempt that failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupFailure {
    /// When the attempt failed.
    pub at: DateTime<Utc>,
    /// Stable short reason, also used as a metric label (`etcd`, `storage`, `verification`, ...).
    pub reason: String,
    /// The error, as a person would read it.
    pub error: String,
}

/// Response of `GET /v1/status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    /// Name of the etcd cluster this sidecar backs up.
    pub cluster_name: String,
    /// The storage URL, without credentials.
    pub storage: String,
    /// The schedule as configured (`every 30m`, `cron 0 * * * *`), if any.
    pub schedule: Option<String>,
    /// When the next scheduled attempt is due (a retry after a failure comes earlier than the schedule).
    pub next_run: Option<DateTime<Utc>>,
    /// Whether a backup is being taken right now.
    pub running: bool,
    /// Number of published backups in storage, as of the last listing.
    pub backup_count: usize,
    /// The most recent backup this process published or found unchanged.
    pub last_success: Option<BackupInfo>,
    /// When the last successful attempt ended (a skipped, unchanged run counts as success).
    pub last_success_at: Option<DateTime<Utc>>,
    /// The most recent failed attempt, if it came after the last success.
    pub last_failure: Option<BackupFailure>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
}

/// Body of `POST /v1/backups/{name}/pin`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PinRequest {
    /// Why the backup is kept (shown in its manifest and listings).
    pub reason: String,
}

/// Optional body of `POST /v1/backups`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequest {
    /// Take this backup from these endpoints instead of the configured ones: the controller names the members
    /// that still answer when the cluster has lost quorum (the client service then has no ready endpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

/// What `etcd-backup-sidecar restore` fetched and verified. It prints this as JSON and, with `--result-file`,
/// writes it there: a seed's fetch init container writes it to its termination message, from which the controller
/// learns which backup `latest` turned out to be when it could not ask (a backup read straight from storage).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    /// The backup's name (never `latest`).
    pub backup: String,
    /// The etcd revision it holds (0 when the source did not say).
    pub revision: i64,
    /// Lower-case hex SHA-256 of the snapshot written, which matched the backup's own.
    pub sha256: String,
    /// Bytes written.
    pub size: u64,
}

/// Exit code of `etcd-backup-sidecar restore` when the backup itself is corrupt (as opposed to unreachable):
/// retrying cannot help, and the controller stops and reports instead of trying again.
pub const EXIT_CORRUPT_BACKUP: u8 = 3;

/// Exit code of `etcd-backup-sidecar guard` when the member's volume belongs to another cluster or member, or holds
/// data it did not write: etcd is not started on it, and the controller reports the claim instead of retrying.
pub const EXIT_WRONG_VOLUME: u8 = 4;

/// Exit code of `etcd-backup-sidecar guard` when the member's volume is its own but its files cannot be read and
/// written by the pod's user (data a member running as another user wrote, on a volume whose driver does not apply
/// fsGroup): the data is intact, etcd is not started on it, and nothing is replaced or restored for it.
pub const EXIT_VOLUME_UNUSABLE: u8 = 5;

/// How the guard's reason starts when it exits with [`EXIT_VOLUME_UNUSABLE`].
pub const UNUSABLE_PREFIX: &str = "volume unusable: ";

/// The file `etcd-backup-sidecar guard` keeps at the root of a member's volume, beside the data directory: whose
/// volume it is. Written on the first start (on an empty volume), checked on every start after.
pub const GUARD_FILE: &str = "kube-etcd-controller-guard.json";

/// What [`GUARD_FILE`] holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGuard {
    /// The EtcdCluster's UID (a cluster deleted and created again under the same name has another).
    pub cluster_uid: String,
    /// `namespace/name` of the EtcdCluster, for people.
    pub cluster: String,
    /// The member (pod) name.
    pub member: String,
    /// etcd's member ID (hex), once the controller knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
}

/// The minors a seed may run to restore a backup taken from etcd `backup_version` (`3.5.35`, or `v3.5.35`): its
/// own, or the next (etcd moves one minor at a time and never below the version that wrote the data). `None` when
/// the recorded version cannot be read (backups of older sidecars): no reason to refuse.
pub fn seed_minors(backup_version: &str) -> Option<(u32, u32)> {
    let version = backup_version.trim().trim_start_matches('v');
    let mut parts = version.split('.');
    let (Some("3"), Some(minor), Some(patch)) = (parts.next(), parts.next(), parts.next()) else { return None };
    let minor: u32 = minor.parse().ok()?;
    patch.parse::<u32>().ok()?;
    Some((minor, minor + 1))
}

/// The JSON body of every error response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiErrorBody {
    /// Stable short error kind, e.g. `not_found`, `unauthorized`, `backup_failed`.
    pub error: String,
    /// What went wrong, as a person would read it.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_with_flattened_info() {
        let info = BackupInfo {
            name: "c-20260101T000000Z-r42".into(),
            cluster_name: "c".into(),
            cluster_uid: None,
            etcd_cluster_id: "abc".into(),
            etcd_member: "http://127.0.0.1:2379".into(),
            revision: 42,
            etcd_version: "3.4.23".into(),
            raw_size: 20512,
            compressed_size: 900,
            sha256: "00".repeat(32),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            pinned: None,
        };
        let manifest = BackupManifest { format: MANIFEST_FORMAT, object: "x.db.gz".into(), info };
        let json = serde_json::to_value(&manifest).unwrap();
        assert_eq!(json["revision"], 42);
        assert_eq!(json["clusterName"], "c");
        assert_eq!(json["object"], "x.db.gz");
        let back: BackupManifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, manifest);
    }
}
