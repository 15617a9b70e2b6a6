//! Credentials on the wire: the bearer parser every Capsule server uses, the session-token hash the
//! operator hands a worker, and comparisons that take the same time whatever matched.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a token: what a worker stores instead of a session token.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// [`token_sha256`] as 64 lowercase hex digits, the form of `SessionBinding::token_sha256`.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(token_sha256(token))
}

/// Parses 64 hex digits back into a hash; `None` for anything else.
pub fn parse_sha256_hex(hex_digits: &str) -> Option<[u8; 32]> {
    hex::decode(hex_digits)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}

/// Whether `token` hashes to `expected`, in constant time.
pub fn token_matches_sha256(token: &str, expected: &[u8; 32]) -> bool {
    bool::from(token_sha256(token).ct_eq(expected))
}

/// Whether two tokens are equal. Both are hashed first, so neither the content nor the length of
/// the expected token shows in the time taken.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    token_matches_sha256(given, &token_sha256(expected))
}

/// The credential of one worker pod: HMAC-SHA256 of the pod's namespace and name under its pool's
/// key, as 64 hex digits. The worker and its sidecar hold only this; the pool key stays with the
/// operator, so a credential leaked from one pod acts on that pod alone.
pub fn worker_credential(pool_key: &str, namespace: &str, pod: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(pool_key.as_bytes()).expect("HMAC accepts any key length");
    // Separators that cannot occur in Kubernetes names keep ("a-b", "c") apart from ("a", "b-c").
    mac.update(b"capsule.dev/worker-credential/v1\0");
    mac.update(namespace.as_bytes());
    mac.update(b"\0");
    mac.update(pod.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The key a session's checkpoints are sealed with: HMAC-SHA256 under the pool key of the
/// session's namespace, name and uid, as 64 hex digits. The operator sends it on every bind; any
/// worker of the pool bound to the same session (same uid) gets the same key, so one restores what
/// another wrote, while a session of another name or uid cannot open them.
pub fn checkpoint_key(pool_key: &[u8], namespace: &str, name: &str, uid: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(pool_key).expect("HMAC accepts any key length");
    // Its own domain, so a checkpoint key is never a valid worker credential and back.
    mac.update(b"capsule.dev/checkpoint-key/v1\0");
    for (i, part) in [namespace, name, uid].iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Extracts the token of an `Authorization: Bearer <token>` header value. The scheme is
/// case-insensitive (RFC 7235); an empty token is no token.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The bearer token of a request's `Authorization` header: what every Capsule server (worker,
/// operator ingest, sidecar, gateway) accepts as a token.
pub fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    bearer_token(
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Makes this process non-dumpable, so code of the same uid (a session's interpreter) cannot read
/// the credentials in its memory or its `/proc/<pid>/environ`, nor ptrace it.
pub fn keep_credentials_from_same_uid() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes only this process's dumpable flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_header(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer_header(&headers), Some("abc"));
        headers.insert(http::header::AUTHORIZATION, "Bearer  ".parse().unwrap());
        assert_eq!(bearer_header(&headers), None, "an empty token is no token");
    }

    #[test]
    fn a_worker_credential_belongs_to_one_pod_of_one_pool() {
        let own = worker_credential("key", "ns", "p-abcde");
        assert_eq!(own.len(), 64);
        assert_eq!(own, worker_credential("key", "ns", "p-abcde"), "stable");
        assert_ne!(
            own,
            worker_credential("key", "ns", "p-abcdf"),
            "another pod"
        );
        assert_ne!(
            own,
            worker_credential("key", "other", "p-abcde"),
            "another namespace"
        );
        assert_ne!(
            own,
            worker_credential("key2", "ns", "p-abcde"),
            "another pool key"
        );
        assert_ne!(
            worker_credential("key", "a-b", "c"),
            worker_credential("key", "a", "b-c"),
            "the boundary between namespace and name is part of the input"
        );
    }

    #[test]
    fn a_checkpoint_key_belongs_to_one_session_uid() {
        let key = checkpoint_key(b"pool", "ns", "s1", "uid-1");
        assert_eq!(key.len(), 64);
        assert!(
            parse_sha256_hex(&key).is_some(),
            "32 bytes of lower-case hex"
        );
        assert_eq!(key, checkpoint_key(b"pool", "ns", "s1", "uid-1"), "stable");
        assert_ne!(key, checkpoint_key(b"pool", "ns", "s1", "uid-2"), "new uid");
        assert_ne!(key, checkpoint_key(b"pool", "ns", "s2", "uid-1"), "name");
        assert_ne!(key, checkpoint_key(b"pool", "ns2", "s1", "uid-1"), "ns");
        assert_ne!(key, checkpoint_key(b"pool2", "ns", "s1", "uid-1"), "key");
        assert_ne!(
            checkpoint_key(b"pool", "a-b", "c", "u"),
            checkpoint_key(b"pool", "a", "b-c", "u"),
            "boundaries are part of the input"
        );
        assert_ne!(key, worker_credential("pool", "ns", "s1"), "own domain");
    }

    #[test]
    fn hashes_round_trip_and_compare() {
        let hex_digits = token_sha256_hex("secret");
        assert_eq!(hex_digits.len(), 64);
        let parsed = parse_sha256_hex(&hex_digits).unwrap();
        assert!(token_matches_sha256("secret", &parsed));
        assert!(!token_matches_sha256("Secret", &parsed));
        assert_eq!(parse_sha256_hex("zz"), None);
        assert_eq!(parse_sha256_hex(&hex_digits[..62]), None);
        assert!(tokens_match("a", "a"));
        assert!(!tokens_match("a", "ab"));
    }
}
