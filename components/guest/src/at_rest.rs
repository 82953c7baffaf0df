//! Channels' secrets at rest: each channel's secret (its HMAC key, an aggregator's auth token, a
//! provider's webhook signing key, and the previous one during a rotation) and its write-only
//! `credentials` are stored sealed under the application's keys ([`crate::sealed::Keyring`]),
//! bound to the channel, and opened only by the components that use them. A value stored before
//! sealing (plain text, a JSON object) is still read as it is, until `secrets/reseal` (which the
//! host runs every minute) seals it.

use serde_json::Value;

use crate::api::{ApiError, ApiResult, Code};
use crate::sealed::{self, Keyring, SealError};

/// The application's keys: `credentials_key`, and `credentials_keys_previous` (retired by a
/// rotation, still opened), as far as the component has them (without a key, sealing fails
/// with 503 `NOT_CONFIGURED` and sealed values do not open).
pub fn keyring() -> ApiResult<Keyring> {
    let current = spin_sdk::variables::get("credentials_key").unwrap_or_default();
    let previous = spin_sdk::variables::get("credentials_keys_previous").unwrap_or_default();
    Ok(Keyring::new(&current, &previous))
}

fn secret_context(channel_id: &str) -> String {
    // The current and the previous secret share it: a rotation moves one into the other.
    format!("channel:{channel_id}:secret")
}

fn credentials_context(channel_id: &str) -> String {
    format!("channel:{channel_id}:credentials")
}

fn cannot_seal(err: SealError) -> ApiError {
    match err {
        SealError::BadKey => ApiError::new(
            503,
            Code::NotConfigured,
            format!("channel secrets cannot be stored: {err}"),
        ),
        other => ApiError::internal("seal a channel secret", other),
    }
}

fn cannot_open(what: &str, err: SealError) -> ApiError {
    eprintln!("open {what}: {err}");
    ApiError::new(
        503,
        Code::Unavailable,
        format!("the channel's {what} cannot be opened: {err}"),
    )
}

/// A channel secret, sealed for the channel.
pub fn seal_secret(keys: &Keyring, channel_id: &str, secret: &str) -> ApiResult<String> {
    keys.seal(&secret_context(channel_id), secret.as_bytes())
        .map_err(cannot_seal)
}

/// A channel secret as stored (sealed, or plain from before sealing), opened.
pub fn open_secret(keys: &Keyring, channel_id: &str, stored: &str) -> ApiResult<String> {
    if !sealed::is_sealed(stored) {
        return Ok(stored.to_owned());
    }
    let opened = keys
        .open(&secret_context(channel_id), stored)
        .map_err(|err| cannot_open("secret", err))?;
    String::from_utf8(opened).map_err(|_| ApiError::internal("open a channel secret", "not UTF-8"))
}

/// A channel's credentials (an object), sealed for the channel: the JSON string to store.
pub fn seal_credentials(keys: &Keyring, channel_id: &str, credentials: &Value) -> ApiResult<Value> {
    let plain = serde_json::to_vec(credentials)
        .map_err(|err| ApiError::internal("encode the credentials", err))?;
    keys.seal(&credentials_context(channel_id), &plain)
        .map(Value::String)
        .map_err(cannot_seal)
}

/// A channel's credentials as stored (a sealed string, or an object from before sealing).
pub fn open_credentials(keys: &Keyring, channel_id: &str, stored: &Value) -> ApiResult<Value> {
    let Value::String(sealed_text) = stored else {
        return Ok(stored.clone());
    };
    let opened = keys
        .open(&credentials_context(channel_id), sealed_text)
        .map_err(|err| cannot_open("credentials", err))?;
    serde_json::from_slice(&opened)
        .map_err(|err| ApiError::internal("open a channel's credentials", err))
}
