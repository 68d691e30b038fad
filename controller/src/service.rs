//! The services of a cluster: a headless one that gives every member a stable DNS name (published before the
//! member is ready, since peers must reach it to become ready), and `<cluster>-client` for clients.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use proto::cluster::EtcdCluster;

use crate::labels::{cluster_labels, member_selector, owner};

fn meta(cluster: &EtcdCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(cluster_labels(&cluster.name_any())),
        owner_references: Some(vec![owner(cluster)]),
        ..Default::default()
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        ..Default::default()
    }
}

/// The headless service named like the cluster: `<member>.<cluster>.<namespace>.svc` resolves to each member.
pub fn headless_service(cluster: &EtcdCluster) -> Service {
    Service {
        metadata: meta(cluster, cluster.name_any()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(member_selector(&cluster.name_any())),
            ports: Some(vec![port("client", 2379), port("peer", 2380)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Name of the client service of `cluster`.
pub fn client_service_name(cluster: &str) -> String {
    format!("{cluster}-client")
}

/// The client service: ready members only.
pub fn client_service(cluster: &EtcdCluster) -> Service {
    Service {
        metadata: meta(cluster, client_service_name(&cluster.name_any())),
        spec: Some(ServiceSpec {
            selector: Some(member_selector(&cluster.name_any())),
            ports: Some(vec![port("client", 2379)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// How many members a voluntary disruption (a drain, an eviction) may take at once: one, and only where the rest
/// still hold a quorum (none of one or two members), unless `spec.pod.allowUnsafeEviction` says otherwise.
pub fn allowed_disruptions(cluster: &EtcdCluster) -> i32 {
    let size = cluster.spec.size.max(1);
    let spare = size - (size / 2 + 1);
    if cluster.spec.pod.allow_unsafe_eviction { 1 } else { spare.min(1) }
}

/// The budget for voluntary disruptions: see [`allowed_disruptions`].
pub fn disruption_budget(cluster: &EtcdCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(cluster, cluster.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(allowed_disruptions(cluster))),
            selector: Some(LabelSelector {
                match_labels: Some(member_selector(&cluster.name_any())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster;

    #[test]
    fn the_headless_service_publishes_members_before_they_are_ready() {
        let service = headless_service(&cluster("demo", 3));
        assert_eq!(service.metadata.name.as_deref(), Some("demo"));
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.ports.unwrap().len(), 2);
    }

    #[test]
    fn clients_reach_ready_members_through_the_client_service() {
        let service = client_service(&cluster("demo", 3));
        assert_eq!(service.metadata.name.as_deref(), Some("demo-client"));
        let spec = service.spec.unwrap();
        assert!(spec.cluster_ip.is_none() && spec.publish_not_ready_addresses.is_none());
        assert_eq!(spec.ports.unwrap()[0].port, 2379);
        assert_eq!(service.metadata.owner_references.unwrap()[0].name, "demo");
    }

    #[test]
    fn the_budget_never_lets_a_drain_take_the_quorum_unless_asked() {
        let allowed = |size: i32| {
            let pdb = disruption_budget(&cluster("demo", size));
            pdb.spec.unwrap().max_unavailable
        };
        assert_eq!(allowed(1), Some(IntOrString::Int(0)), "the only member is never evicted");
        assert_eq!(allowed(2), Some(IntOrString::Int(0)), "one of two is half the votes");
        assert_eq!(allowed(3), Some(IntOrString::Int(1)));
        assert_eq!(allowed(5), Some(IntOrString::Int(1)), "one at a time");
        let mut single = cluster("demo", 1);
        single.spec.pod.allow_unsafe_eviction = true;
        assert_eq!(disruption_budget(&single).spec.unwrap().max_unavailable, Some(IntOrString::Int(1)), "opted in");
    }
}
