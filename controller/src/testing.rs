//! Fixtures for the controller's unit tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proto::cluster::{EtcdCluster, EtcdClusterSpec};

/// An EtcdCluster as read from the API server: name, namespace `ns`, a UID, the spec's defaults.
pub fn cluster(name: &str, size: i32) -> EtcdCluster {
    let spec: EtcdClusterSpec = serde_json::from_value(serde_json::json!({ "size": size })).unwrap();
    let mut cluster = EtcdCluster::new(name, spec);
    cluster.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ns".into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    };
    cluster
}
