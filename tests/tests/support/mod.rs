//! Shared by the end-to-end tests: the checked-in manifests, the CRD, and waiting on the API server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};

pub fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../example").join(path)
}

pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Installs the checked-in CRD with server-side apply and waits until it is established.
pub async fn install_crd(client: &Client) -> Duration {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = load(&example("etcd-crd.yaml"));
    let start = Instant::now();
    crds.patch(&crd.name_any(), &PatchParams::apply("kec-e2e").force(), &Patch::Apply(&crd)).await.unwrap();
    loop {
        let current = crds.get(&crd.name_any()).await.unwrap();
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the CRD was never established");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn clusters(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(proto::cluster::API_GROUP, "v1alpha1", "EtcdCluster");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, "etcdclusters"))
}

/// Polls `check` every 200 ms until it returns `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
