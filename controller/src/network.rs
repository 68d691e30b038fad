//! The NetworkPolicies of a cluster (`spec.networkPolicy`, on unless `enabled: false`): who may reach its pods.
//! Ingress only (what the pods dial is not restricted), and enforced only where the cluster's network plugin
//! enforces NetworkPolicies.
//!
//! - `<cluster>-members`, on the member pods: the peer ports (2380, and 2382 where peer TLS was turned on for a
//!   running cluster) from the cluster's own members; the client port from its members, its backup sidecar, the
//!   controller's namespace and the clients the spec allows (`clients`; default: every pod of the cluster's
//!   namespace); the metrics and health port (2381) from anywhere, for Prometheus and the kubelet.
//! - `<cluster>-backup`, on the backup sidecar (with `spec.backup`): its API from the controller's namespace, from
//!   member pods of the namespace (a seed restoring a backup fetches it there) and from `backupClients`.
//!
//! The controller is named by its namespace (`--controller-namespace`, the pod's own by default): a controller run
//! outside the cluster has none, and reaches the pods as the node's traffic, which most network plugins admit.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use proto::cluster::EtcdCluster;

use crate::labels::{MEMBER_LABEL, cluster_labels, member_selector, owner};

/// The name of the members' policy: `<cluster>-members`.
pub fn members_policy_name(cluster: &str) -> String {
    format!("{cluster}-members")
}

/// The name of the backup sidecar's policy: `<cluster>-backup`.
pub fn backup_policy_name(cluster: &str) -> String {
    format!("{cluster}-backup")
}

fn ports(numbers: &[i32]) -> Vec<NetworkPolicyPort> {
    numbers
        .iter()
        .map(|&port| NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect()
}

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector { match_labels: Some(labels), ..Default::default() }),
        ..Default::default()
    }
}

/// Every pod of the namespace the policy is in.
fn this_namespace() -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..Default::default() }
}

/// Every pod of namespace `namespace` (the controller's).
fn namespace(namespace: &str) -> NetworkPolicyPeer {
    let labels = BTreeMap::from([("kubernetes.io/metadata.name".to_string(), namespace.to_string())]);
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector { match_labels: Some(labels), ..Default::default() }),
        ..Default::default()
    }
}

fn policy(
    cluster: &EtcdCluster,
    name: String,
    on: BTreeMap<String, String>,
    rules: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: cluster.namespace(),
            labels: Some(cluster_labels(&cluster.name_any())),
            owner_references: Some(vec![owner(cluster)]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(on), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..Default::default()
        }),
    }
}

/// The members' policy; `controller` is the controller's namespace, when it runs in one.
pub fn members_policy(cluster: &EtcdCluster, controller: Option<&str>) -> NetworkPolicy {
    let name = cluster.name_any();
    let access = &cluster.spec.network_policy;
    let mut clients = vec![pods(member_selector(&name)), pods(crate::backup::sidecar_selector(&name))];
    clients.extend(controller.map(namespace));
    match &access.clients {
        Some(allowed) => clients.extend(allowed.iter().cloned()),
        None => clients.push(this_namespace()),
    }
    let peers = NetworkPolicyIngressRule {
        from: Some(vec![pods(member_selector(&name))]),
        ports: Some(ports(&[i32::from(crate::peering::PEER_PORT), i32::from(crate::peering::SWITCH_PORT)])),
    };
    let client = NetworkPolicyIngressRule { from: Some(clients), ports: Some(ports(&[2379])) };
    // No `from`: anyone. Health and metrics only, without a client certificate (the kubelet, Prometheus).
    let metrics = NetworkPolicyIngressRule { from: None, ports: Some(ports(&[crate::version::METRICS_PORT])) };
    policy(cluster, members_policy_name(&name), member_selector(&name), vec![peers, client, metrics])
}

/// The backup sidecar's policy; `controller` is the controller's namespace, when it runs in one.
pub fn backup_policy(cluster: &EtcdCluster, controller: Option<&str>) -> NetworkPolicy {
    let name = cluster.name_any();
    let access = &cluster.spec.network_policy;
    // A seed restoring a backup (of this cluster or, with spec.restore.cluster, of another of the namespace).
    let members = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: MEMBER_LABEL.into(),
                operator: "Exists".into(),
                values: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut from = vec![members];
    from.extend(controller.map(namespace));
    from.extend(access.backup_clients.iter().cloned());
    let api = NetworkPolicyIngressRule { from: Some(from), ports: Some(ports(&[crate::backup::PORT])) };
    policy(cluster, backup_policy_name(&name), crate::backup::sidecar_selector(&name), vec![api])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster;

    fn rule(policy: &NetworkPolicy, port: i32) -> NetworkPolicyIngressRule {
        let rules = policy.spec.as_ref().unwrap().ingress.clone().unwrap();
        rules
            .into_iter()
            .find(|r| r.ports.iter().flatten().any(|p| p.port == Some(IntOrString::Int(port))))
            .unwrap_or_else(|| panic!("no rule for port {port}"))
    }

    fn labels(peer: &NetworkPolicyPeer) -> BTreeMap<String, String> {
        peer.pod_selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default()
    }

    #[test]
    fn peers_reach_members_only_from_members_and_clients_from_the_namespace_by_default() {
        let c = cluster("demo", 3);
        let policy = members_policy(&c, Some("etcd-controller"));
        let spec = policy.spec.as_ref().unwrap();
        assert_eq!(spec.pod_selector.as_ref().unwrap().match_labels.as_ref(), Some(&member_selector("demo")));
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]), "what pods dial is not limited");
        for port in [2380, 2382] {
            let from = rule(&policy, port).from.unwrap();
            assert_eq!(from.len(), 1, "peers: members only");
            assert_eq!(labels(&from[0]), member_selector("demo"));
        }
        let clients = rule(&policy, 2379).from.unwrap();
        assert!(clients.iter().any(|p| labels(p) == crate::backup::sidecar_selector("demo")), "the sidecar");
        let controller = clients.iter().find_map(|p| p.namespace_selector.as_ref()).expect("the controller");
        assert_eq!(controller.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"], "etcd-controller");
        assert!(clients.contains(&this_namespace()), "default: every pod of the namespace");
        assert!(rule(&policy, 2381).from.is_none(), "health and metrics from anywhere");
        assert_eq!(policy.metadata.owner_references.as_ref().unwrap()[0].name, "demo", "deleted with its cluster");
    }

    #[test]
    fn the_clients_the_spec_names_replace_the_namespace_and_a_controller_outside_is_not_named() {
        let mut c = cluster("demo", 3);
        let app = NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "api".to_string())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        c.spec.network_policy.clients = Some(vec![app.clone()]);
        let clients = rule(&members_policy(&c, None), 2379).from.unwrap();
        assert!(clients.contains(&app));
        assert!(!clients.contains(&this_namespace()), "only the named clients");
        assert!(clients.iter().all(|p| p.namespace_selector.is_none()), "no controller namespace to name");
        c.spec.network_policy.clients = Some(Vec::new());
        assert_eq!(rule(&members_policy(&c, None), 2379).from.unwrap().len(), 2, "members and the sidecar alone");
    }

    #[test]
    fn the_backup_api_admits_the_controller_restoring_members_and_named_clients() {
        let mut c = cluster("demo", 3);
        let ops = namespace("ops");
        c.spec.network_policy.backup_clients = vec![ops.clone()];
        let policy = backup_policy(&c, Some("etcd-controller"));
        let from = rule(&policy, crate::backup::PORT).from.unwrap();
        assert!(from.contains(&namespace("etcd-controller")));
        assert!(from.contains(&ops));
        let members = from[0].pod_selector.as_ref().unwrap().match_expressions.as_ref().unwrap();
        assert_eq!(members[0].key, MEMBER_LABEL, "member pods of any cluster of the namespace (restores)");
        let on = policy.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(on, crate::backup::sidecar_selector("demo"));
    }
}
