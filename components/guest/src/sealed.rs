//! Secrets at rest: what nexus must use as it is (a bot's Authorization header, a channel's
//! HMAC key, an aggregator's auth token, a provider's API key) cannot be hashed, so it is sealed
//! with XChaCha20-Poly1305 under the application's `credentials_key` (32 random bytes, base64)
//! and opened only by the components that use it.
//!
//! A sealed value is `v2.<key id>.` and the URL-safe base64 of a random 24-byte nonce followed by
//! the ciphertext and its tag; the key id (the first 8 hex digits of the SHA-256 of the key)
//! says which key opens it, so that keys can be rotated: a [`Keyring`] seals with the current
//! key and opens with it or with the retired ones (`credentials_keys_previous`) until everything
//! is sealed again under the current one. `v1.` values (before key ids) open with any key of the
//! ring. The extended nonce makes random nonces safe for any number of values under one key.
//! Each value is bound to what it belongs to (`context`, such as `bot:<id>`): a value copied
//! into another row does not open.

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

const VERSION_WITH_KEY_ID: &str = "v2.";

/// Whether `stored` is a sealed value (of any version), rather than text from before sealing.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(VERSION) || stored.starts_with(VERSION_WITH_KEY_ID)
}

/// The id of a key: the first 8 hex digits of the SHA-256 of its bytes.
fn key_id(key_base64: &str) -> Result<String, SealError> {
    use sha2::{Digest, Sha256};
    cipher(key_base64)?;
    let key = [STANDARD, URL_SAFE]
        .iter()
        .find_map(|engine| engine.decode(key_base64.trim()).ok())
        .or_else(|| URL_SAFE_NO_PAD.decode(key_base64.trim()).ok())
        .ok_or(SealError::BadKey)?;
    let digest = Sha256::digest(&key);
    Ok(digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// The keys of the application: the current one seals; it and the retired ones open.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: String,
    previous: Vec<String>,
}

impl Keyring {
    /// From `credentials_key` and `credentials_keys_previous` (comma-separated, may be empty).
    pub fn new(current: &str, previous: &str) -> Keyring {
        Keyring {
            current: current.trim().to_owned(),
            previous: previous
                .split(',')
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Seals `plaintext` for `context` under the current key.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let id = key_id(&self.current)?;
        let sealed = seal(&self.current, context, plaintext)?;
        let body = sealed.strip_prefix(VERSION).ok_or(SealError::Malformed)?;
        Ok(format!("{VERSION_WITH_KEY_ID}{id}.{body}"))
    }

    /// Opens what this ring's keys (now or before a rotation) sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        if let Some(rest) = sealed.strip_prefix(VERSION_WITH_KEY_ID) {
            let (id, body) = rest.split_once('.').ok_or(SealError::Malformed)?;
            let key = self
                .keys()
                .find(|key| key_id(key).is_ok_and(|candidate| candidate == id))
                .ok_or(SealError::WontOpen)?;
            return open(key, context, &format!("{VERSION}{body}"));
        }
        let mut outcome = Err(SealError::WontOpen);
        for key in self.keys() {
            outcome = open(key, context, sealed);
            if !matches!(outcome, Err(SealError::WontOpen | SealError::BadKey)) {
                return outcome;
            }
        }
        outcome
    }

    /// Whether `stored` is sealed under the current key (nothing to do for a rotation).
    pub fn is_current(&self, stored: &str) -> bool {
        key_id(&self.current)
            .is_ok_and(|id| stored.starts_with(&format!("{VERSION_WITH_KEY_ID}{id}.")))
    }

    /// The current key's id, as sealed values carry it.
    pub fn current_id(&self) -> Result<String, SealError> {
        key_id(&self.current)
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.current).chain(self.previous.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_seals_with_its_current_key_and_opens_with_any() {
        let old = STANDARD.encode([1u8; 32]);
        let new = STANDARD.encode([2u8; 32]);
        let before = Keyring::new(&old, "");
        let sealed_before = before.seal("channel:1:secret", b"hmac-key").unwrap();
        assert!(sealed_before.starts_with("v2."), "{sealed_before}");
        assert!(is_sealed(&sealed_before) && !is_sealed("hmac-key"));
        assert!(before.is_current(&sealed_before));
        // Rotated: the new key seals; what the old one sealed still opens, and is not current.
        let after = Keyring::new(&new, &format!(" {old} ,"));
        assert_eq!(
            after.open("channel:1:secret", &sealed_before).unwrap(),
            b"hmac-key"
        );
        assert!(!after.is_current(&sealed_before));
        let sealed_after = after.seal("channel:1:secret", b"hmac-key").unwrap();
        assert!(after.is_current(&sealed_after));
        assert_ne!(before.current_id().unwrap(), after.current_id().unwrap());
        // Once the old key is dropped, what it sealed no longer opens; the context still binds.
        let only_new = Keyring::new(&new, "");
        assert_eq!(
            only_new.open("channel:1:secret", &sealed_before),
            Err(SealError::WontOpen)
        );
        assert_eq!(
            only_new.open("channel:2:secret", &sealed_after),
            Err(SealError::WontOpen)
        );
        // `v1.` values (a bot's credentials from before key ids) open with any key of the ring.
        let v1 = seal(&old, "bot:1", b"headers").unwrap();
        assert_eq!(after.open("bot:1", &v1).unwrap(), b"headers");
        assert_eq!(only_new.open("bot:1", &v1), Err(SealError::WontOpen));
        assert_eq!(Keyring::new("", "").seal("c", b"x"), Err(SealError::BadKey));
    }

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
