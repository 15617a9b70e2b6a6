//! The crate's one error type. API failures carry the HTTP status and `metav1.Status` reason the
//! real API server would answer with, so clients (kubectl, kube-rs) react the same way.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    NotFound { message: String },
    #[error("{message}")]
    AlreadyExists { message: String },
    #[error("{message}")]
    Conflict { message: String },
    /// A server-side apply conflict; `causes` name each contested field and its manager.
    #[error("{message}")]
    ApplyConflict {
        message: String,
        causes: Vec<serde_json::Value>,
    },
    /// 422 with field causes; `message` is already worded like the real server's.
    #[error("{message}")]
    Invalid {
        message: String,
        group: String,
        kind: String,
        name: String,
        causes: Vec<serde_json::Value>,
    },
    #[error("{message}")]
    BadRequest { message: String },
    #[error("{message}")]
    Gone { message: String },
    #[error("{message}")]
    Forbidden { message: String },
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{message}")]
    MethodNotSupported { message: String },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{message}")]
    NotAcceptable { message: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubelet: {0}")]
    Kubelet(#[from] capsule_kubelet::Error),
    #[error("configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn not_found(resource: &str, name: &str) -> Self {
        Error::NotFound {
            message: format!("{resource} \"{name}\" not found"),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::BadRequest {
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden {
            message: message.into(),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::ApplyConflict { .. } => {
                StatusCode::CONFLICT
            }
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest { .. } | Error::Json(_) | Error::Yaml(_) => StatusCode::BAD_REQUEST,
            Error::Gone { .. } => StatusCode::GONE,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::MethodNotSupported { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } | Error::ApplyConflict { .. } => "Conflict",
            Error::Invalid { .. } => "Invalid",
            Error::BadRequest { .. } | Error::Json(_) | Error::Yaml(_) => "BadRequest",
            Error::Gone { .. } => "Expired",
            Error::Forbidden { .. } => "Forbidden",
            Error::Unauthorized => "Unauthorized",
            Error::MethodNotSupported { .. } => "MethodNotAllowed",
            Error::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            Error::NotAcceptable { .. } => "NotAcceptable",
            _ => "InternalError",
        }
    }

    /// The `metav1.Status` body the real API server sends for this failure.
    pub fn status_body(&self) -> serde_json::Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.status_code().as_u16(),
        });
        if let Error::Invalid {
            group,
            kind,
            name,
            causes,
            ..
        } = self
        {
            status["details"] =
                json!({"name": name, "group": group, "kind": kind, "causes": causes});
        }
        status
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.status_code();
        if code == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
        }
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.status_body().to_string(),
        )
            .into_response()
    }
}
