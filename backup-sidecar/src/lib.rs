//! The backup sidecar: scheduled, verified, streaming etcd v3 snapshots to a PVC or S3, with an HTTP API.

pub mod api;
pub mod backup;
pub mod cli;
pub mod etcd;
pub mod guard;
pub mod https;
pub mod metrics;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod snapshot;
pub mod storage;
