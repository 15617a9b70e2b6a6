//! The contracts every Capsule process shares, and nothing else: the operator, the sidecar and the
//! gateway depend on this crate, never on the worker's runtime.
//!
//! - [`execute`]: the execute API's requests, its NDJSON events and the worker's other JSON bodies.
//! - [`checkpoint`]: checkpoint create, list and restore replies, and their counters.
//! - [`heartbeat`]: worker → operator heartbeats, the reply and the session binding.
//! - [`trace`]: worker → sidecar trace events (metadata only).
//! - [`frame`]: length-prefixed JSON frames and their bound.
//! - [`auth`]: the bearer parser, token hashes and constant-time comparisons.
//! - [`admin`]: a typed client for the worker's admin calls.
//! - [`names`]: labels and annotations the operator writes and others read.
//!
//! Every type is serialised as camelCase JSON.

pub mod admin;
pub mod auth;
pub mod checkpoint;
pub mod execute;
pub mod frame;
pub mod heartbeat;
pub mod names;
pub mod trace;
