//! The worker's end of one fork server connection, shared by the interpreters forked over it: a
//! pid is only meaningful to the fork server that forked it (in a container of its own, it is a
//! pid of that container's namespace), so what is done to an interpreter goes over the link it
//! came from, and nowhere once that link is closed.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;

use super::socket::sendmsg_with_fds;

#[derive(Debug, Clone)]
pub struct ZygoteLink {
    pub(super) control: Arc<AsyncFd<OwnedFd>>,
    open: Arc<AtomicBool>,
    /// The fork server runs in another container: its pids and files are not the worker's to
    /// signal or remove.
    remote: bool,
}

impl ZygoteLink {
    pub(super) fn new(control: AsyncFd<OwnedFd>, remote: bool) -> ZygoteLink {
        ZygoteLink {
            control: Arc::new(control),
            open: Arc::new(AtomicBool::new(true)),
            remote,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Relaxed)
    }

    pub(super) fn close(&self) {
        self.open.store(false, Relaxed);
    }

    /// Ends the connection both ways. A fork server in its own container reads end-of-file and
    /// exits, and as PID 1 takes every process of its container with it.
    pub(super) fn shut_down(&self) {
        self.close();
        // SAFETY: shutdown only changes the state of a socket this link keeps open.
        unsafe {
            libc::shutdown(self.control.as_raw_fd(), libc::SHUT_RDWR);
        }
    }

    /// Sends a message without waiting; false when the fork server is gone or cannot take it now.
    pub fn notify(&self, message: &serde_json::Value) -> bool {
        self.is_open()
            && sendmsg_with_fds(
                self.control.as_raw_fd(),
                message.to_string().as_bytes(),
                &[],
            )
            .is_ok()
    }

    /// Has the fork server remove `dir` and everything in it (session code, under its uid, may
    /// have made entries the worker's uid cannot remove).
    pub fn remove_dir(&self, dir: &Path) -> bool {
        self.notify(&serde_json::json!({"op": "remove", "dir": dir}))
    }
}

/// An interpreter's process group, reached the way its fork server allows.
#[derive(Debug)]
pub struct ProcessGroup {
    pub pid: u32,
    pub(super) link: ZygoteLink,
}

impl ProcessGroup {
    /// SIGKILL to the group: directly when the interpreter is the worker's own grandchild (same
    /// uid and pid namespace), else by its fork server, which forked it.
    pub fn kill(&self) {
        if self.link.remote {
            let asked = self
                .link
                .notify(&serde_json::json!({"op": "kill", "pid": self.pid}));
            if !asked && self.link.is_open() {
                // A kill that cannot be delivered ends the container instead.
                tracing::warn!("could not ask the fork server to kill; ending its connection");
                self.link.shut_down();
            }
        } else if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: killpg only sends a signal; a group that is already gone gives ESRCH.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }

    /// The link its directories are removed over, when the worker cannot remove them itself.
    pub fn remote_link(&self) -> Option<ZygoteLink> {
        self.link.remote.then(|| self.link.clone())
    }
}
