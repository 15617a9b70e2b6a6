//! What every Capsule process does the same way for the people who run it: the standard
//! `process_*` series (as the Prometheus client libraries name them), `capsule_build_info`, and
//! the standard `OTEL_*` variables of an OTLP exporter.

mod build_info;
pub mod exposition;
pub mod otlp;
mod process;
pub mod sampler;

use prometheus_client::registry::Registry;

pub use build_info::{BuildInfo, REVISION, VERSION};
pub use process::{ProcessCollector, ProcessStats};

/// Registers `process_*` and `capsule_build_info` at the root of `registry` (no prefix), so
/// call it on the registry itself, not on a sub-registry.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
    registry.register_collector(Box::new(BuildInfo));
}
