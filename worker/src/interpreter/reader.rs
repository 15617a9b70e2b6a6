//! The tasks reading an interpreter's pipes: frames become [`DriverEvent`]s on a bounded channel
//! (a slow consumer slows the interpreter instead of growing memory); raw fds 1 and 2 are drained.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::checkpoint_waiters::CheckpointWaiters;
use super::decode::{decode_driver_frame, DriverEvent};
use super::frame_buffer::FrameBuffer;
use super::messages::FromDriver;
use crate::frame_observer::{self, Direction};
use crate::warn_once::WarnOnce;
use capsule_protocol::frame::FrameError;

static MALFORMED_DRIVER_FRAME: WarnOnce = WarnOnce::new();
static RAW_INTERPRETER_OUTPUT: WarnOnce = WarnOnce::new();

/// The interpreter's raw fds 1 and 2 (child processes, C extensions) carry user output that must
/// never reach the logs: drained and discarded, noted once.
pub(super) async fn discard_raw_output(mut stderr: pipe::Receiver) {
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
pub(super) async fn read_frames(
    stdout: pipe::Receiver,
    tx: mpsc::Sender<DriverEvent>,
    checkpoints: Arc<CheckpointWaiters>,
) {
    let mut frames = FrameBuffer::new(stdout);
    loop {
        let message = match frames.next_frame().await {
            Ok(body) => match decode_driver_frame(body) {
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
