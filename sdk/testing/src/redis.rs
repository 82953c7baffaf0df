//! The Redis fake (`fermyon:spin/redis`): an in-memory store for the typed operations (get, set,
//! incr, del, sets, publish), scripted answers for `execute`, and every call recorded.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::bindings::platform::fermyon::spin::redis::{
    self as wit, Error, RedisParameter, RedisResult,
};
use crate::lock;

/// An open connection: the address the guest opened.
pub struct RedisConnection {
    address: String,
}

/// One call the component made.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisCall {
    Open(String),
    Publish {
        channel: String,
        payload: Vec<u8>,
    },
    Get(String),
    Set {
        key: String,
        value: Vec<u8>,
    },
    Incr(String),
    Del(Vec<String>),
    Sadd {
        key: String,
        values: Vec<String>,
    },
    Smembers(String),
    Srem {
        key: String,
        values: Vec<String>,
    },
    Execute {
        command: String,
        arguments: Vec<RedisParameter>,
    },
}

#[derive(Default)]
struct Store {
    strings: HashMap<String, Vec<u8>>,
    sets: HashMap<String, BTreeSet<String>>,
    once: HashMap<String, VecDeque<Result<Vec<RedisResult>, Error>>>,
    standing: HashMap<String, Result<Vec<RedisResult>, Error>>,
    failure: Option<Error>,
    calls: Vec<RedisCall>,
}

/// The Redis fake. Clones share one store and one record.
#[derive(Clone, Default)]
pub struct FakeRedis {
    store: Arc<Mutex<Store>>,
}

impl FakeRedis {
    /// Sets `key` to `value`, as if the component had.
    pub fn seed(&self, key: &str, value: impl Into<Vec<u8>>) -> &Self {
        lock(&self.store)
            .strings
            .insert(key.to_owned(), value.into());
        self
    }

    /// The value of `key` now.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.store).strings.get(key).cloned()
    }

    /// The members of the set `key` now.
    pub fn members(&self, key: &str) -> Vec<String> {
        lock(&self.store)
            .sets
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Answers every `execute` of `command` (any case) with `answer`.
    pub fn on_execute(&self, command: &str, answer: Result<Vec<RedisResult>, Error>) -> &Self {
        lock(&self.store)
            .standing
            .insert(command.to_ascii_uppercase(), answer);
        self
    }

    /// Answers the next `execute` of `command` with `answer`, once.
    pub fn on_execute_once(&self, command: &str, answer: Result<Vec<RedisResult>, Error>) -> &Self {
        lock(&self.store)
            .once
            .entry(command.to_ascii_uppercase())
            .or_default()
            .push_back(answer);
        self
    }

    /// Makes every call fail with `error` (`None`: work again), as an unreachable server would.
    pub fn fail_with(&self, error: Option<Error>) -> &Self {
        lock(&self.store).failure = error;
        self
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<RedisCall> {
        lock(&self.store).calls.clone()
    }

    /// The messages published on `channel`, oldest first.
    pub fn published(&self, channel: &str) -> Vec<Vec<u8>> {
        lock(&self.store)
            .calls
            .iter()
            .filter_map(|call| match call {
                RedisCall::Publish {
                    channel: on,
                    payload,
                } if on == channel => Some(payload.clone()),
                _ => None,
            })
            .collect()
    }

    /// Records `call`, then runs `op` on the store unless the fake is failing.
    fn run<T>(
        &self,
        call: RedisCall,
        op: impl FnOnce(&mut Store) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut store = lock(&self.store);
        store.calls.push(call);
        if let Some(error) = &store.failure {
            return Err(error.clone());
        }
        op(&mut store)
    }
}

impl Store {
    /// `execute`'s answer: the script's, or the store's own for the few commands it knows.
    fn execute(
        &mut self,
        command: &str,
        arguments: &[RedisParameter],
    ) -> Result<Vec<RedisResult>, Error> {
        let command = command.to_ascii_uppercase();
        if let Some(answer) = self.once.get_mut(&command).and_then(VecDeque::pop_front) {
            return answer;
        }
        if let Some(answer) = self.standing.get(&command) {
            return answer.clone();
        }
        let key = match arguments.first() {
            Some(RedisParameter::Binary(key)) => String::from_utf8_lossy(key).into_owned(),
            Some(RedisParameter::Int64(key)) => key.to_string(),
            None => String::new(),
        };
        match command.as_str() {
            // Expiry is not modelled: the key exists, so the answer is 1.
            "EXPIRE" | "PEXPIRE" => Ok(vec![RedisResult::Int64(i64::from(
                self.strings.contains_key(&key) || self.sets.contains_key(&key),
            ))]),
            "EXISTS" => Ok(vec![RedisResult::Int64(i64::from(
                self.strings.contains_key(&key) || self.sets.contains_key(&key),
            ))]),
            "GET" => Ok(vec![
                self.strings
                    .get(&key)
                    .map_or(RedisResult::Nil, |value| RedisResult::Binary(value.clone())),
            ]),
            _ => Err(Error::Other(format!(
                "the fake has no answer for {command}: script one with FakeRedis::on_execute"
            ))),
        }
    }
}

/// The view the bindings are implemented on.
pub struct RedisView<'a> {
    pub(crate) fake: &'a FakeRedis,
    pub(crate) table: &'a mut ResourceTable,
}

/// The `HasData` marker of [`RedisView`].
pub struct RedisCapability;

impl HasData for RedisCapability {
    type Data<'a> = RedisView<'a>;
}

impl RedisView<'_> {
    fn connection(&self, conn: &Resource<RedisConnection>) -> wasmtime::Result<String> {
        Ok(self.table.get(conn)?.address.clone())
    }
}

impl wit::Host for RedisView<'_> {}

impl wit::HostConnection for RedisView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, Error>> {
        let opened = self.fake.run(RedisCall::Open(address.clone()), |_| Ok(()));
        if let Err(error) = opened {
            return Ok(Err(error));
        }
        Ok(Ok(self.table.push(RedisConnection { address })?))
    }

    async fn publish(
        &mut self,
        conn: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.connection(&conn)?;
        Ok(self
            .fake
            .run(RedisCall::Publish { channel, payload }, |_| Ok(())))
    }

    async fn get(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        self.connection(&conn)?;
        Ok(self.fake.run(RedisCall::Get(key.clone()), |store| {
            Ok(store.strings.get(&key).cloned())
        }))
    }

    async fn set(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        self.connection(&conn)?;
        Ok(self.fake.run(
            RedisCall::Set {
                key: key.clone(),
                value: value.clone(),
            },
            |store| {
                store.strings.insert(key, value);
                Ok(())
            },
        ))
    }

    async fn incr(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, Error>> {
        self.connection(&conn)?;
        Ok(self.fake.run(RedisCall::Incr(key.clone()), |store| {
            let current = match store.strings.get(&key) {
                None => 0,
                Some(value) => std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or(Error::TypeError)?,
            };
            let next = current.checked_add(1).ok_or(Error::TypeError)?;
            store.strings.insert(key, next.to_string().into_bytes());
            Ok(next)
        }))
    }

    async fn del(
        &mut self,
        conn: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        self.connection(&conn)?;
        Ok(self.fake.run(RedisCall::Del(keys.clone()), |store| {
            let removed = keys
                .iter()
                .filter(|key| {
                    store.strings.remove(*key).is_some() | store.sets.remove(*key).is_some()
                })
                .count();
            Ok(u32::try_from(removed).unwrap_or(u32::MAX))
        }))
    }

    async fn sadd(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        self.connection(&conn)?;
        Ok(self.fake.run(
            RedisCall::Sadd {
                key: key.clone(),
                values: values.clone(),
            },
            |store| {
                let set = store.sets.entry(key).or_default();
                let added = values
                    .into_iter()
                    .filter(|value| set.insert(value.clone()))
                    .count();
                Ok(u32::try_from(added).unwrap_or(u32::MAX))
            },
        ))
    }

    async fn smembers(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        self.connection(&conn)?;
        Ok(self.fake.run(RedisCall::Smembers(key.clone()), |store| {
            Ok(store
                .sets
                .get(&key)
                .map(|set| set.iter().cloned().collect())
                .unwrap_or_default())
        }))
    }

    async fn srem(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, Error>> {
        self.connection(&conn)?;
        Ok(self.fake.run(
            RedisCall::Srem {
                key: key.clone(),
                values: values.clone(),
            },
            |store| {
                let Some(set) = store.sets.get_mut(&key) else {
                    return Ok(0);
                };
                let removed = values.iter().filter(|value| set.remove(*value)).count();
                Ok(u32::try_from(removed).unwrap_or(u32::MAX))
            },
        ))
    }

    async fn execute(
        &mut self,
        conn: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, Error>> {
        self.connection(&conn)?;
        let call = RedisCall::Execute {
            command: command.clone(),
            arguments: arguments.clone(),
        };
        Ok(self
            .fake
            .run(call, |store| store.execute(&command, &arguments)))
    }

    async fn drop(&mut self, conn: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}
