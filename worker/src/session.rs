//! Which session owns this worker, and bearer-token checks in constant time.

use std::sync::RwLock;

use crate::checkpoint::seal::SealKey;
use crate::checkpoint::store::Scope;
use capsule_protocol::auth::{parse_sha256_hex, token_matches_sha256, token_sha256};
use capsule_protocol::heartbeat::SessionBinding;

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
    checkpoint: CheckpointIdentity,
}

/// Who the bound session's checkpoints belong to and the key they are sealed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointIdentity {
    pub scope: Scope,
    pub key: SealKey,
}

impl CheckpointIdentity {
    /// From the binding, or (a bare worker: no uid or no key) a random uid and key kept while this
    /// binding lasts, so such checkpoints restore only here.
    fn of(binding: &SessionBinding, previous: Option<&Bound>) -> Result<Self, String> {
        let kept = previous.filter(|p| {
            p.binding.session == binding.session && p.binding.namespace == binding.namespace
        });
        let key = match &binding.checkpoint_key {
            Some(hex_digits) => SealKey::new(parse_sha256_hex(hex_digits).ok_or_else(|| {
                "checkpointKey must be 64 lower-case hex digits (auth::checkpoint_key)".to_owned()
            })?),
            None => kept
                .filter(|p| p.binding.checkpoint_key.is_none())
                .map(|p| p.checkpoint.key.clone())
                .unwrap_or_else(SealKey::random),
        };
        let uid = match &binding.session_uid {
            Some(uid) if uid.is_empty() => return Err("sessionUid must not be empty".to_owned()),
            Some(uid) => uid.clone(),
            None => kept
                .filter(|p| p.binding.session_uid.is_none())
                .map(|p| p.checkpoint.scope.uid.clone())
                .unwrap_or_else(|| format!("local-{}", hex::encode(rand::random::<[u8; 8]>()))),
        };
        Ok(CheckpointIdentity {
            scope: Scope {
                namespace: binding.namespace.clone(),
                session: binding.session.clone(),
                uid,
            },
            key,
        })
    }
}

#[derive(Debug)]
pub struct SessionStore {
    bound: RwLock<Option<Bound>>,
    worker_token_sha256: Option<[u8; 32]>,
}

impl SessionStore {
    pub fn new(worker_token: Option<&str>) -> Self {
        SessionStore {
            bound: RwLock::new(None),
            worker_token_sha256: worker_token.filter(|t| !t.is_empty()).map(token_sha256),
        }
    }

    /// Binds a session; `tokenSha256` must be 64 hex digits.
    /// Binds `binding`; returns whether it changed the binding.
    pub fn bind(&self, binding: SessionBinding) -> Result<bool, String> {
        let decoded = parse_sha256_hex(&binding.token_sha256).ok_or_else(|| {
            "tokenSha256 must be the 64-hex-digit sha256 of the session token".to_owned()
        })?;
        if binding.session.is_empty() {
            return Err("session must not be empty".to_owned());
        }
        let changed = self.current().as_ref() != Some(&binding);
        let mut bound = self.bound.write().unwrap_or_else(|p| p.into_inner());
        let checkpoint = CheckpointIdentity::of(&binding, bound.as_ref())?;
        *bound = Some(Bound {
            binding: binding.clone(),
            token_sha256: decoded,
            checkpoint,
        });
        drop(bound);
        if changed {
            tracing::info!(session = %binding.session, namespace = %binding.namespace, "session bound");
        }
        Ok(changed)
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

    /// The bound session's checkpoint scope and key.
    pub fn checkpoint_identity(&self) -> Option<CheckpointIdentity> {
        self.bound
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|b| b.checkpoint.clone())
    }

    pub fn session_name(&self) -> Option<String> {
        self.current().map(|b| b.session)
    }

    /// Checks a session bearer token against the bound session.
    pub fn check_session_token(&self, token: &str) -> SessionAuth {
        let guard = self.bound.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            None => SessionAuth::NoSession,
            Some(bound) if token_matches_sha256(token, &bound.token_sha256) => {
                SessionAuth::Accepted
            }
            Some(_) => SessionAuth::WrongToken,
        }
    }

    /// Checks the worker credential; false when no worker credential is configured.
    pub fn check_worker_token(&self, token: &str) -> bool {
        self.worker_token_sha256
            .is_some_and(|expected| token_matches_sha256(token, &expected))
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
                token_sha256: "zz".into(),
                session_uid: None,
                checkpoint_key: None,
            })
            .is_err());
        store
            .bind(SessionBinding {
                session: "s".into(),
                namespace: "n".into(),
                token_sha256: capsule_protocol::auth::token_sha256_hex("secret"),
                session_uid: None,
                checkpoint_key: None,
            })
            .unwrap();
        assert_eq!(store.check_session_token("secret"), SessionAuth::Accepted);
        assert_eq!(store.check_session_token("Secret"), SessionAuth::WrongToken);
        assert!(store.check_worker_token("pool"));
        assert!(!store.check_worker_token("secret"));
        assert_eq!(store.release().as_deref(), Some("s"));
        assert!(!SessionStore::new(None).check_worker_token(""));
    }
}
