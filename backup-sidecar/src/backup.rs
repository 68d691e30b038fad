//! Taking backups: one at a time, skipped when etcd has not moved, published only when verified, then retention.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use proto::backup::{BackupFailure, BackupInfo, BackupManifest, SidecarStatus};
use tracing::Instrument;

use crate::etcd::{EtcdConfig, EtcdError};
use crate::metrics::{Metrics, ReasonLabel};
use crate::retention::Retention;
use crate::snapshot::{SnapshotError, stream_snapshot};
use crate::storage::{Storage, StorageError, manifest_for};

/// Part size of multipart uploads (S3's minimum).
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploaded at once; with [`PART_SIZE`] this bounds the upload buffer to about 15 MiB.
const UPLOAD_CONCURRENCY: usize = 2;
/// Snapshot objects without a manifest are removed once they are this old (an upload elsewhere may be running).
const ORPHAN_GRACE_MINUTES: i64 = 60;

/// Settings of the backup engine.
#[derive(Clone, Debug)]
pub struct BackupConfig {
    /// Name of the cluster, the first part of every backup name.
    pub cluster_name: String,
    /// UID of the EtcdCluster object, recorded in every backup (see [`BackupInfo::cluster_uid`]).
    pub cluster_uid: Option<String>,
    /// What to keep.
    pub retention: Retention,
    /// How long the etcd snapshot stream may stay silent before the attempt fails.
    pub idle_timeout: Duration,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// etcd could not be reached.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The snapshot stream failed or was not intact.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The uploaded object is not what was written.
    #[error("verification of {name} failed: {why}")]
    Verification {
        /// The backup.
        name: String,
        /// What did not match.
        why: String,
    },
}

impl BackupError {
    /// Stable short reason, used as a metric label and in status.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Etcd(_) => "etcd_unreachable",
            Self::Snapshot(SnapshotError::Write(_)) => "storage",
            Self::Snapshot(SnapshotError::Incomplete { .. }) => "snapshot_incomplete",
            Self::Snapshot(_) => "snapshot",
            Self::Storage(_) => "storage",
            Self::Verification { .. } => "verification",
        }
    }
}

/// What an attempt produced.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A new backup was published.
    Created(BackupInfo),
    /// etcd had not moved since this backup, so none was taken.
    Unchanged(BackupInfo),
}

impl Outcome {
    /// The backup the outcome names.
    pub fn info(&self) -> &BackupInfo {
        match self {
            Self::Created(info) | Self::Unchanged(info) => info,
        }
    }
}

/// The shared result of one attempt, handed to every caller that waited for it.
pub type AttemptResult = Result<Outcome, Arc<BackupError>>;

/// Takes backups of one cluster into one storage, one at a time, and keeps what status reports.
pub struct Engine {
    etcd: EtcdConfig,
    storage: Storage,
    config: BackupConfig,
    /// Metrics, also served at `/metrics`.
    pub metrics: Metrics,
    state: Mutex<State>,
    inflight: Mutex<Option<Shared<BoxFuture<'static, AttemptResult>>>>,
    /// Held by retention and by a pin, so that a pin never rewrites the manifest of a backup retention is deleting
    /// (which would leave a manifest without data), and retention always sees a pin made before it.
    manifests: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    schedule: Option<String>,
    next_run: Option<chrono::DateTime<Utc>>,
    backup_count: usize,
    storage_reached: bool,
    last_success: Option<BackupInfo>,
    last_success_at: Option<chrono::DateTime<Utc>>,
    last_failure: Option<BackupFailure>,
    consecutive_failures: u32,
}

impl Engine {
    /// A new engine; nothing is contacted yet.
    pub fn new(etcd: EtcdConfig, storage: Storage, config: BackupConfig) -> Arc<Self> {
        Arc::new(Self {
            etcd,
            storage,
            config,
            metrics: Metrics::default(),
            state: Mutex::new(State::default()),
            inflight: Mutex::new(None),
            manifests: tokio::sync::Mutex::new(()),
        })
    }

    /// The storage backups go to.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Takes a backup now, or joins the one already running and returns its result. The attempt runs on its own
    /// task, so a caller that goes away (an HTTP client hanging up) does not cancel it.
    pub async fn backup(self: &Arc<Self>) -> AttemptResult {
        self.backup_from(None).await
    }

    /// Like [`Engine::backup`], from `endpoints` instead of the configured ones when given. Such a request never
    /// joins a running attempt (which may be failing on the configured endpoints): it waits for it to end, then
    /// runs its own.
    pub async fn backup_from(self: &Arc<Self>, mut endpoints: Option<Vec<String>>) -> AttemptResult {
        // One check-and-start under the lock, so no other attempt can slip in between.
        let shared = loop {
            let running = {
                let mut inflight = self.inflight.lock().expect("inflight lock");
                match inflight.as_ref() {
                    Some(running) if endpoints.is_some() => running.clone(),
                    Some(running) => break running.clone(),
                    None => {
                        let engine = self.clone();
                        let endpoints = endpoints.take();
                        let task = tokio::spawn(async move {
                            let result = engine.attempt(endpoints).await.map_err(Arc::new);
                            *engine.inflight.lock().expect("inflight lock") = None;
                            result
                        });
                        let shared =
                            async move { task.await.expect("a backup attempt does not panic") }.boxed().shared();
                        *inflight = Some(shared.clone());
                        break shared;
                    }
                }
            };
            // Named endpoints never join an attempt on other ones: wait for it to end, then look again.
            let _ = running.await;
        };
        shared.await
    }

    async fn attempt(&self, endpoints: Option<Vec<String>>) -> Result<Outcome, BackupError> {
        let span = tracing::info_span!("backup", cluster = %self.config.cluster_name);
        let started = Instant::now();
        let result = self.take(endpoints).instrument(span.clone()).await;
        let _entered = span.enter();
        let mut state = self.state.lock().expect("state lock");
        match &result {
            Ok(outcome) => {
                let (label, info) = match outcome {
                    Outcome::Created(info) => {
                        self.metrics.duration.observe(started.elapsed().as_secs_f64());
                        self.metrics.last_raw_bytes.set(info.raw_size as i64);
                        self.metrics.last_compressed_bytes.set(info.compressed_size as i64);
                        tracing::info!(
                            backup = %info.name, revision = info.revision, raw = info.raw_size,
                            compressed = info.compressed_size, seconds = started.elapsed().as_secs_f64(),
                            "backup published"
                        );
                        ("created", info)
                    }
                    Outcome::Unchanged(info) => {
                        tracing::info!(backup = %info.name, revision = info.revision, "etcd unchanged since the last backup; skipped");
                        ("unchanged", info)
                    }
                };
                self.metrics.attempt(label);
                self.metrics.last_success.set(Utc::now().timestamp_millis() as f64 / 1000.0);
                state.last_success = Some(info.clone());
                state.last_success_at = Some(Utc::now());
                state.last_failure = None;
                state.consecutive_failures = 0;
            }
            Err(error) => {
                self.metrics.attempt("failed");
                self.metrics.failures.get_or_create(&ReasonLabel { reason: error.reason().to_string() }).inc();
                state.consecutive_failures += 1;
                tracing::warn!(reason = error.reason(), error = %error, failures = state.consecutive_failures, "backup failed");
                state.last_failure = Some(BackupFailure {
                    at: Utc::now(),
                    reason: error.reason().to_string(),
                    error: error.to_string(),
                });
            }
        }
        result
    }

    async fn take(&self, endpoints: Option<Vec<String>>) -> Result<Outcome, BackupError> {
        let mut member = match endpoints {
            Some(endpoints) => {
                tracing::info!(?endpoints, "backup from the endpoints the request names");
                EtcdConfig { endpoints, ..self.etcd.clone() }.connect_member().await?
            }
            None => self.etcd.connect_member().await?,
        };
        let cluster_id = format!("{:x}", member.cluster_id);
        let existing = self.list().await?;
        if let Some(latest) =
            existing.first().filter(|b| b.etcd_cluster_id == cluster_id && b.revision == member.revision)
        {
            return Ok(Outcome::Unchanged(latest.clone()));
        }

        let started_at = Utc::now();
        let name =
            format!("{}-{}-r{}", self.config.cluster_name, started_at.format("%Y%m%dT%H%M%S%.3fZ"), member.revision);
        tracing::info!(backup = %name, member = %member.endpoint, revision = member.revision, "snapshot started");
        let mut upload = self.storage.upload(&name, PART_SIZE, UPLOAD_CONCURRENCY).await?;
        let streamed = match stream_snapshot(
            &mut member.client,
            &member.endpoint,
            &mut upload,
            self.config.idle_timeout,
        )
        .await
        {
            Ok(streamed) => streamed,
            Err(error) => {
                if let Err(abort_error) = upload.abort().await {
                    tracing::warn!(backup = %name, error = %abort_error, "could not abort the partial upload; cleanup removes it later");
                }
                return Err(error.into());
            }
        };
        // A failed finish aborts the upload itself.
        upload.finish().await.map_err(SnapshotError::Write)?;
        let key = Storage::data_key(&name);
        let stored = self.storage.object_size(&key).await?;
        if stored != streamed.compressed_size {
            return Err(BackupError::Verification {
                name,
                why: format!("storage holds {stored} bytes, {} were written", streamed.compressed_size),
            });
        }
        let info = BackupInfo {
            name,
            cluster_name: self.config.cluster_name.clone(),
            cluster_uid: self.config.cluster_uid.clone(),
            etcd_cluster_id: cluster_id,
            etcd_member: member.endpoint.clone(),
            revision: member.revision,
            etcd_version: member.version.clone(),
            raw_size: streamed.raw_size,
            compressed_size: streamed.compressed_size,
            sha256: streamed.sha256,
            started_at,
            finished_at: Utc::now(),
            pinned: None,
        };
        self.storage.publish(&manifest_for(info.clone())).await?;
        self.apply_retention(&info.etcd_cluster_id, info.revision).await;
        Ok(Outcome::Created(info))
    }

    /// Runs only after a backup of etcd cluster `cluster_id` was published (a failed attempt never deletes
    /// anything), and deletes only that cluster's backups, none of a higher revision than the one just published.
    async fn apply_retention(&self, cluster_id: &str, published: i64) {
        let _manifests = self.manifests.lock().await;
        let backups = match self.storage.list().await {
            Ok(backups) => self.own(backups),
            Err(error) => {
                tracing::warn!(%error, "retention skipped: listing failed");
                return;
            }
        };
        let expired = self.config.retention.expired(&backups, cluster_id, published, Utc::now());
        let mut deleted = 0;
        for backup in &expired {
            match self.storage.delete(backup).await {
                Ok(()) => {
                    deleted += 1;
                    self.metrics.retention_deleted.inc();
                    tracing::info!(backup = %backup.info.name, policy = %self.config.retention.describe(), "retention deleted backup");
                }
                Err(error) => {
                    tracing::warn!(backup = %backup.info.name, %error, "retention could not delete backup")
                }
            }
        }
        self.set_count(backups.len() - deleted);
        match self.storage.cleanup(chrono::Duration::minutes(ORPHAN_GRACE_MINUTES)).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, "removed incomplete uploads")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cleanup of incomplete uploads failed"),
        }
    }

    /// Every published backup of this sidecar's cluster (see `own`), newest first. Another cluster's backups in
    /// the same storage prefix are not listed, not `latest`, never deleted by retention (they stay fetchable by
    /// their exact name, and listed by [`Engine::list_all`]).
    pub async fn list(&self) -> Result<Vec<BackupInfo>, StorageError> {
        let manifests = self.own(self.storage.list().await?);
        self.set_count(manifests.len());
        // A sidecar started again knows its last success from storage, not "none yet" (which would hide a backup
        // gone stale behind a restart).
        if let Some(newest) = manifests.first() {
            let mut state = self.state.lock().expect("state lock");
            if state.last_success.is_none() {
                state.last_success = Some(newest.info.clone());
                state.last_success_at = Some(newest.info.finished_at);
                self.metrics.last_success.set(newest.info.finished_at.timestamp_millis() as f64 / 1000.0);
            }
        }
        Ok(manifests.into_iter().map(|m| m.info).collect())
    }

    /// Pins this cluster's backup `name` (see [`BackupInfo::pinned`]): its manifest is written again with `reason`.
    pub async fn pin(&self, name: &str, reason: &str) -> Result<BackupInfo, StorageError> {
        let _manifests = self.manifests.lock().await;
        let own = self.list().await?;
        if !own.iter().any(|b| b.name == name) {
            return Err(StorageError::NotFound(format!("{name} (no backup of this cluster)")));
        }
        let mut manifest = self.storage.manifest(name).await?;
        manifest.info.pinned = Some(reason.to_string());
        self.storage.publish(&manifest).await?;
        tracing::info!(backup = %name, %reason, "backup pinned");
        Ok(manifest.info)
    }

    /// Every published backup in the storage prefix, whichever cluster wrote it, newest first.
    pub async fn list_all(&self) -> Result<Vec<BackupInfo>, StorageError> {
        Ok(self.storage.list().await?.into_iter().map(|m| m.info).collect())
    }

    /// This cluster's: its name, and its EtcdCluster's UID where both the sidecar and the backup know one (an
    /// EtcdCluster deleted and created again under the name is another cluster; backups that recorded no UID, from
    /// sidecars before it was recorded, count by name).
    fn own(&self, manifests: Vec<BackupManifest>) -> Vec<BackupManifest> {
        let config = &self.config;
        manifests
            .into_iter()
            .filter(|m| {
                let uid = match (&m.info.cluster_uid, &config.cluster_uid) {
                    (Some(recorded), Some(ours)) => recorded == ours,
                    _ => true,
                };
                m.info.cluster_name == config.cluster_name && uid
            })
            .collect()
    }

    fn set_count(&self, count: usize) {
        self.metrics.stored.set(count as i64);
        let mut state = self.state.lock().expect("state lock");
        state.backup_count = count;
        state.storage_reached = true;
    }

    /// How many callers wait for the attempt running now (its starter included; 0 when none runs). Diagnostics
    /// only, nothing acts on it: it lets a test see that triggers joined a running attempt.
    pub fn waiting(&self) -> usize {
        let inflight = self.inflight.lock().expect("inflight lock");
        // Every waiting caller holds a clone of the shared attempt; the one kept here is not a caller.
        inflight.as_ref().and_then(Shared::strong_count).map_or(0, |handles| handles.saturating_sub(1))
    }

    /// Whether storage has answered at least once.
    pub fn storage_reached(&self) -> bool {
        self.state.lock().expect("state lock").storage_reached
    }

    /// Records the schedule and when it runs next, for status.
    pub fn set_schedule(&self, schedule: Option<String>, next_run: Option<chrono::DateTime<Utc>>) {
        let mut state = self.state.lock().expect("state lock");
        state.schedule = schedule;
        state.next_run = next_run;
    }

    /// What `/v1/status` reports.
    pub fn status(&self) -> SidecarStatus {
        let running = self.inflight.lock().expect("inflight lock").is_some();
        let state = self.state.lock().expect("state lock");
        SidecarStatus {
            cluster_name: self.config.cluster_name.clone(),
            storage: self.storage.display_url().to_string(),
            schedule: state.schedule.clone(),
            next_run: state.next_run,
            running,
            backup_count: state.backup_count,
            last_success: state.last_success.clone(),
            last_success_at: state.last_success_at,
            last_failure: state.last_failure.clone(),
            consecutive_failures: state.consecutive_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::S3Options;

    /// Callers that arrive while an attempt runs join it: one attempt, one result shared by all. The attempt is
    /// held (deterministically, not by timing) on an "etcd" that accepts the connection and never answers, and
    /// ends when the test closes that connection.
    #[tokio::test]
    async fn callers_during_an_attempt_share_it_and_its_result() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let etcd = EtcdConfig {
            endpoints: vec![format!("http://{}", listener.local_addr().unwrap())],
            ca: None,
            identity: None,
            server_name: None,
            timeout: Duration::from_secs(300),
        };
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("file://{}", dir.path().display()), &S3Options::default()).unwrap();
        let config = BackupConfig {
            cluster_name: "c".into(),
            cluster_uid: None,
            retention: Retention::default(),
            idle_timeout: Duration::ZERO,
        };
        let engine = Engine::new(etcd, storage, config);
        assert_eq!(engine.waiting(), 0);

        let callers: Vec<_> = (0..3)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.backup().await })
            })
            .collect();
        // The attempt's connection arrives; it gets no answer while the test holds it.
        let (held, _) = listener.accept().await.unwrap();
        let all_wait = async {
            while engine.waiting() < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all_wait).await.expect("every caller waits for the attempt");
        assert!(engine.status().running);
        drop(held);
        drop(listener);

        let mut errors = Vec::new();
        for caller in callers {
            errors.push(caller.await.unwrap().unwrap_err());
        }
        assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])), "one attempt's result, shared");
        assert_eq!(errors[0].reason(), "etcd_unreachable");
        let metrics = engine.metrics.encode();
        assert!(metrics.contains("etcd_backup_attempts_total{result=\"failed\"} 1\n"), "{metrics}");
        assert_eq!(engine.waiting(), 0);
        assert!(!engine.status().running);
        assert_eq!(engine.status().consecutive_failures, 1);
    }
}
