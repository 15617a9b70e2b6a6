//! Every way a gateway request fails, and the JSON body (`{"code","message"}`, as the worker's)
//! each one answers with.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use capsule_protocol::execute::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("missing or wrong bearer token: send the session's token (the Secret in status.tokenSecret) as `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("no session {namespace}/{name}: create a CapsuleSession first (kubectl get csess -n {namespace})")]
    SessionNotFound { namespace: String, name: String },
    #[error(
        "session {namespace}/{name} is not bound to a worker (phase {phase}{reason}): {message}"
    )]
    SessionNotBound {
        namespace: String,
        name: String,
        phase: &'static str,
        /// `, reason X` or empty.
        reason: String,
        message: String,
    },
    #[error("the session's worker pod {worker} did not answer ({cause}); retry, or see the session's status")]
    WorkerUnreachable { worker: String, cause: &'static str },
    #[error("request body over {limit} bytes (the gateway's --max-body-bytes)")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    MalformedBody(String),
    #[error("no such route: the gateway serves /v1/sessions/{{namespace}}/{{name}}/ followed by a worker API path (executions, executions/{{id}}/cancel, executions/{{id}}/input, reset, promises/{{id}}/resolve, promises/{{id}}/reject, stats, checkpoint)")]
    NotFound,
    #[error("could not start: {0}")]
    Startup(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::SessionNotFound { .. } | Self::NotFound => StatusCode::NOT_FOUND,
            Self::SessionNotBound { .. } => StatusCode::CONFLICT,
            Self::WorkerUnreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Self::Startup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::SessionNotFound { .. } => "sessionNotFound",
            Self::SessionNotBound { .. } => "sessionNotBound",
            Self::WorkerUnreachable { .. } => "workerUnreachable",
            Self::BodyTooLarge { .. } => "bodyTooLarge",
            Self::MalformedBody(_) => "malformedBody",
            Self::NotFound => "notFound",
            Self::Startup(_) => "internal",
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code().into(),
            message: self.to_string(),
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        }
        response
    }
}
