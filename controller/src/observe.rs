//! What the controller sees of one cluster, as plain data: its member pods and etcd's own member list.
//!
//! The I/O that fills these structs lives with the reconciler; the planner only ever reads them.

/// A member pod's state, as far as planning cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not yet running (unscheduled, pulling, init containers).
    Pending,
    /// Running; `ready` is the readiness probe's verdict.
    Running {
        /// Whether the pod is ready.
        ready: bool,
    },
    /// Failed or succeeded: this member is gone for good (a pod that restarts in place fails only when it is
    /// evicted; a restored seed, whose restore cannot run twice, runs with `restartPolicy: Never`).
    Dead,
    /// Running, but its etcd container keeps failing soon after it starts: failed [`CRASH_LOOP_RESTARTS`] times
    /// in a row (the kubelet backs off [`CRASH_LOOP_BACKOFF`] or more), its last run shorter than
    /// [`CRASH_LOOP_SHORT_RUN`], and waiting in the kubelet's back-off now. Its data may be intact (it is never taken for a pod that holds none), but it does
    /// not serve: with a quorum it is replaced.
    CrashLooping,
    /// Failed because its restore refused the backup (corrupt, or not restorable): kept for its logs, never
    /// retried with the same backup.
    Refused,
    /// Being deleted.
    Terminating,
}

/// The kubelet's back-off after [`CRASH_LOOP_RESTARTS`] failures in a row (10 s, 20 s, then 40 s): from it on, a
/// member whose last run was short is [`PodState::CrashLooping`]. A member that crashes at once is given a little
/// over a minute; one that crashed once (an OOM kill) restarts on its data.
pub const CRASH_LOOP_BACKOFF: std::time::Duration = std::time::Duration::from_secs(40);
/// How many failures in a row make a restart loop; read from the restart count only when the kubelet's back-off
/// message cannot be read (the count never resets, so it would also count crashes weeks apart).
pub const CRASH_LOOP_RESTARTS: i32 = 3;
/// A run shorter than this, ended by a crash, is part of a restart loop; a longer one is a member that served.
pub const CRASH_LOOP_SHORT_RUN: std::time::Duration = std::time::Duration::from_secs(60);

/// One member pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPod {
    /// Pod name, which is also the etcd member name.
    pub name: String,
    /// Its state.
    pub state: PodState,
    /// Its node, when the node is not Ready (NotReady or Unknown): the pod's state as the API shows it is stale,
    /// and its member may be serving on the other side of a partition.
    pub node_down: Option<NodeDown>,
    /// The image of its etcd container, as its spec says (the kubelet restarts the container when it changes).
    pub image: Option<String>,
    /// The command of its etcd container (it cannot change while the pod lives).
    pub command: Vec<String>,
    /// How many times the kubelet restarted its etcd container.
    pub restarts: i32,
    /// Whether it runs with `restartPolicy: Never` (a seed restored from a backup): a container that exits after
    /// an image change is not started again, and the member is lost.
    pub restart_never: bool,
    /// The image change the recorded upgrade made to it, if it made one.
    pub rolled: Option<Rolled>,
    /// The hash of the settings it was rendered with (see [`crate::pod::settings_of`]);
    /// `None` for a pod created by a controller that did not record it.
    pub settings: Option<String>,
    /// Why its guard refused the volume mounted as its data, when it did: etcd is not started on it.
    pub volume_refused: Option<String>,
    /// How long it has been unschedulable because no node can reach its volume (pinned to a node that is gone).
    pub volume_unschedulable: Option<std::time::Duration>,
    /// Whether its etcd container is probed with a command (`etcdctl endpoint health`, as at 3.4), which fails under
    /// NOSPACE, rather than `/health?exclude=NOSPACE`.
    pub exec_probe: bool,
    /// Whether its etcd runs as root: the pod names user 0, or no user at all (a pod of an earlier build, which
    /// ran etcd as its image's default user, root).
    pub runs_as_root: bool,
}

/// An image change an upgrade made to a member pod (its annotations), as far as the upgrade recorded now goes:
/// one from before that upgrade started is no part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rolled {
    /// How long ago.
    pub ago: std::time::Duration,
    /// The image it was changed to (a webhook may rewrite the pod's own field).
    pub to: String,
    /// The image it ran before.
    pub from: Option<String>,
    /// The etcd container's restart count just before: the new image runs once the count is past it.
    pub restarts_before: i32,
}

impl Rolled {
    /// Whether the kubelet has restarted the container since the change, so that what answers is the new image.
    pub fn restarted(&self, pod: &MemberPod) -> bool {
        pod.restarts > self.restarts_before
    }
}

/// The annotations an upgrade sets on a member pod when it changes its image: when (RFC 3339), to what, and the
/// container's restart count just before.
pub const ROLLED_AT: &str = "kube-etcd-controller.dev/image-changed-at";
/// See [`ROLLED_AT`].
pub const ROLLED_TO: &str = "kube-etcd-controller.dev/image-changed-to";
/// See [`ROLLED_AT`]: the `startedAt` of the upgrade record the change was made for (a record keeps it when its
/// target changes, so a rollback still knows the members it changed; no clocks are compared).
pub const ROLLED_FOR: &str = "kube-etcd-controller.dev/image-changed-for-upgrade";
/// See [`ROLLED_AT`].
pub const ROLLED_FROM: &str = "kube-etcd-controller.dev/image-changed-from";
/// See [`ROLLED_AT`].
pub const ROLLED_RESTARTS: &str = "kube-etcd-controller.dev/restarts-before-image-change";

impl MemberPod {
    /// A pod on a Ready node (or not yet on any).
    pub fn new(name: impl Into<String>, state: PodState) -> Self {
        Self {
            name: name.into(),
            state,
            node_down: None,
            image: None,
            command: Vec::new(),
            restarts: 0,
            restart_never: false,
            rolled: None,
            settings: None,
            volume_refused: None,
            volume_unschedulable: None,
            exec_probe: false,
            runs_as_root: false,
        }
    }

    /// Whether it runs `image`: its spec names it, or the upgrade changed it to it (a webhook may have rewritten
    /// the spec's field, to a digest or a mirror).
    pub fn runs_image(&self, image: &str) -> bool {
        self.image.as_deref() == Some(image) || self.rolled.as_ref().is_some_and(|r| r.to == image)
    }
}

/// A node that is not Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDown {
    /// Its name.
    pub node: String,
    /// How long it has not been Ready (since its Ready condition last changed).
    pub down_for: std::time::Duration,
}

/// One entry of etcd's member list, with its health as seen by the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// etcd's member ID.
    pub id: u64,
    /// The member's pod name, derived from its peer URL (`<pod>.<cluster>.<namespace>.svc:2380`) so that members
    /// that never started, whose etcd name is still empty, are named too.
    pub name: String,
    /// Whether the member has started (etcd knows its name and client URLs).
    pub started: bool,
    /// Its peer URLs as etcd lists them: where the other members dial it ([`crate::peering`]).
    pub peer_urls: Vec<String>,
    /// Whether it is a learner (non-voting).
    pub learner: bool,
    /// Whether its own endpoint answered a status request just now.
    pub healthy: bool,
    /// Whether it is the leader.
    pub leader: bool,
    /// The server version it reports (when it answered).
    pub version: Option<crate::version::Version>,
    /// The raft index it has committed, and the one it has applied, as it reports them (0 when it did not answer).
    pub raft: (u64, u64),
    /// The etcd cluster it belongs to and the revision it has applied, as it reports them (when it answered).
    pub served: Option<proto::cluster::ServedRevision>,
    /// Its database size in bytes, as it answered (`None`: it did not).
    pub db_size: Option<i64>,
}

/// etcd as the controller could see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdView {
    /// No member answered a member-list request.
    Unreachable(String),
    /// The member list.
    Members(Vec<Member>),
}

/// Everything the planner needs about one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The EtcdCluster's name, the prefix of member names.
    pub cluster: String,
    /// Whether the cluster ever formed (its status once recorded voting members). A cluster that formed and whose
    /// members are all gone has lost its data and is never silently seeded again, empty.
    pub seeded: bool,
    /// The index the next new member gets: never below any index seen in pods, members or status.
    pub next_index: u32,
    /// Member pods (those carrying the cluster's member label).
    pub pods: Vec<MemberPod>,
    /// etcd's member list.
    pub etcd: EtcdView,
    /// A recovery in progress (from status): the index of the new cluster's first member.
    pub recovering: Option<u32>,
    /// The recovery in progress has not deleted anything yet: every pod it recorded as lost is still there, none
    /// terminating, and no pod of the new cluster exists.
    pub recovery_untouched: bool,
    /// How long quorum has been lost, as recorded in status.
    pub lost_for: Option<std::time::Duration>,
    /// Why a restore refused its backup, from the refusing init container.
    pub refusal: Option<String>,
    /// What a seed's restore fetched and verified, as its fetch init container reported it.
    pub restored: Option<proto::backup::RestoreResult>,
    /// The most recent failure of a member pod that failed (not one that refused its backup): which, why, and
    /// how long ago.
    pub failure: Option<PodFailure>,
    /// A member pod that cannot start (missing Secret or claim, image not found, unschedulable): its name, and why.
    pub stuck: Option<(String, String)>,
    /// Alarms raised in etcd, as `(member, NOSPACE or CORRUPT)`.
    pub alarms: Vec<(String, String)>,
    /// Whether the alarms were read this time (they are read through a member that has a leader, best effort): when
    /// not, an empty `alarms` says nothing.
    pub alarms_read: bool,
    /// The cluster version etcd reports (`/version`), when a member answered it.
    pub cluster_version: Option<crate::version::Version>,
    /// The upgrade in progress, as recorded in status.
    pub upgrade: Option<proto::cluster::UpgradeStatus>,
    /// The member claims labelled as this cluster's (`spec.storage`).
    pub claims: Vec<Claim>,
    /// The lowest etcd version the members last reported (status `currentVersion`): what a member created again on
    /// its volume runs when no member answers.
    pub current_version: Option<crate::version::Version>,
    /// Whether the storage class `spec.storage.storageClassName` names exists, read only when a member claim is of
    /// another class (`None`: not read, or it could not be): members are moved onto a class only once it is known
    /// to exist.
    pub wanted_class_exists: Option<bool>,
    /// The certificates of the cluster's TLS as their Secrets hold them, each with its problem if it has one
    /// (empty without `spec.tls`).
    pub certificates: Vec<proto::cluster::CertificateStatus>,
    /// What a member created now trusts (the CAs of the `ca.crt` of its Secrets): rendered into its pod, so that a
    /// changed bundle is rolled out (empty without `spec.tls`).
    pub trust: crate::certificates::Trust,
}

/// A member's PersistentVolumeClaim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The claim's name.
    pub name: String,
    /// Its member (the member label).
    pub member: String,
    /// Made for this EtcdCluster (its UID annotation): a claim retained from an earlier cluster of the same name is
    /// never used, nor deleted.
    pub ours: bool,
    /// Its member's etcd ID, recorded once etcd listed the member as started: from then on it holds that member's
    /// data.
    pub member_id: Option<u64>,
    /// Its phase.
    pub phase: ClaimPhase,
    /// Being deleted.
    pub deleting: bool,
    /// Retired: its member was removed from etcd (its data can never rejoin), and it is kept only because the
    /// retention policy says so. Never used again.
    pub retired: bool,
    /// Retired because its cluster lost quorum and was restored from a backup: it may hold writes the backup does
    /// not, so it is never deleted automatically, whatever the retention policy says.
    pub lost: bool,
    /// Whether the EtcdCluster owns it (it is deleted with the cluster: `whenDeleted: Delete`).
    pub owned: bool,
    /// Its capacity once bound.
    pub capacity: Option<String>,
    /// The size it asks for (`spec.resources.requests.storage`), in bytes: more than its capacity while it is being
    /// expanded.
    pub requested: Option<u64>,
    /// Its storage class (`spec.storageClassName`, as the API server defaulted it).
    pub class: Option<String>,
    /// Whether its storage class allows expanding it (`allowVolumeExpansion`); `None` when the class could not be
    /// read.
    pub expandable: Option<bool>,
    /// For how long its volume was expanded and the file system has waited for the kubelet (condition
    /// `FileSystemResizePending`); a driver that expands only offline waits until the pod mounts it again.
    pub resize_pending: Option<std::time::Duration>,
    /// Why expanding it failed, when a condition says so (`ControllerResizeError`, `NodeResizeError`).
    pub resize_error: Option<String>,
}

/// A claim's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimPhase {
    /// Not bound yet (waiting for its first pod, or for a volume).
    Pending,
    /// Bound to a volume.
    Bound,
    /// Its volume is gone.
    Lost,
}

impl Claim {
    /// A claim of this cluster, bound, for `member`.
    pub fn new(member: &str, member_id: Option<u64>) -> Self {
        Self {
            name: crate::pod::claim_name(member),
            member: member.into(),
            ours: true,
            member_id,
            phase: ClaimPhase::Bound,
            deleting: false,
            retired: false,
            lost: false,
            owned: false,
            capacity: None,
            requested: None,
            class: None,
            expandable: None,
            resize_pending: None,
            resize_error: None,
        }
    }

    /// Its capacity in bytes, once bound.
    pub fn capacity_bytes(&self) -> Option<u64> {
        self.capacity.as_deref().and_then(proto::cluster::quantity_bytes)
    }

    /// Whether it is being expanded: it asks for more than its volume has.
    pub fn expanding(&self) -> bool {
        matches!((self.requested, self.capacity_bytes()), (Some(asked), Some(has)) if asked > has)
    }

    /// Whether its member can run on it: ours, not retired or being deleted, its volume not lost.
    pub fn usable(&self) -> bool {
        self.ours && !self.retired && !self.deleting && self.phase != ClaimPhase::Lost
    }
}

impl Observed {
    /// The claim of `member`, if it has one.
    pub fn claim_of(&self, member: &str) -> Option<&Claim> {
        self.claims.iter().find(|c| c.member == member)
    }
}

/// Whether the recovery `recorded` has deleted nothing yet: it lists the lost pods (a record of an older
/// controller does not, and is never taken for untouched), every one of them is still there and not terminating,
/// and no pod of the new cluster exists.
pub fn untouched(recorded: &proto::cluster::RecoveryStatus, pods: &[MemberPod], cluster: &str) -> bool {
    let first = u32::try_from(recorded.first_member_index).unwrap_or(0);
    let kept = |lost: &String| pods.iter().any(|p| &p.name == lost && p.state != PodState::Terminating);
    let no_seed = pods.iter().all(|p| member_index(cluster, &p.name).is_some_and(|i| i < first));
    recorded.lost_pods.as_ref().is_some_and(|lost| lost.iter().all(kept)) && no_seed
}

/// Whether `claim`'s member name is taken for good: the claim is another cluster's, retired, or records a member that
/// ran on it. A claim of this cluster that records none was made for an add that etcd has not taken (yet).
pub fn names_taken(claim: &Claim) -> bool {
    !claim.ours || claim.retired || claim.member_id.is_some()
}

/// A member pod that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailure {
    /// The pod.
    pub member: String,
    /// Which container failed, its exit code and the last line it wrote.
    pub why: String,
    /// How long ago it failed.
    pub ago: std::time::Duration,
}

/// The name of member number `index` of `cluster`: `<cluster>-0007`.
pub fn member_name(cluster: &str, index: u32) -> String {
    format!("{cluster}-{index:04}")
}

/// The index in a member name of `cluster`, if it is one.
pub fn member_index(cluster: &str, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(cluster)?.strip_prefix('-')?;
    (digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Errors observing a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The API server did not answer.
    #[error("listing the pods of {cluster}: {source}")]
    Pods {
        /// The cluster.
        cluster: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer.
    #[error("listing the claims of {cluster}: {source}")]
    Claims {
        /// The cluster.
        cluster: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer.
    #[error("reading the TLS Secrets of {cluster}: {source}")]
    Secrets {
        /// The cluster.
        cluster: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
}

/// Where the controller reaches each running member: pod name to client URL.
pub type Endpoints = std::collections::BTreeMap<String, String>;

/// How the controller reaches the running members: where, and how to dial them.
#[derive(Clone, Debug)]
pub struct Reach {
    /// Each running member's client URL.
    pub addresses: Endpoints,
    /// The timeout and TLS of the dial.
    pub dial: crate::dial::Dial,
    /// The ConfigMaps of pinned CA bundles the member pods read ([`crate::certificates::trust_config_map`]).
    pub trust_in_use: std::collections::BTreeSet<String>,
}

/// Reads the cluster's member pods and etcd's member list (with each member's health) into an [`Observed`],
/// with the addresses of the running members.
pub async fn observe(
    client: &kube::Client,
    cluster: &proto::cluster::EtcdCluster,
    etcd_timeout: std::time::Duration,
) -> Result<(Observed, Reach), ObserveError> {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::ResourceExt;
    use kube::api::{Api, ListParams};

    use crate::labels::{CLUSTER_LABEL, MEMBER_LABEL};
    use crate::membership::{Membership, pod_name};

    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("{CLUSTER_LABEL}={name},{MEMBER_LABEL}");
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ObserveError::Pods { cluster: name.clone(), source })?;
    // What each member trusts, as its pod was rendered: the certificates are judged against it too.
    let running: Vec<(String, crate::certificates::Trust)> = listed
        .items
        .iter()
        .filter_map(|pod| Some((pod.name_any(), crate::certificates::Trust::of_pod(pod)?)))
        .collect();
    let trust_in_use = running.iter().map(|(_, trust)| crate::certificates::trust_config_map(&name, trust)).collect();
    let tls = crate::certificates::observe(client, cluster, &running, std::time::SystemTime::now())
        .await
        .map_err(|source| ObserveError::Secrets { cluster: name.clone(), source })?;
    let dial = crate::dial::Dial { timeout: etcd_timeout, tls: tls.identity.clone().map(std::sync::Arc::new) };
    let now = k8s_openapi::jiff::Timestamp::now();
    let node_names: std::collections::BTreeSet<String> =
        listed.items.iter().filter_map(|pod| pod.spec.as_ref()?.node_name.clone()).collect();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut down = std::collections::BTreeMap::new();
    for node in node_names {
        match nodes.get_opt(&node).await {
            // A node that is gone from the API is no partition: its pods are collected, and a loss is a loss.
            Ok(read) => {
                if let Some(down_for) = read.as_ref().and_then(|n| node_down_for(n, now)) {
                    down.insert(node.clone(), NodeDown { node, down_for });
                }
            }
            // Not knowing is not Ready as far as safety goes: no recovery while it lasts, and never long enough
            // to replace a member (the time is zero); healing with a quorum goes on.
            Err(error) => {
                tracing::warn!(cluster = %name, %node, %error, "could not read the node of a member pod");
                let shown = format!("{node} (unreadable: {error})");
                down.insert(node, NodeDown { node: shown, down_for: std::time::Duration::ZERO });
            }
        }
    }
    let pods: Vec<MemberPod> = listed
        .items
        .iter()
        .map(|pod| {
            let etcd = pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == ETCD_CONTAINER));
            let upgrade_started = cluster.status.as_ref().and_then(|s| s.upgrade.as_ref()?.started_at.clone());
            MemberPod {
                name: pod.name_any(),
                state: pod_state(pod),
                node_down: pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| down.get(n)).cloned(),
                image: etcd.and_then(|c| c.image.clone()),
                command: etcd.and_then(|c| c.command.clone()).unwrap_or_default(),
                restarts: etcd_restarts(pod),
                restart_never: pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never"),
                rolled: upgrade_started.and_then(|since| rolled(pod, since.0, now)),
                settings: crate::pod::recorded_settings(pod),
                volume_refused: volume_refusal(pod),
                volume_unschedulable: volume_unschedulable_for(pod, now),
                exec_probe: etcd.and_then(|c| c.readiness_probe.as_ref()).is_some_and(|p| p.exec.is_some()),
                runs_as_root: runs_as_root(pod),
            }
        })
        .collect();
    let refusal = listed.items.iter().find_map(restore_refusal);
    let restored = listed.items.iter().find_map(restore_result);
    let failure = listed
        .items
        .iter()
        .filter(|pod| pod_state(pod) == PodState::Dead)
        .filter_map(|pod| pod_failure(pod, now))
        .min_by_key(|failure| failure.ago);
    let stuck = listed
        .items
        .iter()
        .filter(|pod| matches!(pod_state(pod), PodState::Pending | PodState::CrashLooping))
        .find_map(|pod| Some((pod.metadata.name.clone()?, stuck_reason(pod)?)));

    // The controller reaches members at their pods' addresses: no dependence on cluster DNS (which a new pod's
    // name takes a moment to appear in), and it works from outside the cluster too.
    let addresses: Endpoints = listed
        .items
        .iter()
        .filter(|pod| matches!(pod_state(pod), PodState::Running { .. }))
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
            Some((pod.name_any(), crate::dial::Dial::member_url(ip, serves_tls(pod))))
        })
        .collect();
    let endpoints: Vec<String> = addresses.values().cloned().collect();
    let mut alarms = Vec::new();
    let mut alarms_known = false;
    let mut cluster_version = None;
    let etcd = if endpoints.is_empty() {
        EtcdView::Unreachable("no member pod is running".into())
    } else if endpoints.iter().all(|e| e.starts_with("https://")) && dial.tls.is_none() {
        // (Members still serving plain, as while client TLS is turned on, are asked without it.)
        EtcdView::Unreachable("the controller's client certificate cannot be used (see status.certificates)".into())
    } else {
        match Membership::connect(&endpoints, &dial).await {
            Ok(mut membership) => match membership.observe(pod_name, |_, name| addresses.get(name).cloned()).await {
                Ok(members) => {
                    // Best effort: alarms only inform status. Reading them is a raft request, so only with a leader,
                    // and never for longer than one etcd request may take.
                    let alarms_read = async {
                        if !members.iter().any(|m| m.leader) {
                            return None;
                        }
                        let read = tokio::time::timeout(etcd_timeout, membership.alarms()).await;
                        read.ok().and_then(Result::ok)
                    };
                    // The cluster version, from the first healthy member that tells it.
                    for member in members.iter().filter(|m| m.healthy) {
                        if let Some(url) = addresses.get(&member.name)
                            && let Some(version) = cluster_version_at(url, &dial).await
                        {
                            cluster_version = Some(version);
                            break;
                        }
                    }
                    let read = alarms_read.await;
                    alarms_known = read.is_some();
                    for (id, alarm) in read.unwrap_or_default() {
                        let member =
                            members.iter().find(|m| m.id == id).map_or_else(|| format!("{id:x}"), |m| m.name.clone());
                        alarms.push((member, alarm.to_string()));
                    }
                    EtcdView::Members(members)
                }
                Err(error) => EtcdView::Unreachable(error.to_string()),
            },
            Err(error) => EtcdView::Unreachable(error.to_string()),
        }
    };

    let claims = observe_claims(client, cluster).await?;
    let wanted_class_exists = wanted_class_exists(client, cluster, &claims).await;
    let status = cluster.status.clone().unwrap_or_default();
    let seen = pods.iter().map(|p| p.name.as_str()).chain(match &etcd {
        EtcdView::Members(members) => members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        EtcdView::Unreachable(_) => Vec::new(),
    });
    // Claims too: a retained or retired claim's name, or one a member ran on, is never given to a new member. (A
    // claim made for an add etcd did not take yet is that add's: the name is tried again.)
    let seen = seen.chain(claims.iter().filter(|c| names_taken(c)).map(|c| c.member.as_str()));
    let highest = seen.filter_map(|n| member_index(&name, n)).max();
    let next_index = highest.map_or(0, |h| h + 1).max(u32::try_from(status.next_member_index).unwrap_or(0));
    let recovering = status.recovery.as_ref().map(|r| u32::try_from(r.first_member_index).unwrap_or(0));
    let recovery_untouched = status.recovery.as_ref().is_some_and(|r| untouched(r, &pods, &name));
    let lost_for = status.quorum_lost_since.as_ref().map(|since| {
        let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(since.0);
        std::time::Duration::try_from(elapsed).unwrap_or_default()
    });
    Ok((
        Observed {
            cluster: name,
            seeded: status.formed,
            next_index,
            pods,
            etcd,
            recovering,
            recovery_untouched,
            lost_for,
            refusal,
            restored,
            failure,
            stuck,
            alarms,
            alarms_read: alarms_known,
            // Etcd's cluster version when a member told it; else the last one status recorded: it only moves up,
            // and a rollback must not take the version as unknown when no member answers (review).
            cluster_version: cluster_version
                .or_else(|| status.cluster_version.as_deref().and_then(crate::version::Version::parse)),
            upgrade: status.upgrade.clone(),
            claims,
            current_version: status.current_version.as_deref().and_then(crate::version::Version::parse),
            wanted_class_exists,
            certificates: tls.certificates,
            trust: tls.trust,
        },
        Reach { addresses, dial, trust_in_use },
    ))
}

/// The member claims labelled as `cluster`'s.
async fn observe_claims(
    client: &kube::Client,
    cluster: &proto::cluster::EtcdCluster,
) -> Result<Vec<Claim>, ObserveError> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::ResourceExt;
    use kube::api::{Api, ListParams};

    use crate::labels::{CLUSTER_LABEL, MEMBER_LABEL};
    let name = cluster.name_any();
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_else(|| "default".into()));
    let listed = api
        .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={name},{MEMBER_LABEL}")))
        .await
        .map_err(|source| ObserveError::Claims { cluster: name.clone(), source })?;
    let uid = cluster.uid().unwrap_or_default();
    let mut claims: Vec<Claim> = listed.items.iter().filter_map(|claim| claim_of(claim, &uid)).collect();
    // Whether each class allows expansion: read only when a claim asks for less than the spec, and once per class.
    // A class that cannot be read (gone, or not allowed) leaves it unknown.
    let wanted = cluster.spec.storage.as_ref().and_then(proto::cluster::MemberStorage::bytes);
    let mut classes: std::collections::BTreeMap<String, Option<bool>> = std::collections::BTreeMap::new();
    let storage_classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    for claim in &mut claims {
        let Some(class) = claim.class.clone() else { continue };
        if wanted.is_none_or(|w| claim.requested.is_some_and(|r| r >= w)) {
            continue;
        }
        if !classes.contains_key(&class) {
            let allows = match storage_classes.get_opt(&class).await {
                Ok(found) => found.map(|c| c.allow_volume_expansion.unwrap_or(false)),
                Err(error) => {
                    tracing::warn!(%class, %error, "reading the storage class of member claims");
                    None
                }
            };
            classes.insert(class.clone(), allows);
        }
        claim.expandable = classes[&class];
    }
    Ok(claims)
}

/// Whether the storage class `spec.storage` names exists, when a claim of this cluster is of another class.
async fn wanted_class_exists(
    client: &kube::Client,
    cluster: &proto::cluster::EtcdCluster,
    claims: &[Claim],
) -> Option<bool> {
    let wanted = cluster.spec.storage.as_ref()?.storage_class_name.as_deref()?;
    if !claims.iter().any(|c| c.ours && c.class.as_deref().is_some_and(|class| class != wanted)) {
        return None;
    }
    let api: kube::Api<k8s_openapi::api::storage::v1::StorageClass> = kube::Api::all(client.clone());
    match api.get_opt(wanted).await {
        Ok(found) => Some(found.is_some()),
        Err(error) => {
            tracing::warn!(class = wanted, %error, "reading the storage class spec.storage names");
            None
        }
    }
}

/// What `claim` says, for a cluster whose UID is `uid`.
pub fn claim_of(claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim, uid: &str) -> Option<Claim> {
    use kube::ResourceExt;
    let member = claim.labels().get(crate::labels::MEMBER_LABEL)?.clone();
    let status = claim.status.as_ref();
    let condition =
        |kind: &str| status.and_then(|s| s.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True"));
    Some(Claim {
        name: claim.name_any(),
        member,
        ours: claim.annotations().get(crate::pod::CLAIM_CLUSTER_UID).is_some_and(|u| u == uid),
        member_id: claim.annotations().get(crate::pod::CLAIM_MEMBER_ID).and_then(|id| u64::from_str_radix(id, 16).ok()),
        phase: match status.and_then(|s| s.phase.as_deref()) {
            Some("Bound") => ClaimPhase::Bound,
            Some("Lost") => ClaimPhase::Lost,
            _ => ClaimPhase::Pending,
        },
        deleting: claim.metadata.deletion_timestamp.is_some(),
        retired: claim.annotations().contains_key(crate::pod::CLAIM_RETIRED),
        lost: claim
            .annotations()
            .get(crate::pod::CLAIM_RETIRED)
            .is_some_and(|why| why.starts_with(crate::pod::LOST_PREFIX)),
        owned: claim.owner_references().iter().any(|o| o.uid == uid),
        capacity: status.and_then(|s| s.capacity.as_ref()?.get("storage")).map(|q| q.0.clone()),
        requested: claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
            .and_then(|q| proto::cluster::quantity_bytes(&q.0)),
        class: claim.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
        expandable: None,
        resize_pending: condition("FileSystemResizePending").map(|c| {
            let since = c.last_transition_time.as_ref().map(|t| t.0);
            let elapsed = since.map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t));
            elapsed.and_then(|e| std::time::Duration::try_from(e).ok()).unwrap_or_default()
        }),
        resize_error: condition("ControllerResizeError")
            .or_else(|| condition("NodeResizeError"))
            .map(|c| format!("{}: {}", c.type_, c.message.clone().unwrap_or_default())),
    })
}

/// Whether a member pod's etcd serves its clients over TLS (its `--listen-client-urls`): while client TLS is
/// turned on, member by member, some do and some do not yet.
fn serves_tls(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let etcd = pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == ETCD_CONTAINER));
    etcd.and_then(|c| c.command.as_ref()).is_some_and(|command| crate::peering::serves_client_tls(command))
}

/// The cluster version the member at `client_url` reports on `/version` (`etcdcluster`; `not_decided` while a new
/// cluster has not settled it yet, which is `None`).
async fn cluster_version_at(client_url: &str, dial: &crate::dial::Dial) -> Option<crate::version::Version> {
    #[derive(serde::Deserialize)]
    struct Versions {
        etcdcluster: String,
    }
    let (http, url) = dial.http(client_url)?;
    let versions: Versions = http.get(format!("{url}/version")).send().await.ok()?.json().await.ok()?;
    crate::version::Version::parse(&versions.etcdcluster)
}

mod pods;

pub use pods::{
    ETCD_CONTAINER, FETCH_CONTAINER, GUARD_CONTAINER, RESTORE_CONTAINER, data_intact, etcd_restarts, node_down_for,
    pod_failure, pod_state, restore_refusal, restore_result, rolled, runs_as_root, stuck_reason, volume_refusal,
    volume_unschedulable_for,
};

#[cfg(test)]
mod tests {
    #[test]
    fn a_recovery_is_untouched_only_while_every_recorded_pod_is_there_and_no_seed_exists() {
        use super::{MemberPod, PodState, untouched};
        let pod = |name: &str, state| MemberPod::new(name, state);
        let running = PodState::Running { ready: false };
        let mut record = proto::cluster::RecoveryStatus {
            first_member_index: 3,
            lost_pods: Some(vec!["demo-0000".into(), "demo-0002".into()]),
            ..Default::default()
        };
        let lost = [pod("demo-0000", running), pod("demo-0002", PodState::Dead)];
        assert!(untouched(&record, &lost, "demo"));
        assert!(!untouched(&record, &lost[..1], "demo"), "a recorded pod is gone");
        let going = [pod("demo-0000", running), pod("demo-0002", PodState::Terminating)];
        assert!(!untouched(&record, &going, "demo"), "a recorded pod is being deleted");
        let seeded = [lost[0].clone(), lost[1].clone(), pod("demo-0003", PodState::Pending)];
        assert!(!untouched(&record, &seeded, "demo"), "the new cluster's seed exists");
        record.lost_pods = None;
        assert!(!untouched(&record, &lost, "demo"), "an older controller's record is never taken for untouched");
        record.lost_pods = Some(vec![]);
        assert!(untouched(&record, &[], "demo"), "every pod was gone at the start, and nothing was made since");
    }

    use super::*;

    #[test]
    fn a_guard_refusal_is_read_from_the_guard_now_or_its_last_run_and_a_claim_from_its_object() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "demo-0001" },
            "status": { "phase": "Pending", "initContainerStatuses": [{
                "name": GUARD_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                "lastState": { "terminated": { "exitCode": 4,
                    "message": "volume refused: it belongs to cluster ns/other (uid u2), not to ns/demo (uid u1)" } }
            }] }
        }))
        .unwrap();
        assert!(volume_refusal(&pod).unwrap().contains("belongs to cluster ns/other"));
        let mut other = pod.clone();
        let status = &mut other.status.as_mut().unwrap().init_container_statuses.as_mut().unwrap()[0];
        status.last_state.as_mut().unwrap().terminated.as_mut().unwrap().exit_code = 1;
        assert_eq!(volume_refusal(&other), None, "a guard that could not read its volume is no verdict");
        assert!(!data_intact(&volume_refusal(&pod).unwrap()), "another cluster's volume");
        let status = &mut other.status.as_mut().unwrap().init_container_statuses.as_mut().unwrap()[0];
        let terminated = status.last_state.as_mut().unwrap().terminated.as_mut().unwrap();
        terminated.exit_code = i32::from(proto::backup::EXIT_VOLUME_UNUSABLE);
        terminated.message = Some("/var/lib/etcd/data (owned by uid 0 gid 0, mode 700) cannot be used".into());
        let unusable = volume_refusal(&other).unwrap();
        assert!(data_intact(&unusable) && unusable.contains("owned by uid 0"), "{unusable}");

        let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "data-demo-0001",
                "labels": { crate::labels::MEMBER_LABEL: "demo-0001" },
                "annotations": { crate::pod::CLAIM_CLUSTER_UID: "u1", crate::pod::CLAIM_MEMBER_ID: "8e9e05c52164694d" } },
            "spec": { "storageClassName": "local-path", "resources": { "requests": { "storage": "2Gi" } } },
            "status": { "phase": "Bound", "capacity": { "storage": "1Gi" } }
        }))
        .unwrap();
        let read = claim_of(&claim, "u1").unwrap();
        assert_eq!((read.requested, read.class.as_deref()), (Some(2 << 30), Some("local-path")));
        assert!(read.expanding(), "asks for 2Gi, has 1Gi");
        assert!(read.resize_pending.is_none() && read.resize_error.is_none());
        let mut offline = claim.clone();
        offline.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(serde_json::json!({ "type": "FileSystemResizePending", "status": "True" })).unwrap(),
            serde_json::from_value(
                serde_json::json!({ "type": "NodeResizeError", "status": "True", "message": "resize2fs failed" }),
            )
            .unwrap(),
        ]);
        let read = claim_of(&offline, "u1").unwrap();
        assert!(read.resize_pending.is_some());
        assert_eq!(read.resize_error.as_deref(), Some("NodeResizeError: resize2fs failed"));
        assert_eq!(
            (read.member.as_str(), read.member_id, read.phase),
            ("demo-0001", Some(0x8e9e05c52164694d), ClaimPhase::Bound)
        );
        assert!(read.usable() && read.capacity.as_deref() == Some("1Gi"));
        assert!(!claim_of(&claim, "u2").unwrap().usable(), "made for an earlier cluster of the same name");
    }

    #[test]
    fn only_a_claim_for_an_add_etcd_has_not_taken_leaves_its_name_free() {
        let pending = Claim::new("demo-0003", None);
        assert!(!names_taken(&pending), "the add is tried again under the same name, on the same claim");
        assert!(names_taken(&Claim::new("demo-0003", Some(7))));
        assert!(names_taken(&Claim { retired: true, ..pending.clone() }));
        assert!(names_taken(&Claim { ours: false, ..pending }));
    }

    #[test]
    fn member_names_round_trip_and_sort_numerically() {
        assert_eq!(member_name("etcd", 7), "etcd-0007");
        assert_eq!(member_index("etcd", "etcd-0007"), Some(7));
        assert_eq!(member_index("etcd", "etcd-12345"), Some(12345));
        assert_eq!(member_index("etcd", "etcd-client"), None);
        assert_eq!(member_index("etcd", "etcd-backup-0001"), None);
        assert_eq!(member_index("etcd", "other-0001"), None);
    }

    fn failed_pod(container: &str, exit_code: i32, message: &str) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "demo-0000" },
            "status": {
                "phase": "Failed",
                "initContainerStatuses": [{
                    "name": container, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": { "terminated": { "exitCode": exit_code, "message": message } }
                }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_restore_that_refused_its_backup_is_told_apart_from_one_that_could_not_fetch_it() {
        let corrupt =
            failed_pod(FETCH_CONTAINER, 3, "downloading\nerror: backup \"b\" is corrupt and was refused: SHA-256");
        assert_eq!(pod_state(&corrupt), PodState::Refused);
        let why = restore_refusal(&corrupt).unwrap();
        assert!(why.starts_with("fetch-backup: exit code 3: error: backup"), "{why}");
        let unreachable = failed_pod(FETCH_CONTAINER, 1, "error: fetching backup: connection refused");
        assert_eq!(pod_state(&unreachable), PodState::Dead, "worth another try");
        let rejected = failed_pod(RESTORE_CONTAINER, 1, "Error: snapshot missing hash but --skip-hash-check=false");
        assert_eq!(pod_state(&rejected), PodState::Refused);
        // A restore the node failed is worth another try, like a fetch that could not reach its source.
        let killed = failed_pod(RESTORE_CONTAINER, 137, "");
        assert_eq!(pod_state(&killed), PodState::Dead, "OOM-killed, or evicted");
        let full =
            failed_pod(RESTORE_CONTAINER, 1, "Error: write /var/lib/etcd/data/member/snap/db: no space left on device");
        assert_eq!(pod_state(&full), PodState::Dead, "a full disk is no verdict on the backup");
    }

    #[test]
    fn a_fetch_reports_the_backup_it_restored_only_when_it_succeeded() {
        let result = r#"{"backup":"old-20261125T000000.000Z-r9","revision":9,"sha256":"ab","size":20480}"#;
        let done = failed_pod(FETCH_CONTAINER, 0, result);
        let reported = restore_result(&done).unwrap();
        assert_eq!((reported.backup.as_str(), reported.revision), ("old-20261125T000000.000Z-r9", 9));
        assert_eq!(restore_result(&failed_pod(FETCH_CONTAINER, 3, result)), None, "a failed fetch restored nothing");
        assert_eq!(restore_result(&failed_pod(FETCH_CONTAINER, 0, "downloading\n")), None, "a log is no result");
        assert_eq!(restore_result(&failed_pod(RESTORE_CONTAINER, 0, result)), None);
    }

    #[test]
    fn a_failed_pod_says_which_container_failed_why_and_when() {
        let mut pod = failed_pod(FETCH_CONTAINER, 1, "downloading\nerror: fetching backup: 401 Unauthorized");
        let statuses = pod.status.as_mut().unwrap().init_container_statuses.as_mut().unwrap();
        let finished = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        statuses[0].state.as_mut().unwrap().terminated.as_mut().unwrap().finished_at =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(finished));
        let now = k8s_openapi::jiff::Timestamp::from_second(1_007).unwrap();
        let failure = pod_failure(&pod, now).unwrap();
        assert_eq!(failure.member, "demo-0000");
        assert_eq!(failure.why, "fetch-backup: exit code 1: error: fetching backup: 401 Unauthorized");
        assert_eq!(failure.ago, std::time::Duration::from_secs(7));
    }

    #[test]
    fn a_pod_that_cannot_start_says_why_and_a_slow_one_is_not_stuck() {
        let waiting = |reason: &str| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "demo-0000" },
                "status": {
                    "phase": "Pending",
                    "initContainerStatuses": [{
                        "name": FETCH_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                        "state": { "waiting": { "reason": reason, "message": "secret \"s3-creds\" not found" } }
                    }]
                }
            }))
            .unwrap()
        };
        let why = stuck_reason(&waiting("CreateContainerConfigError")).unwrap();
        assert_eq!(why, "fetch-backup: CreateContainerConfigError: secret \"s3-creds\" not found");
        assert_eq!(stuck_reason(&waiting("PodInitializing")), None, "starting, not stuck");
        let unschedulable: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "demo-0001" },
            "status": { "phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) had volume node affinity conflict."
            }] }
        }))
        .unwrap();
        assert!(stuck_reason(&unschedulable).unwrap().starts_with("unschedulable: 0/1 nodes are available"));
        let at = |s: i64| k8s_openapi::jiff::Timestamp::from_second(s).unwrap();
        assert_eq!(volume_unschedulable_for(&unschedulable, at(1_000)), None, "no transition time: not timed");
        let mut timed = unschedulable.clone();
        let condition = &mut timed.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
        condition.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(1_000)));
        assert_eq!(volume_unschedulable_for(&timed, at(1_075)), Some(std::time::Duration::from_secs(75)));
        condition_message(&mut timed, "0/3 nodes are available: 3 Insufficient cpu.");
        assert_eq!(volume_unschedulable_for(&timed, at(1_075)), None, "no room is not a lost volume");
    }

    fn condition_message(pod: &mut k8s_openapi::api::core::v1::Pod, message: &str) {
        pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].message = Some(message.into());
    }

    fn restarting(restarts: i32, ran_secs: i64, waiting: &str) -> k8s_openapi::api::core::v1::Pod {
        backing_off(restarts, ran_secs, waiting, "")
    }

    fn backing_off(restarts: i32, ran_secs: i64, waiting: &str, message: &str) -> k8s_openapi::api::core::v1::Pod {
        let started = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        let finished = k8s_openapi::jiff::Timestamp::from_second(1_000 + ran_secs).unwrap();
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "demo-0001" },
            "status": {
                "phase": "Running",
                "conditions": [{ "type": "Ready", "status": "False" }],
                "containerStatuses": [{
                    "name": ETCD_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": restarts,
                    "state": { "waiting": { "reason": waiting, "message": message } },
                    "lastState": { "terminated": {
                        "exitCode": 137, "reason": "OOMKilled", "startedAt": started.to_string(),
                        "finishedAt": finished.to_string()
                    } }
                }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_member_that_crashed_restarts_in_place_and_only_a_restart_loop_counts_as_broken() {
        let not_ready = PodState::Running { ready: false };
        assert_eq!(pod_state(&restarting(1, 5, "CrashLoopBackOff")), not_ready, "one crash: restarting");
        assert_eq!(pod_state(&restarting(3, 5, "CrashLoopBackOff")), PodState::CrashLooping);
        let why = stuck_reason(&restarting(3, 5, "CrashLoopBackOff")).unwrap();
        assert!(why.contains("restarted 3 times") && why.contains("exit code 137"), "{why}");
        // A member that served for days and was OOM-killed once more is restarting, not looping.
        assert_eq!(pod_state(&restarting(9, 86_400, "CrashLoopBackOff")), not_ready);
        // Restarting right now (not backing off), whatever its count.
        assert_eq!(pod_state(&restarting(9, 5, "ContainerCreating")), not_ready);
        // The kubelet's back-off counts failures in a row: crashes weeks apart are no loop, whatever the count.
        let message =
            |backoff: &str| format!("back-off {backoff} restarting failed container=etcd pod=demo-0001_ns(u)");
        assert_eq!(pod_state(&backing_off(9, 5, "CrashLoopBackOff", &message("10s"))), not_ready);
        assert_eq!(pod_state(&backing_off(3, 5, "CrashLoopBackOff", &message("40s"))), PodState::CrashLooping);
        assert_eq!(pod_state(&backing_off(7, 5, "CrashLoopBackOff", &message("5m0s"))), PodState::CrashLooping);
    }

    #[test]
    fn a_node_is_down_from_its_ready_condition_and_for_as_long_as_that_has_held() {
        let node = |status: &str| -> k8s_openapi::api::core::v1::Node {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "node-b" },
                "status": { "conditions": [{
                    "type": "Ready", "status": status, "lastTransitionTime": "1970-01-01T00:16:40Z"
                }] }
            }))
            .unwrap()
        };
        let now = k8s_openapi::jiff::Timestamp::from_second(1_030).unwrap();
        assert_eq!(node_down_for(&node("True"), now), None);
        assert_eq!(node_down_for(&node("Unknown"), now), Some(std::time::Duration::from_secs(30)));
        assert_eq!(node_down_for(&node("False"), now), Some(std::time::Duration::from_secs(30)));
        let silent: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(node_down_for(&silent, now), Some(std::time::Duration::ZERO), "never reported");
    }

    #[test]
    fn an_image_change_counts_only_for_the_upgrade_that_made_it() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "demo-0001", "annotations": {
                ROLLED_AT: "1970-01-01T00:16:40Z", ROLLED_TO: "etcd:v3.6.16", ROLLED_FROM: "etcd:v3.5.35",
                ROLLED_RESTARTS: "2", ROLLED_FOR: "1970-01-01T00:16:30Z",
            } },
        }))
        .unwrap();
        let at = |s: i64| k8s_openapi::jiff::Timestamp::from_second(s).unwrap();
        let rolled = rolled(&pod, at(990), at(1_010)).unwrap();
        assert_eq!(rolled.ago, std::time::Duration::from_secs(10));
        assert_eq!(
            (rolled.to.as_str(), rolled.from.as_deref(), rolled.restarts_before),
            ("etcd:v3.6.16", Some("etcd:v3.5.35"), 2)
        );
        assert_eq!(super::rolled(&pod, at(1_005), at(1_010)), None, "an earlier upgrade's change");
        let mut member = MemberPod {
            rolled: Some(rolled),
            restarts: 2,
            ..MemberPod::new("demo-0001", PodState::Running { ready: true })
        };
        assert!(!member.rolled.as_ref().unwrap().restarted(&member), "the old container still runs");
        member.restarts = 3;
        assert!(member.rolled.as_ref().unwrap().restarted(&member));
        assert!(member.runs_image("etcd:v3.6.16"), "what it was changed to, whatever a webhook made of the field");
    }
}
