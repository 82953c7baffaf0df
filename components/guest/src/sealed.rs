//! Credentials at rest: what nexus must send to a third party (a bot's Authorization header)
//! cannot be hashed, so it is sealed with XChaCha20-Poly1305 under the application's
//! `credentials_key` (32 random bytes, base64) and opened only by the component that sends it.
//!
//! A sealed value is `v1.` and the URL-safe base64 of a random 24-byte nonce followed by the
//! ciphertext and its tag. The extended nonce makes random nonces safe for any number of values
//! under one key. Each value is bound to what it belongs to (`context`, such as `bot:<id>`): a
//! value copied into another row does not open.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::secrets::random_bytes;

const VERSION: &str = "v1.";
const NONCE_BYTES: usize = 24;

#[derive(Debug, PartialEq, Eq)]
pub enum SealError {
    /// `credentials_key` is not 32 bytes of base64 (or is not set).
    BadKey,
    /// The value is not one this module sealed.
    Malformed,
    /// The key, the context or the value is not the one it was sealed with.
    WontOpen,
    /// The host gave no random bytes.
    NoRandom,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealError::BadKey => {
                "credentials_key is not set to 32 random bytes in base64 (see the README)"
            }
            SealError::Malformed => "the sealed value is malformed",
            SealError::WontOpen => {
                "the sealed value does not open with this key (was credentials_key changed?)"
            }
            SealError::NoRandom => "no random bytes for a nonce",
        })
    }
}

/// The key, from its base64 (standard or URL-safe, padded or not).
fn cipher(key_base64: &str) -> Result<XChaCha20Poly1305, SealError> {
    let key_base64 = key_base64.trim();
    let key = [STANDARD, URL_SAFE]
        .iter()
        .find_map(|engine| engine.decode(key_base64).ok())
        .or_else(|| URL_SAFE_NO_PAD.decode(key_base64).ok())
        .ok_or(SealError::BadKey)?;
    XChaCha20Poly1305::new_from_slice(&key).map_err(|_| SealError::BadKey)
}

/// Seals `plaintext` for `context`.
pub fn seal(key_base64: &str, context: &str, plaintext: &[u8]) -> Result<String, SealError> {
    let cipher = cipher(key_base64)?;
    let nonce = random_bytes::<NONCE_BYTES>().map_err(|_| SealError::NoRandom)?;
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| SealError::WontOpen)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out)))
}

/// Opens what [`seal`] sealed for `context`.
pub fn open(key_base64: &str, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
    let cipher = cipher(key_base64)?;
    let bytes = sealed
        .strip_prefix(VERSION)
        .and_then(|rest| URL_SAFE_NO_PAD.decode(rest).ok())
        .ok_or(SealError::Malformed)?;
    if bytes.len() < NONCE_BYTES {
        return Err(SealError::Malformed);
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Malformed)?;
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| SealError::WontOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        STANDARD.encode([7u8; 32])
    }

    #[test]
    fn what_is_sealed_opens_with_the_same_key_and_context() {
        let sealed = seal(&key(), "bot:1", b"{\"authorization\":\"Bearer t\"}").unwrap();
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("Bearer"));
        assert_eq!(
            open(&key(), "bot:1", &sealed).unwrap(),
            b"{\"authorization\":\"Bearer t\"}"
        );
        // A fresh nonce each time: the same value never seals the same way twice.
        assert_ne!(
            sealed,
            seal(&key(), "bot:1", b"{\"authorization\":\"Bearer t\"}").unwrap()
        );
    }

    #[test]
    fn another_key_another_context_or_a_changed_byte_does_not_open() {
        let sealed = seal(&key(), "bot:1", b"secret").unwrap();
        let other_key = URL_SAFE_NO_PAD.encode([8u8; 32]);
        assert_eq!(open(&other_key, "bot:1", &sealed), Err(SealError::WontOpen));
        assert_eq!(open(&key(), "bot:2", &sealed), Err(SealError::WontOpen));
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("v1.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(open(&key(), "bot:1", &tampered), Err(SealError::WontOpen));
        assert_eq!(open(&key(), "bot:1", "v1.AAAA"), Err(SealError::Malformed));
        assert_eq!(open(&key(), "bot:1", "plain"), Err(SealError::Malformed));
    }

    #[test]
    fn a_key_must_be_32_bytes_of_base64() {
        assert_eq!(seal("", "c", b"x"), Err(SealError::BadKey));
        assert_eq!(
            seal(&STANDARD.encode([1u8; 16]), "c", b"x"),
            Err(SealError::BadKey)
        );
        assert_eq!(seal("not base64!", "c", b"x"), Err(SealError::BadKey));
        // Standard and URL-safe spellings of one key are the same key.
        let bytes = [0xfbu8; 32];
        let sealed = seal(&STANDARD.encode(bytes), "c", b"x").unwrap();
        assert_eq!(
            open(&URL_SAFE_NO_PAD.encode(bytes), "c", &sealed).unwrap(),
            b"x"
        );
    }
}
