//! Connections of a fork server that runs in a container of its own (the pod's `interpreter`
//! container, under a uid of its own) and connects to the worker's socket in a volume the two
//! containers share.
//!
//! Session code runs under the fork server's uid and can connect too, so the worker serves one
//! connection at a time and refuses every other while it lasts. The one served is the container's
//! first process (its PID 1): when it ends, the kernel ends every process of the container, so
//! the next connection served can only come from a restarted container in which no session code
//! has run yet. That holds where each container has its own PID namespace (Kubernetes' default;
//! `shareProcessNamespace: true` gives up that guarantee).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::socket::{accept, listen_at};

/// Connections accepted while none is served, waiting for the next fork; a stale one (its process
/// gone) fails its first fork and the next is taken.
const PENDING_CAPACITY: usize = 4;

#[derive(Debug)]
pub struct Connections {
    path: PathBuf,
    pending: tokio::sync::Mutex<mpsc::Receiver<OwnedFd>>,
    /// A connection is being served; others are refused meanwhile.
    pub(super) serving: Arc<AtomicBool>,
}

impl Connections {
    /// Listens at `path` and accepts in the background.
    pub fn start(path: &Path) -> std::io::Result<Connections> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // SAFETY: an OwnedFd keeps its one descriptor open, unchanged, until it is dropped.
        let listener =
            unsafe { AsyncFd::register(listen_at(path)?) }.map_err(std::io::Error::from)?;
        let (tx, pending) = mpsc::channel(PENDING_CAPACITY);
        let serving = Arc::new(AtomicBool::new(false));
        tokio::spawn(accept_loop(listener, tx, serving.clone()));
        tracing::info!(path = %path.display(), "waiting for the interpreter container's fork server");
        Ok(Connections {
            path: path.to_owned(),
            pending: tokio::sync::Mutex::new(pending),
            serving,
        })
    }

    /// The next connection to serve, waiting up to `timeout` for the container to (re)start.
    pub async fn next(&self, timeout: Duration) -> std::io::Result<OwnedFd> {
        let mut pending = self.pending.lock().await;
        match tokio::time::timeout(timeout, pending.recv()).await {
            Ok(Some(connection)) => {
                self.serving.store(true, Relaxed);
                Ok(connection)
            }
            Ok(None) => Err(std::io::Error::other("the fork server socket stopped listening")),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no fork server connected to {} within {timeout:?}: is the pod's interpreter container running?",
                    self.path.display()
                ),
            )),
        }
    }
}

async fn accept_loop(
    listener: AsyncFd<OwnedFd>,
    pending: mpsc::Sender<OwnedFd>,
    serving: Arc<AtomicBool>,
) {
    loop {
        let connection = match accept(&listener).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::error!(%error, "the fork server socket failed; no new interpreter can start");
                return;
            }
        };
        if serving.load(Relaxed) || pending.try_send(connection).is_err() {
            tracing::warn!("refused a fork server connection: another one is being served");
        }
    }
}
