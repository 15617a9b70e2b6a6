//! The fork server (`zygote.py`, carried in this binary): one warmed Python process that forks a
//! fresh interpreter whenever the worker needs one, so a standby costs a fork, not a Python start
//! competing with the session for the CPU. It is non-dumpable before it imports anything, and its
//! children inherit that from their first instruction, so a new standby is protected at once.
//!
//! The worker talks to it over a private `SOCK_SEQPACKET` socket pair (the zygote's fd 0): a fork
//! request carries the child's three stdio pipe ends as `SCM_RIGHTS`; the zygote answers with the
//! child's pid and later reports its exit code. A zygote that dies (session code can kill it, its
//! uid being the same) is started again on the next fork.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::warn_once::WarnOnce;

/// The fork server's Python source, carried in the binary.
pub const ZYGOTE_SOURCE: &str = include_str!("../zygote.py");
/// The driver each forked interpreter runs.
pub const DRIVER_SOURCE: &str = include_str!("../driver.py");

/// How long a started fork server may take to answer a fork (its first answer includes its start).
const FORK_TIMEOUT: Duration = Duration::from_secs(30);
/// Replies waiting for the fork that asked; at most one fork is outstanding.
const REPLY_CAPACITY: usize = 4;
/// The largest message the zygote sends (a pid, an exit code or a short refusal).
const MAX_REPLY_BYTES: usize = 4096;

static ZYGOTE_STDERR: WarnOnce = WarnOnce::new();

/// A freshly forked interpreter: its pid, its stdio and, later, its exit code (`None` when it was
/// killed by a signal or the fork server that would report it is gone).
#[derive(Debug)]
pub struct Forked {
    pub pid: u32,
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub exit: oneshot::Receiver<Option<i32>>,
}

/// Starts interpreters by forking them from the zygote, which it starts (again) when needed.
#[derive(Debug)]
pub struct ForkServer {
    python: String,
    zygote: tokio::sync::Mutex<Option<Zygote>>,
    pid: AtomicU32,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum ZygoteMessage {
    Forked { pid: u32 },
    Refused { reason: String },
    Exited { pid: u32, code: Option<i32> },
}

#[derive(Debug)]
enum Reply {
    Forked {
        pid: u32,
        exit: oneshot::Receiver<Option<i32>>,
    },
    Refused(String),
}

#[derive(Debug)]
struct Zygote {
    process: Child,
    control: Arc<AsyncFd<OwnedFd>>,
    replies: mpsc::Receiver<Reply>,
}

impl ForkServer {
    pub fn new(python: &str) -> ForkServer {
        ForkServer {
            python: python.to_owned(),
            zygote: tokio::sync::Mutex::new(None),
            pid: AtomicU32::new(0),
        }
    }

    /// The zygote's pid, 0 while none runs (its memory counts toward the worker's).
    pub fn pid(&self) -> u32 {
        self.pid.load(Relaxed)
    }

    /// Forks a fresh interpreter working in `dir`. A zygote found dead is replaced once.
    pub async fn fork(&self, dir: &Path) -> Result<Forked> {
        let mut zygote = self.zygote.lock().await;
        let mut last_error = Error::InterpreterGone;
        for _ in 0..2 {
            if zygote.as_mut().is_none_or(Zygote::has_exited) {
                let started = Zygote::start(&self.python, dir)?;
                self.pid.store(started.process.id().unwrap_or(0), Relaxed);
                *zygote = Some(started);
            }
            let running = zygote.as_mut().expect("started above");
            match running.fork(dir).await {
                Ok(forked) => return Ok(forked),
                Err(error) => {
                    tracing::warn!(%error, "the fork server failed; starting a new one");
                    if let Some(mut failed) = zygote.take() {
                        let _ = failed.process.start_kill();
                    }
                    self.pid.store(0, Relaxed);
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }
}

impl ForkServer {
    /// After a reset killed the old interpreter: has the zygote kill, over the next second, every
    /// process the ended session left outside its process group (adopted by the zygote as
    /// subreaper, started before now). Best effort: a zygote that is gone has nothing to sweep.
    pub async fn sweep(&self) {
        let mut zygote = self.zygote.lock().await;
        let Some(running) = zygote.as_mut() else {
            return;
        };
        if !running.has_exited() {
            let request = br#"{"op":"sweep"}"#;
            if let Err(error) = send_with_fds(&running.control, request, &[]).await {
                tracing::warn!(%error, "could not ask the fork server to sweep");
            }
        }
    }
}

impl Zygote {
    fn start(python: &str, dir: &Path) -> Result<Zygote> {
        let (ours, theirs) = seqpacket_pair()?;
        let mut command = Command::new(python);
        command
            .arg("-c")
            .arg(ZYGOTE_SOURCE)
            .arg(DRIVER_SOURCE)
            // The scratch directory, not a session's: the zygote outlives every session directory.
            .current_dir(dir.parent().unwrap_or(dir))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("CAPSULE_") || name_text == "KUBECONFIG" {
                command.env_remove(name);
            }
        }
        let mut process = command.spawn().map_err(|source| Error::InterpreterSpawn {
            program: python.to_owned(),
            source,
        })?;
        if let Some(stderr) = process.stderr.take() {
            tokio::spawn(discard_stderr(stderr));
        }
        // SAFETY: an OwnedFd keeps its one descriptor open, unchanged, until it is dropped.
        let control = unsafe { AsyncFd::register(ours) }.map_err(|e| Error::Io(e.into()))?;
        let control = Arc::new(control);
        let (replies_tx, replies) = mpsc::channel(REPLY_CAPACITY);
        tokio::spawn(read_replies(control.clone(), replies_tx));
        tracing::debug!(pid = process.id(), "fork server started");
        Ok(Zygote {
            process,
            control,
            replies,
        })
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.process.try_wait(), Ok(None))
    }

    async fn fork(&mut self, dir: &Path) -> Result<Forked> {
        let (stdin_theirs, stdin) = pipe_pair()?;
        let (stdout, stdout_theirs) = pipe_pair()?;
        let (stderr, stderr_theirs) = pipe_pair()?;
        let request = serde_json::json!({"op": "fork", "dir": dir}).to_string();
        let fds = [
            stdin_theirs.as_raw_fd(),
            stdout_theirs.as_raw_fd(),
            stderr_theirs.as_raw_fd(),
        ];
        send_with_fds(&self.control, request.as_bytes(), &fds).await?;
        // The zygote holds its own copies now; ours would keep the child's pipes open.
        drop((stdin_theirs, stdout_theirs, stderr_theirs));
        match tokio::time::timeout(FORK_TIMEOUT, self.replies.recv()).await {
            Ok(Some(Reply::Forked { pid, exit })) => Ok(Forked {
                pid,
                stdin: pipe::Sender::from_owned_fd(stdin)?,
                stdout: pipe::Receiver::from_owned_fd(stdout)?,
                stderr: pipe::Receiver::from_owned_fd(stderr)?,
                exit,
            }),
            Ok(Some(Reply::Refused(reason))) => Err(Error::Io(io::Error::other(format!(
                "the fork server refused: {reason}"
            )))),
            Ok(None) => Err(Error::InterpreterGone),
            Err(_) => Err(Error::InterpreterTimeout),
        }
    }
}

/// Reads the zygote's messages: fork replies go to the waiting fork, exit codes to the waiting
/// interpreter. When the zygote goes, every exit still awaited resolves to `None`.
async fn read_replies(control: Arc<AsyncFd<OwnedFd>>, replies: mpsc::Sender<Reply>) {
    let exits: Mutex<HashMap<u32, oneshot::Sender<Option<i32>>>> = Mutex::default();
    let mut buffer = vec![0u8; MAX_REPLY_BYTES];
    loop {
        let length = match recv(&control, &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(length) => length,
        };
        let reply = match serde_json::from_slice::<ZygoteMessage>(&buffer[..length]) {
            Ok(ZygoteMessage::Forked { pid }) => {
                let (tx, exit) = oneshot::channel();
                exits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pid, tx);
                Reply::Forked { pid, exit }
            }
            Ok(ZygoteMessage::Refused { reason }) => Reply::Refused(reason),
            Ok(ZygoteMessage::Exited { pid, code }) => {
                let waiter = exits.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(code);
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "unreadable message from the fork server");
                continue;
            }
        };
        if replies.send(reply).await.is_err() {
            break;
        }
    }
}

async fn discard_stderr(mut stderr: tokio::process::ChildStderr) {
    let mut sink = vec![0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut sink).await {
        ZYGOTE_STDERR.warn(|| tracing::warn!(bytes = n, "the fork server wrote to stderr"));
    }
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two new descriptors into `fds`, which we then own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(&ours)?;
    Ok((ours, theirs))
}

/// A pipe as (read end, write end), both close-on-exec.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own only reads and sets its status flags.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

async fn send_with_fds(control: &AsyncFd<OwnedFd>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    loop {
        let mut ready = control.writable().await?;
        match ready.try_io(|socket| sendmsg_with_fds(socket.as_raw_fd(), bytes, fds)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn recv(control: &AsyncFd<OwnedFd>, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = control.readable().await?;
        let received = ready.try_io(|socket| {
            // SAFETY: recv writes at most `buffer.len()` bytes into `buffer`.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match received {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// One `sendmsg` of `bytes` with `fds` attached as `SCM_RIGHTS` (none when `fds` is empty).
fn sendmsg_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() {
        // SAFETY: send reads `bytes.len()` bytes from `bytes`.
        let sent = unsafe {
            libc::send(
                socket,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        return if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
    }
    let fds_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fds_bytes) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call, and the
    // control buffer holds exactly one cmsghdr of CMSG_LEN(fds_bytes) inside its CMSG_SPACE.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(fds_bytes) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast(), fds.len());
        if libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
