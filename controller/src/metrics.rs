//! Prometheus metrics of the controller.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use proto::cluster::EtcdClusterStatus;

use crate::build::BuildInfo;

/// Label of a failure reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// Label of a cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// The cluster's name.
    pub cluster: String,
}

/// Label of a phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The cluster's name.
    pub cluster: String,
    /// The phase.
    pub phase: String,
}

/// Labels of a certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    /// The cluster's name.
    pub cluster: String,
    /// What it is for (`peer`, `server`, `operator`, `application`).
    pub purpose: String,
    /// Its Secret.
    pub secret: String,
}

/// The controller's metrics.
pub struct Metrics {
    certificate_expiry: Family<CertificateLabel, Gauge>,
    certificates_issued: Family<ReasonLabel, Counter>,
    registry: Mutex<Registry>,
    reconciles: Counter,
    failures: Family<ReasonLabel, Counter>,
    duration: Histogram,
    members: Family<ClusterLabel, Gauge>,
    ready: Family<ClusterLabel, Gauge>,
    phase: Family<PhaseLabel, Gauge>,
    recoveries: Family<ReasonLabel, Counter>,
    abandoned: Counter,
    upgrade_steps: Family<StepLabel, Counter>,
    upgrade_duration: Histogram,
}

/// Label of an upgrade step.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    /// The step: `started`, `member`, `leader_moved`, `leader`, `completed`.
    pub step: String,
}

impl Metrics {
    /// The controller's metrics, with `etcd_controller_build_info{version,commit,binary_sha256} 1` saying which
    /// build runs.
    pub fn new(build: &BuildInfo) -> Self {
        let mut registry = Registry::with_prefix("etcd_controller");
        let info = Info::new(vec![
            ("version".to_string(), build.version.to_string()),
            ("commit".to_string(), build.commit.to_string()),
            ("binary_sha256".to_string(), build.binary_sha256.clone()),
        ]);
        registry.register("build", "The running build", info);
        let certificate_expiry = Family::<CertificateLabel, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each certificate of a cluster's TLS expires (Unix time); absent while it cannot be read",
            certificate_expiry.clone(),
        );
        let certificates_issued = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "certificates_issued",
            "Certificates and CAs the controller generated, by event reason",
            certificates_issued.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let failures = Family::<ReasonLabel, Counter>::default();
        registry.register("reconcile_failures", "Failed reconciles by reason", failures.clone());
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register("reconcile_duration_seconds", "Duration of reconciles", duration.clone());
        let members = Family::<ClusterLabel, Gauge>::default();
        registry.register("members", "Voting members per cluster", members.clone());
        let ready = Family::<ClusterLabel, Gauge>::default();
        registry.register("ready_members", "Ready members per cluster", ready.clone());
        let phase = Family::<PhaseLabel, Gauge>::default();
        registry.register("cluster_phase", "1 for each cluster's current phase", phase.clone());
        let recoveries = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "recoveries",
            "Recoveries from lost quorum started, by the backup chosen (fresh or newest)",
            recoveries.clone(),
        );
        let abandoned = Counter::default();
        registry.register(
            "recoveries_abandoned",
            "Recoveries abandoned before anything was deleted (the quorum came back, a member pod's node is not \
             Ready, or the policy no longer restores)",
            abandoned.clone(),
        );
        let upgrade_steps = Family::<StepLabel, Counter>::default();
        registry.register(
            "upgrade_steps",
            "Upgrade steps carried out: started (backup taken and recorded), member (a follower restarted on the \
             target image), leader_moved, leader (a one-member cluster's only member restarted), completed",
            upgrade_steps.clone(),
        );
        let upgrade_duration = Histogram::new(exponential_buckets(5.0, 2.0, 10));
        registry.register(
            "upgrade_duration_seconds",
            "Duration of completed upgrades, from their start to the cluster version reporting the target",
            upgrade_duration.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            certificate_expiry,
            certificates_issued,
            upgrade_steps,
            upgrade_duration,
            reconciles,
            failures,
            duration,
            members,
            ready,
            phase,
            recoveries,
            abandoned,
        }
    }
}

/// Times one reconcile.
pub struct Timer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Timer<'_> {
    /// Records the reconcile's duration.
    pub fn finish(self, _ok: bool) {
        self.metrics.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts an upgrade step.
    pub fn upgrade_step(&self, step: &str) {
        self.upgrade_steps.get_or_create(&StepLabel { step: step.into() }).inc();
    }

    /// Counts a completed upgrade and its duration.
    pub fn upgrade_completed(&self, seconds: f64) {
        self.upgrade_step("completed");
        self.upgrade_duration.observe(seconds);
    }

    /// Counts a reconcile and times it.
    pub fn reconcile_started(&self) -> Timer<'_> {
        self.reconciles.inc();
        Timer { metrics: self, start: Instant::now() }
    }

    /// Counts a recovery from lost quorum; `backup` is `fresh` or `newest`.
    pub fn recovery_started(&self, backup: &str) {
        self.recoveries.get_or_create(&ReasonLabel { reason: backup.into() }).inc();
    }

    /// Counts a recovery abandoned before its first deletion.
    pub fn recovery_abandoned(&self) {
        self.abandoned.inc();
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, reason: &str) {
        self.failures.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    /// Records a cluster's member counts and phase.
    pub fn observe_cluster(&self, cluster: &str, status: &EtcdClusterStatus) {
        for certificate in &status.certificates {
            let label = CertificateLabel {
                cluster: cluster.into(),
                purpose: certificate.purpose.clone(),
                secret: certificate.secret.clone(),
            };
            match &certificate.not_after {
                Some(at) => {
                    self.certificate_expiry.get_or_create(&label).set(at.0.as_second());
                }
                None => {
                    self.certificate_expiry.remove(&label);
                }
            }
        }
        let label = ClusterLabel { cluster: cluster.into() };
        self.members.get_or_create(&label).set(i64::from(status.size));
        self.ready.get_or_create(&label).set(i64::from(status.ready_members));
        for phase in
            ["Creating", "Running", "Scaling", "Healing", "QuorumLost", "Recovering", "Upgrading", "Paused", "Invalid"]
        {
            let current = format!("{:?}", status.phase) == phase;
            self.phase
                .get_or_create(&PhaseLabel { cluster: cluster.into(), phase: phase.into() })
                .set(i64::from(current));
        }
    }

    /// A certificate or CA was generated (`reason` is the event's).
    pub fn certificate_issued(&self, reason: &str) {
        self.certificates_issued.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_is_exported() {
        let build = BuildInfo { version: "1.2.3", commit: "0123456789ab", binary_sha256: "ba9876543210".into() };
        let text = Metrics::new(&build).encode();
        assert!(
            text.contains(
                r#"etcd_controller_build_info{version="1.2.3",commit="0123456789ab",binary_sha256="ba9876543210"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn abandoned_recoveries_are_counted() {
        let build = BuildInfo { version: "1", commit: "c", binary_sha256: "h".into() };
        let metrics = Metrics::new(&build);
        assert!(metrics.encode().contains("etcd_controller_recoveries_abandoned_total 0"));
        metrics.recovery_abandoned();
        assert!(metrics.encode().contains("etcd_controller_recoveries_abandoned_total 1"), "{}", metrics.encode());
    }
}
