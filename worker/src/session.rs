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
    /// From the binding's uid and key. A re-bind of the same session (name, namespace and token)
    /// without them keeps the previous ones (an operator's heartbeat reply that leaves them out);
    /// a bare worker's binding gets a random uid and key, kept while the binding lasts, so such
    /// checkpoints restore only here.
    fn of(binding: &SessionBinding, previous: Option<&Bound>) -> Result<Self, String> {
        let kept = previous
            .filter(|p| same_session(&p.binding, binding))
            .map(|p| &p.checkpoint);
        let key = match &binding.checkpoint_key {
            Some(hex_digits) => SealKey::new(parse_sha256_hex(hex_digits).ok_or_else(|| {
                "checkpointKey must be 64 lower-case hex digits (auth::checkpoint_key)".to_owned()
            })?),
            None => kept.map_or_else(SealKey::random, |c| c.key.clone()),
        };
        let uid = match &binding.session_uid {
            Some(uid) if uid.is_empty() => return Err("sessionUid must not be empty".to_owned()),
            Some(uid) => uid.clone(),
            None => kept.map_or_else(
                || format!("local-{}", hex::encode(rand::random::<[u8; 8]>())),
                |c| c.scope.uid.clone(),
            ),
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

fn same_session(a: &SessionBinding, b: &SessionBinding) -> bool {
    a.session == b.session && a.namespace == b.namespace && a.token_sha256 == b.token_sha256
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
        let mut bound = self.bound.write().unwrap_or_else(|p| p.into_inner());
        let checkpoint = CheckpointIdentity::of(&binding, bound.as_ref())?;
        let changed = !bound
            .as_ref()
            .is_some_and(|b| same_session(&b.binding, &binding) && b.checkpoint == checkpoint);
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

    fn binding(uid: Option<&str>, key: Option<String>) -> SessionBinding {
        SessionBinding {
            session: "s".into(),
            namespace: "n".into(),
            token_sha256: capsule_protocol::auth::token_sha256_hex("secret"),
            session_uid: uid.map(str::to_owned),
            checkpoint_key: key,
        }
    }

    #[test]
    fn a_rebind_without_uid_and_key_keeps_the_operators_and_is_no_change() {
        let store = SessionStore::new(None);
        let key = capsule_protocol::auth::checkpoint_key(b"pool", "n", "s", "u1");
        assert!(store.bind(binding(Some("u1"), Some(key.clone()))).unwrap());
        let first = store.checkpoint_identity().unwrap();
        assert_eq!(first.scope.uid, "u1");
        assert!(!store.bind(binding(None, None)).unwrap(), "no change");
        assert_eq!(store.checkpoint_identity().unwrap(), first);
        assert!(
            store.bind(binding(Some("u2"), None)).unwrap(),
            "another uid"
        );
        assert!(store.bind(binding(Some("u1"), Some("zz".into()))).is_err());
        store.release();
        store.bind(binding(None, None)).unwrap();
        let bare = store.checkpoint_identity().unwrap();
        assert!(bare.scope.uid.starts_with("local-") && bare.key != first.key);
        store.bind(binding(None, None)).unwrap();
        assert_eq!(
            store.checkpoint_identity().unwrap(),
            bare,
            "kept while bound"
        );
    }
}
