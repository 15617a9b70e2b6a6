//! The end of an execution: lost frames turn a result into `OutputLost`, the client's queue is
//! drained, then the final event is sent and the outcome counted and traced.

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::timeout;

use super::execution::Run;
use crate::stats::Outcome;
use crate::warn_once::WarnOnce;
use capsule_protocol::execute::EventBody;
use capsule_protocol::trace::TraceEventKind;

static ROLLBACK_SKIPPED: WarnOnce = WarnOnce::new();

/// Frames of this execution the worker could not read; the client is told in the final event.
#[derive(Debug, Default)]
pub(super) struct LostFrames {
    count: u64,
    first_reason: Option<String>,
}

impl Run<'_> {
    /// Counts a frame that could not be read: its output (if it was output) is gone.
    pub(super) fn frame_lost(&mut self, reason: String) {
        tracing::warn!(execution = %self.job.id, %reason, "a frame of this execution was lost");
        self.runtime.stats.outputs_dropped.fetch_add(1, Relaxed);
        self.lost.count += 1;
        self.lost.first_reason.get_or_insert(reason);
    }

    /// A result or a code error becomes `OutputLost` when frames were lost, so a client never takes
    /// incomplete output for complete; other final events already say the output ended early.
    fn report_lost_frames(&self, body: EventBody) -> EventBody {
        let ended_with = match &body {
            EventBody::Result { .. } if self.lost.count > 0 => "a result".to_owned(),
            EventBody::Error { ename, .. } if self.lost.count > 0 => ename.clone(),
            _ => return body,
        };
        EventBody::Error {
            ename: "OutputLost".into(),
            evalue: format!(
                "{} frame(s) from the interpreter could not be read ({}); the output of this \
                 execution is incomplete. The code ended with {ended_with}.",
                self.lost.count,
                self.lost.first_reason.as_deref().unwrap_or("unknown"),
            ),
            traceback: Vec::new(),
        }
    }

    /// Settles what the execution left behind, waits for the client to drain, and ends it.
    pub(super) async fn conclude(&self, final_body: EventBody) {
        let runtime = self.runtime;
        let id = &self.job.id;
        let cancelled_promises = runtime.bridge.cancel_execution(id).await;
        if cancelled_promises > 0 {
            tracing::debug!(execution = %id, cancelled_promises, "cancelled promises of a finished execution");
        }
        let final_body = self.report_lost_frames(final_body);
        let final_body = if matches!(final_body, EventBody::OutputDrainTimeout { .. }) {
            final_body
        } else {
            match timeout(runtime.config.drain_timeout(), self.job.queue.drained()).await {
                Ok(()) => final_body,
                Err(_) => self.drain_timeout_body(),
            }
        };
        self.finish(final_body);
    }

    /// Sends the final event, then counts the outcome and traces it.
    fn finish(&self, body: EventBody) {
        let runtime = self.runtime;
        let (outcome, trace_kind) = match &body {
            EventBody::Result { .. } => (Outcome::Ok, TraceEventKind::Result),
            EventBody::Cancelled { .. } => (Outcome::Cancelled, TraceEventKind::CancelEffective),
            EventBody::TimedOut { .. } => (Outcome::TimedOut, TraceEventKind::CancelEffective),
            _ => (Outcome::Error, TraceEventKind::Error),
        };
        runtime.stats.record_outcome(outcome);
        if outcome == Outcome::Cancelled && self.job.control.cancelled_by_api.load(Relaxed) {
            runtime.stats.cancels_effective.fetch_add(1, Relaxed);
        }
        let ename = match &body {
            EventBody::Error { ename, .. } => Some(ename.clone()),
            _ => None,
        };
        if self.rolled_back {
            runtime.stats.transactions_rolled_back.fetch_add(1, Relaxed);
        }
        let mut final_event = self.event(body);
        final_event.rolled_back = self.rolled_back;
        // The client's final event first; the trace event is built off its path.
        self.job.queue.finish(final_event);
        let mut event = self
            .trace(trace_kind)
            .with_attribute("outcome", format!("{outcome:?}"));
        if self.job.transaction {
            event = event.with_attribute("rolledBack", self.rolled_back);
            if self.rollback_skipped > 0 {
                event = event.with_attribute("rollbackSkipped", self.rollback_skipped);
                ROLLBACK_SKIPPED.warn(|| {
                    tracing::warn!(
                        skipped = self.rollback_skipped,
                        "a rollback could not restore the contents of some values (they cannot be \
                         copied, e.g. locks or files); their names were restored (warned once)"
                    )
                });
            }
        }
        if let Some(ename) = ename {
            event = event.with_attribute("ename", ename);
        }
        runtime.trace.send(event);
        tracing::debug!(execution = %self.job.id, ?outcome, "execution finished");
    }
}
