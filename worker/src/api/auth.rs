//! Who may call what: the bound session's token, this worker's credential (the operator and the
//! sidecar), or either.

use axum::http::{HeaderMap, StatusCode};

use super::error::{ApiError, ApiResult};
use crate::runtime::Runtime;
use crate::session::SessionAuth;
use capsule_protocol::auth::bearer_header;

/// A 401 `unauthorized`: the token is missing or not one this call accepts.
fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    bearer_header(headers).ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>`"))
}

pub(crate) fn require_session(runtime: &Runtime, headers: &HeaderMap) -> ApiResult<()> {
    let token = bearer(headers)?;
    match runtime.session.check_session_token(token) {
        SessionAuth::Accepted => Ok(()),
        SessionAuth::NoSession => Err(ApiError::new(
            StatusCode::CONFLICT,
            "noSession",
            "no session holds this worker; it refuses executions until the operator binds one",
        )),
        SessionAuth::WrongToken => Err(unauthorized(
            "the bearer token is not the token of the session bound to this worker",
        )),
    }
}

pub(super) fn require_worker_credential(runtime: &Runtime, headers: &HeaderMap) -> ApiResult<()> {
    let token = bearer(headers)?;
    if runtime.session.check_worker_token(token) {
        Ok(())
    } else {
        Err(unauthorized(
            "the bearer token is not this worker's credential",
        ))
    }
}

pub(crate) fn require_session_or_worker(runtime: &Runtime, headers: &HeaderMap) -> ApiResult<()> {
    let token = bearer(headers)?;
    if runtime.session.check_worker_token(token)
        || runtime.session.check_session_token(token) == SessionAuth::Accepted
    {
        Ok(())
    } else {
        Err(unauthorized(
            "the bearer token is neither the worker credential nor the bound session's token",
        ))
    }
}
