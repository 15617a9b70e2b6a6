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
    #[error("HTTP client error: {0}")]
    Http(#[from] reqwest::Error),
}

/// Result with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
