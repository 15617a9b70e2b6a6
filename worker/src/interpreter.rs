//! One supervised `python3` process running the driver (`driver.py`, carried in this binary), and
//! the frame protocol between them.
//!
//! A reader task turns the driver's frames into [`DriverEvent`]s on a bounded channel (so a slow
//! consumer slows the interpreter instead of growing memory); checkpoint replies, which the driver
//! answers from its reader thread even while code runs, go straight to their waiting request.
//! The interpreter's raw fds 1 and 2 (child processes, C extensions) are drained and discarded:
//! their bytes are user output that must never reach the logs.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::warn_once::WarnOnce;
use crate::workdir::WorkDir;
use capsule_protocol::execute::{ExecutionMode, NamespaceEntry, OutputStream};
use capsule_protocol::frame::{self, FrameError};

/// The Python driver, carried in the binary.
pub const DRIVER_SOURCE: &str = include_str!("../driver.py");

/// `python3 -c` bootstrap. First it makes the process non-dumpable, before anything slow is
/// imported, and says so in a `protected` frame: until then, code of the same uid could attach to
/// a starting standby. Then it compiles the driver (the next argument) under a name of its own, so
/// its frames can be told apart from user code in tracebacks.
const DRIVER_BOOTSTRAP: &str = "import sys
try:
    import ctypes
    ok = ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0
except Exception:
    ok = False
m = b'{\"type\":\"protected\",\"ok\":' + (b'true}' if ok else b'false}')
sys.stdout.buffer.write(len(m).to_bytes(4, 'big') + m)
sys.stdout.buffer.flush()
exec(compile(sys.argv.pop(1), '<capsule-driver>', 'exec'))";

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
    /// The bootstrap made the process non-dumpable (`ok`), before the driver started.
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
    },
    Checkpoint {
        request_id: u64,
        #[serde(flatten)]
        checkpoint: CheckpointFrame,
    },
    DriverError {
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
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
}

impl DriverWriter {
    pub async fn send(&self, message: &ToDriver<'_>) -> Result<()> {
        let mut guard = self.stdin.lock().await;
        let stdin = guard.as_mut().ok_or(Error::InterpreterGone)?;
        frame::write_frame_async(stdin, message).await?;
        Ok(())
    }

    async fn replace(&self, stdin: Option<ChildStdin>) {
        *self.stdin.lock().await = stdin;
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

/// A running interpreter.
#[derive(Debug)]
pub struct Interpreter {
    child: Child,
    pub pid: Option<u32>,
    pub events: mpsc::Receiver<DriverEvent>,
    /// Its frame input until [`Interpreter::activate`] hands it to the shared [`DriverWriter`].
    stdin: Option<ChildStdin>,
    /// Its private working directories (warm-up, then session), removed once it is dropped.
    workdirs: Vec<WorkDir>,
}

static MALFORMED_DRIVER_FRAME: WarnOnce = WarnOnce::new();
static RAW_INTERPRETER_OUTPUT: WarnOnce = WarnOnce::new();

impl Interpreter {
    /// Starts `python -c <driver>` in `workdir`, in a process group of its own and without the
    /// worker's `CAPSULE_*` settings. Its frames go to [`Interpreter::send_direct`] until it is
    /// activated.
    pub async fn spawn(
        python: &str,
        workdir: WorkDir,
        checkpoints: Arc<CheckpointWaiters>,
    ) -> Result<Interpreter> {
        let mut command = Command::new(python);
        command
            .arg("-c")
            .arg(DRIVER_BOOTSTRAP)
            .arg(DRIVER_SOURCE)
            .current_dir(workdir.path())
            .env("HOME", workdir.path())
            .env("TMPDIR", workdir.path())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("CAPSULE_") || name_text == "KUBECONFIG" {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().map_err(|source| Error::InterpreterSpawn {
            program: python.to_owned(),
            source,
        })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().ok_or(Error::InterpreterGone)?;
        let mut stderr = child.stderr.take().ok_or(Error::InterpreterGone)?;

        tokio::spawn(async move {
            let mut sink = vec![0u8; 16 * 1024];
            loop {
                match stderr.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => RAW_INTERPRETER_OUTPUT.warn(|| {
                        tracing::warn!(
                            bytes = n,
                            "interpreter wrote to its raw stdout/stderr (e.g. a child process); \
                             that output is discarded, only sys.stdout/sys.stderr reach clients"
                        )
                    }),
                }
            }
        });

        let (tx, events) = mpsc::channel(DRIVER_EVENT_CAPACITY);
        tokio::spawn(async move {
            loop {
                let message = match frame::read_frame_bytes_async(&mut stdout).await {
                    Ok(body) => match decode_driver_frame(&body) {
                        Ok(DriverEvent::Message(message)) => Ok(message),
                        Ok(event) => {
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
                        MALFORMED_DRIVER_FRAME.warn(
                            || tracing::warn!(%error, "skipped a bad frame from the interpreter"),
                        );
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
        });

        Ok(Interpreter {
            child,
            pid,
            events,
            stdin,
            workdirs: vec![workdir],
        })
    }

    /// Sends a frame to an interpreter that is not active yet (its warm-up).
    pub async fn send_direct(&mut self, message: &ToDriver<'_>) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or(Error::InterpreterGone)?;
        frame::write_frame_async(stdin, message).await?;
        Ok(())
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
        let _ = self.child.start_kill();
        self.child
            .wait()
            .await
            .ok()
            .and_then(|status| status.code())
    }

    /// Waits for the exit code of a process whose frame stream already ended.
    pub async fn reap(mut self, writer: &DriverWriter) -> Option<i32> {
        writer.replace(None).await;
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => {
                self.kill_group();
                status.code()
            }
            _ => self.kill(None).await,
        }
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
