//! The output pump of a running execution: chunks go to the client's queue under the
//! backpressure policy, and a client that does not drain in time fails the execution.

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::timeout;

use super::execution::Run;
use super::stop::Stop;
use crate::output_queue::{PushRefused, Queued};
use capsule_protocol::execute::EventBody;
use capsule_protocol::trace::TraceEventKind;

impl Run<'_> {
    /// Queues an output chunk under the policy; turns refusals into stops.
    pub(super) async fn deliver_output(&mut self, event: Queued, bytes: usize) {
        let queue = self.job.queue.clone();
        let drain_timeout = self.runtime.config.drain_timeout();
        let outcome = if self.stop.is_some() {
            // Stopping: keep what fits, but never wait past the kill deadline.
            let limit = self
                .grace_deadline
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
                .unwrap_or(drain_timeout);
            timeout(limit.min(drain_timeout), queue.push_output(event)).await
        } else {
            tokio::select! {
                result = timeout(drain_timeout, queue.push_output(event)) => result,
                _ = self.job.control.cancel.cancelled() => {
                    self.runtime.stats.outputs_dropped.fetch_add(1, Relaxed);
                    self.request_stop(Stop::Cancelled).await;
                    return;
                }
            }
        };
        match outcome {
            Ok(Ok(())) => self.runtime.trace.send(
                self.trace(TraceEventKind::OutputFlush)
                    .with_attribute("bytes", bytes),
            ),
            Ok(Err(PushRefused::Full)) => {
                let capacity = self.runtime.config.output_queue_capacity;
                self.request_stop(Stop::Failed(EventBody::Error {
                    ename: "OutputQueueFull".into(),
                    evalue: format!(
                        "the output queue ({capacity} chunks) was full and the backpressure policy is Error"
                    ),
                    traceback: Vec::new(),
                }))
                .await;
            }
            Ok(Err(PushRefused::ConsumerGone)) => self.request_stop(Stop::Cancelled).await,
            Err(_) if self.stop.is_some() => {
                self.runtime.stats.outputs_dropped.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.runtime.stats.outputs_dropped.fetch_add(1, Relaxed);
                let body = self.drain_timeout_body();
                self.request_stop(Stop::Failed(body)).await;
            }
        }
    }

    pub(super) fn drain_timeout_body(&self) -> EventBody {
        let report = self.job.queue.abandon_pending();
        self.runtime.stats.drain_timeouts.fetch_add(1, Relaxed);
        self.runtime.trace.send(
            self.trace(TraceEventKind::DrainTimeout)
                .with_attribute("pending", report.pending)
                .with_attribute("queueSize", report.queue_size),
        );
        tracing::warn!(
            execution = %self.job.id,
            pending = report.pending,
            queue_size = report.queue_size,
            "client did not drain the output in time"
        );
        EventBody::OutputDrainTimeout {
            pending: report.pending,
            queue_size: report.queue_size,
            sent: report.sent,
            dropped: report.dropped,
        }
    }
}
