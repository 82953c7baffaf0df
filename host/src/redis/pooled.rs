//! Real Redis servers, through one connection pool per address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures::future::BoxFuture;

use super::{RedisBackendError, RedisSession};

/// Connections kept per Redis address, across all instances of the host.
pub const POOL_SIZE: usize = 32;
/// How long an instance waits for a pooled connection before its `open` fails.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Commands that would leave a pooled connection in a state the next user does not expect
/// (subscribed, on another database, closed), refused on pooled sessions.
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

/// One pool per address, made on first use.
#[derive(Default)]
pub struct PooledRedis {
    pools: Mutex<HashMap<String, Pool>>,
}

struct PooledSession {
    connection: deadpool_redis::Connection,
}

impl RedisSession for PooledSession {
    fn command<'a>(
        &'a mut self,
        name: &'a str,
        args: Vec<Vec<u8>>,
    ) -> BoxFuture<'a, Result<redis::Value, RedisBackendError>> {
        Box::pin(async move {
            if SESSION_ALTERING
                .iter()
                .any(|refused| refused.eq_ignore_ascii_case(name))
            {
                return Err(RedisBackendError::Command {
                    code: Some("ERR".into()),
                    message: format!(
                        "ERR {name} is not available to components (it would alter a pooled connection)"
                    ),
                });
            }
            let mut command = redis::cmd(name);
            for arg in args {
                command.arg(arg);
            }
            command
                .query_async::<redis::Value>(&mut self.connection)
                .await
                .map_err(|err| RedisBackendError::Command {
                    code: err.code().map(str::to_owned),
                    message: err.to_string(),
                })
        })
    }
}

impl PooledRedis {
    fn pool(&self, address: &str) -> Result<Pool, RedisBackendError> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        let mut config = Config::from_url(address);
        config.pool = Some(PoolConfig {
            max_size: POOL_SIZE,
            timeouts: Timeouts {
                wait: Some(POOL_WAIT),
                create: Some(POOL_WAIT),
                recycle: Some(POOL_WAIT),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|err| RedisBackendError::InvalidAddress(err.to_string()))?;
        pools.insert(address.to_owned(), pool.clone());
        Ok(pool)
    }

    /// A pooled session on the server at `address`.
    pub async fn connect(&self, address: &str) -> Result<Box<dyn RedisSession>, RedisBackendError> {
        let pool = self.pool(address)?;
        let connection = pool
            .get()
            .await
            .map_err(|err| RedisBackendError::Unavailable(format!("{address}: {err}")))?;
        Ok(Box::new(PooledSession { connection }))
    }
}
