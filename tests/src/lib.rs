//! Support for the integration and end-to-end tests: real etcd and S3 servers on loopback, on free ports.

pub mod etcd;
pub mod etcd_cluster;
pub mod monitoring;
pub mod net;
pub mod proxy;
pub mod s3;
pub mod sidecar;
