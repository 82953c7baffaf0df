//! Credentials: API keys (shown once, stored as their SHA-256), random secrets, and comparing
//! secrets in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every API key starts with this, so that secret scanners and people can recognise one.
pub const API_KEY_PREFIX: &str = "nxk_";

/// `n` random bytes from the host's CSPRNG (`wasi:random`).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// A new random (version 4) UUID, as text: the id of a new key, channel, contact, interaction,
/// participant.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// 256 random bits as URL-safe base64: a channel secret or a token-signing secret.
pub fn new_secret() -> Result<String, getrandom::Error> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A new API key: the key itself (given to the caller once), the prefix kept to tell keys apart,
/// and the hash that is stored.
pub struct NewApiKey {
    pub key: String,
    pub display_prefix: String,
    pub hash: Vec<u8>,
}

pub fn new_api_key() -> Result<NewApiKey, getrandom::Error> {
    let key = format!("{API_KEY_PREFIX}{}", new_secret()?);
    Ok(NewApiKey {
        display_prefix: key.chars().take(API_KEY_PREFIX.len() + 6).collect(),
        hash: hash_api_key(&key),
        key,
    })
}

/// What is stored of an API key, and what a presented key is looked up by. A key is 256 random
/// bits, so a fast hash is enough: nothing can be guessed from it.
pub fn hash_api_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Whether two secrets are equal, in time that does not depend on where they differ (nor on
/// their lengths: both are hashed first).
pub fn secrets_equal(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.ct_eq(&expected).into()
}

#[cfg(test)]
mod secrets_tests {
    use super::*;

    #[test]
    fn api_keys_are_random_prefixed_and_stored_hashed() {
        let first = new_api_key().unwrap();
        let second = new_api_key().unwrap();
        assert_ne!(first.key, second.key);
        assert!(first.key.starts_with("nxk_") && first.key.len() == 4 + 43);
        assert!(first.key.starts_with(&first.display_prefix));
        assert_eq!(first.hash, hash_api_key(&first.key));
        assert_eq!(first.hash.len(), 32);
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(secrets_equal("s3cret", "s3cret"));
        assert!(!secrets_equal("s3cret", "s3cres"));
        assert!(!secrets_equal("s3cret", "s3cret-longer"));
        assert!(!secrets_equal("", "x"));
    }
}
