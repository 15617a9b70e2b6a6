//! Ending an execution early: why the worker stops it, the interrupt with its kill deadline, and
//! the final event each kind of stop turns into.

use std::sync::atomic::Ordering::Relaxed;

use super::execution::Run;
use crate::interpreter::ToDriver;
use capsule_protocol::execute::EventBody;
use capsule_protocol::trace::TraceEventKind;

/// Why the worker is ending an execution early.
#[derive(Debug, Clone)]
pub(super) enum Stop {
    Cancelled,
    TimedOut(u64),
    /// The worker failed the execution with this final event (queue full, drain timeout).
    Failed(EventBody),
}

impl Run<'_> {
    /// Asks the code to stop (KeyboardInterrupt) and arms the kill deadline.
    pub(super) async fn request_stop(&mut self, stop: Stop) {
        if self.stop.is_some() {
            return;
        }
        tracing::debug!(execution = %self.job.id, reason = ?stop, "interrupting execution");
        self.stop = Some(stop);
        self.runtime
            .trace
            .send(self.trace(TraceEventKind::Interrupt));
        let _ = self
            .runtime
            .writer
            .send(&ToDriver::Cancel { id: &self.job.id })
            .await;
        self.grace_deadline =
            Some(tokio::time::Instant::now() + self.runtime.config.cancel_grace());
    }

    /// The final event for a driver-reported error.
    pub(super) fn final_for_error(
        &self,
        ename: String,
        evalue: String,
        traceback: Vec<String>,
        interrupted: bool,
    ) -> EventBody {
        if interrupted {
            self.runtime.stats.interrupted.fetch_add(1, Relaxed);
        }
        match (&self.stop, interrupted) {
            (Some(Stop::Failed(body)), _) => body.clone(),
            (Some(Stop::Cancelled), true) => EventBody::Cancelled {
                namespace_lost: false,
            },
            (Some(Stop::TimedOut(ms)), true) => EventBody::TimedOut {
                timeout_ms: *ms,
                namespace_lost: false,
            },
            _ => EventBody::Error {
                ename,
                evalue,
                traceback,
            },
        }
    }

    /// The final event when the interpreter had to be killed.
    pub(super) fn final_for_kill(&self) -> EventBody {
        match &self.stop {
            Some(Stop::Failed(body)) => body.clone(),
            Some(Stop::TimedOut(ms)) => EventBody::TimedOut {
                timeout_ms: *ms,
                namespace_lost: true,
            },
            _ => EventBody::Cancelled {
                namespace_lost: true,
            },
        }
    }
}
