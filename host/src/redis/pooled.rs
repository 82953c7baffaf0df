//! Real Redis servers: per address, one shared multiplexed connection for ordinary commands, and
//! a pool of dedicated connections for what needs a connection of its own.
//!
//! A guest's connection resource holds no server connection while it is idle. Each ordinary
//! command goes out on the address's shared connection, pipelined with every other instance's
//! (Redis answers in order, and the multiplexer hands each reply to its caller), so that no
//! number of open guest connections can exhaust anything, and a guest that waits holds nothing.
//! A transaction (`MULTI` or `WATCH` up to `EXEC`, `DISCARD` or `UNWATCH`) must not interleave
//! with other callers' commands, and a blocking command would stall the shared pipeline: those
//! take a dedicated connection from a pool, for that transaction or that one command.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Budget, RedisBackendError, RedisSession};

/// Dedicated connections kept per Redis address and budget, across all instances of the host.
pub const DEDICATED_POOL_SIZE: usize = 32;
/// How long an instance waits for a dedicated connection before its command fails.
pub const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long a command on the shared connection may wait for its reply.
const SHARED_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the shared connection may take to connect, or to reconnect after losing the server.
const SHARED_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Commands that would leave a connection in a state its next user does not expect
/// (subscribed, on another database, closed), refused to components.
const SESSION_ALTERING: &[&str] = &[
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "SSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SUNSUBSCRIBE",
    "MONITOR",
    "SELECT",
    "QUIT",
    "RESET",
    "SYNC",
    "PSYNC",
    "HELLO",
    "AUTH",
    "CLIENT",
];

/// Commands that open a transaction: the connection stays the session's until it ends.
const TRANSACTION_OPENING: &[&str] = &["MULTI", "WATCH"];
/// Commands that end one.
const TRANSACTION_ENDING: &[&str] = &["EXEC", "DISCARD", "UNWATCH"];
/// Commands that may block the connection they run on for as long as they wait.
const BLOCKING: &[&str] = &[
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "XREAD",
    "XREADGROUP",
    "WAIT",
    "WAITAOF",
];

/// Commands that change nothing, and so may be sent again when the connection was lost before
/// their reply came (`EVAL_RO`: Redis refuses a write in the script).
const READS: &[&str] = &[
    "GET",
    "MGET",
    "EXISTS",
    "TYPE",
    "TTL",
    "PTTL",
    "STRLEN",
    "HGET",
    "HMGET",
    "HGETALL",
    "HEXISTS",
    "HLEN",
    "HKEYS",
    "HVALS",
    "SMEMBERS",
    "SISMEMBER",
    "SCARD",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZREVRANGE",
    "ZREVRANGEBYSCORE",
    "ZSCORE",
    "ZRANK",
    "ZREVRANK",
    "ZCARD",
    "ZCOUNT",
    "LRANGE",
    "LLEN",
    "LINDEX",
    "PING",
    "EVAL_RO",
    "EVALSHA_RO",
];

/// Whether `err` says the connection was lost, rather than that Redis answered with an error.
fn lost_connection(err: &redis::RedisError) -> bool {
    err.is_connection_dropped() || err.is_io_error() || err.is_unrecoverable_error()
}

fn is_one_of(name: &str, set: &[&str]) -> bool {
    set.iter().any(|member| member.eq_ignore_ascii_case(name))
}

/// What one address has: its shared connection and, per budget, its dedicated pool.
#[derive(Clone)]
struct Address {
    shared: ConnectionManager,
    requests: Pool,
    host: Pool,
}

impl Address {
    fn dedicated(&self, budget: Budget) -> &Pool {
        match budget {
            Budget::Requests => &self.requests,
            Budget::Host => &self.host,
        }
    }
}

/// Every address in use, each made on first use.
pub struct PooledRedis {
    addresses: Mutex<HashMap<String, Address>>,
    /// Waits for a dedicated connection that ran out of time (the pool was exhausted).
    pub exhausted: Counter,
}

impl Default for PooledRedis {
    fn default() -> Self {
        Self {
            addresses: Mutex::new(HashMap::new()),
            exhausted: Counter::default(),
        }
    }
}

struct PooledSession {
    address: Address,
    budget: Budget,
    exhausted: Counter,
    /// The dedicated connection of an open transaction.
    pinned: Option<deadpool_redis::Connection>,
}

fn command_error(err: redis::RedisError) -> RedisBackendError {
    RedisBackendError::Command {
        code: err.code().map(str::to_owned),
        message: err.to_string(),
    }
}

impl PooledSession {
    async fn dedicated(&self) -> Result<deadpool_redis::Connection, RedisBackendError> {
        self.address
            .dedicated(self.budget)
            .get()
            .await
            .map_err(|err| {
                if matches!(err, deadpool_redis::PoolError::Timeout(_)) {
                    self.exhausted.inc();
                }
                RedisBackendError::Unavailable(format!("no dedicated Redis connection: {err}"))
            })
    }
}

impl RedisSession for PooledSession {
    fn command<'a>(
        &'a mut self,
        name: &'a str,
        args: Vec<Vec<u8>>,
    ) -> BoxFuture<'a, Result<redis::Value, RedisBackendError>> {
        Box::pin(async move {
            if is_one_of(name, SESSION_ALTERING) {
                return Err(RedisBackendError::Command {
                    code: Some("ERR".into()),
                    message: format!(
                        "ERR {name} is not available to components (it would alter a shared connection)"
                    ),
                });
            }
            let mut command = redis::cmd(name);
            for arg in args {
                command.arg(arg);
            }
            if self.pinned.is_none() && is_one_of(name, TRANSACTION_OPENING) {
                self.pinned = Some(self.dedicated().await?);
            }
            if let Some(pinned) = self.pinned.as_mut() {
                let reply = command.query_async::<redis::Value>(pinned).await;
                // The transaction is over once it is ended, and so is it when the connection
                // was lost (it goes back to the pool, whose recycling check discards it). An
                // error reply (a queued command refused) leaves the transaction open, as in Redis:
                // its `EXEC` then fails with `EXECABORT`.
                if reply.as_ref().is_err_and(lost_connection) || is_one_of(name, TRANSACTION_ENDING)
                {
                    self.pinned = None;
                }
                return reply.map_err(command_error);
            }
            if is_one_of(name, BLOCKING) {
                let mut connection = self.dedicated().await?;
                return command
                    .query_async::<redis::Value>(&mut connection)
                    .await
                    .map_err(command_error);
            }
            let mut shared = self.address.shared.clone();
            match command.query_async::<redis::Value>(&mut shared).await {
                // The shared connection was lost (the server restarted, say): the manager
                // connects anew, and a read is sent again rather than failing the guest's request.
                // Anything else may have been applied before the loss, and is not repeated.
                Err(err) if lost_connection(&err) && is_one_of(name, READS) => command
                    .query_async::<redis::Value>(&mut shared)
                    .await
                    .map_err(command_error),
                answered => answered.map_err(command_error),
            }
        })
    }
}

fn dedicated_pool(address: &str) -> Result<Pool, RedisBackendError> {
    let mut config = Config::from_url(address);
    config.pool = Some(PoolConfig {
        max_size: DEDICATED_POOL_SIZE,
        timeouts: Timeouts {
            wait: Some(POOL_WAIT),
            create: Some(POOL_WAIT),
            recycle: Some(POOL_WAIT),
        },
        ..PoolConfig::default()
    });
    config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|err| RedisBackendError::InvalidAddress(err.to_string()))
}

impl PooledRedis {
    fn address(&self, address: &str) -> Result<Address, RedisBackendError> {
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(known) = addresses.get(address) {
            return Ok(known.clone());
        }
        let client = redis::Client::open(address)
            .map_err(|err| RedisBackendError::InvalidAddress(err.to_string()))?;
        // Lazy: the first command connects, and a lost server is reconnected to in the
        // background while commands fail fast (a guest's command gets the error, not a hang).
        let shared = ConnectionManager::new_lazy_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_response_timeout(Some(SHARED_RESPONSE_TIMEOUT))
                .set_connection_timeout(Some(SHARED_CONNECT_TIMEOUT))
                .set_number_of_retries(2),
        )
        .map_err(|err| RedisBackendError::InvalidAddress(err.to_string()))?;
        let made = Address {
            shared,
            requests: dedicated_pool(address)?,
            host: dedicated_pool(address)?,
        };
        addresses.insert(address.to_owned(), made.clone());
        Ok(made)
    }

    /// A session on the server at `address`: it holds no connection until a command needs one.
    pub fn connect(
        &self,
        address: &str,
        budget: Budget,
    ) -> Result<Box<dyn RedisSession>, RedisBackendError> {
        Ok(Box::new(PooledSession {
            address: self.address(address)?,
            budget,
            exhausted: self.exhausted.clone(),
            pinned: None,
        }))
    }
}
