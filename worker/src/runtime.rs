//! The worker's shared state: configuration, counters, session, bridge, executor handle.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::bridge::Bridge;
use crate::checkpoint::store::{CheckpointStore, DirStore};
use crate::config::Config;
use crate::executor::{self, ExecutorHandle};
use crate::fork_server::ForkServer;
use crate::interpreter::{CheckpointWaiters, DriverWriter};
use crate::session::{Precondition, SessionStore};
use crate::stats::Stats;
use crate::trace_sender::TraceSender;
use capsule_protocol::checkpoint::LastCheckpoint;
use capsule_protocol::execute::WorkerStats;
use capsule_protocol::heartbeat::{SessionBinding, WarmupFailure, WorkerState};
use capsule_protocol::trace::{session_trace_id, TraceEvent, TraceEventKind};

#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    pub stats: Arc<Stats>,
    pub bridge: Arc<Bridge>,
    pub trace: Arc<TraceSender>,
    pub session: SessionStore,
    pub writer: Arc<DriverWriter>,
    pub checkpoints: Arc<CheckpointWaiters>,
    /// Where every interpreter is forked from.
    pub fork_server: ForkServer,
    pub executor: ExecutorHandle,
    /// Interpreter up and warm-up done.
    pub ready: AtomicBool,
    /// Signalled once `ready` turns true: the heartbeat loop announces the worker at once rather
    /// than on its next interval, so a session waiting for a new worker gets it without delay.
    pub became_ready: tokio::sync::Notify,
    /// Asked to drain: no new executions, readiness false.
    pub draining: AtomicBool,
    /// The interpreter restarted outside an execution; the next `started` event says so.
    pub namespace_lost: AtomicBool,
    /// Pid of the current interpreter, 0 while none runs.
    pub interpreter_pid: AtomicU32,
    /// Pid of the warmed standby interpreter, 0 while none is ready.
    pub standby_pid: AtomicU32,
    pub python_version: Mutex<String>,
    /// The warm-up code's last failure, while it keeps failing.
    pub warmup_failure: Mutex<Option<WarmupFailure>>,
    /// Where checkpoints are kept; `None` when `CAPSULE_CHECKPOINT_DIR` is unset.
    pub checkpoint_store: Option<Arc<dyn CheckpointStore>>,
    /// The newest checkpoint this process wrote, for heartbeats and stats.
    pub last_checkpoint: Mutex<Option<LastCheckpoint>>,
    pub started_at: jiff::Timestamp,
}

impl Runtime {
    /// Builds the runtime and starts the executor (which starts the interpreter).
    pub fn start(config: Config) -> Arc<Runtime> {
        let trace = Arc::new(match &config.trace_socket {
            Some(path) => TraceSender::start(
                path.clone(),
                std::time::Duration::from_millis(config.trace_linger_ms),
            ),
            None => TraceSender::disabled(),
        });
        let writer = Arc::new(DriverWriter::default());
        let (executor, jobs) = ExecutorHandle::new(config.execution_queue_limit as usize);
        let runtime = Arc::new(Runtime {
            session: SessionStore::new(config.worker_token.as_deref()),
            stats: Arc::new(Stats::default()),
            bridge: Bridge::new(writer.clone(), trace.clone()),
            trace,
            writer,
            checkpoints: Arc::new(CheckpointWaiters::default()),
            fork_server: match &config.fork_server_socket {
                Some(socket) => ForkServer::listening(socket),
                None => ForkServer::spawning(&config.python),
            },
            executor,
            ready: AtomicBool::new(false),
            became_ready: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            namespace_lost: AtomicBool::new(false),
            interpreter_pid: AtomicU32::new(0),
            standby_pid: AtomicU32::new(0),
            python_version: Mutex::new(String::new()),
            warmup_failure: Mutex::new(None),
            checkpoint_store: config
                .checkpoint_dir
                .clone()
                .map(|dir| Arc::new(DirStore::new(dir)) as Arc<dyn CheckpointStore>),
            last_checkpoint: Mutex::new(None),
            started_at: jiff::Timestamp::now(),
            config,
        });
        tokio::spawn(executor::run(runtime.clone(), jobs));
        runtime
    }

    pub fn state(&self) -> WorkerState {
        if !self.ready.load(Relaxed) {
            WorkerState::Warming
        } else if self.executor.active() > 0 {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        }
    }

    /// Binds a session, and marks its start in the trace.
    pub fn bind_session(&self, binding: SessionBinding) -> Result<(), String> {
        self.bind_session_if(binding, Precondition::Always)
    }

    /// Binds a session when `precondition` holds, and marks its start in the trace.
    pub fn bind_session_if(
        &self,
        binding: SessionBinding,
        precondition: Precondition,
    ) -> Result<(), String> {
        let session = binding.session.clone();
        if self.session.bind_if(binding, precondition)? {
            self.trace.send(TraceEvent::new(
                TraceEventKind::SessionBound,
                &session_trace_id(&session),
                Some(&session),
            ));
        }
        Ok(())
    }

    /// Releases the session, marking its end in the trace; `reset` says a fresh interpreter
    /// follows.
    pub fn release_session(&self, reset: bool) -> Option<String> {
        self.release_session_if(reset, Precondition::Always)
    }

    /// Releases the session when `precondition` holds, as [`Runtime::release_session`].
    pub fn release_session_if(&self, reset: bool, precondition: Precondition) -> Option<String> {
        let released = self.session.release_if(precondition);
        if let Some(session) = &released {
            self.trace.send(
                TraceEvent::new(
                    TraceEventKind::SessionReleased,
                    &session_trace_id(session),
                    Some(session),
                )
                .with_attribute("reset", reset),
            );
        }
        released
    }

    pub fn python_version(&self) -> String {
        self.python_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The newest checkpoint this process wrote.
    pub fn last_checkpoint(&self) -> Option<LastCheckpoint> {
        self.last_checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every counter, as served by `GET /v1/stats`.
    pub fn worker_stats(&self) -> WorkerStats {
        WorkerStats {
            state: self.state(),
            session: self.session.session_name(),
            draining: self.draining.load(Relaxed),
            namespace_size: self.stats.namespace_size.load(Relaxed),
            interpreter_restarts: self.stats.interpreter_restarts.load(Relaxed),
            executions: self.stats.executions(),
            modes: self.stats.modes(),
            executor: self.stats.executor(),
            bridge: self.bridge.counters(),
            cancels: self.stats.cancels(),
            trace: self.trace.counters(),
            blocking_call_warnings: self.stats.blocking_call_warnings.load(Relaxed),
            transactions_rolled_back: self.stats.transactions_rolled_back.load(Relaxed),
            pending_promises: self.bridge.pending(),
            checkpoints_created: self.stats.checkpoints_created.load(Relaxed),
            checkpoints_restored: self.stats.checkpoints_restored.load(Relaxed),
            checkpoint_failures: self.stats.checkpoint_failures.load(Relaxed),
            last_checkpoint: self.last_checkpoint(),
        }
    }
}
