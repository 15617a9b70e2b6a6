//! Where interpreters come from: each one is started and warmed (warm-up code run) before it
//! serves, and the next one waits ready in the background, so a reset (a session released with
//! `Reset`) or a crash swaps in a fresh process at once instead of clearing the old one's names.
//! Nothing a session leaves in a process (patched builtins, threads, imported modules, files in
//! its working directory) reaches the next session.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::error::{Error, Result};
use crate::interpreter::{DriverEvent, FromDriver, Interpreter, ToDriver};
use crate::runtime::Runtime;
use crate::warn_once::WarnOnce;
use crate::workdir::WorkDir;
use capsule_protocol::heartbeat::WarmupFailure;

static DUMPABLE_INTERPRETER: WarnOnce = WarnOnce::new();

/// How long a fresh interpreter may take to say it is ready (warm-up excluded).
pub const INTERPRETER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait between attempts to start an interpreter that keeps failing.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// An interpreter that said it is ready and ran the warm-up code, not yet serving.
#[derive(Debug)]
pub struct Warmed {
    interpreter: Interpreter,
    python_version: String,
    namespace_size: u64,
}

/// The interpreter waiting to serve next (none when `CAPSULE_STANDBY_INTERPRETER` is false).
#[derive(Debug, Default)]
pub struct Standby {
    next: Option<JoinHandle<Warmed>>,
    /// Turns true once the standby made itself non-dumpable (its `ready` frame): before that, code
    /// of the same uid could attach to it, so no execution starts until then.
    protected: Option<watch::Receiver<bool>>,
}

impl Standby {
    /// The next interpreter, made the active one. Waits only when no standby is ready yet, and
    /// then reports the worker not ready meanwhile; a new standby starts behind it.
    pub async fn next(&mut self, runtime: &Arc<Runtime>) -> Interpreter {
        let started = Instant::now();
        let warmed = match self.next.take() {
            Some(task) => {
                if !task.is_finished() {
                    runtime.ready.store(false, Relaxed);
                }
                match task.await {
                    Ok(warmed) => warmed,
                    Err(_) => start_until_ready(runtime, None).await,
                }
            }
            None => {
                runtime.ready.store(false, Relaxed);
                start_until_ready(runtime, None).await
            }
        };
        runtime.standby_pid.store(0, Relaxed);
        let interpreter = activate(runtime, warmed).await;
        tracing::debug!(
            swap_ms = started.elapsed().as_millis() as u64,
            "interpreter activated"
        );
        if runtime.config.standby_interpreter {
            let runtime = runtime.clone();
            let (protected, watch_protected) = watch::channel(false);
            self.protected = Some(watch_protected);
            self.next = Some(tokio::spawn(async move {
                let warmed = start_until_ready(&runtime, Some(&protected)).await;
                runtime.standby_pid.store(warmed.interpreter.pid(), Relaxed);
                warmed
            }));
        }
        interpreter
    }

    /// Waits (at most the start timeout) until a starting standby can no longer be attached to,
    /// so session code never runs beside an unprotected standby. Immediate once it is; a standby
    /// that cannot start is waited for once, not before every execution.
    pub async fn wait_protected(&mut self) {
        let Some(protected) = self.protected.as_mut() else {
            return;
        };
        if *protected.borrow() {
            return;
        }
        if timeout(INTERPRETER_START_TIMEOUT, protected.wait_for(|p| *p))
            .await
            .is_err()
        {
            tracing::warn!(
                "the standby interpreter has not started; executions go on without waiting for it"
            );
            self.protected = None;
        }
    }
}

async fn activate(runtime: &Runtime, warmed: Warmed) -> Interpreter {
    let Warmed {
        mut interpreter,
        python_version,
        namespace_size,
    } = warmed;
    let session_dir = WorkDir::create(
        &runtime.config.scratch_dir(),
        runtime.fork_server.is_remote(),
    );
    match session_dir {
        Ok(dir) => {
            if let Err(error) = interpreter.activate(&runtime.writer, dir).await {
                tracing::error!(%error, "the interpreter did not take its session directory");
            }
        }
        Err(error) => {
            interpreter.activate_in_place(&runtime.writer).await;
            tracing::error!(%error, "no session directory: the interpreter keeps its warm-up directory");
        }
    }
    *runtime
        .python_version
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = python_version;
    runtime.stats.namespace_size.store(namespace_size, Relaxed);
    runtime.interpreter_pid.store(interpreter.pid(), Relaxed);
    if !runtime.ready.swap(true, Relaxed) {
        runtime.became_ready.notify_one();
    }
    tracing::info!(pid = interpreter.pid(), python = %runtime.python_version(), "interpreter ready");
    interpreter
}

/// Starts an interpreter, retrying with backoff until one is up and warm; `protected` turns true
/// once its driver made itself non-dumpable. While the warm-up code raises, heartbeats say so
/// (the operator replaces the worker and reports the error on the pool).
async fn start_until_ready(
    runtime: &Arc<Runtime>,
    protected: Option<&watch::Sender<bool>>,
) -> Warmed {
    let mut backoff = Duration::from_millis(200);
    loop {
        match start_interpreter(runtime, protected).await {
            Ok(warmed) => {
                *runtime
                    .warmup_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                return warmed;
            }
            Err(Error::WarmupFailed { ename, evalue }) => {
                let attempts = record_warmup_failure(runtime, &ename, &evalue);
                tracing::error!(%ename, attempts, retry_in_ms = backoff.as_millis() as u64, "the warm-up code raised; the worker stays not ready");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
            }
            Err(error) => {
                tracing::error!(%error, retry_in_ms = backoff.as_millis() as u64, "interpreter failed to start");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
            }
        }
    }
}

/// Notes one more failed warm-up for the heartbeat; returns how many failed in a row.
fn record_warmup_failure(runtime: &Runtime, ename: &str, evalue: &str) -> u64 {
    let mut failure = runtime
        .warmup_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let attempts = failure.as_ref().map_or(0, |f| f.attempts) + 1;
    *failure = Some(WarmupFailure::new(ename, evalue, attempts));
    attempts
}

async fn start_interpreter(
    runtime: &Arc<Runtime>,
    protected: Option<&watch::Sender<bool>>,
) -> Result<Warmed> {
    let workdir = WorkDir::create(
        &runtime.config.scratch_dir(),
        runtime.fork_server.is_remote(),
    )?;
    let mut interpreter =
        Interpreter::start(&runtime.fork_server, workdir, runtime.checkpoints.clone()).await?;
    let python_version = loop {
        match timeout(INTERPRETER_START_TIMEOUT, interpreter.events.recv()).await {
            Ok(Some(DriverEvent::Message(FromDriver::Protected { ok }))) => {
                if !ok {
                    DUMPABLE_INTERPRETER.warn(|| {
                        tracing::warn!("the interpreter could not make itself non-dumpable (no ctypes?): code of an earlier session could inspect the standby")
                    });
                }
                if let Some(protected) = protected {
                    protected.send_replace(true);
                }
            }
            Ok(Some(DriverEvent::Message(FromDriver::Ready { python_version }))) => {
                break python_version
            }
            Ok(_) => {
                interpreter.kill(None).await;
                return Err(Error::InterpreterGone);
            }
            Err(_) => {
                interpreter.kill(None).await;
                return Err(Error::InterpreterTimeout);
            }
        }
    };
    let namespace_size = match runtime.config.warmup_code.as_deref() {
        Some(code) => warm_up(&mut interpreter, code).await?,
        None => 0,
    };
    Ok(Warmed {
        interpreter,
        python_version,
        namespace_size,
    })
}

/// Runs the warm-up code; `input()` and promises are refused. Returns the namespace size, or
/// [`Error::WarmupFailed`] when the code raised.
async fn warm_up(interpreter: &mut Interpreter, code: &str) -> Result<u64> {
    let started = Instant::now();
    interpreter
        .send_direct(&ToDriver::Execute {
            id: "warmup",
            code,
            transaction: false,
        })
        .await?;
    loop {
        match interpreter.events.recv().await {
            Some(DriverEvent::Message(FromDriver::Result { namespace_size, .. })) => {
                tracing::info!(
                    duration_ms = started.elapsed().as_millis() as u64,
                    "warm-up code done"
                );
                return Ok(namespace_size);
            }
            Some(DriverEvent::Message(FromDriver::Error { ename, evalue, .. })) => {
                return Err(Error::WarmupFailed { ename, evalue });
            }
            Some(DriverEvent::Message(FromDriver::InputRequest { input_id, .. })) => {
                refuse(
                    interpreter,
                    &input_id,
                    "input() is not available during warm-up",
                )
                .await
            }
            Some(DriverEvent::Message(FromDriver::PromiseCreate { promise_id, .. })) => {
                refuse(
                    interpreter,
                    &promise_id,
                    "promises are not available during warm-up",
                )
                .await
            }
            Some(DriverEvent::Message(_))
            | Some(DriverEvent::Output { .. })
            | Some(DriverEvent::FrameLost { .. }) => {}
            Some(DriverEvent::Exited) | None => return Err(Error::InterpreterGone),
        }
    }
}

async fn refuse(interpreter: &mut Interpreter, id: &str, reason: &str) {
    let message = ToDriver::Settle {
        promise_id: id,
        ok: false,
        value: &serde_json::Value::Null,
        kind: "rejected",
        reason,
    };
    if let Err(error) = interpreter.send_direct(&message).await {
        tracing::debug!(%error, "could not refuse a warm-up promise: interpreter gone");
    }
}
