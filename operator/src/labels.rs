//! Labels, annotations and names the operator puts on what it creates, so it can find them again.

/// On every worker pod: the pool it belongs to.
pub const POOL: &str = "capsule.dev/pool";
/// The session holding a bound worker pod and its token's hash: shared with the gateway.
pub use capsule_protocol::names::{SESSION, SESSION_TOKEN_SHA256, SESSION_UID};
/// Finalizer on sessions: the worker is released before the session goes.
pub const RELEASE_FINALIZER: &str = "capsule.dev/release";
/// On every worker pod: hash of the pool template it was built from.
pub const TEMPLATE_HASH: &str = "capsule.dev/template-hash";
/// On the operator replica's own pod while it holds the lease: the heartbeat Service selects it.
pub const LEADER: &str = "capsule.dev/leader";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const NAME: &str = "app.kubernetes.io/name";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGER: &str = "capsule-operator";

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "capsule-operator";

/// Key of the token inside a pool's, a worker's or a session's Secret.
pub const TOKEN_KEY: &str = "token";

/// The Secret holding a pool's key, from which each worker's credential is derived. No pod mounts it.
pub fn pool_token_secret(pool: &str) -> String {
    format!("{pool}-pool-token")
}

/// On a worker's credential Secret: the worker pod it belongs to. Not `MANAGED_BY`, so the
/// operator's Secret cache (pool keys, session tokens) does not grow with the number of workers.
pub const CREDENTIAL_OF: &str = "capsule.dev/credential-of";

/// The Secret holding one worker's credential (see `capsule_protocol::auth::worker_credential`).
pub fn worker_credential_secret(pod: &str) -> String {
    format!("{pod}-credential")
}

/// Label selector of every object the operator made (its watches select these).
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// Label selector of a pool's worker pods.
pub fn pool_selector(pool: &str) -> String {
    format!("{POOL}={pool}")
}

/// The pool's workers no session holds: the warm pool the scale subresource describes.
pub fn unbound_selector(pool: &str) -> String {
    format!("{POOL}={pool},!{SESSION}")
}

/// The Secret holding a session's execute token.
pub fn session_token_secret(session: &str) -> String {
    format!("{session}-session-token")
}

/// The NetworkPolicy around a pool's worker pods.
pub fn pool_network_policy(pool: &str) -> String {
    format!("{pool}-workers")
}
