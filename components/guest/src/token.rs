//! The chat client token, `x-nexus-client-key`: an HS256 JWT (RFC 7519) whose claims name the
//! session, its transport (the channel) and the participant, as the original product's does,
//! plus the tenant that signed it. It is signed with the tenant's token secret and has no expiry:
//! an async chat resumes with the same token days later, and a session's end is what revokes it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The only header nexus issues and accepts: no `alg` negotiation, so no `none` or RS/HS mix-up.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientClaims {
    pub session_id: String,
    pub transport_id: String,
    pub participant_id: String,
    /// The tenant's contact-center id: which secret verifies the token.
    pub ccid: String,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: u64,
}

/// Why a token was refused. All of them are `INVALID_CLIENT_TOKEN` to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(&'static str),
    UnsupportedAlgorithm,
    BadSignature,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(what) => write!(f, "the client token is malformed: {what}"),
            TokenError::UnsupportedAlgorithm => write!(f, "the client token is not HS256"),
            TokenError::BadSignature => write!(f, "the client token's signature does not verify"),
        }
    }
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// Signs `claims` with `secret`.
pub fn sign(claims: &ClientClaims, secret: &[u8]) -> Result<String, serde_json::Error> {
    let payload = serde_json::to_vec(claims)?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}

/// The parts of a token, checked for shape and algorithm but not yet for the signature.
pub struct UnverifiedToken<'a> {
    signing_input: &'a str,
    signature: Vec<u8>,
    /// The claims as the token states them; trust nothing in them before [`Self::verify`].
    pub claims: ClientClaims,
}

pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, TokenError> {
    let (signing_input, signature) = token
        .trim()
        .rsplit_once('.')
        .ok_or(TokenError::Malformed("not three parts"))?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or(TokenError::Malformed("not three parts"))?;
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed("header is not JSON"))?;
    if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256") {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
    let claims = serde_json::from_slice(&payload)
        .map_err(|_| TokenError::Malformed("payload does not hold the session claims"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    Ok(UnverifiedToken {
        signing_input,
        signature,
        claims,
    })
}

impl UnverifiedToken<'_> {
    /// The claims, if `secret` signed them (compared in constant time).
    pub fn verify(self, secret: &[u8]) -> Result<ClientClaims, TokenError> {
        let mut mac = mac(secret);
        mac.update(self.signing_input.as_bytes());
        mac.verify_slice(&self.signature)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(self.claims)
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    fn claims() -> ClientClaims {
        ClientClaims {
            session_id: "s-1".into(),
            transport_id: "t-1".into(),
            participant_id: "p-1".into(),
            ccid: "acme".into(),
            iat: 1_700_000_000,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_secret_only() {
        let token = sign(&claims(), b"secret-a").unwrap();
        assert_eq!(
            parse(&token).unwrap().verify(b"secret-a").unwrap(),
            claims()
        );
        assert_eq!(
            parse(&token).unwrap().verify(b"secret-b").unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[test]
    fn it_is_a_standard_hs256_jwt() {
        // Checked against an independent HMAC over the signing input.
        let token = sign(&claims(), b"k").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), HEADER.as_bytes());
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["sessionId"], "s-1");
        assert_eq!(payload["transportId"], "t-1");
        assert_eq!(payload["participantId"], "p-1");
        let mut mac = mac(b"k");
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
            parts[2]
        );
    }

    #[test]
    fn tampered_and_foreign_tokens_are_refused() {
        let token = sign(&claims(), b"k").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut other = claims();
        other.session_id = "s-2".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            parse(&forged).unwrap().verify(b"k").unwrap_err(),
            TokenError::BadSignature
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert_eq!(parse(&none).err(), Some(TokenError::UnsupportedAlgorithm));
        for garbage in ["", "abc", "a.b", "a.b.c", "!!.!!.!!"] {
            assert!(
                matches!(parse(garbage), Err(TokenError::Malformed(_))),
                "{garbage}"
            );
        }
    }
}
