//! Which session owns this worker, and bearer-token checks in constant time.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

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

/// The binding and how many times it changed, under one lock so a conditional change is atomic.
#[derive(Debug, Default)]
struct Slot {
    bound: Option<Bound>,
    changes: u64,
}

/// Which binding a change may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Any: the operator's direct call is the newest word.
    Always,
    /// Only the one seen at this [`SessionStore::changes`] count: a heartbeat reply describes the
    /// binding as the operator saw it, and a bind or release the worker got since outranks it.
    Unchanged(u64),
}

impl Precondition {
    fn holds(self, slot: &Slot) -> bool {
        match self {
            Precondition::Always => true,
            Precondition::Unchanged(seen) => slot.changes == seen,
        }
    }
}

#[derive(Debug)]
pub struct SessionStore {
    slot: RwLock<Slot>,
    worker_token_sha256: Option<[u8; 32]>,
}

impl SessionStore {
    pub fn new(worker_token: Option<&str>) -> Self {
        SessionStore {
            slot: RwLock::new(Slot::default()),
            worker_token_sha256: worker_token.filter(|t| !t.is_empty()).map(token_sha256),
        }
    }

    /// Binds `binding` (`tokenSha256` must be 64 hex digits); returns whether it changed the
    /// binding.
    pub fn bind(&self, binding: SessionBinding) -> Result<bool, String> {
        self.bind_if(binding, Precondition::Always)
    }

    /// Binds `binding` when `precondition` holds; returns whether it changed the binding.
    pub fn bind_if(
        &self,
        binding: SessionBinding,
        precondition: Precondition,
    ) -> Result<bool, String> {
        let decoded = parse_sha256_hex(&binding.token_sha256).ok_or_else(|| {
            "tokenSha256 must be the 64-hex-digit sha256 of the session token".to_owned()
        })?;
        if binding.session.is_empty() {
            return Err("session must not be empty".to_owned());
        }
        let mut slot = self.slot_mut();
        if !precondition.holds(&slot) {
            return Ok(false);
        }
        let checkpoint = CheckpointIdentity::of(&binding, slot.bound.as_ref())?;
        let changed = !slot
            .bound
            .as_ref()
            .is_some_and(|b| same_session(&b.binding, &binding) && b.checkpoint == checkpoint);
        slot.bound = Some(Bound {
            binding: binding.clone(),
            token_sha256: decoded,
            checkpoint,
        });
        slot.changes += u64::from(changed);
        drop(slot);
        if changed {
            tracing::info!(session = %binding.session, namespace = %binding.namespace, "session bound");
        }
        Ok(changed)
    }

    /// Releases the binding; returns the session that held the worker.
    pub fn release(&self) -> Option<String> {
        self.release_if(Precondition::Always)
    }

    /// Releases the binding when `precondition` holds; returns the session that held the worker.
    pub fn release_if(&self, precondition: Precondition) -> Option<String> {
        let mut slot = self.slot_mut();
        if !precondition.holds(&slot) {
            return None;
        }
        let previous = slot.bound.take();
        slot.changes += u64::from(previous.is_some());
        drop(slot);
        if let Some(previous) = &previous {
            tracing::info!(session = %previous.binding.session, "session released");
        }
        previous.map(|b| b.binding.session)
    }

    /// How many times the binding changed; a [`Precondition::Unchanged`] names one count.
    pub fn changes(&self) -> u64 {
        self.slot().changes
    }

    pub fn current(&self) -> Option<SessionBinding> {
        self.slot().bound.as_ref().map(|b| b.binding.clone())
    }

    /// The bound session's checkpoint scope and key.
    pub fn checkpoint_identity(&self) -> Option<CheckpointIdentity> {
        self.slot().bound.as_ref().map(|b| b.checkpoint.clone())
    }

    pub fn session_name(&self) -> Option<String> {
        self.current().map(|b| b.session)
    }

    /// Checks a session bearer token against the bound session.
    pub fn check_session_token(&self, token: &str) -> SessionAuth {
        let slot = self.slot();
        match slot.bound.as_ref() {
            None => SessionAuth::NoSession,
            Some(bound) if token_matches_sha256(token, &bound.token_sha256) => {
                SessionAuth::Accepted
            }
            Some(_) => SessionAuth::WrongToken,
        }
    }

    /// The binding slot, whether or not a holder panicked (poisoning is ignored).
    fn slot(&self) -> RwLockReadGuard<'_, Slot> {
        self.slot.read().unwrap_or_else(|p| p.into_inner())
    }

    fn slot_mut(&self) -> RwLockWriteGuard<'_, Slot> {
        self.slot.write().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn a_change_made_after_the_precondition_was_read_outranks_it() {
        let store = SessionStore::new(None);
        let seen_unbound = store.changes();
        store.bind(binding(Some("u1"), None)).unwrap();
        assert_eq!(
            store.release_if(Precondition::Unchanged(seen_unbound)),
            None
        );
        assert_eq!(
            store.session_name().as_deref(),
            Some("s"),
            "a stale release is ignored"
        );

        let seen_bound = store.changes();
        store.release();
        let stale = binding(Some("u1"), None);
        assert!(!store
            .bind_if(stale, Precondition::Unchanged(seen_bound))
            .unwrap());
        assert_eq!(store.current(), None, "a stale bind is ignored");

        let seen = store.changes();
        assert!(store
            .bind_if(binding(Some("u2"), None), Precondition::Unchanged(seen))
            .unwrap());
        let seen = store.changes();
        assert!(!store.bind(binding(Some("u2"), None)).unwrap());
        assert_eq!(
            store.changes(),
            seen,
            "a rebind that changes nothing is not a change"
        );
        assert_eq!(
            store.release_if(Precondition::Unchanged(seen)).as_deref(),
            Some("s")
        );
    }
}
