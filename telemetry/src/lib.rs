//! What every Capsule process with a `/metrics` endpoint serves the same way: the standard
//! `process_*` series (as the Prometheus client libraries name them) and `capsule_build_info`.

mod build_info;
mod process;

use prometheus_client::registry::Registry;

pub use build_info::{BuildInfo, REVISION, VERSION};
pub use process::{ProcessCollector, ProcessStats};

/// Registers `process_*` and `capsule_build_info` at the root of `registry` (no prefix), so
/// call it on the registry itself, not on a sub-registry.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
    registry.register_collector(Box::new(BuildInfo));
}
