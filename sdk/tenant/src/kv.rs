//! The tenant's key-value store: kept across calls, shared by the tenant's components, seen
//! by no other tenant. A key is 1 to 256 bytes, a value at most 64 KiB.

use crate::bindings::nexus::tenant::key_value as wit;
pub use crate::bindings::nexus::tenant::key_value::Error;

/// The value of `key`, if it is set.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(key)
}

/// The value of `key` as text, if it is set (and is UTF-8).
pub fn get_text(key: &str) -> Result<Option<String>, Error> {
    Ok(wit::get(key)?.and_then(|bytes| String::from_utf8(bytes).ok()))
}

/// Sets `key` to `value`; it expires after `ttl_seconds`, if given.
pub fn set(key: &str, value: impl AsRef<[u8]>, ttl_seconds: Option<u32>) -> Result<(), Error> {
    wit::set(key, value.as_ref(), ttl_seconds)
}

/// Removes `key`; whether it was there.
pub fn delete(key: &str) -> Result<bool, Error> {
    wit::delete(key)
}
