//! The fork server (`zygote.py`, carried in this binary): one warmed Python process that forks a
//! fresh interpreter whenever the worker needs one, so a standby costs a fork, not a Python start
//! competing with the session for the CPU. It is non-dumpable before it imports anything, and its
//! children inherit that from their first instruction, so a new standby is protected at once.
//!
//! Two ways to have one: the worker starts it as its child on a private `SOCK_SEQPACKET` socket
//! pair (the zygote's fd 0), under the worker's own uid; or it runs in a container of its own under
//! a uid of its own and connects to the worker's socket (`CAPSULE_FORK_SERVER_SOCKET`, see
//! [`listen`] and [`connect`]). Either way a fork request carries the child's three stdio pipe
//! ends as `SCM_RIGHTS`; the zygote answers with the child's pid and later reports its exit code.
//! A zygote that dies is replaced on the next fork: started again, or waited for.

pub mod connect;
mod link;
mod listen;
mod socket;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
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
pub use link::{ProcessGroup, ZygoteLink};
use listen::Connections;
use socket::{pipe_pair, recv, send_with_fds, seqpacket_pair};

/// The fork server's Python source, carried in the binary.
pub const ZYGOTE_SOURCE: &str = include_str!("../../zygote.py");
/// The driver each forked interpreter runs.
pub const DRIVER_SOURCE: &str = include_str!("../../driver.py");

/// Python running the zygote with the driver's source, without the worker's settings
/// (`CAPSULE_*`, `KUBECONFIG`) in its environment: the command both ways of having a fork server
/// start.
pub(crate) fn zygote_command(python: &str) -> std::process::Command {
    let mut command = std::process::Command::new(python);
    command
        .arg("-c")
        .arg(ZYGOTE_SOURCE)
        .arg(DRIVER_SOURCE)
        .env("PYTHONUNBUFFERED", "1");
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("CAPSULE_") || name_text == "KUBECONFIG" {
            command.env_remove(name);
        }
    }
    command
}

/// How long a fork server may take to answer a fork (its first answer includes its start), and
/// how long the worker waits for an interpreter container's fork server to connect.
const FORK_TIMEOUT: Duration = Duration::from_secs(30);
/// Forks tried before giving up: a dead zygote, or a stale connection, costs one.
const FORK_ATTEMPTS: usize = 3;
/// Replies waiting for the fork that asked; at most one fork is outstanding.
const REPLY_CAPACITY: usize = 4;
/// The largest message the zygote sends (a pid, an exit code, usage or a short refusal).
const MAX_REPLY_BYTES: usize = 4096;

static ZYGOTE_STDERR: WarnOnce = WarnOnce::new();

/// A freshly forked interpreter: its process group, its stdio and, later, its exit code (`None`
/// when it was killed by a signal or the fork server that would report it is gone).
#[derive(Debug)]
pub struct Forked {
    pub group: ProcessGroup,
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub exit: oneshot::Receiver<Option<i32>>,
}

/// Starts interpreters by forking them from the zygote, which it starts (or waits for) when needed.
#[derive(Debug)]
pub struct ForkServer {
    origin: Origin,
    zygote: tokio::sync::Mutex<Option<Zygote>>,
    /// The served zygote's link, for usage requests that must not wait for a fork in progress.
    current: Mutex<Option<ZygoteLink>>,
    pid: AtomicU32,
    usage: Arc<RemoteUsage>,
    /// A connected fork server was given up: see [`ABANDONED`].
    abandoned: AtomicBool,
}

#[derive(Debug)]
enum Origin {
    /// Started by the worker as its child, under the worker's uid.
    Spawned { python: String },
    /// Runs in the pod's interpreter container and connects to the worker.
    Connecting(Connections),
    /// The socket could not be made: every fork fails with this.
    Unusable(String),
}

/// Why no further fork server is served after one that failed while still connected: its
/// container may still hold session code, which could connect next.
const ABANDONED: &str = "the interpreter container's fork server failed while still connected; \
     this worker serves no other connection and must be replaced";

/// Memory and CPU of the interpreter container, as its fork server last reported them.
#[derive(Debug, Default)]
struct RemoteUsage {
    rss_bytes: AtomicU64,
    cpu_ticks: AtomicU64,
    /// A request is unanswered: no second one, so requests never fill the fork server's queue
    /// ahead of a kill.
    asked: AtomicBool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum ZygoteMessage {
    Forked {
        pid: u32,
    },
    Refused {
        reason: String,
    },
    Exited {
        pid: u32,
        code: Option<i32>,
    },
    #[serde(rename_all = "camelCase")]
    Usage {
        rss_bytes: u64,
        cpu_ticks: u64,
    },
    Swept,
}

#[derive(Debug)]
enum Reply {
    Forked {
        pid: u32,
        exit: oneshot::Receiver<Option<i32>>,
    },
    Refused(String),
    Swept,
}

/// How long a reset waits for the fork server to say the ended session's processes are gone.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Zygote {
    /// The worker's child, when the worker started it.
    process: Option<Child>,
    link: ZygoteLink,
    replies: mpsc::Receiver<Reply>,
}

impl ForkServer {
    /// A fork server the worker starts itself, running `python`.
    pub fn spawning(python: &str) -> ForkServer {
        Self::with_origin(Origin::Spawned {
            python: python.to_owned(),
        })
    }

    /// A fork server that connects to `socket` from a container of its own.
    pub fn listening(socket: &Path) -> ForkServer {
        Self::with_origin(match Connections::start(socket) {
            Ok(connections) => Origin::Connecting(connections),
            Err(error) => {
                let reason = format!("cannot listen at {}: {error}", socket.display());
                tracing::error!(%reason, "no interpreter can start (CAPSULE_FORK_SERVER_SOCKET)");
                Origin::Unusable(reason)
            }
        })
    }

    fn with_origin(origin: Origin) -> ForkServer {
        ForkServer {
            origin,
            zygote: tokio::sync::Mutex::new(None),
            current: Mutex::new(None),
            pid: AtomicU32::new(0),
            usage: Arc::default(),
            abandoned: AtomicBool::new(false),
        }
    }

    /// The zygote's pid when the worker started it (its memory counts toward the worker's), else 0.
    pub fn pid(&self) -> u32 {
        self.pid.load(Relaxed)
    }

    /// The fork server runs in a container of its own: interpreter pids are not the worker's.
    pub fn is_remote(&self) -> bool {
        !matches!(self.origin, Origin::Spawned { .. })
    }

    /// The interpreter container's RSS and CPU ticks as last reported, and asks for a new report
    /// (read at the next call). `None` when the interpreters are the worker's own processes.
    pub fn remote_usage(&self) -> Option<(u64, u64)> {
        if !self.is_remote() {
            return None;
        }
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = current.as_ref() {
            if !self.usage.asked.swap(true, Relaxed)
                && !link.notify(&serde_json::json!({"op": "usage"}))
            {
                self.usage.asked.store(false, Relaxed);
            }
        }
        Some((
            self.usage.rss_bytes.load(Relaxed),
            self.usage.cpu_ticks.load(Relaxed),
        ))
    }

    /// Forks a fresh interpreter working in `dir`. A zygote found dead is replaced.
    pub async fn fork(&self, dir: &Path) -> Result<Forked> {
        let mut zygote = self.zygote.lock().await;
        let mut last_error = Error::InterpreterGone;
        for _ in 0..FORK_ATTEMPTS {
            if zygote.as_mut().is_none_or(Zygote::has_exited) {
                *zygote = Some(self.next_zygote(dir).await?);
            }
            let running = zygote.as_mut().expect("set above");
            match running.fork(dir).await {
                Ok(forked) => return Ok(forked),
                Err(error) => {
                    tracing::warn!(%error, "the fork server failed; taking a new one");
                    if let Some(mut failed) = zygote.take() {
                        // Refused or silent, it still runs: a gone one (a send that failed, its
                        // replies ended) took its container with it.
                        let alive =
                            matches!(error, Error::InterpreterTimeout | Error::ForkRefused(_));
                        if self.is_remote() && alive {
                            self.abandoned.store(true, Relaxed);
                        }
                        failed.stop();
                    }
                    self.pid.store(0, Relaxed);
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn next_zygote(&self, dir: &Path) -> Result<Zygote> {
        if self.abandoned.load(Relaxed) {
            return Err(Error::Io(io::Error::other(ABANDONED)));
        }
        let zygote = match &self.origin {
            Origin::Spawned { python } => {
                let started = Zygote::spawn(python, dir, self.usage.clone())?;
                self.pid.store(
                    started.process.as_ref().and_then(Child::id).unwrap_or(0),
                    Relaxed,
                );
                started
            }
            Origin::Connecting(connections) => {
                let connection = connections.next(FORK_TIMEOUT).await?;
                let served = connections.serving.clone();
                Zygote::over(connection, true, self.usage.clone(), Some(served))?
            }
            Origin::Unusable(reason) => return Err(Error::Io(io::Error::other(reason.clone()))),
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(zygote.link.clone());
        Ok(zygote)
    }

    /// After a reset killed the old interpreter: has the zygote kill what the ended session left
    /// running outside its process group, and waits until it says so (see `_Sweep` in
    /// zygote.py). In a container of its own the fork server ends every process of the session
    /// at once and removes what it left in `scratch` and `/dev/shm`; a fork server under the
    /// worker's uid leaves the scratch volume alone (the worker's files are there too). Best
    /// effort: a zygote that is gone has nothing to sweep.
    pub async fn sweep(&self, scratch: &Path) {
        let mut zygote = self.zygote.lock().await;
        let Some(running) = zygote.as_mut() else {
            return;
        };
        if running.has_exited() {
            return;
        }
        let mut request = serde_json::json!({"op": "sweep"});
        if self.is_remote() {
            request["scratch"] = serde_json::json!(scratch);
            request["keep"] = serde_json::json!(crate::workdir::SESSIONS_DIR);
        }
        let request = request.to_string();
        if let Err(error) = send_with_fds(&running.link.control, request.as_bytes(), &[]).await {
            tracing::warn!(%error, "could not ask the fork server to sweep");
            return;
        }
        match tokio::time::timeout(SWEEP_TIMEOUT, running.replies.recv()).await {
            Ok(Some(Reply::Swept)) => {}
            Ok(other) => tracing::warn!(?other, "unexpected answer to a sweep"),
            Err(_) => tracing::warn!("the fork server did not finish its sweep in time"),
        }
    }
}

impl Zygote {
    fn spawn(python: &str, dir: &Path, usage: Arc<RemoteUsage>) -> Result<Zygote> {
        let (ours, theirs) = seqpacket_pair()?;
        let mut command = Command::from(zygote_command(python));
        command
            // The scratch directory, not a session's: the zygote outlives every session directory.
            .current_dir(dir.parent().unwrap_or(dir))
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut process = command.spawn().map_err(|source| Error::InterpreterSpawn {
            program: python.to_owned(),
            source,
        })?;
        if let Some(stderr) = process.stderr.take() {
            tokio::spawn(discard_stderr(stderr));
        }
        tracing::debug!(pid = process.id(), "fork server started");
        let mut zygote = Zygote::over(ours, false, usage, None)?;
        zygote.process = Some(process);
        Ok(zygote)
    }

    /// A zygote on `connection`; `served` is cleared when the connection ends.
    fn over(
        connection: OwnedFd,
        remote: bool,
        usage: Arc<RemoteUsage>,
        served: Option<Arc<AtomicBool>>,
    ) -> Result<Zygote> {
        // SAFETY: an OwnedFd keeps its one descriptor open, unchanged, until it is dropped.
        let control = unsafe { AsyncFd::register(connection) }.map_err(|e| Error::Io(e.into()))?;
        let link = ZygoteLink::new(control, remote);
        let (replies_tx, replies) = mpsc::channel(REPLY_CAPACITY);
        tokio::spawn(read_replies(link.clone(), replies_tx, usage, served));
        Ok(Zygote {
            process: None,
            link,
            replies,
        })
    }

    fn has_exited(&mut self) -> bool {
        let process_gone = match self.process.as_mut() {
            Some(process) => !matches!(process.try_wait(), Ok(None)),
            None => false,
        };
        process_gone || !self.link.is_open()
    }

    fn stop(&mut self) {
        self.link.shut_down();
        if let Some(process) = self.process.as_mut() {
            let _ = process.start_kill();
        }
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
        send_with_fds(&self.link.control, request.as_bytes(), &fds).await?;
        // The zygote holds its own copies now; ours would keep the child's pipes open.
        drop((stdin_theirs, stdout_theirs, stderr_theirs));
        let reply = tokio::time::timeout(FORK_TIMEOUT, async {
            loop {
                // A sweep's answer that came after its wait gave up belongs to no fork.
                match self.replies.recv().await {
                    Some(Reply::Swept) => continue,
                    other => return other,
                }
            }
        })
        .await;
        match reply {
            Ok(Some(Reply::Forked { pid, exit })) => Ok(Forked {
                group: ProcessGroup {
                    pid,
                    link: self.link.clone(),
                },
                stdin: pipe::Sender::from_owned_fd(stdin)?,
                stdout: pipe::Receiver::from_owned_fd(stdout)?,
                stderr: pipe::Receiver::from_owned_fd(stderr)?,
                exit,
            }),
            Ok(Some(Reply::Refused(reason))) => Err(Error::ForkRefused(reason)),
            Ok(Some(Reply::Swept)) | Ok(None) => Err(Error::InterpreterGone),
            Err(_) => Err(Error::InterpreterTimeout),
        }
    }
}

/// Reads the zygote's messages: fork replies go to the waiting fork, exit codes to the waiting
/// interpreter, usage reports to `usage`. When the zygote goes, every exit still awaited resolves
/// to `None`, the link closes and `served` is cleared.
async fn read_replies(
    link: ZygoteLink,
    replies: mpsc::Sender<Reply>,
    usage: Arc<RemoteUsage>,
    served: Option<Arc<AtomicBool>>,
) {
    let exits: Mutex<HashMap<u32, oneshot::Sender<Option<i32>>>> = Mutex::default();
    let mut buffer = vec![0u8; MAX_REPLY_BYTES];
    loop {
        let length = match recv(&link.control, &mut buffer).await {
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
            Ok(ZygoteMessage::Swept) => Reply::Swept,
            Ok(ZygoteMessage::Exited { pid, code }) => {
                let waiter = exits.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(code);
                }
                continue;
            }
            Ok(ZygoteMessage::Usage {
                rss_bytes,
                cpu_ticks,
            }) => {
                usage.rss_bytes.store(rss_bytes, Relaxed);
                usage.cpu_ticks.store(cpu_ticks, Relaxed);
                usage.asked.store(false, Relaxed);
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
    link.close();
    usage.asked.store(false, Relaxed);
    if let Some(served) = served {
        served.store(false, Relaxed);
    }
}

async fn discard_stderr(mut stderr: tokio::process::ChildStderr) {
    let mut sink = vec![0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut sink).await {
        ZYGOTE_STDERR.warn(|| tracing::warn!(bytes = n, "the fork server wrote to stderr"));
    }
}
