//! Labels, annotations and names the operator puts on what it creates, so it can find them again.

/// On every worker pod: the pool it belongs to.
pub const POOL: &str = "capsule.dev/pool";
/// On a bound worker pod: the session holding it.
pub const SESSION: &str = "capsule.dev/session";
/// On a bound worker pod: lower-case hex sha256 of the session's token, which the worker checks.
pub const SESSION_TOKEN_SHA256: &str = "capsule.dev/session-token-sha256";
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

/// Key of the pool token inside its Secret.
pub const TOKEN_KEY: &str = "token";

/// The Secret holding a pool's heartbeat token.
pub fn pool_token_secret(pool: &str) -> String {
    format!("{pool}-pool-token")
}

/// Label selector of a pool's worker pods.
pub fn pool_selector(pool: &str) -> String {
    format!("{POOL}={pool}")
}

/// The Secret holding a session's execute token.
pub fn session_token_secret(session: &str) -> String {
    format!("{session}-session-token")
}
