//! Counts and times one reconcile from start to drop, whatever path it leaves by, and puts the
//! reconcile's trace id on its span so every log line of the reconcile carries it.

use std::time::Instant;

use crate::metrics::{ControllerLabels, ControllerName, Metrics, TraceLabels};

/// Held for the length of one reconcile; observes its duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    trace_id: Option<String>,
    started: Instant,
}

impl<'a> ReconcileTimer<'a> {
    /// Counts a run. Call inside the reconcile's span (declared with an empty `trace_id` field).
    pub fn start(metrics: &'a Metrics, controller: ControllerName) -> Self {
        let labels = ControllerLabels { controller };
        metrics.reconcile_runs.get_or_create(&labels).inc();
        let trace_id = crate::telemetry::current_trace_id();
        if let Some(id) = &trace_id {
            tracing::Span::current().record("trace_id", id.as_str());
        }
        ReconcileTimer {
            metrics,
            labels,
            trace_id,
            started: Instant::now(),
        }
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let exemplar = self
            .trace_id
            .take()
            .map(|trace_id| TraceLabels { trace_id });
        self.metrics
            .reconcile_duration
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64(), exemplar, None);
    }
}
