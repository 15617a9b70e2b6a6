//! The API's error reply (a status with an [`ErrorBody`]) and the mapping of executor refusals to
//! it, so every handler answers the same refusal the same way.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::executor::{ResetError, SubmitError};
use capsule_protocol::execute::ErrorBody;

/// An HTTP error reply with an [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// `429 queueFull`; `advice` ends the message.
fn queue_full(limit: usize, advice: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "queueFull",
        format!("{limit} executions are already waiting (CAPSULE_EXECUTION_QUEUE_LIMIT){advice}"),
    )
}

pub(super) fn submit_error(SubmitError::QueueFull { limit }: SubmitError) -> ApiError {
    queue_full(limit, "; retry later")
}

pub(super) fn reset_error(error: ResetError) -> ApiError {
    match error {
        ResetError::QueueFull { limit } => queue_full(limit, ""),
        ResetError::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the worker is stopping",
        ),
        ResetError::Failed(message) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "resetFailed",
            format!("reset failed: {message}"),
        ),
    }
}
