//! Which session owns this worker, and bearer-token checks in constant time.

use std::sync::RwLock;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::wire::heartbeat::SessionBinding;

/// Result of checking a session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAuth {
    Accepted,
    NoSession,
    WrongToken,
}

#[derive(Debug)]
struct Bound {
    binding: SessionBinding,
    token_sha256: [u8; 32],
}

#[derive(Debug)]
pub struct SessionStore {
    bound: RwLock<Option<Bound>>,
    pool_token_sha256: Option<[u8; 32]>,
}

fn sha256(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Extracts the token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The bearer token of a request's `Authorization` header: what every Capsule server (worker,
/// operator ingest, sidecar) accepts as a token.
pub fn bearer_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    bearer_token(
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

impl SessionStore {
    pub fn new(pool_token: Option<&str>) -> Self {
        SessionStore {
            bound: RwLock::new(None),
            pool_token_sha256: pool_token.filter(|t| !t.is_empty()).map(sha256),
        }
    }

    /// Binds a session; `tokenSha256` must be 64 hex digits.
    pub fn bind(&self, binding: SessionBinding) -> Result<(), String> {
        let decoded = hex::decode(&binding.token_sha256)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                "tokenSha256 must be the 64-hex-digit sha256 of the session token".to_owned()
            })?;
        if binding.session.is_empty() {
            return Err("session must not be empty".to_owned());
        }
        let changed = self.current().as_ref() != Some(&binding);
        *self.bound.write().unwrap_or_else(|p| p.into_inner()) = Some(Bound {
            binding: binding.clone(),
            token_sha256: decoded,
        });
        if changed {
            tracing::info!(session = %binding.session, namespace = %binding.namespace, "session bound");
        }
        Ok(())
    }

    /// Releases the binding; returns the session that held the worker.
    pub fn release(&self) -> Option<String> {
        let previous = self.bound.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(previous) = &previous {
            tracing::info!(session = %previous.binding.session, "session released");
        }
        previous.map(|b| b.binding.session)
    }

    pub fn current(&self) -> Option<SessionBinding> {
        self.bound
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|b| b.binding.clone())
    }

    pub fn session_name(&self) -> Option<String> {
        self.current().map(|b| b.session)
    }

    /// Checks a session bearer token against the bound session.
    pub fn check_session_token(&self, token: &str) -> SessionAuth {
        let guard = self.bound.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            None => SessionAuth::NoSession,
            Some(bound) if bool::from(sha256(token).ct_eq(&bound.token_sha256)) => {
                SessionAuth::Accepted
            }
            Some(_) => SessionAuth::WrongToken,
        }
    }

    /// Checks the pool token; false when no pool token is configured.
    pub fn check_pool_token(&self, token: &str) -> bool {
        self.pool_token_sha256
            .is_some_and(|expected| bool::from(sha256(token).ct_eq(&expected)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens() {
        let store = SessionStore::new(Some("pool"));
        assert_eq!(store.check_session_token("t"), SessionAuth::NoSession);
        assert!(store
            .bind(SessionBinding {
                session: "s".into(),
                namespace: "n".into(),
                token_sha256: "zz".into()
            })
            .is_err());
        store
            .bind(SessionBinding {
                session: "s".into(),
                namespace: "n".into(),
                token_sha256: hex::encode(sha256("secret")),
            })
            .unwrap();
        assert_eq!(store.check_session_token("secret"), SessionAuth::Accepted);
        assert_eq!(store.check_session_token("Secret"), SessionAuth::WrongToken);
        assert!(store.check_pool_token("pool"));
        assert!(!store.check_pool_token("secret"));
        assert_eq!(store.release().as_deref(), Some("s"));
        assert!(!SessionStore::new(None).check_pool_token(""));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn bearer_from_request_headers() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(bearer_header(&headers), None);
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "bearer abc".parse().unwrap(),
        );
        assert_eq!(bearer_header(&headers), Some("abc"));
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer  ".parse().unwrap(),
        );
        assert_eq!(bearer_header(&headers), None, "an empty token is no token");
    }
}
