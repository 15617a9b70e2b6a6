//! What the API hands the executor task: executions, resets and checkpoint calls, each waiting its
//! turn in one queue so they never overlap on the interpreter.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::output_queue::OutputQueue;
use capsule_protocol::checkpoint::{CheckpointCreated, CheckpointRestored};

/// Cancellation state of one queued or running execution.
#[derive(Debug)]
pub(super) struct ExecutionControl {
    pub(super) cancel: CancellationToken,
    pub(super) cancelled_by_api: AtomicBool,
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) id: String,
    pub(super) control: Arc<ExecutionControl>,
    pub(super) code: String,
    pub(super) timeout: Option<Duration>,
    /// `transaction: rollbackOnError` was asked for.
    pub(super) transaction: bool,
    pub(super) traceparent: Option<String>,
    pub(super) session: Option<String>,
    pub(super) queue: Arc<OutputQueue>,
    pub(super) submitted: Instant,
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
pub struct JobBox(pub(super) Job);
