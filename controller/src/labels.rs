//! Names and labels every object the controller creates carries, and the owner reference tying it to its cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use proto::cluster::EtcdCluster;

/// Label naming the EtcdCluster an object belongs to.
pub const CLUSTER_LABEL: &str = "kube-etcd-controller.dev/cluster";
/// Label naming the member a pod runs.
pub const MEMBER_LABEL: &str = "kube-etcd-controller.dev/member";
/// The controller's field manager for server-side apply.
pub const FIELD_MANAGER: &str = "kube-etcd-controller";

/// Labels of every object of `cluster`.
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "etcd".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "kube-etcd-controller".to_string()),
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
    ])
}

/// Selector of the member pods of `cluster`.
pub fn member_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CLUSTER_LABEL.to_string(), cluster.to_string()), ("app.kubernetes.io/name".into(), "etcd".into())])
}

/// The owner reference that makes Kubernetes delete an object with its cluster.
pub fn owner(cluster: &EtcdCluster) -> OwnerReference {
    cluster.controller_owner_ref(&()).expect("an EtcdCluster read from the API server has a name and a UID")
}

/// The DNS name of member `member` through the headless service: `<member>.<cluster>.<namespace>.svc`.
pub fn member_host(member: &str, cluster: &str, namespace: &str) -> String {
    format!("{member}.{cluster}.{namespace}.svc")
}

/// The peer URL of a member; https when its cluster has peer TLS.
pub fn peer_url(member: &str, cluster: &str, namespace: &str, tls: bool) -> String {
    format!("{}://{}:2380", scheme(tls), member_host(member, cluster, namespace))
}

/// The client URL of a member; https when its cluster has client TLS.
pub fn client_url(member: &str, cluster: &str, namespace: &str, tls: bool) -> String {
    format!("{}://{}:2379", scheme(tls), member_host(member, cluster, namespace))
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}
