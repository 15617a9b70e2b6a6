//! A typed client for the worker's admin calls: bind and release a session, read its counters and
//! its namespace listing. The operator and the sidecar use it; the bearer is the worker's own
//! credential, never a session token.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::execute::{NamespaceListing, WorkerStats};
use crate::heartbeat::SessionBinding;

/// Largest admin reply read, in bytes; a namespace listing of 1,000 names is far below it.
pub const MAX_ADMIN_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// How long one admin call may take by default, connection included.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin call failed. Messages carry the method and path, never the URL's host or a token.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{call}: worker unreachable: {reason}")]
    Unreachable { call: String, reason: String },
    #[error("{call}: worker answered {status}")]
    Refused { call: String, status: u16 },
    #[error("{call}: reply larger than {MAX_ADMIN_REPLY_BYTES} bytes")]
    TooLarge { call: String },
    #[error("{call}: unexpected reply: {reason}")]
    Unexpected { call: String, reason: String },
}

impl AdminError {
    /// The HTTP status the worker answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One worker's admin API.
#[derive(Clone, Debug)]
pub struct WorkerClient {
    http: reqwest::Client,
    base_url: String,
    credential: String,
    timeout: Duration,
}

impl WorkerClient {
    /// `base_url` is `http://host:port` without a trailing slash.
    pub fn new(
        http: reqwest::Client,
        base_url: impl Into<String>,
        credential: impl Into<String>,
    ) -> Self {
        WorkerClient {
            http,
            base_url: base_url.into(),
            credential: credential.into(),
            timeout: ADMIN_TIMEOUT,
        }
    }

    /// Bounds each call by `timeout` instead of [`ADMIN_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `PUT /v1/session`: the worker accepts only this session's token from now on.
    pub async fn bind(&self, binding: &SessionBinding) -> Result<(), AdminError> {
        let request = self.http.put(self.url("/v1/session")).json(binding);
        self.send("PUT /v1/session", request).await.map(drop)
    }

    /// `DELETE /v1/session`, with `?reset=true` to give the next session a fresh namespace.
    pub async fn release(&self, reset: bool) -> Result<(), AdminError> {
        let path = if reset {
            "/v1/session?reset=true"
        } else {
            "/v1/session"
        };
        let request = self.http.delete(self.url(path));
        self.send(&format!("DELETE {path}"), request)
            .await
            .map(drop)
    }

    /// `GET /v1/stats`: counters, state and pending promises.
    pub async fn stats(&self) -> Result<WorkerStats, AdminError> {
        self.get("/v1/stats").await
    }

    /// `GET /v1/namespace`: the bounded listing of names, types and sizes (never values).
    pub async fn namespace(&self) -> Result<NamespaceListing, AdminError> {
        self.get("/v1/namespace").await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        let call = format!("GET {path}");
        let request = self.http.get(self.url(path));
        let body = self.send(&call, request).await?;
        serde_json::from_slice(&body).map_err(|e| AdminError::Unexpected {
            call,
            reason: e.to_string(),
        })
    }

    /// Sends with the credential and the timeout, and reads the reply within its bound.
    async fn send(
        &self,
        call: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, AdminError> {
        let unreachable = |e: reqwest::Error| AdminError::Unreachable {
            call: call.to_owned(),
            reason: e.without_url().to_string(),
        };
        let mut response = request
            .bearer_auth(&self.credential)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(AdminError::Refused {
                call: call.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ADMIN_REPLY_BYTES {
                return Err(AdminError::TooLarge {
                    call: call.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
