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
    /// Failed or succeeded: with `restartPolicy: Never` this member is gone for good.
    Dead,
    /// Being deleted.
    Terminating,
}

/// One member pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPod {
    /// Pod name, which is also the etcd member name.
    pub name: String,
    /// Its state.
    pub state: PodState,
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
    /// Whether it is a learner (non-voting).
    pub learner: bool,
    /// Whether its own endpoint answered a status request just now.
    pub healthy: bool,
    /// Whether it is the leader.
    pub leader: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_round_trip_and_sort_numerically() {
        assert_eq!(member_name("etcd", 7), "etcd-0007");
        assert_eq!(member_index("etcd", "etcd-0007"), Some(7));
        assert_eq!(member_index("etcd", "etcd-12345"), Some(12345));
        assert_eq!(member_index("etcd", "etcd-client"), None);
        assert_eq!(member_index("etcd", "etcd-backup-0001"), None);
        assert_eq!(member_index("etcd", "other-0001"), None);
    }
}
