//! Prometheus metrics of the backup sidecar.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label naming an attempt's result: `created`, `unchanged` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The result.
    pub result: String,
}

/// Label naming why an attempt failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The failure's stable short reason.
    pub reason: String,
}

/// Every metric the sidecar exports.
pub struct Metrics {
    registry: Registry,
    /// Backup attempts by result.
    pub attempts: Family<ResultLabel, Counter>,
    /// Failed attempts by reason.
    pub failures: Family<ReasonLabel, Counter>,
    /// Unix time of the last successful attempt (new or unchanged).
    pub last_success: Gauge<f64, AtomicU64>,
    /// Duration of attempts that made a backup.
    pub duration: Histogram,
    /// Raw snapshot size of the last backup.
    pub last_raw_bytes: Gauge,
    /// Compressed size of the last backup.
    pub last_compressed_bytes: Gauge,
    /// Published backups in storage, as of the last listing.
    pub stored: Gauge,
    /// Backups deleted by retention.
    pub retention_deleted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("etcd_backup");
        let attempts = Family::<ResultLabel, Counter>::default();
        registry.register("attempts", "Backup attempts by result (created, unchanged, failed)", attempts.clone());
        let failures = Family::<ReasonLabel, Counter>::default();
        registry.register("failures", "Failed backup attempts by reason", failures.clone());
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful backup attempt",
            last_success.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register("duration_seconds", "Duration of backups that were taken", duration.clone());
        let last_raw_bytes = Gauge::default();
        registry.register("last_raw_size_bytes", "Raw snapshot size of the last backup", last_raw_bytes.clone());
        let last_compressed_bytes = Gauge::default();
        registry.register(
            "last_compressed_size_bytes",
            "Compressed size of the last backup",
            last_compressed_bytes.clone(),
        );
        let stored = Gauge::default();
        registry.register("stored", "Published backups in storage", stored.clone());
        let retention_deleted = Counter::default();
        registry.register("retention_deleted", "Backups deleted by the retention policy", retention_deleted.clone());
        Self {
            registry,
            attempts,
            failures,
            last_success,
            duration,
            last_raw_bytes,
            last_compressed_bytes,
            stored,
            retention_deleted,
        }
    }
}

impl Metrics {
    /// Counts one attempt's result.
    pub fn attempt(&self, result: &str) {
        self.attempts.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
