//! The state of one tenant-component instance and the imports only tenant components have: the
//! tenant's key-value store and the tenant log. WASI and outbound HTTP are wasmtime's, under a
//! context with no files, no environment, no sockets, and the component's granted hosts.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::tenant::bot::nexus::tenant::{key_value, log};
use crate::engine::CpuBudget;
use crate::outbound_http::OutboundHttpHooks;
use crate::redis::{RedisBackend, RedisSession};

pub use nexus_guest::tenant_contract::{
    MAX_KEY_BYTES, MAX_LOG_EVENTS, MAX_LOG_MESSAGE_BYTES, MAX_VALUE_BYTES,
};

/// Who is running: for the log, the metrics and the key-value prefix.
#[derive(Debug, Clone)]
pub struct CallIdentity {
    pub tenant_id: i64,
    pub component: Arc<str>,
    pub version: i32,
}

/// The tenant's key-value store: Redis keys under `<prefix>tkv:<tenant id>:`.
pub struct KeyValueCtx {
    backend: Arc<dyn RedisBackend>,
    address: Arc<str>,
    prefix: String,
    session: Option<Box<dyn RedisSession>>,
}

impl KeyValueCtx {
    pub fn new(
        backend: Arc<dyn RedisBackend>,
        address: Arc<str>,
        key_prefix: &str,
        tenant_id: i64,
    ) -> Self {
        Self {
            backend,
            address,
            prefix: format!("{key_prefix}tkv:{tenant_id}:"),
            session: None,
        }
    }

    fn key(&self, key: &str) -> Result<Vec<u8>, key_value::Error> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(key_value::Error::TooLarge(format!(
                "a key is 1 to {MAX_KEY_BYTES} bytes"
            )));
        }
        Ok(format!("{}{key}", self.prefix).into_bytes())
    }

    async fn command(
        &mut self,
        name: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<redis::Value, key_value::Error> {
        if self.session.is_none() {
            let session = self
                .backend
                .connect(&self.address, crate::budget::Budget::Requests)
                .await
                .map_err(|err| key_value::Error::Unavailable(err.to_string()))?;
            self.session = Some(session);
        }
        let Some(session) = self.session.as_mut() else {
            return Err(key_value::Error::Unavailable("no session".into()));
        };
        let result = session.command(name, args).await;
        if result.is_err() {
            // A broken session is not reused.
            self.session = None;
        }
        result.map_err(|err| key_value::Error::Unavailable(err.to_string()))
    }
}

/// The tenant log of one call.
pub struct TenantLog {
    identity: CallIdentity,
    events_left: u32,
    dropped: u32,
}

impl TenantLog {
    pub fn new(identity: CallIdentity) -> Self {
        Self {
            identity,
            events_left: MAX_LOG_EVENTS,
            dropped: 0,
        }
    }

    /// Events the call tried to log past its allowance.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
}

/// The state of one tenant-component instance.
pub struct TenantState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub http_hooks: OutboundHttpHooks,
    pub key_value: KeyValueCtx,
    pub log: TenantLog,
    pub limits: StoreLimits,
    pub cpu_ticks_left: u64,
}

impl CpuBudget for TenantState {
    fn cpu_ticks_left(&mut self) -> &mut u64 {
        &mut self.cpu_ticks_left
    }
}

impl WasiView for TenantState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for TenantState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// The `HasData` marker of the key-value import.
pub struct KeyValueCapability;

impl HasData for KeyValueCapability {
    type Data<'a> = &'a mut KeyValueCtx;
}

impl key_value::Host for &mut KeyValueCtx {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        let key = match self.key(&key) {
            Ok(key) => key,
            Err(err) => return Ok(Err(err)),
        };
        Ok(match self.command("GET", vec![key]).await {
            Ok(redis::Value::BulkString(bytes)) => Ok(Some(bytes)),
            Ok(redis::Value::SimpleString(text)) => Ok(Some(text.into_bytes())),
            Ok(_) => Ok(None),
            Err(err) => Err(err),
        })
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        let key = match self.key(&key) {
            Ok(key) => key,
            Err(err) => return Ok(Err(err)),
        };
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(key_value::Error::TooLarge(format!(
                "a value is at most {MAX_VALUE_BYTES} bytes"
            ))));
        }
        let mut args = vec![key, value];
        if let Some(ttl) = ttl_seconds.filter(|ttl| *ttl > 0) {
            args.push(b"EX".to_vec());
            args.push(ttl.to_string().into_bytes());
        }
        Ok(self.command("SET", args).await.map(|_| ()))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, key_value::Error>> {
        let key = match self.key(&key) {
            Ok(key) => key,
            Err(err) => return Ok(Err(err)),
        };
        Ok(self
            .command("DEL", vec![key])
            .await
            .map(|reply| matches!(reply, redis::Value::Int(n) if n > 0)))
    }
}

/// The `HasData` marker of the log import.
pub struct TenantLogCapability;

impl HasData for TenantLogCapability {
    type Data<'a> = &'a mut TenantLog;
}

impl log::Host for &mut TenantLog {
    async fn emit(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        if self.events_left == 0 {
            self.dropped = self.dropped.saturating_add(1);
            return Ok(());
        }
        self.events_left -= 1;
        let message = cut(&message, MAX_LOG_MESSAGE_BYTES);
        let identity = &self.identity;
        let (tenant, component, version) =
            (identity.tenant_id, &*identity.component, identity.version);
        match level {
            log::Level::Debug => {
                tracing::debug!(tenant, component, version, "tenant component: {message}")
            }
            log::Level::Info => {
                tracing::info!(tenant, component, version, "tenant component: {message}")
            }
            log::Level::Warn => {
                tracing::warn!(tenant, component, version, "tenant component: {message}")
            }
            log::Level::Error => {
                tracing::error!(tenant, component, version, "tenant component: {message}")
            }
        }
        Ok(())
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
