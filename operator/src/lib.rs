//! capsule-operator: reconciles CapsulePools into warm worker pods, relays their health into status
//! and Prometheus, and serves metrics and health endpoints. `startup` wires these together.

pub mod conditions;
pub mod config;
pub mod context;
pub mod error;
// Shared with the gateway (and the same conversion as the sidecar's): capsule-telemetry.
pub use capsule_telemetry::exposition;
pub mod health;
pub mod http;
pub mod labels;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod pool;
pub mod reconcile_timer;
pub mod relay;
pub mod session;
pub mod startup;
pub mod telemetry;
pub mod watch_cache;

pub use error::{Error, Result};
