//! The executor: one execution at a time on the supervised interpreter, others waiting in a bounded
//! queue; cancellation, timeouts, interpreter restarts and the output pump of each execution.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::bridge::{CreateError, PromiseKind, PromiseOrigin};
use crate::checkpoint::{self, auto::AutoCheckpoint};
use crate::error::{Error, Result};
use crate::interpreter::{DriverEvent, FromDriver, Interpreter, ToDriver};
use crate::output_queue::{OutputQueue, PushRefused, Queued};
use crate::runtime::Runtime;
use crate::standby::Standby;
use crate::stats::Outcome;
use crate::warn_once::WarnOnce;
use capsule_protocol::checkpoint::{CheckpointCreated, CheckpointRestored};
use capsule_protocol::execute::{EventBody, ExecuteRequest, ExecutionEvent};
use capsule_protocol::trace::{TraceEvent, TraceEventKind};

static STRAY_FRAME: WarnOnce = WarnOnce::new();
static BLOCKING_CALL: WarnOnce = WarnOnce::new();
static ROLLBACK_SKIPPED: WarnOnce = WarnOnce::new();

/// Cancellation state of one queued or running execution.
#[derive(Debug)]
pub struct ExecutionControl {
    cancel: CancellationToken,
    cancelled_by_api: AtomicBool,
}

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    QueueFull { limit: usize },
}

#[derive(Debug)]
struct Job {
    id: String,
    control: Arc<ExecutionControl>,
    code: String,
    timeout: Option<Duration>,
    /// `transaction: rollbackOnError` was asked for.
    transaction: bool,
    traceparent: Option<String>,
    session: Option<String>,
    queue: Arc<OutputQueue>,
    submitted: Instant,
}

#[derive(Debug)]
pub enum Work {
    Execute(Box<JobBox>),
    Reset(oneshot::Sender<Result<u64>>),
    /// `POST /v1/checkpoints` and `.../{id}/restore`: run between executions (see checkpoint).
    Checkpoint(CheckpointWork),
}

/// A checkpoint call waiting its turn on the executor.
#[derive(Debug)]
pub enum CheckpointWork {
    Create(oneshot::Sender<Result<CheckpointCreated>>),
    Restore(String, oneshot::Sender<Result<CheckpointRestored>>),
}

/// Opaque wrapper so `Work` stays small in the channel.
#[derive(Debug)]
pub struct JobBox(Job);

/// The API's handle on the executor.
#[derive(Debug)]
pub struct ExecutorHandle {
    jobs: mpsc::Sender<Work>,
    limit: usize,
    registry: Mutex<HashMap<String, Arc<ExecutionControl>>>,
    active: AtomicUsize,
}

fn new_execution_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    hex::encode(bytes)
}

impl ExecutorHandle {
    pub fn new(limit: usize) -> (Self, mpsc::Receiver<Work>) {
        let (jobs, rx) = mpsc::channel(limit.max(1));
        (
            ExecutorHandle {
                jobs,
                limit,
                registry: Mutex::new(HashMap::new()),
                active: AtomicUsize::new(0),
            },
            rx,
        )
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<String, Arc<ExecutionControl>>> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Executions queued or running.
    pub fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    /// Queues an execution; its events flow through the returned queue.
    pub fn submit(
        &self,
        runtime: &Runtime,
        request: ExecuteRequest,
        traceparent: Option<String>,
    ) -> Result<(String, Arc<OutputQueue>), SubmitError> {
        let id = new_execution_id();
        let queue = OutputQueue::new(
            runtime.config.output_queue_capacity as usize,
            runtime.config.backpressure,
            runtime.stats.clone(),
        );
        let control = Arc::new(ExecutionControl {
            cancel: CancellationToken::new(),
            cancelled_by_api: AtomicBool::new(false),
        });
        let session = runtime.session.session_name();
        let position = self.active() as u64;
        let _ = queue.push_control(ExecutionEvent {
            execution_id: id.clone(),
            rolled_back: false,
            body: EventBody::Accepted {
                queue_position: position,
            },
        });
        let mut submit_event = TraceEvent::new(TraceEventKind::Submit, &id, session.as_deref())
            .with_traceparent(traceparent.as_deref())
            .with_attribute("codeBytes", request.code.len())
            .with_attribute("queuePosition", position)
            .with_attribute("transaction", request.transaction.is_some());
        for (key, value) in request.metadata.iter().take(4) {
            submit_event = submit_event.with_attribute(&format!("meta.{key}"), value);
        }
        self.registry().insert(id.clone(), control.clone());
        self.active.fetch_add(1, Relaxed);
        let job = Job {
            id: id.clone(),
            control,
            code: request.code,
            timeout: request.timeout_ms.map(Duration::from_millis),
            transaction: request.transaction.is_some(),
            traceparent,
            session,
            queue: queue.clone(),
            submitted: Instant::now(),
        };
        if self
            .jobs
            .try_send(Work::Execute(Box::new(JobBox(job))))
            .is_err()
        {
            self.registry().remove(&id);
            self.active.fetch_sub(1, Relaxed);
            return Err(SubmitError::QueueFull { limit: self.limit });
        }
        runtime.trace.send(submit_event);
        Ok((id, queue))
    }

    /// Requests the cancel of a queued or running execution; false when there is none.
    pub fn cancel(&self, id: &str) -> bool {
        match self.registry().get(id) {
            Some(control) => {
                control.cancelled_by_api.store(true, Relaxed);
                control.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Resets the namespace once the executions queued before it are done.
    pub async fn reset(&self, wait_for_room: bool) -> Result<u64, ResetError> {
        let (tx, rx) = oneshot::channel();
        if wait_for_room {
            self.jobs
                .send(Work::Reset(tx))
                .await
                .map_err(|_| ResetError::Stopped)?;
        } else {
            self.jobs.try_send(Work::Reset(tx)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ResetError::QueueFull { limit: self.limit },
                mpsc::error::TrySendError::Closed(_) => ResetError::Stopped,
            })?;
        }
        match rx.await {
            Ok(Ok(size)) => Ok(size),
            Ok(Err(error)) => Err(ResetError::Failed(error.to_string())),
            Err(_) => Err(ResetError::Stopped),
        }
    }

    /// Queues a checkpoint call; refused while an execution is queued or running, so a
    /// checkpoint never waits behind (or is taken under) running code.
    pub fn checkpoint(&self, work: CheckpointWork) -> Result<()> {
        if self.active() > 0 {
            return Err(Error::CheckpointBusy);
        }
        self.jobs
            .try_send(Work::Checkpoint(work))
            .map_err(|_| Error::CheckpointBusy)
    }

    fn finished(&self, id: &str) {
        self.registry().remove(id);
        self.active.fetch_sub(1, Relaxed);
    }
}

/// Why a reset did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetError {
    QueueFull { limit: usize },
    Stopped,
    Failed(String),
}

/// The executor task: owns the interpreter for the life of the process.
pub async fn run(runtime: Arc<Runtime>, mut jobs: mpsc::Receiver<Work>) {
    let mut standby = Standby::default();
    let mut interpreter = standby.next(&runtime).await;
    let mut auto = AutoCheckpoint::new(&runtime.config);
    loop {
        tokio::select! {
            work = jobs.recv() => match work {
                None => break,
                Some(Work::Execute(job)) => {
                    standby.wait_protected().await;
                    let before = runtime.stats.ok.load(Relaxed);
                    let started = Instant::now();
                    interpreter = run_execution(&runtime, job.0, interpreter, &mut standby).await;
                    let ok = runtime.stats.ok.load(Relaxed) > before;
                    if auto.after_execution(ok, started.elapsed()) {
                        interpreter = auto.checkpoint(&runtime, interpreter, &mut standby, "slowExecution").await;
                    }
                }
                Some(Work::Reset(done)) => {
                    interpreter = run_reset(&runtime, interpreter, &mut standby, done).await;
                    auto.saved();
                }
                Some(Work::Checkpoint(work)) => {
                    interpreter = run_checkpoint(&runtime, interpreter, &mut standby, work, &mut auto).await;
                }
            },
            _ = auto.idle_due(), if auto.idle_pending() => {
                interpreter = auto.checkpoint(&runtime, interpreter, &mut standby, "idle").await;
            },
            event = interpreter.events.recv() => match event {
                Some(DriverEvent::Message(message)) => note_stray(&runtime, message),
                Some(DriverEvent::Output { .. }) | Some(DriverEvent::FrameLost { .. }) => STRAY_FRAME.warn(|| {
                    tracing::debug!("discarded interpreter output produced outside any execution")
                }),
                Some(DriverEvent::Exited) | None => {
                    let exit_code = interpreter.reap(&runtime.writer).await;
                    tracing::warn!(?exit_code, "interpreter exited while idle; restarting, namespace lost");
                    runtime.namespace_lost.store(true, Relaxed);
                    interpreter = restart(&runtime, &mut standby).await;
                }
            }
        }
    }
}

fn note_stray(runtime: &Runtime, message: FromDriver) {
    match message {
        FromDriver::DriverError { message } => {
            tracing::warn!(%message, "interpreter driver reported an error")
        }
        FromDriver::Result { namespace_size, .. } | FromDriver::Error { namespace_size, .. } => {
            runtime.stats.namespace_size.store(namespace_size, Relaxed)
        }
        _ => STRAY_FRAME.warn(|| {
            tracing::debug!("discarded interpreter output produced outside any execution")
        }),
    }
}

/// A crash: the standby takes over (the namespace is lost, and counted as a restart).
async fn restart(runtime: &Arc<Runtime>, standby: &mut Standby) -> Interpreter {
    runtime.stats.interpreter_restarts.fetch_add(1, Relaxed);
    runtime.stats.namespace_size.store(0, Relaxed);
    standby.next(runtime).await
}

/// A reset swaps in the warmed standby; the old process and everything it started is killed.
async fn run_reset(
    runtime: &Arc<Runtime>,
    interpreter: Interpreter,
    standby: &mut Standby,
    done: oneshot::Sender<Result<u64>>,
) -> Interpreter {
    let started = Instant::now();
    // Killed first: no code of the old session runs beside the next one or sees its directory.
    interpreter.kill(Some(&runtime.writer)).await;
    runtime.fork_server.sweep().await;
    let next = standby.next(runtime).await;
    let swap_us = started.elapsed().as_micros() as u64;
    tracing::info!(swap_us, "namespace reset: a fresh interpreter took over");
    let _ = done.send(Ok(runtime.stats.namespace_size.load(Relaxed)));
    next
}

async fn run_checkpoint(
    runtime: &Arc<Runtime>,
    interpreter: Interpreter,
    standby: &mut Standby,
    work: CheckpointWork,
    auto: &mut AutoCheckpoint,
) -> Interpreter {
    match work {
        CheckpointWork::Create(done) => {
            let (interpreter, result) = checkpoint::create(runtime, interpreter, standby).await;
            if result.is_ok() {
                auto.saved();
            }
            let _ = done.send(result);
            interpreter
        }
        CheckpointWork::Restore(id, done) => {
            let (interpreter, result) =
                checkpoint::restore(runtime, interpreter, standby, &id).await;
            auto.saved();
            let _ = done.send(result);
            interpreter
        }
    }
}

/// Why the worker is ending an execution early.
#[derive(Debug, Clone)]
enum Stop {
    Cancelled,
    TimedOut(u64),
    /// The worker failed the execution with this final event (queue full, drain timeout).
    Failed(EventBody),
}

struct Run<'a> {
    runtime: &'a Arc<Runtime>,
    job: Job,
    stop: Option<Stop>,
    grace_deadline: Option<tokio::time::Instant>,
    lost: LostFrames,
    /// The driver put the namespace back (a transaction that did not succeed).
    rolled_back: bool,
    /// Reached values the rollback could not restore the contents of.
    rollback_skipped: u64,
}

/// Frames of this execution the worker could not read; the client is told in the final event.
#[derive(Debug, Default)]
struct LostFrames {
    count: u64,
    first_reason: Option<String>,
}

impl Run<'_> {
    fn event(&self, body: EventBody) -> ExecutionEvent {
        ExecutionEvent {
            execution_id: self.job.id.clone(),
            rolled_back: false,
            body,
        }
    }

    fn trace(&self, kind: TraceEventKind) -> TraceEvent {
        TraceEvent::new(kind, &self.job.id, self.job.session.as_deref())
            .with_traceparent(self.job.traceparent.as_deref())
            .with_duration_ms(self.job.submitted.elapsed().as_millis() as u64)
    }

    /// Counts a frame that could not be read: its output (if it was output) is gone.
    fn frame_lost(&mut self, reason: String) {
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

    /// Asks the code to stop (KeyboardInterrupt) and arms the kill deadline.
    async fn request_stop(&mut self, stop: Stop) {
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

    /// Queues an output chunk under the policy; turns refusals into stops.
    async fn deliver_output(&mut self, event: Queued, bytes: usize) {
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

    fn drain_timeout_body(&self) -> EventBody {
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

    /// The final event for a driver-reported error.
    fn final_for_error(
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
    fn final_for_kill(&self) -> EventBody {
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

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn note_blocking_calls(runtime: &Runtime, calls: &[String]) {
    if calls.is_empty() {
        return;
    }
    runtime.stats.blocking_call_warnings.fetch_add(1, Relaxed);
    BLOCKING_CALL.warn(|| {
        tracing::warn!(
            calls = %calls.join(","),
            "async code calls a blocking function; it stalls the event loop (warned once)"
        )
    });
}

async fn run_execution(
    runtime: &Arc<Runtime>,
    job: Job,
    mut interpreter: Interpreter,
    standby: &mut Standby,
) -> Interpreter {
    let mut run = Run {
        runtime,
        job,
        stop: None,
        grace_deadline: None,
        lost: LostFrames::default(),
        rolled_back: false,
        rollback_skipped: 0,
    };
    let id = run.job.id.clone();
    let code = std::mem::take(&mut run.job.code);
    let exec_deadline = run.job.timeout.map(|t| tokio::time::Instant::now() + t);
    let started = Instant::now();

    let final_body = if run.job.control.cancel.is_cancelled()
        || run.job.queue.consumer_gone().is_cancelled()
    {
        EventBody::Cancelled {
            namespace_lost: false,
        }
    } else {
        let namespace_lost = runtime.namespace_lost.swap(false, Relaxed);
        let _ = run
            .job
            .queue
            .push_control(run.event(EventBody::Started { namespace_lost }));
        let sent = runtime
            .writer
            .send(&ToDriver::Execute {
                id: &id,
                code: &code,
                transaction: run.job.transaction,
            })
            .await;
        drop(code);
        if let Err(error) = sent {
            tracing::error!(%error, "could not send code to the interpreter");
        }
        loop {
            let cancel = run.job.control.cancel.clone();
            let consumer_gone = run.job.queue.consumer_gone().clone();
            let stopping = run.stop.is_some();
            tokio::select! {
                event = interpreter.events.recv() => match event {
                    Some(DriverEvent::Output { stream, text }) => {
                        let bytes = text.get().len();
                        run.deliver_output(Queued::RawOutput { stream, text }, bytes).await;
                    }
                    Some(DriverEvent::Message(message)) => match message {
                        FromDriver::Output { stream, text, .. } => {
                            let bytes = text.len();
                            run.deliver_output(run.event(EventBody::Output { stream, text }).into(), bytes).await;
                        }
                        FromDriver::InputRequest { input_id, prompt, .. } => {
                            let timeout_ms = runtime.config.input_timeout_ms;
                            match create_promise(&run, &input_id, PromiseKind::Input, timeout_ms) {
                                Ok(()) => {
                                    let _ = run.job.queue.push_control(run.event(EventBody::InputRequest {
                                        input_id, prompt, timeout_ms,
                                    }));
                                }
                                Err(reason) => runtime.bridge.refuse(&input_id, reason).await,
                            }
                        }
                        FromDriver::PromiseCreate { promise_id, timeout_ms, .. } => {
                            let timeout_ms = timeout_ms.unwrap_or(runtime.config.promise_timeout_ms);
                            if let Err(reason) = create_promise(&run, &promise_id, PromiseKind::Promise, timeout_ms) {
                                runtime.bridge.refuse(&promise_id, reason).await;
                            }
                        }
                        FromDriver::Result { id: Some(ref frame_id), repr, mode, blocking_calls, namespace_size } if *frame_id == id => {
                            runtime.stats.namespace_size.store(namespace_size, Relaxed);
                            runtime.stats.record_mode(mode);
                            note_blocking_calls(runtime, &blocking_calls);
                            break match &run.stop {
                                Some(Stop::Failed(body)) => body.clone(),
                                _ => EventBody::Result { repr, mode, duration_ms: started.elapsed().as_millis() as u64 },
                            };
                        }
                        FromDriver::Error { id: Some(ref frame_id), ename, evalue, traceback, mode, blocking_calls, interrupted, namespace_size, rolled_back, rollback_skipped } if *frame_id == id => {
                            runtime.stats.namespace_size.store(namespace_size, Relaxed);
                            run.rolled_back = rolled_back;
                            run.rollback_skipped = rollback_skipped;
                            runtime.stats.record_mode(mode);
                            note_blocking_calls(runtime, &blocking_calls);
                            break run.final_for_error(ename, evalue, traceback, interrupted);
                        }
                        FromDriver::DriverError { message } => run.frame_lost(message),
                        other => note_stray(runtime, other),
                    },
                    Some(DriverEvent::FrameLost { reason }) => run.frame_lost(reason),
                    Some(DriverEvent::Exited) | None => {
                        let exit_code = interpreter.reap(&runtime.writer).await;
                        tracing::warn!(?exit_code, execution = %id, "interpreter died during an execution; restarting, namespace lost");
                        interpreter = restart(runtime, standby).await;
                        break EventBody::InterpreterRestarted {
                            exit_code,
                            reason: "the interpreter exited during the execution; it was restarted and the namespace is lost".into(),
                        };
                    }
                },
                _ = cancel.cancelled(), if !stopping => run.request_stop(Stop::Cancelled).await,
                _ = consumer_gone.cancelled(), if !stopping => run.request_stop(Stop::Cancelled).await,
                _ = sleep_until_opt(exec_deadline), if !stopping => {
                    let ms = run.job.timeout.map(|t| t.as_millis() as u64).unwrap_or_default();
                    run.request_stop(Stop::TimedOut(ms)).await;
                }
                _ = sleep_until_opt(run.grace_deadline), if stopping => {
                    tracing::warn!(execution = %id, "interrupt had no effect within the grace period; killing the interpreter");
                    runtime.stats.killed.fetch_add(1, Relaxed);
                    interpreter.kill(Some(&runtime.writer)).await;
                    interpreter = restart(runtime, standby).await;
                    break run.final_for_kill();
                }
            }
        }
    };

    let cancelled_promises = runtime.bridge.cancel_execution(&id).await;
    if cancelled_promises > 0 {
        tracing::debug!(execution = %id, cancelled_promises, "cancelled promises of a finished execution");
    }
    let final_body = run.report_lost_frames(final_body);
    let final_body = if matches!(final_body, EventBody::OutputDrainTimeout { .. }) {
        final_body
    } else {
        match timeout(runtime.config.drain_timeout(), run.job.queue.drained()).await {
            Ok(()) => final_body,
            Err(_) => run.drain_timeout_body(),
        }
    };
    finish(&run, final_body);
    runtime.executor.finished(&id);
    interpreter
}

fn create_promise(
    run: &Run<'_>,
    id: &str,
    kind: PromiseKind,
    timeout_ms: u64,
) -> Result<(), &'static str> {
    let origin = PromiseOrigin {
        execution_id: run.job.id.clone(),
        session: run.job.session.clone(),
        traceparent: run.job.traceparent.clone(),
    };
    run.runtime
        .bridge
        .create(id, kind, origin, Duration::from_millis(timeout_ms))
        .map_err(|error| match error {
            CreateError::Duplicate => "a promise with this id is already pending",
            CreateError::TooMany => "too many promises are pending",
        })
}

fn finish(run: &Run<'_>, body: EventBody) {
    let runtime = run.runtime;
    let (outcome, trace_kind) = match &body {
        EventBody::Result { .. } => (Outcome::Ok, TraceEventKind::Result),
        EventBody::Cancelled { .. } => (Outcome::Cancelled, TraceEventKind::CancelEffective),
        EventBody::TimedOut { .. } => (Outcome::TimedOut, TraceEventKind::CancelEffective),
        _ => (Outcome::Error, TraceEventKind::Error),
    };
    runtime.stats.record_outcome(outcome);
    if outcome == Outcome::Cancelled && run.job.control.cancelled_by_api.load(Relaxed) {
        runtime.stats.cancels_effective.fetch_add(1, Relaxed);
    }
    let ename = match &body {
        EventBody::Error { ename, .. } => Some(ename.clone()),
        _ => None,
    };
    if run.rolled_back {
        runtime.stats.transactions_rolled_back.fetch_add(1, Relaxed);
    }
    let mut final_event = run.event(body);
    final_event.rolled_back = run.rolled_back;
    // The client's final event first; the trace event is built off its path.
    run.job.queue.finish(final_event);
    let mut event = run
        .trace(trace_kind)
        .with_attribute("outcome", format!("{outcome:?}"));
    if run.job.transaction {
        event = event.with_attribute("rolledBack", run.rolled_back);
        if run.rollback_skipped > 0 {
            event = event.with_attribute("rollbackSkipped", run.rollback_skipped);
            ROLLBACK_SKIPPED.warn(|| {
                tracing::warn!(
                    skipped = run.rollback_skipped,
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
    tracing::debug!(execution = %run.job.id, ?outcome, "execution finished");
}
