//! The Redis capability: Spin's `fermyon:spin/redis@2.0.0` for components.
//!
//! A guest opens a connection by address, as under Spin; the address must be allowed by the
//! component's `allowed_outbound_hosts`. The host then hands it a session from a backend:
//! a session on a real Redis server that holds a connection only while a command or a
//! transaction needs one ([`pooled::PooledRedis`]), or, for the embedded
//! address `redis://nexus.embedded` when no Redis is configured, the in-process store
//! ([`embedded::EmbeddedRedis`]). Backends sit behind [`RedisBackend`] so that tests can swap
//! them.

pub mod embedded;
pub mod pooled;
mod sorted_set;

use std::sync::Arc;

use futures::future::BoxFuture;
use thiserror::Error;
use tracing::Instrument;
use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::allowed_hosts::{AllowedHosts, OutboundAddress};
use crate::bindings::fermyon::spin::redis::{
    self as wit, Error as WitError, RedisParameter, RedisResult,
};
pub use crate::budget::Budget;

/// The host name under which the embedded backends are reachable.
pub const EMBEDDED_HOST: &str = "nexus.embedded";

/// How many Redis connections one instance may hold open at once.
pub const MAX_CONNECTIONS_PER_INSTANCE: usize = 16;

/// What went wrong below the guest-visible interface.
#[derive(Debug, Error)]
pub enum RedisBackendError {
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("no connection could be had: {0}")]
    Unavailable(String),
    #[error("{message}")]
    Command {
        /// The error code Redis put first in its reply (`WRONGTYPE`, `ERR`, ...).
        code: Option<String>,
        message: String,
    },
}

/// An open session: one command at a time.
pub trait RedisSession: Send {
    fn command<'a>(
        &'a mut self,
        name: &'a str,
        args: Vec<Vec<u8>>,
    ) -> BoxFuture<'a, Result<redis::Value, RedisBackendError>>;
}

/// Where sessions come from.
pub trait RedisBackend: Send + Sync {
    fn connect<'a>(
        &'a self,
        address: &'a str,
        budget: Budget,
    ) -> BoxFuture<'a, Result<Box<dyn RedisSession>, RedisBackendError>>;
}

/// Routes addresses to the embedded store or to pools of real connections.
pub struct RedisBackends {
    embedded: Option<Arc<embedded::EmbeddedRedis>>,
    pooled: pooled::PooledRedis,
}

impl RedisBackends {
    pub fn new(embedded: Option<Arc<embedded::EmbeddedRedis>>) -> Self {
        Self {
            embedded,
            pooled: pooled::PooledRedis::default(),
        }
    }

    /// The embedded store, when no Redis is configured.
    pub fn embedded(&self) -> Option<&Arc<embedded::EmbeddedRedis>> {
        self.embedded.as_ref()
    }

    /// Counts waits for a dedicated connection that ran out of time.
    pub fn exhausted(&self) -> prometheus_client::metrics::counter::Counter {
        self.pooled.exhausted.clone()
    }
}

impl RedisBackend for RedisBackends {
    fn connect<'a>(
        &'a self,
        address: &'a str,
        budget: Budget,
    ) -> BoxFuture<'a, Result<Box<dyn RedisSession>, RedisBackendError>> {
        Box::pin(async move {
            let parsed = OutboundAddress::parse(address)
                .map_err(|err| RedisBackendError::InvalidAddress(err.to_string()))?;
            if parsed.host == EMBEDDED_HOST {
                return match &self.embedded {
                    Some(store) => Ok(Box::new(store.session()) as Box<dyn RedisSession>),
                    None => Err(RedisBackendError::Unavailable(format!(
                        "{address}: the embedded Redis runs only when REDIS_URL is not set"
                    ))),
                };
            }
            self.pooled.connect(address, budget)
        })
    }
}

/// A guest's open connection (the `connection` resource).
pub struct RedisConnection {
    session: Box<dyn RedisSession>,
}

/// The capability's per-instance context.
pub struct RedisCtx {
    backend: Arc<dyn RedisBackend>,
    allowed: Arc<AllowedHosts>,
    budget: Budget,
    open: usize,
}

impl RedisCtx {
    pub fn new(backend: Arc<dyn RedisBackend>, allowed: Arc<AllowedHosts>, budget: Budget) -> Self {
        Self {
            backend,
            allowed,
            budget,
            open: 0,
        }
    }
}

/// What the bindings are implemented on: the context and the instance's resource table.
pub struct RedisCtxView<'a> {
    pub ctx: &'a mut RedisCtx,
    pub table: &'a mut ResourceTable,
}

/// The `HasData` marker for [`RedisCtxView`].
pub struct RedisCapability;

impl HasData for RedisCapability {
    type Data<'a> = RedisCtxView<'a>;
}

fn to_wit_error(err: RedisBackendError) -> WitError {
    match err {
        RedisBackendError::InvalidAddress(_) => WitError::InvalidAddress,
        RedisBackendError::Command {
            code: Some(code), ..
        } if code == "WRONGTYPE" => WitError::TypeError,
        other => WitError::Other(other.to_string()),
    }
}

fn type_error<T>() -> Result<T, WitError> {
    Err(WitError::TypeError)
}

fn strings(values: &[String]) -> Vec<Vec<u8>> {
    values
        .iter()
        .map(|value| value.as_bytes().to_vec())
        .collect()
}

/// `key` followed by `values`, as the set commands take them.
fn key_and(key: String, values: &[String]) -> Vec<Vec<u8>> {
    let mut args = vec![key.into_bytes()];
    args.extend(strings(values));
    args
}

/// A count reply (`DEL`, `SADD`, `SREM`).
fn count(value: redis::Value) -> Result<u32, WitError> {
    match value {
        redis::Value::Int(n) => u32::try_from(n).map_err(|_| WitError::TypeError),
        _ => type_error(),
    }
}

/// Flattens a reply into the `execute` result list, as Spin does.
fn flatten(value: redis::Value, out: &mut Vec<RedisResult>) -> Result<(), WitError> {
    use redis::Value;
    match value {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(n) => out.push(RedisResult::Int64(n)),
        Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
        Value::SimpleString(status) => out.push(RedisResult::Status(status)),
        Value::Okay => out.push(RedisResult::Status("OK".into())),
        Value::Boolean(b) => out.push(RedisResult::Int64(i64::from(b))),
        Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
        Value::VerbatimString { text, .. } => out.push(RedisResult::Binary(text.into_bytes())),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        Value::Map(pairs) => {
            for (key, value) in pairs {
                flatten(key, out)?;
                flatten(value, out)?;
            }
        }
        other => {
            return Err(WitError::Other(format!(
                "a reply nexus cannot pass on: {other:?}"
            )));
        }
    }
    Ok(())
}

impl RedisCtxView<'_> {
    async fn run(
        &mut self,
        conn: &Resource<RedisConnection>,
        name: &str,
        args: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<redis::Value, WitError>> {
        let conn = self.table.get_mut(conn)?;
        let span = crate::telemetry::redis_span(name);
        let reply = conn
            .session
            .command(name, args)
            .instrument(span.clone())
            .await
            .map_err(to_wit_error);
        if let Err(err) = &reply {
            crate::telemetry::failed(&span, format!("{err:?}"));
        }
        Ok(reply)
    }
}

impl wit::Host for RedisCtxView<'_> {}

impl wit::HostConnection for RedisCtxView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<RedisConnection>, WitError>> {
        if OutboundAddress::parse(&address).is_err() {
            return Ok(Err(WitError::InvalidAddress));
        }
        if !self.ctx.allowed.allows_url(&address) {
            tracing::warn!(%address, "redis address refused: not in allowed_outbound_hosts");
            return Ok(Err(WitError::Other(format!(
                "{address} is not in this component's allowed_outbound_hosts"
            ))));
        }
        if self.ctx.open >= MAX_CONNECTIONS_PER_INSTANCE {
            return Ok(Err(WitError::TooManyConnections));
        }
        let session = match self.ctx.backend.connect(&address, self.ctx.budget).await {
            Ok(session) => session,
            Err(err) => return Ok(Err(to_wit_error(err))),
        };
        self.ctx.open += 1;
        Ok(Ok(self.table.push(RedisConnection { session })?))
    }

    async fn publish(
        &mut self,
        conn: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let reply = self
            .run(&conn, "PUBLISH", vec![channel.into_bytes(), payload])
            .await?;
        Ok(reply.map(|_| ()))
    }

    async fn get(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        let reply = self.run(&conn, "GET", vec![key.into_bytes()]).await?;
        Ok(reply.and_then(|value| match value {
            redis::Value::Nil => Ok(None),
            redis::Value::BulkString(bytes) => Ok(Some(bytes)),
            redis::Value::SimpleString(s) => Ok(Some(s.into_bytes())),
            _ => type_error(),
        }))
    }

    async fn set(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let reply = self
            .run(&conn, "SET", vec![key.into_bytes(), value])
            .await?;
        Ok(reply.map(|_| ()))
    }

    async fn incr(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, WitError>> {
        let reply = self.run(&conn, "INCR", vec![key.into_bytes()]).await?;
        Ok(reply.and_then(|value| match value {
            redis::Value::Int(n) => Ok(n),
            _ => type_error(),
        }))
    }

    async fn del(
        &mut self,
        conn: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        let reply = self.run(&conn, "DEL", strings(&keys)).await?;
        Ok(reply.and_then(count))
    }

    async fn sadd(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        let reply = self.run(&conn, "SADD", key_and(key, &values)).await?;
        Ok(reply.and_then(count))
    }

    async fn smembers(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        let reply = self.run(&conn, "SMEMBERS", vec![key.into_bytes()]).await?;
        Ok(reply.and_then(|value| match value {
            redis::Value::Array(items) | redis::Value::Set(items) => items
                .into_iter()
                .map(|item| match item {
                    redis::Value::BulkString(bytes) => {
                        String::from_utf8(bytes).map_err(|_| WitError::TypeError)
                    }
                    redis::Value::SimpleString(s) => Ok(s),
                    _ => type_error(),
                })
                .collect(),
            _ => type_error(),
        }))
    }

    async fn srem(
        &mut self,
        conn: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        let reply = self.run(&conn, "SREM", key_and(key, &values)).await?;
        Ok(reply.and_then(count))
    }

    async fn execute(
        &mut self,
        conn: Resource<RedisConnection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, WitError>> {
        let args = arguments
            .into_iter()
            .map(|arg| match arg {
                RedisParameter::Int64(n) => n.to_string().into_bytes(),
                RedisParameter::Binary(bytes) => bytes,
            })
            .collect();
        let reply = self.run(&conn, &command, args).await?;
        Ok(reply.and_then(|value| {
            let mut out = Vec::new();
            flatten(value, &mut out)?;
            Ok(out)
        }))
    }

    async fn drop(&mut self, conn: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        self.ctx.open = self.ctx.open.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::HostConnection;

    fn view_parts(allowed: &[&str]) -> (RedisCtx, ResourceTable) {
        let store = Arc::new(embedded::EmbeddedRedis::default());
        let backend: Arc<dyn RedisBackend> = Arc::new(RedisBackends::new(Some(store)));
        let allowed = Arc::new(AllowedHosts::parse(allowed).unwrap());
        (
            RedisCtx::new(backend, allowed, Budget::Requests),
            ResourceTable::new(),
        )
    }

    #[tokio::test]
    async fn refuses_addresses_outside_allowed_hosts() {
        let (mut ctx, mut table) = view_parts(&["redis://nexus.embedded"]);
        let mut view = RedisCtxView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let Err(err) = view.open("redis://10.1.1.1:6379".into()).await.unwrap() else {
            panic!("expected the address to be refused");
        };
        assert!(matches!(err, WitError::Other(msg) if msg.contains("allowed_outbound_hosts")));
        let Err(err) = view.open("not an address".into()).await.unwrap() else {
            panic!("expected an invalid address");
        };
        assert!(matches!(err, WitError::InvalidAddress));
        assert!(
            view.open("redis://nexus.embedded".into())
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn typed_operations_on_the_embedded_store() {
        let (mut ctx, mut table) = view_parts(&["redis://nexus.embedded"]);
        let mut view = RedisCtxView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let conn = view
            .open("redis://nexus.embedded".into())
            .await
            .unwrap()
            .unwrap();
        let rep = |c: &Resource<RedisConnection>| Resource::<RedisConnection>::new_borrow(c.rep());
        view.set(rep(&conn), "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            view.get(rep(&conn), "k".into()).await.unwrap().unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(view.incr(rep(&conn), "n".into()).await.unwrap().unwrap(), 1);
        assert!(matches!(
            view.incr(rep(&conn), "k".into()).await.unwrap(),
            Err(WitError::Other(_))
        ));
        assert_eq!(
            view.sadd(rep(&conn), "s".into(), vec!["a".into(), "b".into()])
                .await
                .unwrap()
                .unwrap(),
            2
        );
        assert!(matches!(
            view.get(rep(&conn), "s".into()).await.unwrap(),
            Err(WitError::TypeError)
        ));
        let mut members = view
            .smembers(rep(&conn), "s".into())
            .await
            .unwrap()
            .unwrap();
        members.sort();
        assert_eq!(members, vec!["a", "b"]);
        assert_eq!(
            view.del(rep(&conn), vec!["k".into(), "n".into(), "none".into()])
                .await
                .unwrap()
                .unwrap(),
            2
        );
        let result = view
            .execute(
                rep(&conn),
                "SET".into(),
                vec![
                    RedisParameter::Binary(b"e".to_vec()),
                    RedisParameter::Int64(7),
                ],
            )
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&result[..], [RedisResult::Status(s)] if s == "OK"));
        view.drop(conn).await.unwrap();
        assert_eq!(view.ctx.open, 0);
    }

    #[tokio::test]
    async fn bounds_open_connections_per_instance() {
        let (mut ctx, mut table) = view_parts(&["redis://nexus.embedded"]);
        let mut view = RedisCtxView {
            ctx: &mut ctx,
            table: &mut table,
        };
        for _ in 0..MAX_CONNECTIONS_PER_INSTANCE {
            view.open("redis://nexus.embedded".into())
                .await
                .unwrap()
                .unwrap();
        }
        assert!(matches!(
            view.open("redis://nexus.embedded".into()).await.unwrap(),
            Err(WitError::TooManyConnections)
        ));
    }
}
