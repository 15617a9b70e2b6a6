//! The operator's error type and the bounded set of kinds it is counted by.

use std::time::Duration;

/// Everything that can fail while reconciling or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },

    #[error("object {0} has no namespace")]
    MissingNamespace(String),

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),

    #[error("pool key: {0}")]
    PoolKey(String),

    #[error("telemetry setup: {0}")]
    Telemetry(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A bounded label value for metrics: never the error message, which can carry object names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    Conflict,
    NotFound,
    Forbidden,
    Invalid,
    ApiServer,
    Transport,
    Serialize,
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Invalid => "invalid",
            Self::ApiServer => "api_server",
            Self::Transport => "transport",
            Self::Serialize => "serialize",
            Self::Other => "other",
        }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Kube(kube::Error::Api(status)) => match status.code {
                409 => ErrorKind::Conflict,
                404 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::Forbidden,
                400 | 422 => ErrorKind::Invalid,
                _ => ErrorKind::ApiServer,
            },
            Error::Kube(_) => ErrorKind::Transport,
            Error::Serialize { .. } => ErrorKind::Serialize,
            _ => ErrorKind::Other,
        }
    }
}

/// Exponential retry delay after `failures` consecutive failures of one object: 1 s, 2 s, 4 s …
/// capped at five minutes so a broken object is still retried regularly.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.min(8);
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }
}
