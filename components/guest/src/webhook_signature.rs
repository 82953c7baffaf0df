//! Signing outgoing webhooks, two ways at once:
//!
//! - Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-id`, `webhook-timestamp`
//!   (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//!   keyed with the bytes of a `whsec_<base64>` secret; several signatures, space-separated,
//!   while a rotated secret is still honoured.
//! - `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the body>`, keyed with the same bytes, for clients
//!   of the original product's interaction webhooks.
//!
//! And checking what an SMS aggregator sends, the Twilio way (`X-Twilio-Signature`).

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

/// `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the account's auth token, of the full URL
/// the aggregator requested followed by every form parameter's name and value, sorted by name.
pub fn twilio(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = match Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `presented` is the Twilio signature of the request, compared in constant time.
pub fn twilio_matches(
    presented: &str,
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
) -> bool {
    crate::secrets::secrets_equal(presented.trim(), &twilio(auth_token, url, params))
}

/// A Mailgun webhook's `signature`: hex HMAC-SHA256, keyed with the webhook signing key, of its
/// `timestamp` followed by its `token`.
pub fn mailgun(signing_key: &str, timestamp: &str, token: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `presented` is the Mailgun signature of `timestamp` and `token`, in constant time.
pub fn mailgun_matches(presented: &str, signing_key: &str, timestamp: &str, token: &str) -> bool {
    crate::secrets::secrets_equal(presented.trim(), &mailgun(signing_key, timestamp, token))
}

/// Whether an `Authorization` header is HTTP Basic (RFC 7617) with `secret` as its password,
/// compared in constant time; the user name is not checked. For providers that authenticate
/// their webhooks with credentials rather than a signature (SparkPost's event webhooks).
pub fn basic_password_matches(authorization: &str, secret: &str) -> bool {
    let Some(encoded) = authorization
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim())
    else {
        return false;
    };
    let Some(credentials) = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    else {
        return false;
    };
    match credentials.split_once(':') {
        Some((_, password)) => {
            !secret.is_empty() && crate::secrets::secrets_equal(password, secret)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_match_on_the_password() {
        let header = |credentials: &str| format!("Basic {}", STANDARD.encode(credentials));
        assert!(basic_password_matches(&header("nexus:s3cret"), "s3cret"));
        assert!(basic_password_matches(&header(":s3cret"), "s3cret"));
        // A password may hold a colon; the user name may not.
        assert!(basic_password_matches(&header("u:a:b"), "a:b"));
        assert!(basic_password_matches(
            &format!("basic  {}", STANDARD.encode("u:s3cret")),
            "s3cret"
        ));
        assert!(!basic_password_matches(&header("nexus:wrong"), "s3cret"));
        assert!(!basic_password_matches(&header("s3cret"), "s3cret"));
        assert!(!basic_password_matches(&header("u:"), ""));
        assert!(!basic_password_matches("Bearer s3cret", "s3cret"));
        assert!(!basic_password_matches("Basic not base64!", "s3cret"));
        assert!(!basic_password_matches("", "s3cret"));
    }

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

    /// The examples of Twilio's own signature-validation snippets (twilio-node's docs).
    #[test]
    fn twilios_examples_verify() {
        let params = |caller: &str| -> Vec<(String, String)> {
            [
                ("CallSid", "CA1234567890ABCDE"),
                ("Caller", caller),
                ("Digits", "1234"),
                ("From", caller),
                ("To", "+18005551212"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio("12345", url, &params("+14158675310")),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert_eq!(
            twilio("12345", url, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        // The order the parameters came in does not matter; their values do.
        let mut shuffled = params("+14158675310");
        shuffled.reverse();
        assert!(twilio_matches(
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            "12345",
            url,
            &shuffled
        ));
        assert!(!twilio_matches(
            "GvWf1cFY/Q7PnoempGyD5oXAezc=",
            "12345",
            url,
            &params("+1")
        ));
    }

    /// RFC 4231's second HMAC-SHA256 test case, through Mailgun's concatenation.
    #[test]
    fn the_mailgun_signature_is_rfc_4231_hmac_sha256() {
        assert_eq!(
            mailgun("Jefe", "what do ya want ", "for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let signature = mailgun("key", "1700000000", "token");
        assert!(mailgun_matches(&signature, "key", "1700000000", "token"));
        assert!(!mailgun_matches(&signature, "key", "1700000001", "token"));
    }

    #[test]
    fn the_hub_signature_is_hex_sha1() {
        let signature = hub("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b"{}").unwrap();
        assert!(signature.starts_with("sha1="));
        assert_eq!(signature.len(), 5 + 40);
    }
}
