//! The heartbeat relay: ingest, the in-memory worker index, and the lookups ingest needs.

pub mod caches;
pub mod counters;
pub mod directory;
pub mod index;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod pod_trim;
pub mod validate;
pub mod wakeups;
pub mod written;
