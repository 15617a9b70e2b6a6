//! Sends trace events to the sidecar's Unix socket: non-blocking for callers, bounded, drops counted.
//!
//! Events go through a queue of [`TRACE_QUEUE_CAPACITY`]; when it is full (sidecar slow or absent)
//! new events are dropped and counted. Callers only build the event and `try_send` it: encoding
//! and writing happen in a background task, which lets events gather for a linger
//! (`CAPSULE_TRACE_LINGER_MS`, default 20 ms) and writes
//! them as one batch of frames (≤ 256 KiB), so an execution's events cost the sidecar one wake-up
//! and run after the response that produced them. It reconnects with backoff when the socket is
//! missing or breaks; a frame cut by a broken connection is sent again whole.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::warn_once::WarnOnce;
use capsule_protocol::execute::TraceCounters;
use capsule_protocol::frame;
use capsule_protocol::trace::TraceEvent;

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

    /// Starts the writer task for `socket`, batching what arrives within `linger`.
    pub fn start(socket: PathBuf, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel(TRACE_QUEUE_CAPACITY);
        let sent = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(socket, rx, sent.clone(), linger));
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

// Why linger: the request that produced an event finishes its own response first, and a burst
// leaves in one write (one wake-up of the sidecar).
/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Encoded frames waiting to be written, with where each one ends.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, event: &TraceEvent) -> bool {
        let start = self.bytes.len();
        self.bytes
            .extend_from_slice(&[0; frame::FRAME_HEADER_BYTES]);
        if serde_json::to_writer(&mut self.bytes, event).is_err() {
            self.bytes.truncate(start);
            return false;
        }
        let body = self.bytes.len() - start - frame::FRAME_HEADER_BYTES;
        self.bytes[start..start + frame::FRAME_HEADER_BYTES]
            .copy_from_slice(&(body as u32).to_be_bytes());
        self.ends.push(self.bytes.len());
        true
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forgets the frames wholly within the first `written` bytes and returns how many there were;
    /// a frame cut by a broken connection stays, to be sent whole on the next one.
    fn consume(&mut self, written: usize) -> u64 {
        let done = self.ends.iter().take_while(|end| **end <= written).count();
        let cut = if done == 0 { 0 } else { self.ends[done - 1] };
        self.bytes.drain(..cut);
        self.ends.drain(..done);
        for end in &mut self.ends {
            *end -= cut;
        }
        done as u64
    }
}

async fn write_loop(
    socket: PathBuf,
    mut rx: mpsc::Receiver<TraceEvent>,
    sent: Arc<AtomicU64>,
    linger: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    let mut batch = Batch::default();
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
            if batch.is_empty() {
                match rx.recv().await {
                    Some(event) => {
                        batch.push(&event);
                    }
                    None => return,
                }
                if linger.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(linger).await;
                }
            }
            while batch.bytes.len() < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(event) => {
                        batch.push(&event);
                    }
                    Err(_) => break,
                }
            }
            let mut written = 0;
            let mut broken = false;
            while written < batch.bytes.len() {
                match stream.write(&batch.bytes[written..]).await {
                    Ok(0) | Err(_) => {
                        broken = true;
                        break;
                    }
                    Ok(n) => written += n,
                }
            }
            sent.fetch_add(batch.consume(written), Relaxed);
            if broken {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_protocol::trace::TraceEventKind;

    fn event(id: &str) -> TraceEvent {
        TraceEvent::new(TraceEventKind::Submit, id, None)
    }

    #[test]
    fn a_batch_holds_whole_frames_and_keeps_the_cut_one() {
        let mut batch = Batch::default();
        for id in ["a", "b", "c"] {
            assert!(batch.push(&event(id)));
        }
        let first_end = batch.ends[0];
        // The connection broke inside the second frame: the first is sent, the rest stays.
        assert_eq!(batch.consume(first_end + 3), 1);
        assert_eq!(batch.ends.len(), 2);
        let mut reader = batch.bytes.as_slice();
        let second: TraceEvent = frame::read_frame(&mut reader).unwrap();
        assert_eq!(second.execution_id, "b");
        let third: TraceEvent = frame::read_frame(&mut reader).unwrap();
        assert_eq!(third.execution_id, "c");
        assert_eq!(batch.consume(batch.bytes.len()), 2);
        assert!(batch.is_empty() && batch.bytes.is_empty());
    }
}
