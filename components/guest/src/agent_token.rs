//! Agent bearer tokens: `nxa_` and 256 random bits, stored only as a SHA-256 hex digest.

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "nxa_";

/// A new agent token.
pub fn new_token() -> Result<String, getrandom::Error> {
    Ok(format!("{PREFIX}{}", crate::secrets::new_secret()?))
}

/// What an agent token is stored and looked up as.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed_as_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert!(a.starts_with(PREFIX) && a.len() > 40);
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }
}
