//! The contract between the controller, the backup sidecar and their users: every type that crosses a process boundary.
#![warn(missing_docs)]

pub mod backup;
pub mod cluster;
