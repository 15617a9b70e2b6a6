//! The write side of the current interpreter, shared by the executor, the bridge and the API, and
//! the one place a frame to a driver is encoded, observed and written.

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use super::messages::ToDriver;
use crate::error::{Error, Result};
use crate::frame_observer::{self, Direction};
use capsule_protocol::frame;

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

    pub(super) async fn replace(&self, stdin: Option<pipe::Sender>) {
        *self.stdin.lock().await = stdin;
    }
}

pub(super) async fn write_observed(stdin: &mut pipe::Sender, message: &ToDriver<'_>) -> Result<()> {
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
