//! capsule-sidecar: the trace buffer, OTLP export and policy-gated introspection of one worker pod.
//!
//! The worker writes [`capsule_protocol::trace::TraceEvent`] frames to a Unix socket; the
//! [`receiver`] reads them into the bounded [`buffer`], the [`export`] task turns finished
//! executions into OTLP spans, and the [`server`] serves `/metrics`, health and the gated
//! introspection views.

pub mod audit;
pub mod buffer;
pub mod config;
pub mod error;
pub mod export;
pub mod exposition;
pub mod gate;
pub mod metrics;
pub mod rate_limit;
pub mod receiver;
pub mod redaction;
pub mod server;
pub mod views;

pub use error::{Error, Result};
