//! Sends trace events to the sidecar's Unix socket: non-blocking for callers, bounded, drops counted.
//!
//! Events go through a queue of [`TRACE_QUEUE_CAPACITY`]; when it is full (sidecar slow or absent)
//! new events are dropped and counted. A background task writes them as frames and reconnects with
//! backoff when the socket is missing or breaks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::warn_once::WarnOnce;
use crate::wire::execute::TraceCounters;
use crate::wire::frame;
use crate::wire::trace::TraceEvent;

/// Trace events held while the sidecar is slow or away.
pub const TRACE_QUEUE_CAPACITY: usize = 1024;

static TRACE_DROPPED: WarnOnce = WarnOnce::new();
static TRACE_SOCKET_DOWN: WarnOnce = WarnOnce::new();

#[derive(Debug, Default)]
pub struct TraceSender {
    queue: Option<mpsc::Sender<TraceEvent>>,
    sent: Arc<AtomicU64>,
    dropped: AtomicU64,
}

impl TraceSender {
    /// A sender that discards everything (no socket configured).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the writer task for `socket`.
    pub fn start(socket: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel(TRACE_QUEUE_CAPACITY);
        let sent = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(socket, rx, sent.clone()));
        TraceSender {
            queue: Some(tx),
            sent,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues an event without waiting; a full queue drops it.
    pub fn send(&self, event: TraceEvent) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Relaxed);
            TRACE_DROPPED.warn(|| {
                tracing::warn!(
                    capacity = TRACE_QUEUE_CAPACITY,
                    "trace queue full, dropping trace events (counted)"
                )
            });
        }
    }

    pub fn counters(&self) -> TraceCounters {
        TraceCounters {
            sent: self.sent.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

async fn write_loop(socket: PathBuf, mut rx: mpsc::Receiver<TraceEvent>, sent: Arc<AtomicU64>) {
    let mut backoff = Duration::from_millis(100);
    let mut pending: Option<TraceEvent> = None;
    loop {
        let mut stream = match UnixStream::connect(&socket).await {
            Ok(stream) => {
                backoff = Duration::from_millis(100);
                stream
            }
            Err(error) => {
                TRACE_SOCKET_DOWN.warn(|| {
                    tracing::warn!(socket = %socket.display(), %error, "trace socket unavailable, retrying")
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let event = match pending.take() {
                Some(event) => event,
                None => match rx.recv().await {
                    Some(event) => event,
                    None => return,
                },
            };
            if frame::write_frame_async(&mut stream, &event).await.is_err() {
                pending = Some(event);
                break;
            }
            sent.fetch_add(1, Relaxed);
        }
    }
}
