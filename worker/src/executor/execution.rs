//! One execution on the interpreter: the code is sent, then the driver's frames are pumped to the
//! client until a final event, while cancels, the timeout and a dying interpreter are watched.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::final_event::LostFrames;
use super::stop::Stop;
use super::task::{note_stray, restart};
use super::work::Job;
use crate::bridge::{CreateError, PromiseKind, PromiseOrigin};
use crate::interpreter::{DriverEvent, FromDriver, Interpreter, ToDriver};
use crate::output_queue::Queued;
use crate::runtime::Runtime;
use crate::standby::Standby;
use crate::warn_once::WarnOnce;
use capsule_protocol::execute::{EventBody, ExecutionEvent, ExecutionMode};
use capsule_protocol::trace::{TraceEvent, TraceEventKind};

static BLOCKING_CALL: WarnOnce = WarnOnce::new();

/// The state of the execution being run.
pub(super) struct Run<'a> {
    pub(super) runtime: &'a Arc<Runtime>,
    pub(super) job: Job,
    pub(super) stop: Option<Stop>,
    pub(super) grace_deadline: Option<tokio::time::Instant>,
    pub(super) lost: LostFrames,
    /// The driver put the namespace back (a transaction that did not succeed).
    pub(super) rolled_back: bool,
    /// Reached values the rollback could not restore the contents of.
    pub(super) rollback_skipped: u64,
    exec_deadline: Option<tokio::time::Instant>,
    started: Instant,
}

/// Runs one job to its final event and hands back the interpreter (a new one if it had to go).
pub(super) async fn run_execution(
    runtime: &Arc<Runtime>,
    job: Job,
    interpreter: Interpreter,
    standby: &mut Standby,
) -> Interpreter {
    let mut run = Run {
        runtime,
        exec_deadline: job.timeout.map(|t| tokio::time::Instant::now() + t),
        job,
        stop: None,
        grace_deadline: None,
        lost: LostFrames::default(),
        rolled_back: false,
        rollback_skipped: 0,
        started: Instant::now(),
    };
    let (final_body, interpreter) =
        if run.job.control.cancel.is_cancelled() || run.job.queue.consumer_gone().is_cancelled() {
            let cancelled = EventBody::Cancelled {
                namespace_lost: false,
            };
            (cancelled, interpreter)
        } else {
            run.send_code().await;
            run.pump(interpreter, standby).await
        };
    run.conclude(final_body).await;
    runtime.executor.finished(&run.job.id);
    interpreter
}

impl Run<'_> {
    pub(super) fn event(&self, body: EventBody) -> ExecutionEvent {
        ExecutionEvent {
            execution_id: self.job.id.clone(),
            rolled_back: false,
            output_dropped: 0,
            body,
        }
    }

    pub(super) fn trace(&self, kind: TraceEventKind) -> TraceEvent {
        TraceEvent::new(kind, &self.job.id, self.job.session.as_deref())
            .with_traceparent(self.job.traceparent.as_deref())
            .with_duration_ms(self.job.submitted.elapsed().as_millis() as u64)
    }

    /// Tells the client the execution started, then hands the code to the driver.
    async fn send_code(&mut self) {
        let code = std::mem::take(&mut self.job.code);
        let namespace_lost = self.runtime.namespace_lost.swap(false, Relaxed);
        let _ = self
            .job
            .queue
            .push_control(self.event(EventBody::Started { namespace_lost }));
        let sent = self
            .runtime
            .writer
            .send(&ToDriver::Execute {
                id: &self.job.id,
                code: &code,
                transaction: self.job.transaction,
            })
            .await;
        if let Err(error) = sent {
            tracing::error!(%error, "could not send code to the interpreter");
        }
    }

    /// Moves the driver's frames to the client until the execution ends one way or another.
    async fn pump(
        &mut self,
        mut interpreter: Interpreter,
        standby: &mut Standby,
    ) -> (EventBody, Interpreter) {
        loop {
            let cancel = self.job.control.cancel.clone();
            let consumer_gone = self.job.queue.consumer_gone().clone();
            let stopping = self.stop.is_some();
            tokio::select! {
                event = interpreter.events.recv() => match event {
                    Some(DriverEvent::Output { stream, text }) => {
                        let bytes = text.get().len();
                        self.deliver_output(Queued::RawOutput { stream, text }, bytes).await;
                    }
                    Some(DriverEvent::Message(message)) => {
                        if let Some(body) = self.on_message(message).await {
                            return (body, interpreter);
                        }
                    }
                    Some(DriverEvent::FrameLost { reason }) => self.frame_lost(reason),
                    Some(DriverEvent::Exited) | None => return self.interpreter_died(interpreter, standby).await,
                },
                _ = cancel.cancelled(), if !stopping => self.request_stop(Stop::Cancelled).await,
                _ = consumer_gone.cancelled(), if !stopping => self.request_stop(Stop::Cancelled).await,
                _ = sleep_until_opt(self.exec_deadline), if !stopping => {
                    let ms = self.job.timeout.map(|t| t.as_millis() as u64).unwrap_or_default();
                    self.request_stop(Stop::TimedOut(ms)).await;
                }
                _ = sleep_until_opt(self.grace_deadline), if stopping => {
                    return self.kill_unresponsive(interpreter, standby).await;
                }
            }
        }
    }

    /// Acts on one driver message; the final event when it ended the execution.
    async fn on_message(&mut self, message: FromDriver) -> Option<EventBody> {
        let runtime = self.runtime;
        match message {
            FromDriver::Output { stream, text, .. } => {
                let bytes = text.len();
                let event = self.event(EventBody::Output { stream, text });
                self.deliver_output(event.into(), bytes).await;
            }
            FromDriver::InputRequest {
                input_id, prompt, ..
            } => self.request_input(input_id, prompt).await,
            FromDriver::PromiseCreate {
                promise_id,
                timeout_ms,
                ..
            } => {
                let timeout_ms = timeout_ms.unwrap_or(runtime.config.promise_timeout_ms);
                if let Err(reason) =
                    self.create_promise(&promise_id, PromiseKind::Promise, timeout_ms)
                {
                    runtime.bridge.refuse(&promise_id, reason).await;
                }
            }
            FromDriver::Result {
                id: Some(ref frame_id),
                repr,
                mode,
                blocking_calls,
                namespace_size,
            } if *frame_id == self.job.id => {
                self.note_ended(namespace_size, mode, &blocking_calls);
                return Some(match &self.stop {
                    Some(Stop::Failed(body)) => body.clone(),
                    _ => EventBody::Result {
                        repr,
                        mode,
                        duration_ms: self.started.elapsed().as_millis() as u64,
                    },
                });
            }
            FromDriver::Error {
                id: Some(ref frame_id),
                ename,
                evalue,
                traceback,
                mode,
                blocking_calls,
                interrupted,
                namespace_size,
                rolled_back,
                rollback_skipped,
            } if *frame_id == self.job.id => {
                self.rolled_back = rolled_back;
                self.rollback_skipped = rollback_skipped;
                self.note_ended(namespace_size, mode, &blocking_calls);
                return Some(self.final_for_error(ename, evalue, traceback, interrupted));
            }
            FromDriver::DriverError { message } => self.frame_lost(message),
            other => note_stray(runtime, other),
        }
        None
    }

    /// Opens the input request as a promise and tells the client, or refuses it to the code.
    async fn request_input(&mut self, input_id: String, prompt: String) {
        let timeout_ms = self.runtime.config.input_timeout_ms;
        match self.create_promise(&input_id, PromiseKind::Input, timeout_ms) {
            Ok(()) => {
                let _ = self
                    .job
                    .queue
                    .push_control(self.event(EventBody::InputRequest {
                        input_id,
                        prompt,
                        timeout_ms,
                    }));
            }
            Err(reason) => self.runtime.bridge.refuse(&input_id, reason).await,
        }
    }

    fn create_promise(
        &self,
        id: &str,
        kind: PromiseKind,
        timeout_ms: u64,
    ) -> Result<(), &'static str> {
        let origin = PromiseOrigin {
            execution_id: self.job.id.clone(),
            session: self.job.session.clone(),
            traceparent: self.job.traceparent.clone(),
        };
        self.runtime
            .bridge
            .create(id, kind, origin, Duration::from_millis(timeout_ms))
            .map_err(|error| match error {
                CreateError::Duplicate => "a promise with this id is already pending",
                CreateError::TooMany => "too many promises are pending",
            })
    }

    /// Records what the driver reports with the code's end, whatever the outcome.
    fn note_ended(&self, namespace_size: u64, mode: ExecutionMode, blocking_calls: &[String]) {
        let stats = &self.runtime.stats;
        stats.namespace_size.store(namespace_size, Relaxed);
        stats.record_mode(mode);
        if blocking_calls.is_empty() {
            return;
        }
        stats.blocking_call_warnings.fetch_add(1, Relaxed);
        BLOCKING_CALL.warn(|| {
            tracing::warn!(
                calls = %blocking_calls.join(","),
                "async code calls a blocking function; it stalls the event loop (warned once)"
            )
        });
    }

    async fn interpreter_died(
        &self,
        interpreter: Interpreter,
        standby: &mut Standby,
    ) -> (EventBody, Interpreter) {
        let exit_code = interpreter.reap(&self.runtime.writer).await;
        tracing::warn!(?exit_code, execution = %self.job.id, "interpreter died during an execution; restarting, namespace lost");
        let interpreter = restart(self.runtime, standby).await;
        let body = EventBody::InterpreterRestarted {
            exit_code,
            reason: "the interpreter exited during the execution; it was restarted and the namespace is lost".into(),
        };
        (body, interpreter)
    }

    async fn kill_unresponsive(
        &self,
        interpreter: Interpreter,
        standby: &mut Standby,
    ) -> (EventBody, Interpreter) {
        tracing::warn!(execution = %self.job.id, "interrupt had no effect within the grace period; killing the interpreter");
        self.runtime.stats.killed.fetch_add(1, Relaxed);
        interpreter.kill(Some(&self.runtime.writer)).await;
        let interpreter = restart(self.runtime, standby).await;
        (self.final_for_kill(), interpreter)
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
