//! The executor task: owns the interpreter for the life of the process and takes the queued work
//! one item at a time, between which it checkpoints, swaps in the standby on resets and crashes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::execution::run_execution;
use super::work::{CheckpointWork, Work};
use crate::checkpoint::{self, auto::AutoCheckpoint};
use crate::error::Result;
use crate::interpreter::{DriverEvent, FromDriver, Interpreter};
use crate::runtime::Runtime;
use crate::standby::Standby;
use crate::warn_once::WarnOnce;

static STRAY_FRAME: WarnOnce = WarnOnce::new();

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
                Some(DriverEvent::Output { .. }) | Some(DriverEvent::FrameLost { .. }) => warn_stray_frame(),
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

fn warn_stray_frame() {
    STRAY_FRAME
        .warn(|| tracing::debug!("discarded interpreter output produced outside any execution"));
}

/// A driver message that belongs to no running execution.
pub(super) fn note_stray(runtime: &Runtime, message: FromDriver) {
    match message {
        FromDriver::DriverError { message } => {
            tracing::warn!(%message, "interpreter driver reported an error")
        }
        FromDriver::Result { namespace_size, .. } | FromDriver::Error { namespace_size, .. } => {
            runtime.stats.namespace_size.store(namespace_size, Relaxed)
        }
        _ => warn_stray_frame(),
    }
}

/// A crash: the standby takes over (the namespace is lost, and counted as a restart).
pub(super) async fn restart(runtime: &Arc<Runtime>, standby: &mut Standby) -> Interpreter {
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
    runtime
        .fork_server
        .sweep(&runtime.config.scratch_dir())
        .await;
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
