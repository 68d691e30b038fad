//! The security contexts of every pod the controller makes (member pods, their init containers, the backup
//! sidecar): what the `restricted` Pod Security Standard asks for, so that a namespace enforcing it admits them.
//! Not root, no capabilities, no privilege escalation, the runtime's default seccomp profile, a read-only root file
//! system (etcd writes only its data directory; the restore and the sidecar write only their volumes).

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
use proto::cluster::MemberSecurity;

/// The pod-level context: the user, group and volume group of `who`. Volumes are given to the group only when
/// their root does not have it yet (`OnRootMismatch`), so a large volume is not walked at every start.
pub fn pod_context(who: &MemberSecurity) -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(who.run_as_user),
        run_as_group: Some(who.run_as_group),
        fs_group: Some(who.fs_group),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        // Root is the user's explicit way out (see `MemberSecurity::run_as_user`); never the default.
        run_as_non_root: Some(who.run_as_user != 0),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..Default::default()
    }
}

/// The context of every container: no capability, no privilege escalation, a read-only root file system.
pub fn container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..Default::default()
    }
}

#[cfg(test)]
/// Why `pod` would be refused by a namespace that enforces the `restricted` Pod Security Standard (as of
/// Kubernetes 1.30, the checks that apply to what this controller renders), or an empty list.
pub fn restricted_violations(pod: &k8s_openapi::api::core::v1::PodSpec) -> Vec<String> {
    let mut found = Vec::new();
    let pod_context = pod.security_context.clone().unwrap_or_default();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        found.push("shares a host namespace".to_string());
    }
    for volume in pod.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            found.push(format!("volume {} is a hostPath", volume.name));
        }
    }
    let pod_seccomp = pod_context.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    let containers = pod.init_containers.iter().flatten().chain(pod.containers.iter());
    for container in containers {
        let context = container.security_context.clone().unwrap_or_default();
        let name = &container.name;
        if context.privileged == Some(true) {
            found.push(format!("{name} is privileged"));
        }
        if context.allow_privilege_escalation != Some(false) {
            found.push(format!("{name} does not set allowPrivilegeEscalation: false"));
        }
        let drops_all =
            context.capabilities.as_ref().and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|c| c == "ALL"));
        let adds = context
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_some_and(|a| a.iter().any(|c| c != "NET_BIND_SERVICE"));
        if !drops_all || adds {
            found.push(format!("{name} does not drop every capability"));
        }
        let non_root = context.run_as_non_root.or(pod_context.run_as_non_root) == Some(true);
        let user = context.run_as_user.or(pod_context.run_as_user);
        if !non_root || user == Some(0) {
            found.push(format!("{name} may run as root"));
        }
        let seccomp = context.seccomp_profile.as_ref().map(|p| p.type_.as_str()).or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            found.push(format!("{name} has no RuntimeDefault or Localhost seccomp profile"));
        }
        if container.ports.iter().flatten().any(|p| p.host_port.is_some_and(|h| h != 0)) {
            found.push(format!("{name} uses a host port"));
        }
    }
    found
}
