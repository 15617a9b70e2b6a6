//! Reading request bodies and queries: size limits, JSON decoding and metadata bounds, each
//! refusal a 4xx with a stable code.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::auth::require_session;
use super::error::{ApiError, ApiResult};
use crate::runtime::Runtime;
use capsule_protocol::execute::{ExecuteRequest, MAX_METADATA_ENTRIES};

/// Decodes a JSON request body read in full: anything that is not valid JSON for `T` is a 400
/// `malformedBody`.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformedBody",
            format!("request body is not valid JSON for this endpoint: {error}"),
        )
    })
}

/// Decodes a `POST /v1/executions` body and checks its bounds.
pub fn decode_execute_request(bytes: &[u8]) -> ApiResult<ExecuteRequest> {
    let request: ExecuteRequest = decode_body(bytes)?;
    check_metadata_entries(request.metadata.len())?;
    Ok(request)
}

pub(super) fn check_metadata_entries(count: usize) -> ApiResult<()> {
    if count > MAX_METADATA_ENTRIES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "tooMuchMetadata",
            format!("metadata holds at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    Ok(())
}

pub(super) fn read_body(
    runtime: &Runtime,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bodyTooLarge",
                format!(
                    "request body exceeds the limit of {} bytes (CAPSULE_MAX_REQUEST_BYTES)",
                    runtime.config.max_request_bytes
                ),
            )
        } else {
            ApiError::new(rejection.status(), "badBody", rejection.body_text())
        }
    })
}

/// The body of a call only the bound session may make: its token is checked first.
pub(super) fn session_body<T: DeserializeOwned>(
    runtime: &Runtime,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    require_session(runtime, headers)?;
    parse_body(runtime, body)
}

pub(super) fn parse_body<T: DeserializeOwned>(
    runtime: &Runtime,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    decode_body(&read_body(runtime, body)?)
}

pub(super) fn parse_query<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "badQuery", rejection.body_text())
    })?;
    Ok(query)
}
