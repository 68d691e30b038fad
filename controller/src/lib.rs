//! The etcd controller: the EtcdCluster resource, and a reconcile that observes, plans one step, acts, and reports.

pub mod act;
pub mod backoff;
pub mod backup;
pub mod build;
pub mod certificates;
pub mod crd;
pub mod dial;
pub mod labels;
pub mod leader;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod observe;
pub mod peering;
pub mod plan;
pub mod pod;
pub mod rbac;
pub mod reconcile;
pub mod recovery;
pub mod run;
pub mod security;
pub mod service;
pub mod status;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod version;
