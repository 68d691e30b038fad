//! What a member pod's object says: its state (running, ready, dead, in a restart loop, stuck), its upgrade
//! annotations, and what its restore containers reported.

use super::*;

/// The image change the upgrade recorded as started at `since` made to `pod`, from its annotations.
pub fn rolled(
    pod: &k8s_openapi::api::core::v1::Pod,
    since: k8s_openapi::jiff::Timestamp,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<Rolled> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let recorded: k8s_openapi::jiff::Timestamp = annotations.get(ROLLED_FOR)?.parse().ok()?;
    if recorded != since {
        return None;
    }
    let at: k8s_openapi::jiff::Timestamp = annotations.get(ROLLED_AT)?.parse().ok()?;
    Some(Rolled {
        ago: std::time::Duration::try_from(now.duration_since(at)).unwrap_or_default(),
        to: annotations.get(ROLLED_TO)?.clone(),
        from: annotations.get(ROLLED_FROM).cloned(),
        restarts_before: annotations.get(ROLLED_RESTARTS)?.parse().ok()?,
    })
}

/// How many times the kubelet restarted `pod`'s etcd container.
pub fn etcd_restarts(pod: &k8s_openapi::api::core::v1::Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.and_then(|s| s.iter().find(|c| c.name == ETCD_CONTAINER)).map_or(0, |c| c.restart_count)
}

/// The name of the container that runs etcd.
pub const ETCD_CONTAINER: &str = "etcd";
/// Names of the init containers that restore a seeded member.
pub const FETCH_CONTAINER: &str = "fetch-backup";
/// See [`FETCH_CONTAINER`].
pub const RESTORE_CONTAINER: &str = "restore-data";
/// The init container that checks a member's volume before etcd starts on it.
pub const GUARD_CONTAINER: &str = "guard";

/// Why the guard of `pod` refused its volume (exit code [`proto::backup::EXIT_WRONG_VOLUME`], or
/// [`proto::backup::EXIT_VOLUME_UNUSABLE`] for files its user cannot use), from its termination message: now, or on
/// its last run (the kubelet runs a failed init container again after a back-off).
pub fn volume_refusal(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    let guard = statuses.iter().find(|s| s.name == GUARD_CONTAINER)?;
    let states = [guard.state.as_ref(), guard.last_state.as_ref()];
    let terminated = states.into_iter().flatten().find_map(|s| s.terminated.as_ref())?;
    let refused = [proto::backup::EXIT_WRONG_VOLUME, proto::backup::EXIT_VOLUME_UNUSABLE]
        .iter()
        .any(|&code| terminated.exit_code == i32::from(code));
    refused.then(|| {
        let why = terminated.message.as_deref().unwrap_or("").trim().lines().last().unwrap_or("").to_string();
        // The reason tells the two apart (see [`data_intact`]): made sure of when the message was cut.
        if terminated.exit_code == i32::from(proto::backup::EXIT_VOLUME_UNUSABLE)
            && !why.starts_with(proto::backup::UNUSABLE_PREFIX)
        {
            format!("{}{why}", proto::backup::UNUSABLE_PREFIX)
        } else {
            why
        }
    })
}

/// Whether the etcd container of `pod` runs as root: its context or the pod's names user 0, or neither names one
/// (a pod of an earlier build, which ran etcd as its image's default user, root).
pub fn runs_as_root(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let spec = pod.spec.as_ref();
    let etcd = spec.and_then(|s| s.containers.iter().find(|c| c.name == ETCD_CONTAINER));
    let of_pod = spec.and_then(|s| s.security_context.as_ref()?.run_as_user);
    let of_etcd = etcd.and_then(|c| c.security_context.as_ref()?.run_as_user);
    of_etcd.or(of_pod).is_none_or(|user| user == 0)
}

/// Whether a guard's refusal ([`volume_refusal`]) leaves the member's data intact: the volume is the member's, but
/// the pod's user cannot read or write its files. Such a member counts as one on its volume (a lost quorum waits
/// for it rather than restoring a backup), and is never replaced.
pub fn data_intact(refusal: &str) -> bool {
    refusal.starts_with(proto::backup::UNUSABLE_PREFIX)
}

/// Why the restore of `pod` refused its backup: the fetch found it corrupt, or etcd's restore tool rejected it.
/// `None` for any other outcome (a fetch that could not reach the sidecar is worth another try).
pub fn restore_refusal(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let terminated = status.state.as_ref()?.terminated.as_ref()?;
        let refused = match status.name.as_str() {
            FETCH_CONTAINER => terminated.exit_code == i32::from(proto::backup::EXIT_CORRUPT_BACKUP),
            RESTORE_CONTAINER => terminated.exit_code != 0 && !transient(terminated),
            _ => false,
        };
        refused.then(|| ended(&status.name, terminated))
    })
}

/// Whether a restore ended for a reason that may pass rather than because etcd refused the snapshot: killed by a
/// signal (the OOM killer, an eviction), or an I/O failure of the node (a full or failing disk).
fn transient(terminated: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> bool {
    const NODE_FAULTS: [&str; 4] =
        ["no space left on device", "input/output error", "read-only file system", "too many open files"];
    let message = terminated.message.as_deref().unwrap_or("").to_ascii_lowercase();
    terminated.exit_code >= 128
        || terminated.reason.as_deref() == Some("OOMKilled")
        || NODE_FAULTS.iter().any(|fault| message.contains(fault))
}

/// `<container>: exit code <n>: <the last line it wrote>`, from a terminated container's state.
fn ended(container: &str, terminated: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> String {
    let message = terminated.message.as_deref().unwrap_or("").trim();
    let last = message.lines().last().unwrap_or("");
    format!("{container}: exit code {}: {last}", terminated.exit_code)
}

/// What the restore of `pod` fetched, from its fetch init container's termination message (written with
/// `--result-file`), once that container succeeded.
pub fn restore_result(pod: &k8s_openapi::api::core::v1::Pod) -> Option<proto::backup::RestoreResult> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    let fetch = statuses.iter().find(|s| s.name == FETCH_CONTAINER)?;
    let terminated = fetch.state.as_ref()?.terminated.as_ref()?;
    if terminated.exit_code != 0 {
        return None;
    }
    serde_json::from_str(terminated.message.as_deref()?.trim()).ok()
}

/// Why and when `pod` failed: the first of its containers (init containers first) that ended with a non-zero exit
/// code. A pod with no such container (evicted, say) failed as a whole, at its last condition change.
pub fn pod_failure(pod: &k8s_openapi::api::core::v1::Pod, now: k8s_openapi::jiff::Timestamp) -> Option<PodFailure> {
    let status = pod.status.as_ref()?;
    let statuses = status.init_container_statuses.iter().chain(status.container_statuses.iter()).flatten();
    let failed = statuses.filter_map(|s| Some((s.name.as_str(), s.state.as_ref()?.terminated.as_ref()?)));
    let (why, at) = match failed.clone().find(|(_, t)| t.exit_code != 0) {
        Some((name, terminated)) => (ended(name, terminated), terminated.finished_at.clone()),
        None => {
            let reason = status.reason.clone().unwrap_or_else(|| "Failed".into());
            let message = status.message.clone().unwrap_or_default();
            let at =
                status.conditions.iter().flatten().filter_map(|c| c.last_transition_time.clone()).max_by_key(|t| t.0);
            (format!("{reason}: {message}"), at)
        }
    };
    // A pod refused before it started (kubelet admission) may have no times of its own: its start, or its creation.
    let at = at.or_else(|| status.start_time.clone()).or_else(|| pod.metadata.creation_timestamp.clone());
    let ago = at.map_or(std::time::Duration::MAX, |at| {
        std::time::Duration::try_from(now.duration_since(at.0)).unwrap_or_default()
    });
    Some(PodFailure { member: pod.metadata.name.clone()?, why, ago })
}

/// Why a pending pod cannot start, when it is stuck rather than slow: a container that cannot be created (a missing
/// Secret, key or image) or a pod the scheduler cannot place (a claim mounted elsewhere, no fitting node).
pub fn stuck_reason(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    const STUCK: [&str; 6] = [
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
    ];
    let status = pod.status.as_ref()?;
    if crash_looping(pod) {
        let etcd = status.container_statuses.iter().flatten().find(|c| c.name == ETCD_CONTAINER)?;
        let last = etcd.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let how = last.map_or_else(|| "no exit recorded".into(), |t| ended(ETCD_CONTAINER, t));
        return Some(format!(
            "etcd restarted {} times, each run shorter than {} s (last: {how})",
            etcd.restart_count,
            CRASH_LOOP_SHORT_RUN.as_secs()
        ));
    }
    let containers = status.init_container_statuses.iter().chain(status.container_statuses.iter()).flatten();
    let waiting = containers.filter_map(|c| Some((c.name.as_str(), c.state.as_ref()?.waiting.as_ref()?)));
    if let Some((name, waiting)) =
        waiting.clone().find(|(_, w)| w.reason.as_deref().is_some_and(|r| STUCK.contains(&r)))
    {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        return Some(format!("{name}: {reason}: {}", waiting.message.as_deref().unwrap_or_default()));
    }
    let unschedulable =
        status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })?;
    Some(format!("unschedulable: {}", unschedulable.message.as_deref().unwrap_or_default()))
}

/// How long `pod` has been unschedulable because no node can reach its volume (its volume is pinned to a node that
/// is gone, or that the pod may not go to), if it is: the scheduler's `PodScheduled=False/Unschedulable` condition
/// naming a volume node affinity conflict, since its last transition.
pub fn volume_unschedulable_for(
    pod: &k8s_openapi::api::core::v1::Pod,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<std::time::Duration> {
    let condition =
        pod.status.as_ref()?.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })?;
    let message = condition.message.as_deref().unwrap_or_default();
    if !message.contains("volume node affinity conflict") {
        return None;
    }
    let since = condition.last_transition_time.as_ref()?;
    Some(std::time::Duration::try_from(now.duration_since(since.0)).unwrap_or_default())
}

/// The planner's view of a pod.
pub fn pod_state(pod: &k8s_openapi::api::core::v1::Pod) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let status = pod.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") if crash_looping(pod) => PodState::CrashLooping,
        Some("Running") => {
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            PodState::Running { ready }
        }
        Some("Failed") if restore_refusal(pod).is_some() => PodState::Refused,
        Some("Failed" | "Succeeded") => PodState::Dead,
        _ => PodState::Pending,
    }
}

/// Whether `pod`'s etcd container is in a restart loop (see [`PodState::CrashLooping`]).
fn crash_looping(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let Some(etcd) = statuses.and_then(|s| s.iter().find(|c| c.name == ETCD_CONTAINER)) else {
        return false;
    };
    let waiting = etcd.state.as_ref().and_then(|s| s.waiting.as_ref());
    let backing_off = waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff");
    // The kubelet's back-off (10 s, 20 s, 40 s, ... after consecutive failures, reset once a run lasts) says how
    // many failures came in a row; the lifetime restart count only when its message cannot be read.
    let in_a_row = match waiting.and_then(|w| w.message.as_deref()).and_then(kubelet_backoff) {
        Some(backoff) => backoff >= CRASH_LOOP_BACKOFF,
        None => etcd.restart_count >= CRASH_LOOP_RESTARTS,
    };
    let last = etcd.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let short = last.is_some_and(|t| match (&t.started_at, &t.finished_at) {
        (Some(start), Some(end)) => {
            std::time::Duration::try_from(end.0.duration_since(start.0)).unwrap_or_default() < CRASH_LOOP_SHORT_RUN
        }
        // A container that failed before it started (a bad flag, a missing binary) ran for no time at all.
        _ => true,
    });
    backing_off && short && in_a_row
}

/// The back-off in a kubelet's CrashLoopBackOff message (`back-off 40s restarting failed container=...`).
fn kubelet_backoff(message: &str) -> Option<std::time::Duration> {
    let rest = &message[message.find("back-off ")? + "back-off ".len()..];
    humantime::parse_duration(rest.split_whitespace().next()?).ok()
}

/// How long `node` has not been Ready, if it is not (its Ready condition is False or Unknown, or missing).
pub fn node_down_for(
    node: &k8s_openapi::api::core::v1::Node,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<std::time::Duration> {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    let ready = conditions.and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(ready) if ready.status == "True" => None,
        Some(ready) => Some(ready.last_transition_time.as_ref().map_or(std::time::Duration::ZERO, |at| {
            std::time::Duration::try_from(now.duration_since(at.0)).unwrap_or_default()
        })),
        // A node that never reported: no evidence that it serves anything.
        None => Some(std::time::Duration::ZERO),
    }
}
