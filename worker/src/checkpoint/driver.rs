//! The exchange with the interpreter's driver: the pickled namespace moves through a file in the
//! interpreter's working directory (bounded by its size check), never through one giant frame.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::interpreter::{DriverEvent, FromDriver, Interpreter, ToDriver};
use crate::runtime::Runtime;
use crate::standby::Standby;
use capsule_protocol::checkpoint::{
    SkippedName, MAX_LISTED_NAMES, MAX_LISTED_NAME_BYTES, MAX_SKIPPED_NAMES,
};
use capsule_protocol::trace::truncate;

/// How long the driver may take to pickle or unpickle a namespace (100 MB takes seconds).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(600);

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// What the driver saved: its file and the bounded name lists.
#[derive(Debug)]
pub struct Saved {
    path: PathBuf,
    pub raw_bytes: u64,
    pub names: Vec<String>,
    pub names_total: u64,
    pub skipped: Vec<SkippedName>,
    pub skipped_total: u64,
}

impl Saved {
    /// Reads the driver's file, refusing one over `max` bytes before reading it; removes it.
    pub fn read_file(&self, max: u64) -> Result<Vec<u8>> {
        let result = read_bounded(&self.path, max);
        let _ = std::fs::remove_file(&self.path);
        result
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    let io = |e| Error::CheckpointFailed(format!("reading the driver's checkpoint file: {e}"));
    // Session threads run beside the save: a symlink planted in place of the file (to a file only
    // the non-dumpable worker may read, such as its own /proc entries) is refused, not followed,
    // and a FIFO does not block the open (it is then refused as not a file).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(Error::CheckpointFailed(
            "the driver's checkpoint file is not a regular file".into(),
        ));
    }
    let size = metadata.len();
    let too_large = |size| Error::CheckpointTooLarge {
        size: size + super::seal::OVERHEAD,
        max: max + super::seal::OVERHEAD,
    };
    if size > max {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The names now in the namespace after a load.
#[derive(Debug)]
pub struct Loaded {
    pub names: Vec<String>,
    pub names_total: u64,
    pub namespace_size: u64,
}

fn transfer_path(interpreter: &Interpreter, what: &str) -> Result<PathBuf> {
    let dir = interpreter.session_dir().ok_or_else(|| {
        Error::CheckpointFailed("the interpreter has no working directory".into())
    })?;
    let suffix = hex::encode(rand::random::<[u8; 8]>());
    Ok(dir.join(format!(".capsule-{what}-{suffix}")))
}

/// Asks the driver to pickle the namespace into a file.
pub async fn save(
    runtime: &Arc<Runtime>,
    interpreter: Interpreter,
    standby: &mut Standby,
) -> (Interpreter, Result<Saved>) {
    let path = match transfer_path(&interpreter, "checkpoint") {
        Ok(path) => path,
        Err(error) => return (interpreter, Err(error)),
    };
    let request_id = NEXT_REQUEST.fetch_add(1, Relaxed);
    let path_text = path.to_string_lossy().into_owned();
    let frame = ToDriver::CheckpointSave {
        request_id,
        path: &path_text,
    };
    let (interpreter, reply) = exchange(runtime, interpreter, standby, &frame, request_id).await;
    let result = match reply {
        Ok(FromDriver::CheckpointSaved {
            raw_bytes,
            names,
            names_total,
            skipped,
            skipped_total,
            ..
        }) => Ok(Saved {
            path,
            raw_bytes,
            names_total,
            names: bound_names(names),
            skipped: bound_skipped(skipped),
            skipped_total,
        }),
        Ok(FromDriver::CheckpointFailed { stage, message, .. }) => {
            let _ = std::fs::remove_file(&path);
            Err(Error::CheckpointFailed(format!("{stage}: {message}")))
        }
        Ok(_) => unreachable!("exchange returns checkpoint replies only"),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            Err(error)
        }
    };
    (interpreter, result)
}

/// Writes the opened checkpoint where the fresh interpreter reads it, and has it loaded.
pub async fn load(
    runtime: &Arc<Runtime>,
    interpreter: Interpreter,
    standby: &mut Standby,
    id: &str,
    plain: Vec<u8>,
) -> (Interpreter, Result<Loaded>) {
    let written = transfer_path(&interpreter, "restore").and_then(|path| {
        write_for_interpreter(&path, &plain)
            .map(|()| path)
            .map_err(|e| Error::CheckpointFailed(format!("handing the checkpoint over: {e}")))
    });
    drop(plain);
    let path = match written {
        Ok(path) => path,
        Err(error) => return (interpreter, Err(error)),
    };
    let request_id = NEXT_REQUEST.fetch_add(1, Relaxed);
    let path_text = path.to_string_lossy().into_owned();
    let frame = ToDriver::CheckpointLoad {
        request_id,
        path: &path_text,
    };
    let (interpreter, reply) = exchange(runtime, interpreter, standby, &frame, request_id).await;
    let _ = std::fs::remove_file(&path);
    let result = match reply {
        Ok(FromDriver::CheckpointLoaded {
            names,
            names_total,
            namespace_size,
            ..
        }) => Ok(Loaded {
            names_total,
            names: bound_names(names),
            namespace_size,
        }),
        Ok(FromDriver::CheckpointFailed { stage, message, .. }) => Err(Error::CheckpointCorrupt {
            id: id.to_owned(),
            reason: format!("{stage} failed: {message}"),
        }),
        Ok(_) => unreachable!("exchange returns checkpoint replies only"),
        Err(error) => Err(error),
    };
    (interpreter, result)
}

/// Readable by the interpreter, whose uid may differ; its session directory keeps others out.
fn write_for_interpreter(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(bytes)
}

/// Sends `frame` and waits for its reply; other frames (output of `__setstate__` code) are
/// dropped. An interpreter that dies meanwhile is replaced (the namespace is lost, as on a crash).
async fn exchange(
    runtime: &Arc<Runtime>,
    mut interpreter: Interpreter,
    standby: &mut Standby,
    frame: &ToDriver<'_>,
    request_id: u64,
) -> (Interpreter, Result<FromDriver>) {
    if runtime.writer.send(frame).await.is_err() {
        return (interpreter, Err(Error::InterpreterGone));
    }
    let deadline = tokio::time::Instant::now() + DRIVER_TIMEOUT;
    loop {
        let event = match tokio::time::timeout_at(deadline, interpreter.events.recv()).await {
            Ok(event) => event,
            Err(_) => {
                interpreter.kill(Some(&runtime.writer)).await;
                return (
                    replace(runtime, standby).await,
                    Err(Error::InterpreterTimeout),
                );
            }
        };
        match event {
            Some(DriverEvent::Message(
                reply @ (FromDriver::CheckpointSaved { .. }
                | FromDriver::CheckpointLoaded { .. }
                | FromDriver::CheckpointFailed { .. }),
            )) if reply_id(&reply) == request_id => return (interpreter, Ok(reply)),
            Some(DriverEvent::Exited) | None => {
                let exit_code = interpreter.reap(&runtime.writer).await;
                tracing::warn!(
                    ?exit_code,
                    "interpreter died during a checkpoint; restarting"
                );
                return (replace(runtime, standby).await, Err(Error::InterpreterGone));
            }
            Some(_) => {}
        }
    }
}

async fn replace(runtime: &Arc<Runtime>, standby: &mut Standby) -> Interpreter {
    runtime.stats.interpreter_restarts.fetch_add(1, Relaxed);
    runtime.stats.namespace_size.store(0, Relaxed);
    runtime.namespace_lost.store(true, Relaxed);
    standby.next(runtime).await
}

fn reply_id(reply: &FromDriver) -> u64 {
    match reply {
        FromDriver::CheckpointSaved { request_id, .. }
        | FromDriver::CheckpointLoaded { request_id, .. }
        | FromDriver::CheckpointFailed { request_id, .. } => *request_id,
        _ => 0,
    }
}

fn bound_names(mut names: Vec<String>) -> Vec<String> {
    names.truncate(MAX_LISTED_NAMES);
    names
        .iter()
        .map(|n| truncate(n, MAX_LISTED_NAME_BYTES))
        .collect()
}

fn bound_skipped(mut skipped: Vec<SkippedName>) -> Vec<SkippedName> {
    skipped.truncate(MAX_SKIPPED_NAMES);
    for entry in &mut skipped {
        entry.name = truncate(&entry.name, MAX_LISTED_NAME_BYTES);
        entry.reason = truncate(&entry.reason, MAX_LISTED_NAME_BYTES);
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_file_is_read_within_its_bound_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_bounded(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_bounded(&file, 9),
            Err(Error::CheckpointTooLarge { .. })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            read_bounded(&link, 100),
            Err(Error::CheckpointFailed(_))
        ));
        assert!(read_bounded(dir.path(), 100).is_err(), "a directory");
    }
}
