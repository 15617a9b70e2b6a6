//! The gateway's Prometheus metrics (`capsule_gateway_*`). Labels are bounded: a route template
//! and a status class, never a session, namespace or path.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// A route template (`executions`, `executions/{id}/cancel`, ...) or `other`.
    pub route: &'static str,
    /// `2xx`, `4xx`, `5xx`, ...
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub upstream_errors: Family<RouteLabels, Counter>,
    pub open_streams: Gauge,
    pub sessions_indexed: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Metrics {
            requests: Family::default(),
            // 100 µs to ~3 s: the gateway's own overhead sits at the bottom.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            upstream_errors: Family::default(),
            open_streams: Gauge::default(),
            sessions_indexed: Gauge::default(),
        };
        registry.register(
            "capsule_gateway_requests",
            "Requests answered, by route template and status class",
            metrics.requests.clone(),
        );
        registry.register(
            "capsule_gateway_request_duration_seconds",
            "Time from a request to its response headers (a stream's body is not included)",
            metrics.duration.clone(),
        );
        registry.register(
            "capsule_gateway_upstream_errors",
            "Requests whose worker could not be reached or broke off, by route template",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "capsule_gateway_open_streams",
            "Worker responses being streamed to clients now",
            metrics.open_streams.clone(),
        );
        registry.register(
            "capsule_gateway_sessions_indexed",
            "CapsuleSessions in the gateway's index",
            metrics.sessions_indexed.clone(),
        );
        Arc::new(metrics)
    }
}

/// `2xx`, `4xx`, ... of a status code.
pub fn status_class(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
