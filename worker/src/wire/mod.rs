//! Contracts shared between Capsule processes: every type here is serialised as camelCase JSON and
//! is the single source of truth for the worker, the operator and the sidecar.

pub mod execute;
pub mod frame;
pub mod heartbeat;
pub mod trace;
