//! Every call the controller makes to the API server, by resource, verb and scope: the permissions the install
//! must grant, no more (a unit test holds `example/etcd-controller.yaml` to this table both ways).

/// Where a permission must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// In every namespace the controller watches (a ClusterRole, or a Role per namespace when it watches one).
    Watched,
    /// Cluster-scoped resources (a ClusterRole).
    Cluster,
    /// Only in the controller's own namespace (a Role there).
    Own,
}

/// One permission and the calls that need it.
#[derive(Clone, Copy, Debug)]
pub struct ApiCall {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, with its subresource (`etcdclusters/status`).
    pub resource: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// Where.
    pub scope: Scope,
    /// The calls that need it (module and what they do).
    pub why: &'static str,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    scope: Scope,
    why: &'static str,
) -> ApiCall {
    ApiCall { group, resource, verb, scope, why }
}

const CRD: &str = "kube-etcd-controller.dev";

/// The table. Server-side apply of an object that does not exist yet creates it, so applied objects need
/// `create` beside `patch`.
pub const API_CALLS: &[ApiCall] = &[
    call(CRD, "etcdclusters", "list", Scope::Watched, "run: the controller's watch"),
    call(CRD, "etcdclusters", "watch", Scope::Watched, "run: the controller's watch"),
    call(CRD, "etcdclusters/status", "get", Scope::Watched, "reconcile, act: status read back before a step"),
    call(CRD, "etcdclusters/status", "patch", Scope::Watched, "reconcile, act: status and records"),
    call("", "pods", "list", Scope::Watched, "run: owned pods; observe: member pods"),
    call("", "pods", "watch", Scope::Watched, "run: owned pods"),
    call("", "pods", "create", Scope::Watched, "act: member pods"),
    call("", "pods", "patch", Scope::Watched, "act: RollMember changes a member's image in place"),
    call("", "pods", "delete", Scope::Watched, "act: orphans, lost and removed members"),
    call("", "persistentvolumeclaims", "get", Scope::Watched, "act: a member claim made by an earlier attempt"),
    call("", "persistentvolumeclaims", "list", Scope::Watched, "observe: member claims"),
    call("", "persistentvolumeclaims", "create", Scope::Watched, "act: member claims (spec.storage)"),
    call("", "persistentvolumeclaims", "patch", Scope::Watched, "act: a claim's member ID, retirement, expansion"),
    call("", "persistentvolumeclaims", "delete", Scope::Watched, "act: claims of removed members (whenScaled)"),
    call("", "nodes", "get", Scope::Cluster, "observe: whether a member's node is Ready"),
    call("storage.k8s.io", "storageclasses", "get", Scope::Cluster, "observe: whether a claim can be expanded"),
    call("", "services", "get", Scope::Watched, "reconcile, backup: services read before apply"),
    call("", "services", "list", Scope::Watched, "run: owned services"),
    call("", "services", "watch", Scope::Watched, "run: owned services"),
    call("", "services", "create", Scope::Watched, "reconcile, backup: apply of a new service"),
    call("", "services", "patch", Scope::Watched, "reconcile, backup: apply"),
    call("", "services", "delete", Scope::Watched, "backup: the sidecar's service when backups are turned off"),
    call("apps", "deployments", "get", Scope::Watched, "backup: the sidecar read before apply"),
    call("apps", "deployments", "list", Scope::Watched, "run: owned deployments"),
    call("apps", "deployments", "watch", Scope::Watched, "run: owned deployments"),
    call("apps", "deployments", "create", Scope::Watched, "backup: apply of a new sidecar"),
    call("apps", "deployments", "patch", Scope::Watched, "backup: apply"),
    call("apps", "deployments", "delete", Scope::Watched, "backup: the sidecar when backups are turned off"),
    call("", "configmaps", "get", Scope::Watched, "certificates: the pinned CA bundles of member pods"),
    call("", "configmaps", "list", Scope::Watched, "certificates: pinned CA bundles no member pod reads any more"),
    call("", "configmaps", "create", Scope::Watched, "certificates: the CA bundles new member pods read, pinned"),
    call("", "configmaps", "delete", Scope::Watched, "certificates: pinned CA bundles no member pod reads any more"),
    call("", "secrets", "get", Scope::Watched, "backup: the sidecar's token; act: an opted-in restore token"),
    call("", "secrets", "create", Scope::Watched, "backup: the sidecar's token; certificates: a new CA or certificate"),
    call("", "secrets", "update", Scope::Watched, "certificates: renewals and CA rotations, replaced as read"),
    call("", "secrets", "delete", Scope::Watched, "backup: the sidecar's token when backups are turned off"),
    call("networking.k8s.io", "networkpolicies", "get", Scope::Watched, "reconcile: read before apply or delete"),
    call("networking.k8s.io", "networkpolicies", "create", Scope::Watched, "reconcile: apply of a new policy"),
    call("networking.k8s.io", "networkpolicies", "patch", Scope::Watched, "reconcile: apply"),
    call("networking.k8s.io", "networkpolicies", "delete", Scope::Watched, "reconcile: spec.networkPolicy turned off"),
    call("policy", "poddisruptionbudgets", "get", Scope::Watched, "reconcile: read before apply"),
    call("policy", "poddisruptionbudgets", "create", Scope::Watched, "reconcile: apply of a new budget"),
    call("policy", "poddisruptionbudgets", "patch", Scope::Watched, "reconcile: apply"),
    call("events.k8s.io", "events", "create", Scope::Watched, "act, reconcile: events"),
    call("events.k8s.io", "events", "patch", Scope::Watched, "act, reconcile: repeated events"),
    call("coordination.k8s.io", "leases", "get", Scope::Own, "leader: the controller's Lease"),
    call("coordination.k8s.io", "leases", "create", Scope::Own, "leader: the controller's Lease"),
    call("coordination.k8s.io", "leases", "update", Scope::Own, "leader: renewals and takeovers"),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
    use serde::Deserialize;

    use super::*;

    type Grant = (String, String, String, Scope);

    fn grants(rules: &[PolicyRule], scope: Scope, into: &mut BTreeSet<Grant>) {
        for rule in rules {
            assert!(rule.resource_names.is_none(), "the table has no per-name rules: {rule:?}");
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        assert_ne!(verb, "*", "no wildcard verbs");
                        into.insert((group.clone(), resource.clone(), verb.clone(), scope));
                    }
                }
            }
        }
    }

    /// What `example/etcd-controller.yaml` grants the controller's ServiceAccount: its ClusterRole's rules (cluster
    /// resources as `Cluster`, namespaced ones as `Watched`) and its Role's in the controller's namespace (`Own`).
    fn shipped() -> BTreeSet<Grant> {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../example/etcd-controller.yaml")).unwrap();
        let mut granted = BTreeSet::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap();
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("ClusterRole") => {
                    let role: ClusterRole = serde_yaml::from_value(value).unwrap();
                    let mut all = BTreeSet::new();
                    grants(role.rules.as_deref().unwrap_or_default(), Scope::Watched, &mut all);
                    for (group, resource, verb, _) in all {
                        let cluster_scoped = ["nodes", "storageclasses"].contains(&resource.as_str());
                        let scope = if cluster_scoped { Scope::Cluster } else { Scope::Watched };
                        granted.insert((group, resource, verb, scope));
                    }
                }
                Some("Role") => {
                    let role: Role = serde_yaml::from_value(value).unwrap();
                    assert_eq!(
                        role.metadata.namespace.as_deref(),
                        Some("etcd-controller"),
                        "a Role in its own namespace"
                    );
                    grants(role.rules.as_deref().unwrap_or_default(), Scope::Own, &mut granted);
                }
                _ => {}
            }
        }
        granted
    }

    #[test]
    fn the_shipped_manifest_grants_every_call_the_controller_makes_and_nothing_else() {
        let needed: BTreeSet<Grant> = API_CALLS
            .iter()
            .map(|c| (c.group.to_string(), c.resource.to_string(), c.verb.to_string(), c.scope))
            .collect();
        assert_eq!(needed.len(), API_CALLS.len(), "no row twice");
        let granted = shipped();
        let missing: Vec<_> = needed.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&needed).collect();
        assert!(missing.is_empty(), "the manifest lacks permissions the controller needs: {missing:?}");
        assert!(extra.is_empty(), "the manifest grants permissions no call needs: {extra:?}");
    }

    /// `example/etcd-controller-namespaced.yaml`: everything namespaced (`Watched` and `Own`, the same namespace)
    /// in one Role there, and only the `Cluster` rows in a ClusterRole.
    #[test]
    fn the_namespaced_manifest_grants_the_same_calls_in_one_namespace() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../example/etcd-controller-namespaced.yaml"))
                .unwrap();
        let (mut in_namespace, mut cluster) = (BTreeSet::new(), BTreeSet::new());
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap();
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("ClusterRole") => {
                    let role: ClusterRole = serde_yaml::from_value(value).unwrap();
                    grants(role.rules.as_deref().unwrap_or_default(), Scope::Cluster, &mut cluster);
                }
                Some("Role") => {
                    let role: Role = serde_yaml::from_value(value).unwrap();
                    assert_eq!(role.metadata.namespace.as_deref(), Some("etcd"));
                    grants(role.rules.as_deref().unwrap_or_default(), Scope::Watched, &mut in_namespace);
                }
                Some("Deployment") => {
                    let text = serde_yaml::to_string(&value).unwrap();
                    assert!(text.contains("WATCH_NAMESPACE"), "it watches its own namespace only");
                }
                _ => {}
            }
        }
        let needed = |scopes: &[Scope], as_scope: Scope| -> BTreeSet<Grant> {
            API_CALLS
                .iter()
                .filter(|c| scopes.contains(&c.scope))
                .map(|c| (c.group.to_string(), c.resource.to_string(), c.verb.to_string(), as_scope))
                .collect()
        };
        assert_eq!(in_namespace, needed(&[Scope::Watched, Scope::Own], Scope::Watched), "the Role");
        assert_eq!(cluster, needed(&[Scope::Cluster], Scope::Cluster), "the ClusterRole: Nodes only");
    }

    #[test]
    fn leases_are_granted_only_in_the_controllers_namespace() {
        let granted = shipped();
        assert!(granted.iter().filter(|g| g.1 == "leases").all(|g| g.3 == Scope::Own));
        assert!(granted.iter().any(|g| g.1 == "leases"));
    }
}
