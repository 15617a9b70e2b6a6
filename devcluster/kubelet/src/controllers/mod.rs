//! The workload controllers the Helm chart relies on: Deployment → ReplicaSet → Pod.

pub mod deployment;
pub mod replicaset;
pub mod selector;
