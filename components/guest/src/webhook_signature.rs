//! Signing outgoing webhooks, two ways at once:
//!
//! - Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-id`, `webhook-timestamp`
//!   (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//!   keyed with the bytes of a `whsec_<base64>` secret; several signatures, space-separated,
//!   while a rotated secret is still honoured.
//! - `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the body>`, keyed with the same bytes, for clients
//!   of the original product's interaction webhooks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// Every webhook secret starts with this, as Standard Webhooks' secrets do.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new webhook secret: 192 random bits.
pub fn new_secret() -> Result<String, getrandom::Error> {
    Ok(format!(
        "{SECRET_PREFIX}{}",
        STANDARD.encode(crate::secrets::random_bytes::<24>()?)
    ))
}

/// The key bytes of a `whsec_` secret.
pub fn key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("a webhook secret starts with `{SECRET_PREFIX}`"))?;
    STANDARD
        .decode(encoded)
        .map_err(|err| format!("a webhook secret is base64 after `{SECRET_PREFIX}`: {err}"))
}

/// One Standard Webhooks signature, `v1,<base64>`.
pub fn standard(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)?).map_err(|err| err.to_string())?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per secret.
pub fn standard_header(
    secrets: &[&str],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> Result<String, String> {
    let signatures = secrets
        .iter()
        .map(|secret| standard(secret, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

/// The `X-Hub-Signature` header of a webhook, `sha1=<hex>`, keyed with a `whsec_` secret.
pub fn hub(secret: &str, body: &[u8]) -> Result<String, String> {
    Ok(hub_with_key(&key(secret)?, body))
}

/// `sha1=<hex HMAC-SHA1 of body>` keyed with `key` as it is: the original product's
/// `X-Hub-Signature`, which a messaging channel keys with the text of its secret.
pub fn hub_with_key(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha1>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha1={hex}")
}

/// Whether `presented` (an `X-Hub-Signature`) signs `body` with one of `keys`, compared in
/// constant time.
pub fn hub_matches(presented: &str, keys: &[&[u8]], body: &[u8]) -> bool {
    keys.iter()
        .any(|key| crate::secrets::secrets_equal(presented.trim(), &hub_with_key(key, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn the_specification_example_verifies() {
        let signature = standard(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_secret_signs_while_rotated() {
        let old = new_secret().unwrap();
        let new = new_secret().unwrap();
        let header = standard_header(&[&new, &old], "msg_1", 1, b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], standard(&new, "msg_1", 1, b"{}").unwrap());
        assert_eq!(parts[1], standard(&old, "msg_1", 1, b"{}").unwrap());
    }

    #[test]
    fn a_secret_must_have_its_prefix() {
        assert!(standard("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 1, b"").is_err());
        assert!(hub("whsec_not base64!", b"").is_err());
    }

    /// RFC 2202's first HMAC-SHA1 test case.
    #[test]
    fn the_hub_signature_is_rfc_2202_hmac_sha1() {
        assert_eq!(
            hub_with_key(&[0x0b; 20], b"Hi There"),
            "sha1=b617318655057264e28bc0b6fb378c8ef146be00"
        );
        let body = br#"{"text":"hi"}"#;
        let signature = hub_with_key(b"channel secret", body);
        assert!(hub_matches(&signature, &[b"old", b"channel secret"], body));
        assert!(!hub_matches(&signature, &[b"old"], body));
        assert!(!hub_matches("sha1=00", &[b"channel secret"], body));
    }

    #[test]
    fn the_hub_signature_is_hex_sha1() {
        let signature = hub("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b"{}").unwrap();
        assert!(signature.starts_with("sha1="));
        assert_eq!(signature.len(), 5 + 40);
    }
}
