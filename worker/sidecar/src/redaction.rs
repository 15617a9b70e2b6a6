//! Redaction of identifiers: kept as is, replaced by a keyed hash that is stable within the pool
//! (so the same id still correlates across events, views and exported spans), or dropped.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of a hashed value; a value that already carries it is not hashed again, so trace data
/// hashed at ingest and shown through a hashing view keeps one stable form.
pub const HASH_PREFIX: &str = "hmac:";

/// Hex characters of the HMAC kept (128 bits: collisions are not a concern at pool scale).
const HASH_HEX_CHARS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
pub enum Redaction {
    #[value(name = "None", alias = "none")]
    None,
    #[default]
    #[value(name = "Hash", alias = "hash")]
    Hash,
    #[value(name = "Drop", alias = "drop")]
    Drop,
}

/// Applies one [`Redaction`] mode with the pool's key.
#[derive(Clone)]
pub struct Redactor {
    mode: Redaction,
    key: Vec<u8>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    pub fn new(mode: Redaction, key: &[u8]) -> Self {
        Redactor {
            mode,
            key: key.to_vec(),
        }
    }

    pub fn mode(&self) -> Redaction {
        self.mode
    }

    /// The keyed hash of `value`, whatever the mode (used to key the buffer under `Drop`).
    pub fn hash(&self, value: &str) -> String {
        if value.starts_with(HASH_PREFIX) {
            return value.to_owned();
        }
        keyed_hash(&self.key, value)
    }

    /// `value` under this mode: itself, its keyed hash, or `None` when dropped.
    pub fn apply(&self, value: &str) -> Option<String> {
        match self.mode {
            Redaction::None => Some(value.to_owned()),
            Redaction::Hash => Some(self.hash(value)),
            Redaction::Drop => None,
        }
    }
}

/// `hmac:` + the first 32 hex characters of HMAC-SHA256(key, value).
pub fn keyed_hash(key: &[u8], value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(value.as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("{HASH_PREFIX}{}", &digest[..HASH_HEX_CHARS])
}
