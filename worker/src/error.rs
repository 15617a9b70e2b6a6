//! The worker's one error type.

use capsule_protocol::frame::FrameError;

/// Everything that can go wrong in the worker runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not start the interpreter `{program}`: {source}")]
    InterpreterSpawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the interpreter is not running")]
    InterpreterGone,
    #[error("the interpreter did not answer in time")]
    InterpreterTimeout,
    #[error("the fork server refused: {0}")]
    ForkRefused(String),
    #[error("the warm-up code raised {ename}")]
    WarmupFailed { ename: String, evalue: String },
    #[error("interpreter frame error: {0}")]
    Frame(#[from] FrameError),
    #[error("could not bind the HTTP API on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what}: {source}")]
    Scratch {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoints are disabled on this worker: set CAPSULE_CHECKPOINT_DIR (the pool's spec.checkpoints)")]
    CheckpointsDisabled,
    #[error("no checkpoint {id} for this session")]
    CheckpointNotFound { id: String },
    #[error("checkpoint of {size} bytes exceeds the bound of {max} bytes (CAPSULE_CHECKPOINT_MAX_BYTES, the pool's spec.checkpoints.maxBytes); raise it or delete large names")]
    CheckpointTooLarge { size: u64, max: u64 },
    #[error("checkpoint {id} is corrupt: {reason}")]
    CheckpointCorrupt { id: String, reason: String },
    #[error("an execution is running or queued; checkpoint or restore once it is done")]
    CheckpointBusy,
    #[error("checkpoint failed: {0}")]
    CheckpointFailed(String),
    #[error("HTTP client error: {0}")]
    Http(#[from] reqwest::Error),
}

/// Result with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
