//! The crate's one error type.

/// What can go wrong in the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("i/o on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("worker API: {0}")]
    Worker(String),
    #[error("OTLP exporter: {0}")]
    Export(String),
    #[error("logging setup: {0}")]
    Logging(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
