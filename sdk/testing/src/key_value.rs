//! The tenant key-value fake (`nexus:tenant/key-value`): an in-memory store with the host's
//! limits, every call recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::HasData;

use crate::bindings::tenant::bot::nexus::tenant::key_value::{self as wit, Error};
use crate::lock;

use nexus_guest::tenant_contract::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// One call the component made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCall {
    Get(String),
    Set {
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    },
    Delete(String),
}

#[derive(Default)]
struct Store {
    values: HashMap<String, Vec<u8>>,
    ttls: HashMap<String, u32>,
    unavailable: bool,
    calls: Vec<KvCall>,
}

/// The key-value fake. Clones share one store and one record.
#[derive(Clone, Default)]
pub struct FakeKeyValue {
    store: Arc<Mutex<Store>>,
}

impl FakeKeyValue {
    /// Sets `key` to `value`, as an earlier call would have.
    pub fn seed(&self, key: &str, value: impl Into<Vec<u8>>) -> &Self {
        lock(&self.store)
            .values
            .insert(key.to_owned(), value.into());
        self
    }

    /// The value of `key` now.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.store).values.get(key).cloned()
    }

    /// The value of `key` now, as text (lossy).
    pub fn text(&self, key: &str) -> Option<String> {
        self.value(key)
            .map(|value| String::from_utf8_lossy(&value).into_owned())
    }

    /// The expiry the last `set` of `key` asked for.
    pub fn ttl(&self, key: &str) -> Option<u32> {
        lock(&self.store).ttls.get(key).copied()
    }

    /// Makes every call fail as `unavailable` (`false`: work again), as when Redis is down.
    pub fn set_unavailable(&self, unavailable: bool) -> &Self {
        lock(&self.store).unavailable = unavailable;
        self
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<KvCall> {
        lock(&self.store).calls.clone()
    }
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Error::TooLarge(format!(
            "a key is 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The `HasData` marker that gives the bindings a [`FakeKeyValue`].
pub struct KeyValueCapability;

impl HasData for KeyValueCapability {
    type Data<'a> = &'a FakeKeyValue;
}

impl wit::Host for &FakeKeyValue {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let mut store = lock(&self.store);
        store.calls.push(KvCall::Get(key.clone()));
        if store.unavailable {
            return Ok(Err(Error::Unavailable("the fake is unavailable".into())));
        }
        Ok(check_key(&key).map(|()| store.values.get(&key).cloned()))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let mut store = lock(&self.store);
        store.calls.push(KvCall::Set {
            key: key.clone(),
            value: value.clone(),
            ttl_seconds,
        });
        if store.unavailable {
            return Ok(Err(Error::Unavailable("the fake is unavailable".into())));
        }
        if let Err(error) = check_key(&key) {
            return Ok(Err(error));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(Error::TooLarge(format!(
                "a value is at most {MAX_VALUE_BYTES} bytes"
            ))));
        }
        match ttl_seconds {
            Some(ttl) => store.ttls.insert(key.clone(), ttl),
            None => store.ttls.remove(&key),
        };
        store.values.insert(key, value);
        Ok(Ok(()))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        let mut store = lock(&self.store);
        store.calls.push(KvCall::Delete(key.clone()));
        if store.unavailable {
            return Ok(Err(Error::Unavailable("the fake is unavailable".into())));
        }
        if let Err(error) = check_key(&key) {
            return Ok(Err(error));
        }
        store.ttls.remove(&key);
        Ok(Ok(store.values.remove(&key).is_some()))
    }
}
