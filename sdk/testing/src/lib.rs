//! Test a nexus component, or a tenant's bot or transform, in isolation with plain `cargo test`.
//!
//! The component runs in wasmtime as under the nexus host, but every import it has beyond WASI
//! is a recording fake: Redis ([`FakeRedis`]), PostgreSQL ([`FakePostgres`]), outbound HTTP
//! ([`FakeHttp`]), variables ([`FakeVariables`]), the tenant key-value store
//! ([`FakeKeyValue`]) and the log ([`FakeLog`]). A test scripts what they answer, calls the
//! component, and asserts on what it answered and on the calls it made.
//!
//! ```no_run
//! use nexus_testing::{Fakes, TenantBot, tenant::{Action, Turn}};
//!
//! #[test]
//! fn greets_with_the_menu() {
//!     // Builds this crate for wasm32-wasip2 (as `nexus component push` uploads it) and loads it.
//!     let bot = TenantBot::build(env!("CARGO_MANIFEST_DIR")).unwrap();
//!     let fakes = Fakes::default();
//!     let actions = bot.handle(&fakes, Turn::started()).unwrap().unwrap();
//!     assert!(matches!(&actions[0], Action::Ask(_)));
//!     assert!(fakes.key_value.calls().is_empty());
//! }
//! ```
//!
//! A tenant component is held to what the host holds it to at upload (its size, its imports, its
//! export) and to the same kind of limits in each call ([`Limits`]: CPU time, memory and a
//! wall-clock timeout), so that one that passes its tests is not refused at upload, and a loop
//! shows up as [`CallError::CpuTime`] rather than as a test that never ends.

mod bindings;
mod build;
mod component;
mod http;
mod key_value;
mod log;
mod postgres;
mod redis;
mod runtime;
pub mod tenant;
mod variables;

use std::sync::{Mutex, MutexGuard};

pub use build::build_component;
pub use component::{HttpComponent, Response};
pub use http::{FakeHttp, HttpCall, Reply};
pub use key_value::{FakeKeyValue, KvCall};
pub use log::{FakeLog, LogEntry};
pub use postgres::{FakePostgres, PgAnswer, PgCall, rows};
pub use redis::{FakeRedis, RedisCall};
pub use runtime::{CallError, Limits};
pub use tenant::{TenantBot, TenantTransform};
pub use variables::FakeVariables;

/// The types of Spin's Redis interface, to script answers and read calls.
pub mod redis_types {
    pub use crate::bindings::platform::fermyon::spin::redis::{Error, RedisParameter, RedisResult};
}

/// The types of Spin's PostgreSQL interface, to script answers and read calls.
pub mod postgres_types {
    pub use crate::bindings::platform::spin::postgres::postgres::{
        Column, DbDataType, DbError, DbValue, Error, Interval, ParameterValue, QueryError, RowSet,
    };
}

/// Every fake a component's imports are bound to. Clones share the fakes: keep one to script
/// and assert, and pass it to each call.
#[derive(Clone, Default)]
pub struct Fakes {
    pub http: FakeHttp,
    pub redis: FakeRedis,
    pub postgres: FakePostgres,
    pub variables: FakeVariables,
    pub key_value: FakeKeyValue,
    pub log: FakeLog,
}

/// The fakes are shared with the store's host calls; a test that panicked while holding one
/// must not turn every later assertion into a second panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
