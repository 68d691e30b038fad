//! The etcd controller: the EtcdCluster resource's definition, the reconcile planner and the etcd membership layer.

pub mod crd;
pub mod labels;
pub mod membership;
pub mod observe;
pub mod plan;
pub mod pod;
pub mod service;
#[cfg(test)]
mod testing;
