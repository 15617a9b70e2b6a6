//! capsule-devcluster: a development stand-in for the Kubernetes API server (never a production
//! path). One process serves the API this project, its Helm chart and `kubectl` use, over HTTPS
//! (a certificate from its own CA, see `tls`) on loopback by default, with bearer tokens, keeping
//! objects in memory (optionally snapshotted to a file).
//!
//! ```no_run
//! # async fn demo() -> capsule_devcluster::Result<()> {
//! let cluster = capsule_devcluster::DevCluster::start(capsule_devcluster::DevClusterConfig::new("/tmp/dc")).await?;
//! let client = cluster.client().await?;
//! # drop(client);
//! cluster.shutdown().await
//! # }
//! ```

pub mod api;
pub mod cel_rules;
pub mod cluster;
pub mod discovery;
pub mod error;
pub mod events;
pub mod gc;
pub mod handlers;
mod json;
pub mod managed_fields;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod reviews;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod store;
pub mod subresources;
pub mod table;
pub mod tls;
pub mod tokens;
pub mod watch;

pub use error::{Error, Result};
pub use server::{client_from_kubeconfig, DevCluster, DevClusterConfig};
