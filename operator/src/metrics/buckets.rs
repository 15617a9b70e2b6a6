//! Histogram buckets: each histogram family builds its series with the bounds that fit its range.

use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::TraceLabels;

#[derive(Clone)]
pub struct AcquisitionBuckets;

impl MetricConstructor<Histogram> for AcquisitionBuckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms … ~65 s
        Histogram::new(exponential_buckets(0.001, 2.0, 17))
    }
}

#[derive(Clone)]
pub struct DurationBuckets;

impl MetricConstructor<HistogramWithExemplars<TraceLabels>> for DurationBuckets {
    fn new_metric(&self) -> HistogramWithExemplars<TraceLabels> {
        // 1 ms … ~16 s
        HistogramWithExemplars::new(exponential_buckets(0.001, 2.0, 15))
    }
}
