//! The API's handle on the executor: queues work, tracks the executions queued or running (so they
//! can be cancelled by id), and refuses what does not fit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::work::{CheckpointWork, ExecutionControl, Job, JobBox, Work};
use crate::error::{Error, Result};
use crate::output_queue::OutputQueue;
use crate::runtime::Runtime;
use capsule_protocol::execute::{EventBody, ExecuteRequest, ExecutionEvent};
use capsule_protocol::trace::{TraceEvent, TraceEventKind};

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    QueueFull { limit: usize },
}

/// Why a reset did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetError {
    QueueFull { limit: usize },
    Stopped,
    Failed(String),
}

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

/// The `submit` trace event; built before the job is queued, sent only once it was.
fn submit_trace_event(
    id: &str,
    session: Option<&str>,
    traceparent: Option<&str>,
    request: &ExecuteRequest,
    position: u64,
) -> TraceEvent {
    let mut event = TraceEvent::new(TraceEventKind::Submit, id, session)
        .with_traceparent(traceparent)
        .with_attribute("codeBytes", request.code.len())
        .with_attribute("queuePosition", position)
        .with_attribute("transaction", request.transaction.is_some());
    for (key, value) in request.metadata.iter().take(4) {
        event = event.with_attribute(&format!("meta.{key}"), value);
    }
    event
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
            output_dropped: 0,
            body: EventBody::Accepted {
                queue_position: position,
            },
        });
        let submit_event = submit_trace_event(
            &id,
            session.as_deref(),
            traceparent.as_deref(),
            &request,
            position,
        );
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
            self.finished(&id);
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

    /// Forgets an execution that ended (or never got queued).
    pub(super) fn finished(&self, id: &str) {
        self.registry().remove(id);
        self.active.fetch_sub(1, Relaxed);
    }
}
