//! The controllers the Helm chart relies on: Deployment → ReplicaSet → Pod, and the `default`
//! ServiceAccount of each namespace.

pub mod deployment;
pub mod replicaset;
pub mod selector;
pub mod service_account;
