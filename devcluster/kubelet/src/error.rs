//! The crate's single error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("spawning `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("file system at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image mapping `{0}`: expected `PATTERN=COMMAND [ARGS...]`")]
    InvalidImageMapping(String),
    #[error("invalid image root `{0}`: expected `PATTERN=IMAGE` (an image in the local buildah storage)")]
    InvalidImageRoot(String),
    #[error("image `{image}` is not in the devcluster's local image storage ({message}): build it with `make images` (scripts/images.sh)")]
    ImageMissing { image: String, message: String },
    #[error("image `{image}` runs as user `{user}`, which is not numeric: set runAsUser (and runAsGroup) in the container's securityContext")]
    ImageUser { image: String, user: String },
    #[error("container {container} has runAsNonRoot and image `{image}` will run as root: set runAsUser to a non-zero uid or use an image with a non-root USER")]
    RunAsRoot { container: String, image: String },
    #[error("no command mapped for image `{0}`")]
    ImageNotMapped(String),
    #[error("object {0} has no {1}")]
    MissingField(String, &'static str),
    #[error("volume `{volume}`: {message}")]
    Volume { volume: String, message: String },
    #[error("env var `{name}`: {message}")]
    Env { name: String, message: String },
    #[error("loopback pod IP range exhausted")]
    PodIpsExhausted,
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
