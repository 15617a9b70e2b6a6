//! The sealed checkpoint file: `CAPSCKP1` magic, a random 12-byte nonce, then the driver's
//! compressed pickle encrypted with ChaCha20-Poly1305 and its 16-byte tag. The associated data
//! names the session (namespace, name, uid) and the checkpoint id, so a file moved to another
//! session's directory or renamed to another id fails authentication and is never unpickled.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// First bytes of every sealed checkpoint (format version 1).
pub const MAGIC: &[u8; 8] = b"CAPSCKP1";
/// Bytes a sealed file adds to its plaintext: magic, nonce and tag.
pub const OVERHEAD: u64 = (MAGIC.len() + NONCE_LEN + 16) as u64;

/// A session's 32-byte sealing key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        SealKey(bytes)
    }

    /// A key of this worker alone (a binding without `checkpointKey`).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        SealKey(bytes)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("32-byte key"))
    }
}

/// Why a sealed file could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    BadMagic,
    Truncated,
    /// Forged, altered, cut, or sealed for another session or id.
    Authentication,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenError::BadMagic => {
                "bad magic: not a Capsule checkpoint (or another format version)"
            }
            OpenError::Truncated => "truncated: shorter than its header and tag",
            OpenError::Authentication => {
                "failed authentication: altered, cut, or sealed for another session or id"
            }
        })
    }
}

/// Seals `plaintext` in place into a checkpoint file's bytes.
pub fn seal(key: &SealKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system random source works");
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let header = MAGIC.len() + NONCE_LEN;
    let tag = key
        .aead()
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[header..],
        )
        .expect("ChaCha20-Poly1305 seals any length a Vec holds");
    out.extend_from_slice(tag.as_ref());
    out
}

/// Opens a sealed file in place; returns the plaintext's range of `sealed` on success.
pub fn open<'a>(key: &SealKey, aad: &[u8], sealed: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
    if sealed.len() < MAGIC.len() || &sealed[..MAGIC.len()] != MAGIC {
        return Err(if sealed.len() < MAGIC.len() {
            OpenError::Truncated
        } else {
            OpenError::BadMagic
        });
    }
    if (sealed.len() as u64) < OVERHEAD {
        return Err(OpenError::Truncated);
    }
    let (header, body) = sealed.split_at_mut(MAGIC.len() + NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&header[MAGIC.len()..])
        .map_err(|_| OpenError::Truncated)?;
    key.aead()
        .open_in_place(nonce, Aad::from(aad), body)
        .map(|plain| &*plain)
        .map_err(|_| OpenError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_context() {
        let key = SealKey::random();
        let sealed = seal(&key, b"ns/s/uid/1", b"pickled");
        assert_eq!(sealed.len() as u64, 7 + OVERHEAD);
        assert_eq!(
            open(&key, b"ns/s/uid/1", &mut sealed.clone()).unwrap(),
            b"pickled"
        );
        let other = SealKey::random();
        assert_eq!(
            open(&other, b"ns/s/uid/1", &mut sealed.clone()),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            open(&key, b"ns/s/uid/2", &mut sealed.clone()),
            Err(OpenError::Authentication),
            "renamed to another id"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            open(&key, b"ns/s/uid/1", &mut flipped),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            open(&key, b"x", &mut b"CAPSCKP1abc".to_vec()),
            Err(OpenError::Truncated)
        );
        assert_eq!(
            open(&key, b"x", &mut b"PK\x03\x04zipzipzip".to_vec()),
            Err(OpenError::BadMagic)
        );
        assert_eq!(format!("{key:?}"), "SealKey(..)");
    }
}
