//! Names of labels and annotations that more than one Capsule process reads: the operator writes
//! them, the gateway trusts them. Kept here so no reader depends on the operator crate.

/// On a bound worker pod (label): the session holding it.
pub const SESSION: &str = "capsule.dev/session";
/// On a bound worker pod (annotation): lower-case hex sha256 of the session's token, which the
/// worker and the gateway check a bearer against.
pub const SESSION_TOKEN_SHA256: &str = "capsule.dev/session-token-sha256";
/// On a bound worker pod (annotation): the uid of the session holding it, under which the worker
/// stores the session's checkpoints.
pub const SESSION_UID: &str = "capsule.dev/session-uid";
