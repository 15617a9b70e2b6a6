//! One supervised interpreter, forked by the fork server, running the driver (`driver.py`, carried
//! in this binary), and the frame protocol between them.
//!
//! A reader task turns the driver's frames into [`DriverEvent`]s on a bounded channel (so a slow
//! consumer slows the interpreter instead of growing memory); checkpoint replies, which the driver
//! answers from its reader thread even while code runs, go straight to their waiting request.
//! The interpreter's raw fds 1 and 2 (child processes, C extensions) are drained and discarded:
//! their bytes are user output that must never reach the logs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::fork_server::ForkServer;
use crate::frame_observer::{self, Direction};
use crate::warn_once::WarnOnce;
use crate::workdir::WorkDir;
use capsule_protocol::checkpoint::SkippedName;
use capsule_protocol::execute::{ExecutionMode, NamespaceEntry, OutputStream};
use capsule_protocol::frame::{self, FrameError};

/// Driver events buffered between the reader task and the executor.
pub const DRIVER_EVENT_CAPACITY: usize = 64;

/// Worker → driver frames.
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ToDriver<'a> {
    Execute {
        id: &'a str,
        code: &'a str,
        /// Roll the namespace back when the code does not succeed (`transaction: rollbackOnError`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        transaction: bool,
    },
    Cancel {
        id: &'a str,
    },
    Settle {
        promise_id: &'a str,
        ok: bool,
        value: &'a serde_json::Value,
        kind: &'a str,
        reason: &'a str,
    },
    Checkpoint {
        request_id: u64,
        /// Also list the names (`GET /v1/namespace`), not only count them.
        list_names: bool,
    },
    /// Serve a session from `dir`: the driver makes it the working directory, `HOME` and `TMPDIR`.
    Enter {
        dir: &'a str,
    },
    /// Pickle and compress the namespace into the file at `path` (see worker/src/checkpoint).
    CheckpointSave {
        request_id: u64,
        path: &'a str,
    },
    /// Load the namespace from the (opened) checkpoint file at `path`, then delete it.
    CheckpointLoad {
        request_id: u64,
        path: &'a str,
    },
}

/// Namespace metadata the driver reports for `GET /v1/checkpoint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointFrame {
    pub names: u64,
    pub functions: u64,
    pub classes: u64,
    pub modules: u64,
    pub estimated_bytes: u64,
    pub unpicklable: u64,
    /// Present when the request asked for names; bounded again by the worker.
    #[serde(default)]
    pub entries: Vec<NamespaceEntry>,
    #[serde(default)]
    pub truncated: bool,
}

/// Driver → worker frames.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum FromDriver {
    /// The process is non-dumpable (`ok`), as it was from its fork on; sent before the driver starts.
    Protected {
        ok: bool,
    },
    Ready {
        python_version: String,
    },
    Output {
        id: Option<String>,
        stream: OutputStream,
        text: String,
    },
    InputRequest {
        id: Option<String>,
        input_id: String,
        prompt: String,
    },
    PromiseCreate {
        id: Option<String>,
        promise_id: String,
        timeout_ms: Option<u64>,
    },
    Result {
        id: Option<String>,
        repr: Option<String>,
        mode: ExecutionMode,
        #[serde(default)]
        blocking_calls: Vec<String>,
        namespace_size: u64,
    },
    Error {
        id: Option<String>,
        ename: String,
        evalue: String,
        traceback: Vec<String>,
        mode: ExecutionMode,
        #[serde(default)]
        blocking_calls: Vec<String>,
        interrupted: bool,
        namespace_size: u64,
        /// The execution ran in a transaction and the namespace was put back.
        #[serde(default)]
        rolled_back: bool,
        /// Reached values whose contents could not be backed up or restored (names still were).
        #[serde(default)]
        rollback_skipped: u64,
    },
    Checkpoint {
        request_id: u64,
        #[serde(flatten)]
        checkpoint: CheckpointFrame,
    },
    DriverError {
        message: String,
    },
    /// The namespace is in the file the worker named; lists bounded by the driver.
    CheckpointSaved {
        request_id: u64,
        raw_bytes: u64,
        names: Vec<String>,
        skipped: Vec<SkippedName>,
        skipped_total: u64,
    },
    CheckpointLoaded {
        request_id: u64,
        names: Vec<String>,
        namespace_size: u64,
    },
    /// Saving or loading failed as a whole (`stage` says where: decompress, unpickle, write...).
    CheckpointFailed {
        request_id: u64,
        stage: String,
        message: String,
    },
}

/// An output frame read without unescaping its text (the common, hot case).
#[derive(Debug, Deserialize)]
struct RawOutputFrame<'a> {
    stream: OutputStream,
    #[serde(borrow)]
    text: &'a RawValue,
}

/// Prefix the driver writes on every output frame.
const OUTPUT_FRAME_PREFIX: &[u8] = br#"{"type":"output","#;

/// What the reader task reports.
#[derive(Debug)]
pub enum DriverEvent {
    /// An output chunk whose text is still JSON-encoded, to be passed through to clients as is.
    Output {
        stream: OutputStream,
        text: Box<RawValue>,
    },
    Message(FromDriver),
    /// A frame from the driver could not be read (oversized or malformed) and was skipped whole;
    /// the executor fails the running execution with it, so the loss reaches the client.
    FrameLost {
        reason: String,
    },
    /// The frame stream ended: the interpreter exited or closed its frame fd.
    Exited,
}

/// The write side of the current interpreter, shared by the executor, the bridge and the API.
/// Swapped on every restart; a frame sent while no interpreter runs fails with `InterpreterGone`.
#[derive(Debug, Default)]
pub struct DriverWriter {
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
}

impl DriverWriter {
    pub async fn send(&self, message: &ToDriver<'_>) -> Result<()> {
        let mut guard = self.stdin.lock().await;
        let stdin = guard.as_mut().ok_or(Error::InterpreterGone)?;
        write_observed(stdin, message).await
    }

    async fn replace(&self, stdin: Option<pipe::Sender>) {
        *self.stdin.lock().await = stdin;
    }
}

async fn write_observed(stdin: &mut pipe::Sender, message: &ToDriver<'_>) -> Result<()> {
    let encoded = frame::encode(message)?;
    frame_observer::observe(
        Direction::ToInterpreter,
        message.kind(),
        encoded.len() - frame::FRAME_HEADER_BYTES,
    );
    stdin.write_all(&encoded).await?;
    stdin.flush().await?;
    Ok(())
}

impl ToDriver<'_> {
    /// The frame's `type`, for diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            ToDriver::Execute { .. } => "execute",
            ToDriver::Cancel { .. } => "cancel",
            ToDriver::Settle { .. } => "settle",
            ToDriver::Checkpoint { .. } => "checkpoint",
            ToDriver::Enter { .. } => "enter",
            ToDriver::CheckpointSave { .. } => "checkpointSave",
            ToDriver::CheckpointLoad { .. } => "checkpointLoad",
        }
    }
}

impl FromDriver {
    /// The frame's `type`, for diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            FromDriver::Protected { .. } => "protected",
            FromDriver::Ready { .. } => "ready",
            FromDriver::Output { .. } => "output",
            FromDriver::InputRequest { .. } => "inputRequest",
            FromDriver::PromiseCreate { .. } => "promiseCreate",
            FromDriver::Result { .. } => "result",
            FromDriver::Error { .. } => "error",
            FromDriver::Checkpoint { .. } => "checkpoint",
            FromDriver::DriverError { .. } => "driverError",
            FromDriver::CheckpointSaved { .. } => "checkpointSaved",
            FromDriver::CheckpointLoaded { .. } => "checkpointLoaded",
            FromDriver::CheckpointFailed { .. } => "checkpointFailed",
        }
    }
}

/// Checkpoint requests waiting for the driver's answer.
#[derive(Debug, Default)]
pub struct CheckpointWaiters {
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<CheckpointFrame>>>,
}

impl CheckpointWaiters {
    pub fn register(&self) -> (u64, oneshot::Receiver<CheckpointFrame>) {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn complete(&self, id: u64, checkpoint: CheckpointFrame) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(checkpoint);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<CheckpointFrame>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the driver puts the text of an output frame: `...,"text":"<escaped>"}`.
const OUTPUT_TEXT_MARKER: &[u8] = br#","text":""#;

/// Decodes one frame body from the driver: an output chunk (text kept JSON-encoded) or a message.
/// Bytes that are neither are a [`FrameError::Malformed`], never a panic.
pub fn decode_driver_frame(body: &[u8]) -> std::result::Result<DriverEvent, FrameError> {
    if let Some(output) = decode_raw_output(body) {
        return Ok(output);
    }
    frame::decode::<FromDriver>(body).map(DriverEvent::Message)
}

fn decode_raw_output(body: &[u8]) -> Option<DriverEvent> {
    if !body.starts_with(OUTPUT_FRAME_PREFIX) {
        return None;
    }
    if let Ok(frame) = serde_json::from_slice::<RawOutputFrame<'_>>(body) {
        return Some(DriverEvent::Output {
            stream: frame.stream,
            text: frame.text.to_owned(),
        });
    }
    // The driver escapes only backslash, quote, \n, \t and \r: text holding another control
    // character or invalid UTF-8 (bytes written to sys.stdout.buffer) is repaired here.
    let start = body
        .windows(OUTPUT_TEXT_MARKER.len())
        .position(|w| w == OUTPUT_TEXT_MARKER)?;
    let head = &body[..start];
    let escaped = body.get(start + OUTPUT_TEXT_MARKER.len()..body.len().checked_sub(2)?)?;
    if !body.ends_with(b"\"}") {
        return None;
    }
    let mut header = head.to_vec();
    header.push(b'}');
    let stream = serde_json::from_slice::<OutputHead>(&header).ok()?.stream;
    Some(DriverEvent::Output {
        stream,
        text: repair_text(escaped)?,
    })
}

#[derive(Debug, Deserialize)]
struct OutputHead {
    stream: OutputStream,
}

/// Turns driver-escaped text that is not valid JSON into a valid JSON string: invalid UTF-8 becomes
/// U+FFFD and remaining control characters become `\u00XX` escapes.
fn repair_text(escaped: &[u8]) -> Option<Box<RawValue>> {
    let text = String::from_utf8_lossy(escaped);
    let mut json = String::with_capacity(text.len() + 16);
    json.push('"');
    for ch in text.chars() {
        if (ch as u32) < 0x20 {
            json.push_str(&format!("\\u{:04x}", ch as u32));
        } else {
            json.push(ch);
        }
    }
    json.push('"');
    RawValue::from_string(json).ok()
}

/// How long a killed interpreter's exit is awaited before the worker moves on without its code.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// A running interpreter.
#[derive(Debug)]
pub struct Interpreter {
    pub pid: Option<u32>,
    pub events: mpsc::Receiver<DriverEvent>,
    /// Its exit code, reported by the fork server; `None` once received.
    exit: Option<oneshot::Receiver<Option<i32>>>,
    /// Its frame input until [`Interpreter::activate`] hands it to the shared [`DriverWriter`].
    stdin: Option<pipe::Sender>,
    /// Its private working directories (warm-up, then session), removed once it is dropped.
    workdirs: Vec<WorkDir>,
}

static MALFORMED_DRIVER_FRAME: WarnOnce = WarnOnce::new();
static RAW_INTERPRETER_OUTPUT: WarnOnce = WarnOnce::new();

impl Interpreter {
    /// Forks a fresh interpreter working in `workdir`, in a process group of its own and without
    /// the worker's `CAPSULE_*` settings. Its frames go to [`Interpreter::send_direct`] until it is
    /// activated.
    pub async fn start(
        fork_server: &ForkServer,
        workdir: WorkDir,
        checkpoints: Arc<CheckpointWaiters>,
    ) -> Result<Interpreter> {
        let forked = fork_server.fork(workdir.path()).await?;
        tokio::spawn(discard_raw_output(forked.stderr));
        let (tx, events) = mpsc::channel(DRIVER_EVENT_CAPACITY);
        tokio::spawn(read_frames(forked.stdout, tx, checkpoints));
        Ok(Interpreter {
            pid: Some(forked.pid),
            events,
            exit: Some(forked.exit),
            stdin: Some(forked.stdin),
            workdirs: vec![workdir],
        })
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
    pub async fn activate(&mut self, writer: &DriverWriter, session_dir: WorkDir) -> Result<()> {
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
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: killpg only sends a signal; a group that is already gone gives ESRCH.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
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

/// The interpreter's raw fds 1 and 2 (child processes, C extensions) carry user output that must
/// never reach the logs: drained and discarded, noted once.
async fn discard_raw_output(mut stderr: pipe::Receiver) {
    let mut sink = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = stderr.read(&mut sink).await {
        RAW_INTERPRETER_OUTPUT.warn(|| {
            tracing::warn!(
                bytes = n,
                "interpreter wrote to its raw stdout/stderr (e.g. a child process); \
                 that output is discarded, only sys.stdout/sys.stderr reach clients"
            )
        })
    }
}

/// Turns the driver's frames into events; checkpoint replies go straight to their waiter.
async fn read_frames(
    mut stdout: pipe::Receiver,
    tx: mpsc::Sender<DriverEvent>,
    checkpoints: Arc<CheckpointWaiters>,
) {
    loop {
        let message = match frame::read_frame_bytes_async(&mut stdout).await {
            Ok(body) => match decode_driver_frame(&body) {
                Ok(DriverEvent::Message(message)) => {
                    frame_observer::observe(Direction::FromInterpreter, message.kind(), body.len());
                    Ok(message)
                }
                Ok(event) => {
                    frame_observer::observe(Direction::FromInterpreter, "output", body.len());
                    if tx.send(event).await.is_err() {
                        break;
                    }
                    continue;
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match message {
            Ok(FromDriver::Checkpoint {
                request_id,
                checkpoint,
            }) => checkpoints.complete(request_id, checkpoint),
            Ok(message) => {
                if tx.send(DriverEvent::Message(message)).await.is_err() {
                    break;
                }
            }
            Err(error) if error.is_recoverable() => {
                frame_observer::observe(Direction::FromInterpreter, "unreadable", 0);
                MALFORMED_DRIVER_FRAME
                    .warn(|| tracing::warn!(%error, "skipped a bad frame from the interpreter"));
                let lost = DriverEvent::FrameLost {
                    reason: error.to_string(),
                };
                if tx.send(lost).await.is_err() {
                    break;
                }
            }
            Err(FrameError::Closed) | Err(_) => {
                let _ = tx.send(DriverEvent::Exited).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_pass_their_text_through_unparsed() {
        let body = br#"{"type":"output","id":"e1","stream":"stdout","text":"a\nb \"q\""}"#;
        match decode_raw_output(body) {
            Some(DriverEvent::Output { stream, text }) => {
                assert_eq!(stream, OutputStream::Stdout);
                assert_eq!(text.get(), r#""a\nb \"q\"""#);
            }
            other => panic!("{other:?}"),
        }
        assert!(decode_raw_output(br#"{"type":"result"}"#).is_none());
    }

    #[test]
    fn control_characters_and_invalid_utf8_are_repaired() {
        let body = b"{\"type\":\"output\",\"id\":\"e\",\"stream\":\"stderr\",\"text\":\"a\x01b\xff\\\"q\\\"\"}";
        match decode_raw_output(body) {
            Some(DriverEvent::Output { stream, text }) => {
                assert_eq!(stream, OutputStream::Stderr);
                let decoded: String = serde_json::from_str(text.get()).unwrap();
                assert_eq!(decoded, "a\u{1}b\u{fffd}\"q\"");
            }
            other => panic!("{other:?}"),
        }
    }
}
