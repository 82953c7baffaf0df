//! The embedded Redis: an in-process store that stands in for a Redis server when none is
//! configured, so that `nexus up` works on a bare machine. It lives as long as the process and
//! is shared by every component of the host; it is not persisted and not shared across nodes.
//!
//! Commands it serves (arguments and replies as Redis's own; anything else gets
//! `ERR unknown command`):
//!
//! | family | commands |
//! |---|---|
//! | keys | `DEL` `EXISTS` `EXPIRE` `PEXPIRE` `TTL` `PTTL` `PERSIST` `TYPE` `DBSIZE` `FLUSHDB` `FLUSHALL` `PING` `ECHO` |
//! | strings | `GET` `SET` (with `EX` `PX` `NX` `XX`) `SETNX` `GETDEL` `MGET` `MSET` `APPEND` `STRLEN` `INCR` `INCRBY` `DECR` `DECRBY` |
//! | hashes | `HSET` `HGET` `HDEL` `HGETALL` `HKEYS` `HVALS` `HLEN` `HEXISTS` `HINCRBY` |
//! | sets | `SADD` `SREM` `SMEMBERS` `SISMEMBER` `SCARD` |
//! | lists | `LPUSH` `RPUSH` `LPOP` `RPOP` `LRANGE` `LLEN` |
//! | sorted sets | `ZADD` (with `NX` `XX` `CH` `INCR`) `ZREM` `ZCARD` `ZSCORE` `ZRANK` `ZRANGE` (by rank, `WITHSCORES`) `ZRANGEBYSCORE` (`WITHSCORES`, `LIMIT`) `ZREMRANGEBYRANK` |
//! | pub/sub | `PUBLISH` (delivered to in-process subscribers of [`EmbeddedRedis::subscribe`]) |

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redis::Value;
use tokio::sync::broadcast;

use super::sorted_set::{Bound, SortedSet, format_score, index_range, parse_score};
use super::{RedisBackendError, RedisSession};

/// How many published messages a slow in-process subscriber may fall behind by.
const SUBSCRIBER_BACKLOG: usize = 1024;

#[derive(Debug, Clone)]
enum Data {
    String(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    List(VecDeque<Vec<u8>>),
    SortedSet(SortedSet),
}

#[derive(Debug, Clone)]
struct Entry {
    data: Data,
    expires_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Keyspace {
    entries: HashMap<Vec<u8>, Entry>,
}

impl Keyspace {
    /// The live entry at `key`, removing it first if it has expired.
    fn live(&mut self, key: &[u8], now: Instant) -> Option<&mut Entry> {
        let expired = self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires_at.is_some_and(|at| at <= now));
        if expired {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }
}

/// A message as a prefix subscription receives it: (channel, payload).
pub type Published = (Vec<u8>, Vec<u8>);

/// The store; cheap to share.
#[derive(Debug, Default)]
pub struct EmbeddedRedis {
    keyspace: Mutex<Keyspace>,
    channels: Mutex<HashMap<Vec<u8>, broadcast::Sender<Vec<u8>>>>,
    /// Subscriptions to every channel that starts with a prefix (Redis's `PSUBSCRIBE prefix*`):
    /// the prefix, and where its messages go.
    prefixed: Mutex<Vec<(Vec<u8>, broadcast::Sender<Published>)>>,
}

/// A session on the embedded store.
pub struct EmbeddedSession {
    store: Arc<EmbeddedRedis>,
}

impl RedisSession for EmbeddedSession {
    fn command<'a>(
        &'a mut self,
        name: &'a str,
        args: Vec<Vec<u8>>,
    ) -> BoxFuture<'a, Result<Value, RedisBackendError>> {
        let reply = self.store.execute(name, &args);
        Box::pin(async move { reply })
    }
}

fn err(message: &str) -> RedisBackendError {
    let code = message.split_whitespace().next().map(str::to_owned);
    RedisBackendError::Command {
        code,
        message: message.to_owned(),
    }
}

fn wrong_type() -> RedisBackendError {
    err("WRONGTYPE Operation against a key holding the wrong kind of value")
}

fn not_integer() -> RedisBackendError {
    err("ERR value is not an integer or out of range")
}

fn arity(name: &str) -> RedisBackendError {
    err(&format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_lowercase()
    ))
}

fn parse_int(bytes: &[u8]) -> Result<i64, RedisBackendError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(not_integer)
}

fn bulk(bytes: Vec<u8>) -> Value {
    Value::BulkString(bytes)
}

fn count(n: usize) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl EmbeddedRedis {
    /// A new session on this store.
    pub fn session(self: &Arc<Self>) -> EmbeddedSession {
        EmbeddedSession {
            store: Arc::clone(self),
        }
    }

    /// Receives what is published on `channel` from now on.
    pub fn subscribe(&self, channel: &[u8]) -> broadcast::Receiver<Vec<u8>> {
        let mut channels = lock(&self.channels);
        channels
            .entry(channel.to_vec())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BACKLOG).0)
            .subscribe()
    }

    /// Receives what is published on every channel that starts with `prefix`, as (channel,
    /// payload).
    pub fn subscribe_prefix(&self, prefix: &[u8]) -> broadcast::Receiver<Published> {
        let mut prefixed = lock(&self.prefixed);
        if let Some((_, sender)) = prefixed.iter().find(|(known, _)| known == prefix) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(SUBSCRIBER_BACKLOG);
        prefixed.push((prefix.to_vec(), sender));
        receiver
    }

    fn publish(&self, channel: &[u8], payload: Vec<u8>) -> usize {
        let mut delivered = 0;
        {
            let mut prefixed = lock(&self.prefixed);
            prefixed.retain(|(_, sender)| sender.receiver_count() > 0);
            for (prefix, sender) in prefixed.iter() {
                if channel.starts_with(prefix) {
                    delivered += sender
                        .send((channel.to_vec(), payload.clone()))
                        .unwrap_or(0);
                }
            }
        }
        let mut channels = lock(&self.channels);
        let Some(sender) = channels.get(channel) else {
            return delivered;
        };
        delivered += sender.send(payload).unwrap_or(0);
        if sender.receiver_count() == 0 {
            channels.remove(channel);
        }
        delivered
    }

    /// Runs one command.
    pub fn execute(&self, name: &str, args: &[Vec<u8>]) -> Result<Value, RedisBackendError> {
        let upper = name.to_ascii_uppercase();
        if upper == "PUBLISH" {
            let [channel, payload] = args else {
                return Err(arity(name));
            };
            return Ok(count(self.publish(channel, payload.clone())));
        }
        let now = Instant::now();
        let mut keyspace = lock(&self.keyspace);
        let ks = &mut *keyspace;
        match (upper.as_str(), args) {
            ("PING", []) => Ok(Value::SimpleString("PONG".into())),
            ("PING", [message]) | ("ECHO", [message]) => Ok(bulk(message.clone())),
            ("DBSIZE", []) => Ok(count(ks.entries.len())),
            ("FLUSHDB" | "FLUSHALL", _) => {
                ks.entries.clear();
                Ok(Value::Okay)
            }
            ("DEL", keys) if !keys.is_empty() => {
                let mut removed = 0;
                for key in keys {
                    if ks.live(key, now).is_some() {
                        ks.entries.remove(key);
                        removed += 1;
                    }
                }
                Ok(count(removed))
            }
            ("EXISTS", keys) if !keys.is_empty() => Ok(count(
                keys.iter()
                    .filter(|key| ks.live(key, now).is_some())
                    .count(),
            )),
            ("EXPIRE" | "PEXPIRE", [key, amount]) => {
                let amount = parse_int(amount)?;
                let millis = if upper == "EXPIRE" {
                    amount.saturating_mul(1000)
                } else {
                    amount
                };
                match ks.live(key, now) {
                    Some(_) if millis <= 0 => {
                        ks.entries.remove(key);
                        Ok(Value::Int(1))
                    }
                    Some(entry) => {
                        entry.expires_at = Some(now + Duration::from_millis(millis.unsigned_abs()));
                        Ok(Value::Int(1))
                    }
                    None => Ok(Value::Int(0)),
                }
            }
            ("TTL" | "PTTL", [key]) => Ok(Value::Int(match ks.live(key, now) {
                None => -2,
                Some(Entry {
                    expires_at: None, ..
                }) => -1,
                Some(Entry {
                    expires_at: Some(at),
                    ..
                }) => {
                    let left = at.saturating_duration_since(now);
                    let left = if upper == "TTL" {
                        left.as_secs_f64().ceil() as i64
                    } else {
                        i64::try_from(left.as_millis()).unwrap_or(i64::MAX)
                    };
                    left.max(0)
                }
            })),
            ("PERSIST", [key]) => Ok(Value::Int(match ks.live(key, now) {
                Some(entry) if entry.expires_at.is_some() => {
                    entry.expires_at = None;
                    1
                }
                _ => 0,
            })),
            ("TYPE", [key]) => Ok(Value::SimpleString(
                match ks.live(key, now).map(|entry| &entry.data) {
                    None => "none",
                    Some(Data::String(_)) => "string",
                    Some(Data::Hash(_)) => "hash",
                    Some(Data::Set(_)) => "set",
                    Some(Data::List(_)) => "list",
                    Some(Data::SortedSet(_)) => "zset",
                }
                .into(),
            )),
            ("GET", [key]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Nil),
                Some(Data::String(value)) => Ok(bulk(value.clone())),
                Some(_) => Err(wrong_type()),
            },
            ("GETDEL", [key]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Nil),
                Some(Data::String(_)) => match ks.entries.remove(key.as_slice()) {
                    Some(Entry {
                        data: Data::String(value),
                        ..
                    }) => Ok(bulk(value)),
                    _ => Ok(Value::Nil),
                },
                Some(_) => Err(wrong_type()),
            },
            ("SET", [key, value, options @ ..]) => set(ks, now, key, value, options),
            ("SETNX", [key, value]) => {
                let reply = set(ks, now, key, value, &[b"NX".to_vec()])?;
                Ok(Value::Int(i64::from(reply == Value::Okay)))
            }
            ("MGET", keys) if !keys.is_empty() => Ok(Value::Array(
                keys.iter()
                    .map(|key| match ks.live(key, now).map(|entry| &entry.data) {
                        Some(Data::String(value)) => bulk(value.clone()),
                        _ => Value::Nil,
                    })
                    .collect(),
            )),
            ("MSET", pairs) if !pairs.is_empty() && pairs.len() % 2 == 0 => {
                for pair in pairs.chunks(2) {
                    if let [key, value] = pair {
                        ks.entries.insert(
                            key.clone(),
                            Entry {
                                data: Data::String(value.clone()),
                                expires_at: None,
                            },
                        );
                    }
                }
                Ok(Value::Okay)
            }
            ("APPEND", [key, value]) => {
                let entry = string_entry(ks, now, key)?;
                entry.extend_from_slice(value);
                Ok(count(entry.len()))
            }
            ("STRLEN", [key]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Int(0)),
                Some(Data::String(value)) => Ok(count(value.len())),
                Some(_) => Err(wrong_type()),
            },
            ("INCR", [key]) => incr_by(ks, now, key, 1),
            ("DECR", [key]) => incr_by(ks, now, key, -1),
            ("INCRBY", [key, by]) => incr_by(ks, now, key, parse_int(by)?),
            ("DECRBY", [key, by]) => incr_by(ks, now, key, parse_int(by)?.saturating_neg()),
            ("HSET", [key, pairs @ ..]) if !pairs.is_empty() && pairs.len() % 2 == 0 => {
                let hash = hash_entry(ks, now, key)?;
                let mut added = 0;
                for pair in pairs.chunks(2) {
                    if let [field, value] = pair
                        && hash.insert(field.clone(), value.clone()).is_none()
                    {
                        added += 1;
                    }
                }
                Ok(count(added))
            }
            ("HGET", [key, field]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Nil),
                Some(Data::Hash(hash)) => Ok(hash.get(field).cloned().map_or(Value::Nil, bulk)),
                Some(_) => Err(wrong_type()),
            },
            ("HEXISTS", [key, field]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Int(0)),
                Some(Data::Hash(hash)) => Ok(Value::Int(i64::from(hash.contains_key(field)))),
                Some(_) => Err(wrong_type()),
            },
            ("HDEL", [key, fields @ ..]) if !fields.is_empty() => {
                let removed = match ks.live(key, now).map(|entry| &mut entry.data) {
                    None => 0,
                    Some(Data::Hash(hash)) => fields
                        .iter()
                        .filter(|field| hash.remove(*field).is_some())
                        .count(),
                    Some(_) => return Err(wrong_type()),
                };
                drop_if_empty(ks, key);
                Ok(count(removed))
            }
            ("HGETALL" | "HKEYS" | "HVALS" | "HLEN", [key]) => {
                match ks.live(key, now).map(|entry| &entry.data) {
                    None if upper == "HLEN" => Ok(Value::Int(0)),
                    None => Ok(Value::Array(Vec::new())),
                    Some(Data::Hash(hash)) => Ok(match upper.as_str() {
                        "HLEN" => count(hash.len()),
                        "HKEYS" => Value::Array(hash.keys().cloned().map(bulk).collect()),
                        "HVALS" => Value::Array(hash.values().cloned().map(bulk).collect()),
                        _ => Value::Array(
                            hash.iter()
                                .flat_map(|(field, value)| {
                                    [bulk(field.clone()), bulk(value.clone())]
                                })
                                .collect(),
                        ),
                    }),
                    Some(_) => Err(wrong_type()),
                }
            }
            ("HINCRBY", [key, field, by]) => {
                let by = parse_int(by)?;
                let hash = hash_entry(ks, now, key)?;
                let current = hash.get(field).map(|v| parse_int(v)).transpose()?;
                let next = current
                    .unwrap_or(0)
                    .checked_add(by)
                    .ok_or_else(not_integer)?;
                hash.insert(field.clone(), next.to_string().into_bytes());
                Ok(Value::Int(next))
            }
            ("SADD", [key, members @ ..]) if !members.is_empty() => {
                let set = set_entry(ks, now, key)?;
                Ok(count(
                    members.iter().filter(|m| set.insert((*m).clone())).count(),
                ))
            }
            ("SREM", [key, members @ ..]) if !members.is_empty() => {
                let removed = match ks.live(key, now).map(|entry| &mut entry.data) {
                    None => 0,
                    Some(Data::Set(set)) => members.iter().filter(|m| set.remove(*m)).count(),
                    Some(_) => return Err(wrong_type()),
                };
                drop_if_empty(ks, key);
                Ok(count(removed))
            }
            ("SMEMBERS", [key]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Array(Vec::new())),
                Some(Data::Set(set)) => Ok(Value::Array(set.iter().cloned().map(bulk).collect())),
                Some(_) => Err(wrong_type()),
            },
            ("SISMEMBER", [key, member]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Int(0)),
                Some(Data::Set(set)) => Ok(Value::Int(i64::from(set.contains(member)))),
                Some(_) => Err(wrong_type()),
            },
            ("SCARD", [key]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Int(0)),
                Some(Data::Set(set)) => Ok(count(set.len())),
                Some(_) => Err(wrong_type()),
            },
            ("LPUSH" | "RPUSH", [key, values @ ..]) if !values.is_empty() => {
                let list = list_entry(ks, now, key)?;
                for value in values {
                    if upper == "LPUSH" {
                        list.push_front(value.clone());
                    } else {
                        list.push_back(value.clone());
                    }
                }
                Ok(count(list.len()))
            }
            ("LPOP" | "RPOP", [key]) => {
                let popped = match ks.live(key, now).map(|entry| &mut entry.data) {
                    None => None,
                    Some(Data::List(list)) if upper == "LPOP" => list.pop_front(),
                    Some(Data::List(list)) => list.pop_back(),
                    Some(_) => return Err(wrong_type()),
                };
                drop_if_empty(ks, key);
                Ok(popped.map_or(Value::Nil, bulk))
            }
            ("LLEN", [key]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Int(0)),
                Some(Data::List(list)) => Ok(count(list.len())),
                Some(_) => Err(wrong_type()),
            },
            ("LRANGE", [key, start, stop]) => {
                let (start, stop) = (parse_int(start)?, parse_int(stop)?);
                match ks.live(key, now).map(|entry| &entry.data) {
                    None => Ok(Value::Array(Vec::new())),
                    Some(Data::List(list)) => {
                        let Some((start, stop)) = index_range(list.len(), start, stop) else {
                            return Ok(Value::Array(Vec::new()));
                        };
                        Ok(Value::Array(
                            list.iter()
                                .skip(start)
                                .take(stop - start + 1)
                                .cloned()
                                .map(bulk)
                                .collect(),
                        ))
                    }
                    Some(_) => Err(wrong_type()),
                }
            }
            ("ZADD", [key, rest @ ..]) => {
                let flags = ZaddFlags::parse(rest)?;
                let pairs = &rest[flags.consumed..];
                if pairs.is_empty() || pairs.len() % 2 != 0 {
                    return Err(err("ERR syntax error"));
                }
                if flags.incr && pairs.len() != 2 {
                    return Err(err(
                        "ERR INCR option supports a single increment-element pair",
                    ));
                }
                let parsed = pairs
                    .chunks(2)
                    .map(|pair| parse_score(&pair[0]).map(|score| (score, pair[1].clone())))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| err("ERR value is not a valid float"))?;
                // XX on a missing key creates nothing.
                if flags.only_existing && ks.live(key, now).is_none() {
                    return Ok(if flags.incr {
                        Value::Nil
                    } else {
                        Value::Int(0)
                    });
                }
                let set = sorted_set_entry(ks, now, key)?;
                if flags.incr {
                    let (by, member) = &parsed[0];
                    let result = match set.score(member) {
                        Some(_) if flags.only_new => Value::Nil,
                        None if flags.only_existing => Value::Nil,
                        old => {
                            let score = old.unwrap_or(0.0) + by;
                            set.insert(score, member.clone());
                            bulk(format_score(score))
                        }
                    };
                    drop_if_empty(ks, key);
                    return Ok(result);
                }
                let mut changed = 0;
                for (score, member) in parsed {
                    let old = set.score(&member);
                    let allowed = match old {
                        Some(_) => !flags.only_new,
                        None => !flags.only_existing,
                    };
                    if !allowed {
                        continue;
                    }
                    set.insert(score, member);
                    if old.is_none() || (flags.changed && old != Some(score)) {
                        changed += 1;
                    }
                }
                drop_if_empty(ks, key);
                Ok(count(changed))
            }
            ("ZREM", [key, members @ ..]) if !members.is_empty() => {
                let removed = match ks.live(key, now).map(|entry| &mut entry.data) {
                    None => 0,
                    Some(Data::SortedSet(set)) => {
                        members.iter().filter(|member| set.remove(member)).count()
                    }
                    Some(_) => return Err(wrong_type()),
                };
                drop_if_empty(ks, key);
                Ok(count(removed))
            }
            ("ZCARD", [key]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Int(0)),
                Some(Data::SortedSet(set)) => Ok(count(set.len())),
                Some(_) => Err(wrong_type()),
            },
            ("ZRANK", [key, member]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Nil),
                Some(Data::SortedSet(set)) => Ok(set.rank(member).map_or(Value::Nil, count)),
                Some(_) => Err(wrong_type()),
            },
            ("ZSCORE", [key, member]) => match ks.live(key, now).map(|entry| &entry.data) {
                None => Ok(Value::Nil),
                Some(Data::SortedSet(set)) => Ok(set
                    .score(member)
                    .map_or(Value::Nil, |s| bulk(format_score(s)))),
                Some(_) => Err(wrong_type()),
            },
            ("ZRANGE", [key, start, stop, options @ ..]) => {
                let (start, stop) = (parse_int(start)?, parse_int(stop)?);
                let with_scores = match options {
                    [] => false,
                    [option] if option.eq_ignore_ascii_case(b"WITHSCORES") => true,
                    _ => {
                        return Err(err(
                            "ERR syntax error (the embedded ZRANGE takes ranks and WITHSCORES only)",
                        ));
                    }
                };
                match ks.live(key, now).map(|entry| &entry.data) {
                    None => Ok(Value::Array(Vec::new())),
                    Some(Data::SortedSet(set)) => {
                        Ok(scored_reply(set.range_by_rank(start, stop), with_scores))
                    }
                    Some(_) => Err(wrong_type()),
                }
            }
            ("ZRANGEBYSCORE", [key, min, max, options @ ..]) => {
                let invalid = || err("ERR min or max is not a float");
                let (min, max) = (
                    Bound::parse(min).ok_or_else(invalid)?,
                    Bound::parse(max).ok_or_else(invalid)?,
                );
                let (with_scores, offset, limit) = range_options(options)?;
                match ks.live(key, now).map(|entry| &entry.data) {
                    None => Ok(Value::Array(Vec::new())),
                    Some(Data::SortedSet(set)) => Ok(scored_reply(
                        set.range_by_score(min, max, offset, limit),
                        with_scores,
                    )),
                    Some(_) => Err(wrong_type()),
                }
            }
            ("ZREMRANGEBYRANK", [key, start, stop]) => {
                let (start, stop) = (parse_int(start)?, parse_int(stop)?);
                let removed = match ks.live(key, now).map(|entry| &mut entry.data) {
                    None => 0,
                    Some(Data::SortedSet(set)) => set.remove_range_by_rank(start, stop),
                    Some(_) => return Err(wrong_type()),
                };
                drop_if_empty(ks, key);
                Ok(count(removed))
            }
            (
                "ZADD" | "ZREM" | "ZCARD" | "ZSCORE" | "ZRANK" | "ZRANGE" | "ZRANGEBYSCORE"
                | "ZREMRANGEBYRANK",
                _,
            ) => Err(arity(name)),
            (
                "DEL" | "EXISTS" | "MGET" | "MSET" | "HSET" | "HDEL" | "SADD" | "SREM" | "LPUSH"
                | "RPUSH" | "PING" | "ECHO" | "DBSIZE" | "EXPIRE" | "PEXPIRE" | "TTL" | "PTTL"
                | "PERSIST" | "TYPE" | "GET" | "GETDEL" | "SET" | "SETNX" | "APPEND" | "STRLEN"
                | "INCR" | "DECR" | "INCRBY" | "DECRBY" | "HGET" | "HEXISTS" | "HGETALL" | "HKEYS"
                | "HVALS" | "HLEN" | "HINCRBY" | "SMEMBERS" | "SISMEMBER" | "SCARD" | "LPOP"
                | "RPOP" | "LLEN" | "LRANGE",
                _,
            ) => Err(arity(name)),
            _ => Err(err(&format!(
                "ERR unknown command '{name}' (the embedded Redis serves a subset; see the docs)"
            ))),
        }
    }
}

/// `[WITHSCORES] [LIMIT offset count]` of ZRANGEBYSCORE.
fn range_options(options: &[Vec<u8>]) -> Result<(bool, usize, Option<usize>), RedisBackendError> {
    let syntax = || err("ERR syntax error");
    let (mut with_scores, mut offset, mut limit) = (false, 0, None);
    let mut rest = options;
    while let Some((option, tail)) = rest.split_first() {
        if option.eq_ignore_ascii_case(b"WITHSCORES") {
            with_scores = true;
            rest = tail;
        } else if option.eq_ignore_ascii_case(b"LIMIT") {
            let [from, how_many, tail @ ..] = tail else {
                return Err(syntax());
            };
            offset = usize::try_from(parse_int(from)?).map_err(|_| syntax())?;
            // A negative count means all, as in Redis.
            limit = usize::try_from(parse_int(how_many)?).ok();
            rest = tail;
        } else {
            return Err(syntax());
        }
    }
    Ok((with_scores, offset, limit))
}

fn scored_reply(entries: Vec<(Vec<u8>, f64)>, with_scores: bool) -> Value {
    let mut reply = Vec::with_capacity(entries.len() * if with_scores { 2 } else { 1 });
    for (member, score) in entries {
        reply.push(bulk(member));
        if with_scores {
            reply.push(bulk(format_score(score)));
        }
    }
    Value::Array(reply)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that matters
    // more than losing the whole store, so a poisoned lock is simply taken over.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn drop_if_empty(ks: &mut Keyspace, key: &[u8]) {
    let empty = ks.entries.get(key).is_some_and(|entry| match &entry.data {
        Data::Hash(hash) => hash.is_empty(),
        Data::Set(set) => set.is_empty(),
        Data::List(list) => list.is_empty(),
        Data::SortedSet(set) => set.is_empty(),
        Data::String(_) => false,
    });
    if empty {
        ks.entries.remove(key);
    }
}

fn set(
    ks: &mut Keyspace,
    now: Instant,
    key: &[u8],
    value: &[u8],
    options: &[Vec<u8>],
) -> Result<Value, RedisBackendError> {
    let mut expires_at = None;
    let (mut only_new, mut only_existing) = (false, false);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => only_new = true,
            b"XX" => only_existing = true,
            unit @ (b"EX" | b"PX") => {
                let amount = options.next().ok_or_else(|| err("ERR syntax error"))?;
                let amount = parse_int(amount)?;
                if amount <= 0 {
                    return Err(err("ERR invalid expire time in 'set' command"));
                }
                let millis = if unit == b"EX" {
                    amount.saturating_mul(1000)
                } else {
                    amount
                };
                expires_at = Some(now + Duration::from_millis(millis.unsigned_abs()));
            }
            _ => return Err(err("ERR syntax error")),
        }
    }
    let exists = ks.live(key, now).is_some();
    if (only_new && exists) || (only_existing && !exists) {
        return Ok(Value::Nil);
    }
    ks.entries.insert(
        key.to_vec(),
        Entry {
            data: Data::String(value.to_vec()),
            expires_at,
        },
    );
    Ok(Value::Okay)
}

fn incr_by(
    ks: &mut Keyspace,
    now: Instant,
    key: &[u8],
    by: i64,
) -> Result<Value, RedisBackendError> {
    let entry = string_entry(ks, now, key)?;
    let current = if entry.is_empty() {
        0
    } else {
        parse_int(entry)?
    };
    let next = current.checked_add(by).ok_or_else(not_integer)?;
    *entry = next.to_string().into_bytes();
    Ok(Value::Int(next))
}

/// The value at `key`, created empty with `make` if absent; a value of another kind is an error.
fn entry_of<'a>(
    ks: &'a mut Keyspace,
    now: Instant,
    key: &[u8],
    make: fn() -> Data,
) -> &'a mut Data {
    // Drops the entry first if it has expired, so that it starts afresh.
    ks.live(key, now);
    &mut ks
        .entries
        .entry(key.to_vec())
        .or_insert_with(|| Entry {
            data: make(),
            expires_at: None,
        })
        .data
}

fn string_entry<'a>(
    ks: &'a mut Keyspace,
    now: Instant,
    key: &[u8],
) -> Result<&'a mut Vec<u8>, RedisBackendError> {
    match entry_of(ks, now, key, || Data::String(Vec::new())) {
        Data::String(value) => Ok(value),
        _ => Err(wrong_type()),
    }
}

fn hash_entry<'a>(
    ks: &'a mut Keyspace,
    now: Instant,
    key: &[u8],
) -> Result<&'a mut BTreeMap<Vec<u8>, Vec<u8>>, RedisBackendError> {
    match entry_of(ks, now, key, || Data::Hash(BTreeMap::new())) {
        Data::Hash(hash) => Ok(hash),
        _ => Err(wrong_type()),
    }
}

fn set_entry<'a>(
    ks: &'a mut Keyspace,
    now: Instant,
    key: &[u8],
) -> Result<&'a mut BTreeSet<Vec<u8>>, RedisBackendError> {
    match entry_of(ks, now, key, || Data::Set(BTreeSet::new())) {
        Data::Set(set) => Ok(set),
        _ => Err(wrong_type()),
    }
}

/// The options of `ZADD` that the embedded store takes: `NX`, `XX`, `CH` and `INCR` (not `GT`
/// or `LT`), before the score-member pairs.
struct ZaddFlags {
    only_new: bool,
    only_existing: bool,
    changed: bool,
    incr: bool,
    consumed: usize,
}

impl ZaddFlags {
    fn parse(args: &[Vec<u8>]) -> Result<ZaddFlags, RedisBackendError> {
        let mut flags = ZaddFlags {
            only_new: false,
            only_existing: false,
            changed: false,
            incr: false,
            consumed: 0,
        };
        for arg in args {
            match arg.to_ascii_uppercase().as_slice() {
                b"NX" => flags.only_new = true,
                b"XX" => flags.only_existing = true,
                b"CH" => flags.changed = true,
                b"INCR" => flags.incr = true,
                b"GT" | b"LT" => return Err(err("ERR the embedded store takes no GT or LT")),
                _ => break,
            }
            flags.consumed += 1;
        }
        if flags.only_new && flags.only_existing {
            return Err(err(
                "ERR XX and NX options at the same time are not compatible",
            ));
        }
        Ok(flags)
    }
}

fn sorted_set_entry<'a>(
    ks: &'a mut Keyspace,
    now: Instant,
    key: &[u8],
) -> Result<&'a mut SortedSet, RedisBackendError> {
    match entry_of(ks, now, key, || Data::SortedSet(SortedSet::default())) {
        Data::SortedSet(set) => Ok(set),
        _ => Err(wrong_type()),
    }
}

fn list_entry<'a>(
    ks: &'a mut Keyspace,
    now: Instant,
    key: &[u8],
) -> Result<&'a mut VecDeque<Vec<u8>>, RedisBackendError> {
    match entry_of(ks, now, key, || Data::List(VecDeque::new())) {
        Data::List(list) => Ok(list),
        _ => Err(wrong_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &EmbeddedRedis, parts: &[&str]) -> Result<Value, RedisBackendError> {
        let args: Vec<Vec<u8>> = parts[1..].iter().map(|p| p.as_bytes().to_vec()).collect();
        store.execute(parts[0], &args)
    }

    #[test]
    fn strings_counters_and_expiry() {
        let store = EmbeddedRedis::default();
        assert_eq!(run(&store, &["SET", "k", "v"]).unwrap(), Value::Okay);
        assert_eq!(run(&store, &["get", "k"]).unwrap(), bulk(b"v".to_vec()));
        assert_eq!(run(&store, &["SET", "k", "w", "NX"]).unwrap(), Value::Nil);
        assert_eq!(run(&store, &["INCRBY", "n", "5"]).unwrap(), Value::Int(5));
        assert_eq!(run(&store, &["DECR", "n"]).unwrap(), Value::Int(4));
        assert!(run(&store, &["INCR", "k"]).is_err());
        assert_eq!(run(&store, &["TTL", "k"]).unwrap(), Value::Int(-1));
        assert_eq!(run(&store, &["PEXPIRE", "k", "30"]).unwrap(), Value::Int(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(run(&store, &["GET", "k"]).unwrap(), Value::Nil);
        assert_eq!(run(&store, &["TTL", "k"]).unwrap(), Value::Int(-2));
        assert_eq!(
            run(&store, &["SET", "e", "1", "EX", "100"]).unwrap(),
            Value::Okay
        );
        assert_eq!(run(&store, &["TTL", "e"]).unwrap(), Value::Int(100));
    }

    #[test]
    fn zadd_options_as_redis_takes_them() {
        let store = EmbeddedRedis::default();
        // XX INCR on a missing key or member: nil, and nothing is created.
        assert_eq!(
            run(&store, &["ZADD", "c", "XX", "INCR", "1", "n"]).unwrap(),
            Value::Nil
        );
        assert_eq!(run(&store, &["EXISTS", "c"]).unwrap(), Value::Int(0));
        // NX seeds once; a second NX changes nothing.
        assert_eq!(
            run(&store, &["ZADD", "c", "NX", "1764553200123456", "n"]).unwrap(),
            Value::Int(1)
        );
        assert_eq!(
            run(&store, &["ZADD", "c", "NX", "5", "n"]).unwrap(),
            Value::Int(0)
        );
        assert_eq!(
            run(&store, &["ZADD", "c", "XX", "INCR", "1", "n"]).unwrap(),
            bulk(b"1764553200123457".to_vec())
        );
        assert_eq!(
            run(&store, &["ZADD", "c", "NX", "INCR", "1", "n"]).unwrap(),
            Value::Nil
        );
        assert_eq!(
            run(&store, &["ZADD", "c", "XX", "CH", "2", "n", "3", "other"]).unwrap(),
            Value::Int(1)
        );
        assert_eq!(run(&store, &["ZSCORE", "c", "other"]).unwrap(), Value::Nil);
        assert!(run(&store, &["ZADD", "c", "NX", "XX", "1", "n"]).is_err());
        assert!(run(&store, &["ZADD", "c", "INCR", "1", "a", "2", "b"]).is_err());
        assert!(run(&store, &["ZADD", "c", "GT", "1", "n"]).is_err());
    }

    #[test]
    fn sorted_sets_as_redis_replies_them() {
        let store = EmbeddedRedis::default();
        assert_eq!(
            run(&store, &["ZADD", "z", "2", "b", "1", "a", "3", "c"]).unwrap(),
            Value::Int(3)
        );
        assert_eq!(
            run(&store, &["ZADD", "z", "5", "a"]).unwrap(),
            Value::Int(0)
        );
        assert_eq!(run(&store, &["ZCARD", "z"]).unwrap(), Value::Int(3));
        assert_eq!(
            run(&store, &["ZSCORE", "z", "a"]).unwrap(),
            bulk(b"5".to_vec())
        );
        // b (2), c (3), a (5): ranks by score.
        assert_eq!(run(&store, &["ZRANK", "z", "b"]).unwrap(), Value::Int(0));
        assert_eq!(run(&store, &["ZRANK", "z", "a"]).unwrap(), Value::Int(2));
        assert_eq!(run(&store, &["ZRANK", "z", "nobody"]).unwrap(), Value::Nil);
        assert_eq!(
            run(
                &store,
                &[
                    "ZRANGEBYSCORE",
                    "z",
                    "(2",
                    "+inf",
                    "WITHSCORES",
                    "LIMIT",
                    "0",
                    "1"
                ]
            )
            .unwrap(),
            Value::Array(vec![bulk(b"c".to_vec()), bulk(b"3".to_vec())])
        );
        assert_eq!(
            run(&store, &["ZREMRANGEBYRANK", "z", "0", "-3"]).unwrap(),
            Value::Int(1)
        );
        assert_eq!(
            run(&store, &["ZRANGE", "z", "0", "-1"]).unwrap(),
            Value::Array(vec![bulk(b"c".to_vec()), bulk(b"a".to_vec())])
        );
        assert_eq!(
            run(&store, &["TYPE", "z"]).unwrap(),
            Value::SimpleString("zset".into())
        );
        assert_eq!(
            run(&store, &["ZREM", "z", "a", "c", "x"]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(run(&store, &["EXISTS", "z"]).unwrap(), Value::Int(0));
        assert!(run(&store, &["ZADD", "z", "x", "m"]).is_err());
        assert!(run(&store, &["ZADD", "z", "1"]).is_err());
    }

    #[test]
    fn hashes_sets_lists_and_types() {
        let store = EmbeddedRedis::default();
        assert_eq!(
            run(&store, &["HSET", "h", "a", "1", "b", "2"]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            run(&store, &["HINCRBY", "h", "a", "9"]).unwrap(),
            Value::Int(10)
        );
        assert_eq!(run(&store, &["HLEN", "h"]).unwrap(), Value::Int(2));
        assert_eq!(
            run(&store, &["SADD", "s", "x", "y", "x"]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            run(&store, &["SREM", "s", "x", "y"]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            run(&store, &["EXISTS", "s"]).unwrap(),
            Value::Int(0),
            "empty sets vanish"
        );
        assert_eq!(
            run(&store, &["RPUSH", "l", "1", "2", "3"]).unwrap(),
            Value::Int(3)
        );
        assert_eq!(run(&store, &["LPUSH", "l", "0"]).unwrap(), Value::Int(4));
        assert_eq!(
            run(&store, &["LRANGE", "l", "1", "-2"]).unwrap(),
            Value::Array(vec![bulk(b"1".to_vec()), bulk(b"2".to_vec())])
        );
        // A stop before the first element is an empty range, as in Redis (not the first one).
        assert_eq!(
            run(&store, &["LRANGE", "l", "0", "-100"]).unwrap(),
            Value::Array(Vec::new())
        );
        let Err(RedisBackendError::Command { code, .. }) = run(&store, &["SADD", "h", "z"]) else {
            panic!("SADD on a hash must fail");
        };
        assert_eq!(code.as_deref(), Some("WRONGTYPE"));
        assert_eq!(
            run(&store, &["TYPE", "l"]).unwrap(),
            Value::SimpleString("list".into())
        );
        assert!(run(&store, &["GET"]).is_err(), "arity is checked");
        assert!(
            run(&store, &["SUBSCRIBE", "c"]).is_err(),
            "unknown commands are refused"
        );
    }

    #[tokio::test]
    async fn publish_reaches_in_process_subscribers() {
        let store = EmbeddedRedis::default();
        assert_eq!(
            run(&store, &["PUBLISH", "c", "nobody"]).unwrap(),
            Value::Int(0)
        );
        let mut rx = store.subscribe(b"c");
        assert_eq!(run(&store, &["PUBLISH", "c", "hi"]).unwrap(), Value::Int(1));
        assert_eq!(rx.recv().await.unwrap(), b"hi".to_vec());
    }

    #[tokio::test]
    async fn a_prefix_subscription_receives_every_channel_under_it() {
        let store = EmbeddedRedis::default();
        let mut under = store.subscribe_prefix(b"p:topic:");
        let mut exact = store.subscribe(b"p:topic:a");
        assert_eq!(
            run(&store, &["PUBLISH", "p:topic:a", "1"]).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            run(&store, &["PUBLISH", "p:other", "2"]).unwrap(),
            Value::Int(0)
        );
        assert_eq!(
            run(&store, &["PUBLISH", "p:topic:b", "3"]).unwrap(),
            Value::Int(1)
        );
        assert_eq!(
            under.recv().await.unwrap(),
            (b"p:topic:a".to_vec(), b"1".to_vec())
        );
        assert_eq!(
            under.recv().await.unwrap(),
            (b"p:topic:b".to_vec(), b"3".to_vec())
        );
        assert_eq!(exact.recv().await.unwrap(), b"1".to_vec());
        drop(under);
        assert_eq!(
            run(&store, &["PUBLISH", "p:topic:b", "4"]).unwrap(),
            Value::Int(0),
            "a dropped subscription receives nothing"
        );
    }
}
