//! The Unix-socket receiver for the worker's trace events, and ingest into the buffer.
//!
//! Frames are a u32 big-endian length and a JSON [`TraceEvent`] (`capsule_protocol::frame`
//! format). The sidecar's own bound is [`MAX_TRACE_FRAME_BYTES`], far below the wire maximum,
//! since a trace event is small: a larger frame is skipped without being held in memory, a frame
//! that is not a valid event is skipped, both are counted, and the connection goes on. A frame
//! cut short ends its connection (the worker reconnects). At most [`MAX_CONNECTIONS`] writers are
//! served at once; more are closed at accept.

use std::path::Path;
use std::sync::{Arc, Mutex};

use capsule_protocol::frame::FRAME_HEADER_BYTES;
use capsule_protocol::trace::TraceEvent;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use crate::buffer::{StoredEvent, TraceBuffer};
use crate::error::{Error, Result};
use crate::export::SpanAssembler;
use crate::metrics::{FrameRejection, Metrics, RejectionLabels};
use crate::redaction::Redactor;

/// Largest trace frame accepted, in bytes (64 KiB; a bounded event is under 4 KiB).
pub const MAX_TRACE_FRAME_BYTES: usize = 64 * 1024;
/// Writers served at once (the worker uses one).
pub const MAX_CONNECTIONS: usize = 16;

/// Where received events go: the buffer, the span assembler and the counters.
#[derive(Debug)]
pub struct Ingest {
    pub buffer: Mutex<TraceBuffer>,
    pub redactor: Redactor,
    pub metrics: Arc<Metrics>,
    pub spans: Option<SpanAssembler>,
}

impl Ingest {
    pub fn accept(&self, event: TraceEvent) {
        self.metrics.events_received.inc();
        let stored = StoredEvent::from_wire(event, &self.redactor);
        if let Some(spans) = &self.spans {
            spans.observe(&stored);
        }
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let before = buffer.evictions();
        buffer.push(stored);
        let after = buffer.evictions();
        self.metrics
            .events_dropped
            .inc_by(after.early() - before.early());
        self.metrics.buffer_events.set(buffer.len() as i64);
        self.metrics.buffer_bytes.set(buffer.bytes() as i64);
    }

    fn reject(&self, reason: FrameRejection) {
        self.metrics
            .frames_rejected
            .get_or_create(&RejectionLabels { reason })
            .inc();
    }
}

/// Binds the socket: creates its directory, removes a stale socket file first.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let io = |what: &str, source| Error::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing the stale socket", e)),
    }
    UnixListener::bind(path).map_err(|e| io("binding", e))
}

/// Accepts writers until the task is dropped.
pub async fn serve(listener: UnixListener, ingest: Arc<Ingest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "trace socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max = MAX_CONNECTIONS,
                "too many trace writers, closing a connection"
            );
            continue;
        };
        let ingest = ingest.clone();
        tokio::spawn(async move {
            read_events(stream, &ingest).await;
            drop(slot);
        });
    }
}

/// Reads frames from one writer until it closes or breaks.
pub async fn read_events<R: AsyncRead + Unpin>(stream: R, ingest: &Ingest) {
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, stream);
    let mut body = Vec::with_capacity(1024);
    loop {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        if reader.read_exact(&mut header).await.is_err() {
            return;
        }
        let size = u32::from_be_bytes(header) as usize;
        if size > MAX_TRACE_FRAME_BYTES {
            ingest.reject(FrameRejection::Oversized);
            tracing::warn!(
                size,
                max = MAX_TRACE_FRAME_BYTES,
                "oversized trace frame skipped"
            );
            let mut rest = (&mut reader).take(size as u64);
            match tokio::io::copy(&mut rest, &mut tokio::io::sink()).await {
                Ok(skipped) if skipped == size as u64 => continue,
                _ => return,
            }
        }
        body.resize(size, 0);
        if reader.read_exact(&mut body).await.is_err() {
            tracing::debug!("trace frame cut short, closing the connection");
            return;
        }
        match serde_json::from_slice::<TraceEvent>(&body) {
            Ok(event) => ingest.accept(event),
            Err(_) => {
                // The parse error may quote the frame's bytes, which are not ours to log.
                ingest.reject(FrameRejection::Malformed);
                tracing::debug!(size, "malformed trace frame skipped");
            }
        }
    }
}
