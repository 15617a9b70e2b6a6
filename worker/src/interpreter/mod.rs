//! One supervised interpreter, forked by the fork server, running the driver (`driver.py`, carried
//! in this binary), and the frame protocol between them. This file holds the process's life
//! (start, activation, kill, reap); the protocol's pieces live in the files beside it.
//!
//! A reader task turns the driver's frames into [`DriverEvent`]s on a bounded channel (so a slow
//! consumer slows the interpreter instead of growing memory); checkpoint replies, which the driver
//! answers from its reader thread even while code runs, go straight to their waiting request.
//! The interpreter's raw fds 1 and 2 (child processes, C extensions) are drained and discarded:
//! their bytes are user output that must never reach the logs.

mod checkpoint_waiters;
mod decode;
mod frame_buffer;
mod json_string;
mod messages;
mod reader;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::fork_server::{ForkServer, ProcessGroup};
use crate::workdir::WorkDir;
use reader::{discard_raw_output, read_frames};
use writer::write_observed;

pub use checkpoint_waiters::CheckpointWaiters;
pub use decode::{decode_driver_frame, DriverEvent};
pub use json_string::JsonString;
pub use messages::{CheckpointFrame, FromDriver, ToDriver};
pub use writer::DriverWriter;

/// Driver events buffered between the reader task and the executor.
pub const DRIVER_EVENT_CAPACITY: usize = 64;

/// How long a killed interpreter's exit is awaited before the worker moves on without its code.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// A running interpreter.
#[derive(Debug)]
pub struct Interpreter {
    /// Its pid (in the fork server's PID namespace), how its process group is killed and its
    /// directories removed.
    group: ProcessGroup,
    pub events: mpsc::Receiver<DriverEvent>,
    /// Its exit code, reported by the fork server; `None` once received.
    exit: Option<oneshot::Receiver<Option<i32>>>,
    /// Its frame input until [`Interpreter::activate`] hands it to the shared [`DriverWriter`].
    stdin: Option<pipe::Sender>,
    /// Its private working directories (warm-up, then session), removed once it is dropped.
    workdirs: Vec<WorkDir>,
}

impl Interpreter {
    /// Forks a fresh interpreter working in `workdir`, in a process group of its own and without
    /// the worker's `CAPSULE_*` settings. Its frames go to [`Interpreter::send_direct`] until it is
    /// activated.
    pub async fn start(
        fork_server: &ForkServer,
        mut workdir: WorkDir,
        checkpoints: Arc<CheckpointWaiters>,
    ) -> Result<Interpreter> {
        let forked = fork_server.fork(workdir.path()).await?;
        workdir.remove_through(forked.group.remote_link());
        tokio::spawn(discard_raw_output(forked.stderr));
        let (tx, events) = mpsc::channel(DRIVER_EVENT_CAPACITY);
        tokio::spawn(read_frames(forked.stdout, tx, checkpoints));
        Ok(Interpreter {
            group: forked.group,
            events,
            exit: Some(forked.exit),
            stdin: Some(forked.stdin),
            workdirs: vec![workdir],
        })
    }

    /// Its pid, in the fork server's PID namespace.
    pub fn pid(&self) -> u32 {
        self.group.pid
    }

    /// Its session working directory (the last one made), where checkpoint files are handed over.
    pub fn session_dir(&self) -> Option<&std::path::Path> {
        self.workdirs.last().map(WorkDir::path)
    }

    /// Sends a frame to an interpreter that is not active yet (its warm-up).
    pub async fn send_direct(&mut self, message: &ToDriver<'_>) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or(Error::InterpreterGone)?;
        write_observed(stdin, message).await
    }

    /// Makes this the interpreter that executions, the bridge and the API write to, working in
    /// `session_dir`. The previous one's input is closed, so its driver exits.
    pub async fn activate(
        &mut self,
        writer: &DriverWriter,
        mut session_dir: WorkDir,
    ) -> Result<()> {
        session_dir.remove_through(self.group.remote_link());
        writer.replace(self.stdin.take()).await;
        let dir = session_dir.path().to_string_lossy().into_owned();
        self.workdirs.push(session_dir);
        writer.send(&ToDriver::Enter { dir: &dir }).await
    }

    /// [`Interpreter::activate`] without a new directory (when none could be made).
    pub async fn activate_in_place(&mut self, writer: &DriverWriter) {
        writer.replace(self.stdin.take()).await;
    }

    /// Kills the process, and every process it started in its group, and returns its exit code.
    /// The active interpreter is detached from `writer` first.
    pub async fn kill(mut self, writer: Option<&DriverWriter>) -> Option<i32> {
        if let Some(writer) = writer {
            writer.replace(None).await;
        }
        self.kill_group();
        self.wait_exit().await.flatten()
    }

    /// Waits for the exit code of a process whose frame stream already ended.
    pub async fn reap(mut self, writer: &DriverWriter) -> Option<i32> {
        writer.replace(None).await;
        match self.wait_exit().await {
            Some(code) => {
                // Its leader is gone; children it left in its group go too.
                self.kill_group();
                code
            }
            None => self.kill(None).await,
        }
    }

    /// The exit code, once reported (`Some(None)`: killed by a signal, or the fork server that
    /// would report it is gone); `None` when it did not exit within [`EXIT_WAIT`].
    async fn wait_exit(&mut self) -> Option<Option<i32>> {
        let exit = self.exit.as_mut()?;
        let code = tokio::time::timeout(EXIT_WAIT, exit).await.ok()?;
        self.exit = None;
        Some(code.ok().flatten())
    }

    /// SIGKILL to the interpreter's process group: threads die with the process, and children it
    /// forked (which stay in the group unless they left it) die with it. The group id stays
    /// reserved while any member lives, so a call right after reaping the leader reaches only them.
    fn kill_group(&self) {
        self.group.kill();
    }
}

impl Drop for Interpreter {
    /// An interpreter nobody killed (a standby at shutdown) does not outlive its handle. One whose
    /// exit was seen is left alone: its pid may belong to another process by now.
    fn drop(&mut self) {
        if self.exit.is_some() {
            self.kill_group();
        }
    }
}
