//! A container's log file: stdout and stderr of every run, size-bounded.
//!
//! Bound: when the current file would exceed `max_bytes` it is truncated and writing starts over,
//! so one container never holds more than `max_bytes` of current log plus one previous-run file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

const COPY_CHUNK_BYTES: usize = 8 * 1024;

/// `<dir>/<container>.log` for the current run; `<dir>/<container>.previous.log` for the one before.
pub fn log_paths(dir: &Path, container: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{container}.log")),
        dir.join(format!("{container}.previous.log")),
    )
}

#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<SinkFile>>,
}

struct SinkFile {
    file: File,
    written: u64,
    max_bytes: u64,
}

impl LogSink {
    /// Moves an existing current log aside as the previous run's and opens a fresh one.
    pub async fn open_for_new_run(dir: &Path, container: &str, max_bytes: u64) -> Result<Self> {
        let (current, previous) = log_paths(dir, container);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(dir, e))?;
        if tokio::fs::metadata(&current).await.is_ok() {
            tokio::fs::rename(&current, &previous)
                .await
                .map_err(|e| Error::io(&previous, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .await
            .map_err(|e| Error::io(&current, e))?;
        Ok(LogSink {
            inner: Arc::new(Mutex::new(SinkFile {
                file,
                written: 0,
                max_bytes,
            })),
        })
    }

    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut sink = self.inner.lock().await;
        if sink.written + bytes.len() as u64 > sink.max_bytes {
            sink.file.set_len(0).await?;
            sink.written = 0;
        }
        sink.file.write_all(bytes).await?;
        // tokio hands writes to a background thread; flushing waits until the bytes are in the
        // file, so `kubectl logs` (and a finished container's status) never runs ahead of them.
        sink.file.flush().await?;
        sink.written += bytes.len() as u64;
        Ok(())
    }

    /// Copies a process's stream into the file until end-of-file.
    pub async fn copy_from(self, mut stream: impl AsyncRead + Unpin) {
        let mut buffer = vec![0u8; COPY_CHUNK_BYTES];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Err(error) = self.write(&buffer[..n]).await {
                        tracing::warn!(%error, "writing container log failed");
                        return;
                    }
                }
            }
        }
    }
}
