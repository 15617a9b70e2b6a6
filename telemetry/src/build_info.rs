//! `capsule_build_info{version, revision} 1`: which build answers, joinable onto any series.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The workspace version the binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision (12 hex digits), or `unknown` when built outside a checkout.
pub const REVISION: &str = env!("CAPSULE_REVISION");

#[derive(Debug)]
pub struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "capsule_build_info",
            "Always 1; the labels say which version and git revision this process runs",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("version", VERSION), ("revision", REVISION)];
        ConstGauge::new(1i64).encode(metric.encode_family(&labels)?)
    }
}
