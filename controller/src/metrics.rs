//! Prometheus metrics of the controller.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::build::BuildInfo;

/// Label of a failure reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// The controller's metrics.
pub struct Metrics {
    clusters: Arc<Clusters>,
    certificates_issued: Family<ReasonLabel, Counter>,
    registry: Mutex<Registry>,
    reconciles: Counter,
    failures: Family<ReasonLabel, Counter>,
    duration: Histogram,
    recoveries: Family<ReasonLabel, Counter>,
    abandoned: Counter,
    upgrade_steps: Family<StepLabel, Counter>,
    upgrade_duration: Histogram,
    leading: prometheus_client::metrics::gauge::Gauge,
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
        let clusters = Arc::new(Clusters::default());
        registry.register_collector(Box::new(clusters.clone()));
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
        let leading = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "leading",
            "1 while this replica leads (holds the Lease) and reconciles; 0 while it stands by",
            leading.clone(),
        );
        Self {
            leading,
            registry: Mutex::new(registry),
            clusters,
            certificates_issued,
            upgrade_steps,
            upgrade_duration,
            reconciles,
            failures,
            duration,
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

    /// This replica leads from now on (it never stops leading: it exits instead).
    pub fn leads(&self) {
        self.leading.set(1);
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

    /// Records what one reconcile saw of cluster `name` in `namespace`, replacing what was recorded before.
    pub fn observe_cluster(&self, namespace: &str, name: &str, view: ClusterView) {
        self.clusters.record(namespace, name, view);
    }

    /// Forgets every cluster for which `exists` (namespace, name) says no: the series of a deleted cluster go.
    pub fn retain_clusters(&self, exists: impl Fn(&str, &str) -> bool) {
        self.clusters.retain(exists);
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

/// What the metrics say of one cluster, as one reconcile saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// `spec.size`.
    pub desired_members: i64,
    /// Whether etcd answered this look (without it, the member, quorum, leader, alarm and size series are left
    /// out: nothing is known of them).
    pub etcd_reachable: bool,
    /// When this look was taken (Unix time): a view that stops moving is a controller that stopped looking.
    pub observed_at: i64,
    /// Voting members etcd lists.
    pub members: i64,
    /// Voting members that answer and know a leader.
    pub healthy_voters: i64,
    /// Members whose pod is Ready.
    pub ready_members: i64,
    /// The leader's member ID, when one is known.
    pub leader: Option<u64>,
    /// Each member's database size in bytes, by member name, as it answered.
    pub db_size: BTreeMap<String, i64>,
    /// `spec.etcd.quotaBackendBytes`.
    pub quota_bytes: i64,
    /// Whether etcd has raised the NOSPACE alarm.
    pub nospace: bool,
    /// `status.phase`.
    pub phase: String,
    /// `status.conditions`: type and status (`True`, `False`, `Unknown`).
    pub conditions: Vec<(String, String)>,
    /// Whether an upgrade is under way (`status.upgrade`).
    pub upgrading: bool,
    /// When the upgrade under way started (Unix time).
    pub upgrade_started: Option<i64>,
    /// Whether a recovery from lost quorum is under way.
    pub recovering: bool,
    /// Whether the controller waits for a person: quorum lost with no recovery it may start (policy `Manual`, no
    /// usable backup).
    pub waiting_for_person: bool,
    /// The backup sidecar, when the cluster has backups.
    pub backup: Option<BackupView>,
    /// Each certificate: purpose, Secret and when it expires (Unix time), when it can be read.
    pub certificates: Vec<(String, String, i64)>,
}

impl ClusterView {
    /// The view of a cluster from one reconcile: its spec, what was observed, the action shown in status, the
    /// backup sidecar's health and the status written.
    pub fn of(
        spec: &proto::cluster::EtcdClusterSpec,
        observed: &crate::observe::Observed,
        shown: &crate::plan::Action,
        backup: Option<&crate::backup::BackupHealth>,
        status: &proto::cluster::EtcdClusterStatus,
    ) -> Self {
        use crate::plan::{Action, Recovery, WaitReason};
        let (members, etcd_reachable) = match &observed.etcd {
            crate::observe::EtcdView::Members(members) => (members.as_slice(), true),
            crate::observe::EtcdView::Unreachable(_) => (&[][..], false),
        };
        let automatic = matches!(Recovery::from_spec(spec), Recovery::Restore { .. });
        let waiting_for_person = match shown {
            Action::Wait(
                WaitReason::NoUsableBackup(_)
                | WaitReason::DataLost
                | WaitReason::RestoreRefused { .. }
                | WaitReason::NodesNotReady { .. },
            ) => true,
            Action::Wait(WaitReason::QuorumLost { .. } | WaitReason::NoMemberAnswers(_)) => !automatic,
            _ => false,
        };
        let seconds = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| t.0.as_second();
        Self {
            desired_members: i64::from(spec.size),
            etcd_reachable,
            observed_at: k8s_openapi::jiff::Timestamp::now().as_second(),
            members: i64::from(status.size),
            healthy_voters: i64::try_from(members.iter().filter(|m| !m.learner && m.healthy).count()).unwrap_or(0),
            ready_members: i64::from(status.ready_members),
            leader: members.iter().find(|m| m.leader).map(|m| m.id),
            db_size: members.iter().filter_map(|m| Some((m.name.clone(), m.db_size?))).collect(),
            quota_bytes: spec.etcd.quota_backend_bytes,
            nospace: observed.alarms.iter().any(|(_, alarm)| alarm.eq_ignore_ascii_case("NOSPACE")),
            phase: format!("{:?}", status.phase),
            conditions: status.conditions.iter().map(|c| (c.type_.clone(), c.status.clone())).collect(),
            upgrading: status.upgrade.is_some(),
            upgrade_started: status.upgrade.as_ref().and_then(|u| u.started_at.as_ref()).map(seconds),
            recovering: status.recovery.is_some(),
            waiting_for_person,
            backup: spec.backup.as_ref().map(|policy| {
                let reported = match backup {
                    Some(crate::backup::BackupHealth::Reported(status)) => Some(status),
                    _ => None,
                };
                BackupView {
                    last_success: reported.and_then(|s| s.last_success_at).map(|at| at.timestamp()),
                    consecutive_failures: reported.map_or(0, |s| i64::from(s.consecutive_failures)),
                    interval_seconds: crate::backup::longest_interval(policy).map(|d| d.as_secs() as i64),
                    reachable: reported.is_some(),
                }
            }),
            certificates: status
                .certificates
                .iter()
                .filter_map(|c| Some((c.purpose.clone(), c.secret.clone(), seconds(c.not_after.as_ref()?))))
                .collect(),
        }
    }
}

/// What the metrics say of a cluster's backups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupView {
    /// When the last backup succeeded (Unix time), as the sidecar says.
    pub last_success: Option<i64>,
    /// Backup attempts that failed in a row.
    pub consecutive_failures: i64,
    /// The longest time the schedule leaves between two backups, in seconds.
    pub interval_seconds: Option<i64>,
    /// Whether the sidecar's status could be read.
    pub reachable: bool,
}

/// The phases a cluster can be in, each exported (1 for the current one, 0 for the others).
const PHASES: [&str; 9] =
    ["Creating", "Running", "Scaling", "Healing", "QuorumLost", "Recovering", "Upgrading", "Paused", "Invalid"];

/// One cluster's recorded view, and the leader changes counted across views.
#[derive(Clone, Debug, Default)]
struct Recorded {
    view: ClusterView,
    /// The last leader known (a view without one keeps it).
    last_leader: Option<u64>,
    leader_changes: u64,
}

/// Every cluster's latest view, exported on each scrape with `namespace` and `cluster` labels: a cluster deleted
/// is forgotten ([`Metrics::retain_clusters`]), and its series go with it.
#[derive(Debug, Default)]
struct Clusters(Mutex<BTreeMap<(String, String), Recorded>>);

impl Clusters {
    fn record(&self, namespace: &str, name: &str, view: ClusterView) {
        let mut all = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let recorded = all.entry((namespace.to_string(), name.to_string())).or_default();
        // A leader change: another leader than the last one known (a view without a leader changes nothing).
        if let (Some(before), Some(now)) = (recorded.last_leader, view.leader)
            && before != now
        {
            recorded.leader_changes += 1;
        }
        if view.leader.is_some() {
            recorded.last_leader = view.leader;
        }
        // A sidecar that cannot be read says nothing new: its last success and failures stay as last known (a
        // stale backup is not hidden behind an unreachable sidecar).
        let mut view = view;
        if let (Some(now), Some(before)) = (view.backup.as_mut(), recorded.view.backup.as_ref())
            && !now.reachable
        {
            now.last_success = now.last_success.or(before.last_success);
            now.consecutive_failures = now.consecutive_failures.max(before.consecutive_failures);
        }
        recorded.view = view;
    }

    fn retain(&self, exists: impl Fn(&str, &str) -> bool) {
        let mut all = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.retain(|(namespace, name), _| exists(namespace, name));
    }
}

type Labels = Vec<(&'static str, String)>;

/// Writes one gauge family.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, i64)>,
) -> Result<(), std::fmt::Error> {
    let series: Vec<_> = series.into_iter().collect();
    if series.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in &series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Clusters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let base = |(namespace, name): &(String, String)| -> Labels {
            vec![("namespace", namespace.clone()), ("cluster", name.clone())]
        };
        let each = |value: fn(&Recorded) -> Option<i64>| {
            all.iter().filter_map(move |(key, recorded)| Some((base(key), value(recorded)?))).collect::<Vec<_>>()
        };
        // What only etcd can tell: left out of a look where it did not answer.
        let etcd = |value: fn(&Recorded) -> Option<i64>| {
            all.iter()
                .filter(|(_, recorded)| recorded.view.etcd_reachable)
                .filter_map(move |(key, recorded)| Some((base(key), value(recorded)?)))
                .collect::<Vec<_>>()
        };
        let with = |key: &(String, String), extra: Vec<(&'static str, String)>| {
            let mut labels = base(key);
            labels.extend(extra);
            labels
        };
        let e = &mut encoder;
        gauges(
            e,
            "cluster_desired_members",
            "Members the spec asks for (spec.size)",
            each(|r| Some(r.view.desired_members)),
        )?;
        gauges(
            e,
            "cluster_last_observed_timestamp_seconds",
            "When the controller last looked at the cluster (Unix time): one that stops moving is not looked at",
            each(|r| Some(r.view.observed_at)),
        )?;
        gauges(
            e,
            "cluster_etcd_reachable",
            "1 when etcd answered the controller's last look (the member, quorum, leader, alarm and size series are \
             left out otherwise)",
            each(|r| Some(i64::from(r.view.etcd_reachable))),
        )?;
        gauges(e, "cluster_members", "Voting members etcd lists", etcd(|r| Some(r.view.members)))?;
        gauges(
            e,
            "cluster_healthy_voters",
            "Voting members that answer and know a leader",
            etcd(|r| Some(r.view.healthy_voters)),
        )?;
        gauges(e, "cluster_ready_members", "Members whose pod is Ready", each(|r| Some(r.view.ready_members)))?;
        gauges(
            e,
            "cluster_quorum",
            "Members a quorum needs (a majority of the voting members)",
            etcd(|r| Some(r.view.members / 2 + 1)),
        )?;
        gauges(
            e,
            "cluster_leader",
            "1 when a member leads, as etcd says",
            etcd(|r| Some(i64::from(r.view.leader.is_some()))),
        )?;
        let changes: Vec<_> = all.iter().map(|(key, r)| (base(key), r.leader_changes)).collect();
        if !changes.is_empty() {
            let mut family = e.encode_descriptor(
                "cluster_leader_changes",
                "Leader changes the controller saw between its looks (sampled: etcd's own \
                 etcd_server_leader_changes_seen_total counts every one)",
                None,
                MetricType::Counter,
            )?;
            for (labels, value) in &changes {
                ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
            }
        }
        gauges(
            e,
            "member_db_size_bytes",
            "Each member's database size, as it answered",
            all.iter().flat_map(|(key, r)| {
                r.view.db_size.iter().map(move |(member, size)| (with(key, vec![("member", member.clone())]), *size))
            }),
        )?;
        gauges(
            e,
            "cluster_quota_bytes",
            "The database size at which etcd raises NOSPACE (spec.etcd.quotaBackendBytes)",
            each(|r| Some(r.view.quota_bytes)),
        )?;
        gauges(
            e,
            "cluster_nospace_alarm",
            "1 while etcd's NOSPACE alarm is raised (writes refused)",
            etcd(|r| Some(i64::from(r.view.nospace))),
        )?;
        gauges(
            e,
            "cluster_phase",
            "1 for the cluster's current phase, 0 for the others",
            all.iter().flat_map(|(key, r)| {
                PHASES.iter().map(move |phase| {
                    (with(key, vec![("phase", (*phase).to_string())]), i64::from(r.view.phase == *phase))
                })
            }),
        )?;
        gauges(
            e,
            "cluster_condition",
            "1 for each condition's current status (True, False, Unknown), 0 for the others",
            all.iter().flat_map(|(key, r)| {
                r.view.conditions.iter().flat_map(move |(kind, status)| {
                    ["True", "False", "Unknown"].into_iter().map(move |value| {
                        let labels = with(key, vec![("type", kind.clone()), ("status", value.to_string())]);
                        (labels, i64::from(status == value))
                    })
                })
            }),
        )?;
        gauges(e, "cluster_upgrading", "1 while an upgrade is under way", each(|r| Some(i64::from(r.view.upgrading))))?;
        gauges(
            e,
            "cluster_upgrade_started_timestamp_seconds",
            "When the upgrade under way started (Unix time)",
            each(|r| r.view.upgrade_started),
        )?;
        gauges(
            e,
            "cluster_recovering",
            "1 while a recovery from lost quorum is under way",
            each(|r| Some(i64::from(r.view.recovering))),
        )?;
        gauges(
            e,
            "cluster_waiting_for_person",
            "1 while quorum is lost and the controller may not recover on its own (policy Manual, no usable backup)",
            each(|r| Some(i64::from(r.view.waiting_for_person))),
        )?;
        gauges(
            e,
            "backup_last_success_timestamp_seconds",
            "When the cluster's last backup succeeded (Unix time), as its sidecar says",
            each(|r| r.view.backup.as_ref()?.last_success),
        )?;
        gauges(
            e,
            "backup_consecutive_failures",
            "Backup attempts that failed in a row, as the sidecar says",
            each(|r| Some(r.view.backup.as_ref()?.consecutive_failures)),
        )?;
        gauges(
            e,
            "backup_interval_seconds",
            "The longest time the backup schedule leaves between two backups",
            each(|r| r.view.backup.as_ref()?.interval_seconds),
        )?;
        gauges(
            e,
            "backup_sidecar_reachable",
            "1 when the backup sidecar's status could be read",
            each(|r| Some(i64::from(r.view.backup.as_ref()?.reachable))),
        )?;
        gauges(
            e,
            "certificate_expiry_timestamp_seconds",
            "When each certificate of a cluster's TLS expires (Unix time); absent while it cannot be read",
            all.iter().flat_map(|(key, r)| {
                r.view.certificates.iter().map(move |(purpose, secret, at)| {
                    (with(key, vec![("purpose", purpose.clone()), ("secret", secret.clone())]), *at)
                })
            }),
        )?;
        Ok(())
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
        assert!(text.contains("etcd_controller_leading 0\n"), "a replica stands by until it leads: {text}");
        let leading = Metrics::new(&build);
        leading.leads();
        assert!(leading.encode().contains("etcd_controller_leading 1\n"));
    }

    fn view(members: i64, leader: Option<u64>) -> ClusterView {
        ClusterView {
            desired_members: 3,
            etcd_reachable: true,
            observed_at: 1_700_000_100,
            members,
            healthy_voters: members,
            ready_members: members,
            leader,
            db_size: BTreeMap::from([("a-0000".to_string(), 4096)]),
            quota_bytes: 2 << 30,
            phase: "Running".into(),
            conditions: vec![("Available".into(), "True".into())],
            backup: Some(BackupView {
                last_success: Some(1_700_000_000),
                consecutive_failures: 0,
                interval_seconds: Some(1800),
                reachable: true,
            }),
            certificates: vec![("peer".into(), "a-tls-peer".into(), 1_800_000_000)],
            ..Default::default()
        }
    }

    #[test]
    fn each_cluster_is_exported_under_its_namespace_and_goes_when_it_is_deleted() {
        let build = BuildInfo { version: "1", commit: "c", binary_sha256: "h".into() };
        let metrics = Metrics::new(&build);
        metrics.observe_cluster("one", "a", view(3, Some(7)));
        metrics.observe_cluster("two", "a", view(1, None));
        let text = metrics.encode();
        for line in [
            r#"etcd_controller_cluster_members{namespace="one",cluster="a"} 3"#,
            r#"etcd_controller_cluster_members{namespace="two",cluster="a"} 1"#,
            r#"etcd_controller_cluster_quorum{namespace="one",cluster="a"} 2"#,
            r#"etcd_controller_cluster_leader{namespace="one",cluster="a"} 1"#,
            r#"etcd_controller_cluster_leader{namespace="two",cluster="a"} 0"#,
            r#"etcd_controller_member_db_size_bytes{namespace="one",cluster="a",member="a-0000"} 4096"#,
            r#"etcd_controller_cluster_quota_bytes{namespace="one",cluster="a"} 2147483648"#,
            r#"etcd_controller_cluster_phase{namespace="one",cluster="a",phase="Running"} 1"#,
            r#"etcd_controller_cluster_phase{namespace="one",cluster="a",phase="Creating"} 0"#,
            r#"etcd_controller_cluster_condition{namespace="one",cluster="a",type="Available",status="True"} 1"#,
            r#"etcd_controller_cluster_condition{namespace="one",cluster="a",type="Available",status="False"} 0"#,
            r#"etcd_controller_backup_last_success_timestamp_seconds{namespace="one",cluster="a"} 1700000000"#,
            r#"etcd_controller_backup_interval_seconds{namespace="one",cluster="a"} 1800"#,
            r#"etcd_controller_cluster_leader_changes_total{namespace="one",cluster="a"} 0"#,
            r#"etcd_controller_certificate_expiry_timestamp_seconds{namespace="one",cluster="a",purpose="peer",secret="a-tls-peer"} 1800000000"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("cluster_upgrade_started_timestamp_seconds{"), "no upgrade, no series");
        // etcd not answering: what only etcd tells is left out, not reported as zero.
        metrics.observe_cluster("three", "b", ClusterView { etcd_reachable: false, ..view(0, None) });
        let text = metrics.encode();
        assert!(text.contains(r#"etcd_controller_cluster_etcd_reachable{namespace="three",cluster="b"} 0"#), "{text}");
        assert!(!text.contains(r#"etcd_controller_cluster_leader{namespace="three""#), "{text}");
        assert!(!text.contains(r#"etcd_controller_cluster_quorum{namespace="three""#), "{text}");
        let observed =
            r#"etcd_controller_cluster_last_observed_timestamp_seconds{namespace="three",cluster="b"} 1700000100"#;
        assert!(text.contains(observed), "{text}");
        // A leader change is counted across views; a view without a leader is no change.
        metrics.observe_cluster("one", "a", view(3, None));
        metrics.observe_cluster("one", "a", view(3, Some(7)));
        metrics.observe_cluster("one", "a", view(3, Some(9)));
        let text = metrics.encode();
        assert!(
            text.contains(r#"etcd_controller_cluster_leader_changes_total{namespace="one",cluster="a"} 1"#),
            "{text}"
        );
        // The sidecar unreachable: its last success stays as last known.
        let mut unreachable = view(3, Some(9));
        unreachable.backup = Some(BackupView { reachable: false, interval_seconds: Some(1800), ..Default::default() });
        metrics.observe_cluster("one", "a", unreachable);
        let text = metrics.encode();
        let last = r#"etcd_controller_backup_last_success_timestamp_seconds{namespace="one",cluster="a"} 1700000000"#;
        assert!(text.contains(last), "{text}");
        assert!(text.contains(r#"etcd_controller_backup_sidecar_reachable{namespace="one",cluster="a"} 0"#));
        // Deleted: every series of that cluster goes, the other namespace's stays.
        metrics.retain_clusters(|namespace, _| namespace == "two");
        let text = metrics.encode();
        assert!(!text.contains(r#"namespace="one""#), "{text}");
        assert!(text.contains(r#"etcd_controller_cluster_members{namespace="two",cluster="a"} 1"#), "{text}");
    }

    #[test]
    fn the_longest_gap_of_a_backup_schedule_is_its_interval_or_its_crons_longest() {
        let policy = |every: Option<&str>, cron: Option<&str>| proto::cluster::BackupPolicy {
            every: every.map(String::from),
            cron: cron.map(String::from),
            max_backups: None,
            max_age: None,
            storage: proto::cluster::BackupStorage { pvc: None, s3: None },
            sidecar_image: None,
        };
        let longest = |p| crate::backup::longest_interval(&p).map(|d| d.as_secs());
        assert_eq!(longest(policy(None, None)), Some(1800), "the default: 30m");
        assert_eq!(longest(policy(Some("6h"), None)), Some(6 * 3600));
        // Weekdays at 02:00: the weekend leaves three days.
        assert_eq!(longest(policy(None, Some("0 2 * * 1-5"))), Some(3 * 24 * 3600));
        // Hourly on weekdays: Friday 23:00 to Monday 00:00, whatever day it is asked (not only the next runs).
        assert_eq!(longest(policy(None, Some("0 * * * 1-5"))), Some(49 * 3600));
        // Monthly: the longest month.
        assert_eq!(longest(policy(None, Some("0 0 1 * *"))), Some(31 * 24 * 3600));
        assert_eq!(longest(policy(None, Some("not cron"))), None);
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
