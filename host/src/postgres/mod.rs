//! The PostgreSQL capability: `spin:postgres/postgres@4.0.0` for components.
//!
//! A guest opens a connection by address, as under Spin; the address must be allowed by the
//! component's `allowed_outbound_hosts`. The connection is taken from a pool per address and
//! [`Budget`] (clients' requests cannot take the host's own share), and the embedded address `postgres://nexus.embedded/...` reaches the embedded PostgreSQL when
//! no `DATABASE_URL` is configured (its pool holds one connection: PGlite serves one client at a
//! time). Backends sit behind [`PgBackend`] so that tests can swap them.
//!
//! Every connection but the embedded one does TLS as its address's `sslmode` says, libpq's way
//! ([`tls`]).
// The error is the interface's own `error` variant (with its structured `db-error`), which goes
// to the guest by value; boxing it here would only move the copy.
#![allow(clippy::result_large_err)]

pub mod convert;
#[cfg(feature = "embedded-postgres")]
pub mod embedded;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use futures::future::BoxFuture;
use thiserror::Error;
use tracing::Instrument;
use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::allowed_hosts::{AllowedHosts, OutboundAddress, redact_credentials};
use crate::bindings::spin::postgres::postgres::{
    self as wit, DbError, Error as WitError, ParameterValue, QueryError, RowSet,
};
pub use crate::budget::Budget;
use crate::redis::EMBEDDED_HOST;
use tls::PgTarget;

/// Connections kept per PostgreSQL address for clients' requests, across all instances of the
/// host.
pub const POOL_SIZE: usize = 16;
/// Connections kept per PostgreSQL address for the host's own timed requests and job runs.
pub const HOST_POOL_SIZE: usize = 8;
/// How long an instance waits for a pooled connection before its `open` fails.
pub const POOL_WAIT: Duration = Duration::from_secs(5);
/// How many PostgreSQL connections one instance may hold open at once.
pub const MAX_CONNECTIONS_PER_INSTANCE: usize = 8;
/// The most rows one query may return to a guest; beyond it the query fails rather than
/// buffering without bound in the host.
pub const MAX_ROWS: usize = 100_000;

/// Run before a pooled connection is handed out again, so that no guest inherits another's
/// session state: a transaction left open (or failed) is rolled back, and settings, cursors,
/// listeners, advisory locks, temporary tables and sequence state are reset. It is `DISCARD ALL`
/// except that it keeps prepared statements, which the host caches per connection (see
/// [`MAX_CACHED_STATEMENTS`]); they hold no guest state, only the plans of its SQL.
///
/// It opens a transaction block before it rolls back: a bare `ROLLBACK` on an idle connection,
/// the usual case, makes the server warn "there is no transaction in progress", which lands in
/// PostgreSQL's log and (as a notice) in the host's, on every checkout. Only a connection a guest
/// left in a transaction warns now (there is already one in progress), which is worth seeing; one
/// left in a failed transaction fails the reset, and the pool replaces it.
const RESET_SESSION: &str = "BEGIN; ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// Prepared statements kept per pooled connection. Past it the cache is emptied (and the
/// statements closed on the server), so a guest that builds SQL with literals in it cannot grow
/// it without bound.
pub const MAX_CACHED_STATEMENTS: usize = 256;

/// What went wrong below the guest-visible interface.
#[derive(Debug, Error)]
pub enum PgBackendError {
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("no connection could be had: {0}")]
    Unavailable(String),
}

/// A pooled client: a tokio-postgres client that goes back to its pool when dropped.
pub type PgClient = deadpool_postgres::Object;

/// Where connections come from.
pub trait PgBackend: Send + Sync {
    fn connect<'a>(
        &'a self,
        address: &'a str,
        budget: Budget,
    ) -> BoxFuture<'a, Result<PgClient, PgBackendError>>;
}

/// Routes addresses to the embedded database or to pools of real connections.
pub struct PgBackends {
    /// The connection string of the embedded PostgreSQL, when it runs.
    embedded_url: Option<String>,
    pools: Mutex<HashMap<(String, Budget), Pool>>,
    /// Waits for a pooled connection that ran out of time (the pool was exhausted).
    pub exhausted: prometheus_client::metrics::counter::Counter,
}

impl PgBackends {
    pub fn new(embedded_url: Option<String>) -> Self {
        Self {
            embedded_url,
            pools: Mutex::new(HashMap::new()),
            exhausted: Default::default(),
        }
    }

    fn pool(&self, address: &str, budget: Budget) -> Result<Pool, PgBackendError> {
        let parsed = OutboundAddress::parse(address)
            .map_err(|err| PgBackendError::InvalidAddress(err.to_string()))?;
        let embedded = parsed.host == EMBEDDED_HOST;
        // Every embedded address shares one pool of one connection: PGlite serves one client at
        // a time, and a second pool would wait on the first. Any other pool is keyed by its whole
        // address, `sslmode` and `sslrootcert` included: addresses that differ in TLS settings
        // never share connections. The embedded pool is one for both budgets too.
        let key = if embedded {
            (EMBEDDED_HOST.to_owned(), Budget::Requests)
        } else {
            (address.to_owned(), budget)
        };
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pool) = pools.get(&key) {
            return Ok(pool.clone());
        }
        let pool = if embedded {
            let url = self.embedded_url.as_deref().ok_or_else(|| {
                PgBackendError::Unavailable(
                    "the embedded PostgreSQL runs only when DATABASE_URL is not set".into(),
                )
            })?;
            // In-process behind a loopback port, and without TLS, whatever the address says.
            build_pool(parse_target(url)?.without_tls(), 1)?
        } else {
            let size = match budget {
                Budget::Requests => POOL_SIZE,
                Budget::Host => HOST_POOL_SIZE,
            };
            build_pool(parse_target(address)?, size)?
        };
        pools.insert(key, pool.clone());
        Ok(pool)
    }
}

fn parse_target(address: &str) -> Result<PgTarget, PgBackendError> {
    PgTarget::parse(address).map_err(|err| {
        PgBackendError::InvalidAddress(format!("{}: {err}", redact_credentials(address)))
    })
}

/// A pool of `size` connections to `target`. Its TLS roots are read here, once per pool.
pub fn build_pool(target: PgTarget, size: usize) -> Result<Pool, PgBackendError> {
    let tls = target.connector().map_err(PgBackendError::InvalidAddress)?;
    let manager = Manager::from_config(
        target.config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Custom(RESET_SESSION.into()),
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .timeouts(Timeouts {
            wait: Some(POOL_WAIT),
            create: Some(POOL_WAIT),
            recycle: Some(POOL_WAIT),
        })
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|err| PgBackendError::InvalidAddress(err.to_string()))
}

impl PgBackend for PgBackends {
    fn connect<'a>(
        &'a self,
        address: &'a str,
        budget: Budget,
    ) -> BoxFuture<'a, Result<PgClient, PgBackendError>> {
        Box::pin(async move {
            let pool = self.pool(address, budget)?;
            pool.get().await.map_err(|err| {
                if matches!(err, deadpool_postgres::PoolError::Timeout(_)) {
                    self.exhausted.inc();
                }
                PgBackendError::Unavailable(format!(
                    "{}: {}",
                    redact_credentials(address),
                    error_chain(&err)
                ))
            })
        })
    }
}

/// An error and its causes, `: `-separated. tokio-postgres's errors show only their kind ("error
/// performing TLS handshake") and keep the why (the certificate refused, and for what) in their
/// source; a cause whose text its parent already shows is not repeated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.ends_with(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// Whether the server no longer knows a prepared statement (SQLSTATE 26000).
fn statement_vanished(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME)
}

/// A guest's open connection (the `connection` resource).
pub struct PgConnection {
    client: PgClient,
}

impl PgConnection {
    /// The statement for `sql`, from the connection's cache or prepared now.
    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, WitError> {
        let cache = &self.client.statement_cache;
        if cache.size() >= MAX_CACHED_STATEMENTS {
            cache.clear();
        }
        self.client
            .prepare_cached(sql)
            .await
            .map_err(|err| self.failed(err))
    }

    /// Prepares `sql` afresh, after the server lost the cached statements (a guest ran
    /// `DEALLOCATE ALL` or `DISCARD ALL` on this connection before it came back to the pool).
    async fn prepare_again(&self, sql: &str) -> Result<tokio_postgres::Statement, WitError> {
        self.client.statement_cache.clear();
        self.prepare(sql).await
    }

    /// A failed query as the guest sees it. The cache is emptied too: the failure may be a
    /// cached plan that a schema change made stale, and preparing again mends it.
    fn failed(&self, err: tokio_postgres::Error) -> WitError {
        self.client.statement_cache.clear();
        query_failed(err)
    }

    /// Runs a query; its statement is prepared once per connection (again if the server forgot
    /// it).
    async fn query(
        &self,
        sql: &str,
        bound: &[convert::BoundParameter],
    ) -> Result<RowSet, WitError> {
        let statement = self.prepare(sql).await?;
        let columns = statement.columns().iter().map(convert::column).collect();
        let rows = match self.client.query(&statement, &as_refs(bound)).await {
            Err(err) if statement_vanished(&err) => {
                let statement = self.prepare_again(sql).await?;
                self.client.query(&statement, &as_refs(bound)).await
            }
            other => other,
        };
        let rows = rows.map_err(|err| self.failed(err))?;
        if rows.len() > MAX_ROWS {
            return Err(WitError::Other(format!(
                "the query returned {} rows; a guest may receive at most {MAX_ROWS}",
                rows.len()
            )));
        }
        let rows = rows
            .iter()
            .map(|row| (0..row.len()).map(|i| convert::value(row, i)).collect())
            .collect::<Result<Vec<_>, WitError>>()?;
        Ok(RowSet { columns, rows })
    }

    /// Runs a statement; the rows it touched.
    async fn execute(&self, sql: &str, bound: &[convert::BoundParameter]) -> Result<u64, WitError> {
        let statement = self.prepare(sql).await?;
        let done = match self.client.execute(&statement, &as_refs(bound)).await {
            Err(err) if statement_vanished(&err) => {
                let statement = self.prepare_again(sql).await?;
                self.client.execute(&statement, &as_refs(bound)).await
            }
            other => other,
        };
        done.map_err(|err| self.failed(err))
    }
}

/// The capability's per-instance context.
pub struct PgCtx {
    backend: Arc<dyn PgBackend>,
    allowed: Arc<AllowedHosts>,
    budget: Budget,
    open: usize,
}

impl PgCtx {
    pub fn new(backend: Arc<dyn PgBackend>, allowed: Arc<AllowedHosts>, budget: Budget) -> Self {
        Self {
            budget,
            backend,
            allowed,
            open: 0,
        }
    }
}

/// What the bindings are implemented on.
pub struct PgCtxView<'a> {
    pub ctx: &'a mut PgCtx,
    pub table: &'a mut ResourceTable,
}

/// The `HasData` marker for [`PgCtxView`].
pub struct PgCapability;

impl HasData for PgCapability {
    type Data<'a> = PgCtxView<'a>;
}

fn query_failed(err: tokio_postgres::Error) -> WitError {
    match err.as_db_error() {
        Some(db) => {
            let mut extras = Vec::new();
            let mut extra = |key: &str, value: Option<&str>| {
                if let Some(value) = value {
                    extras.push((key.to_owned(), value.to_owned()));
                }
            };
            extra("hint", db.hint());
            extra("schema", db.schema());
            extra("table", db.table());
            extra("column", db.column());
            extra("constraint", db.constraint());
            WitError::QueryFailed(QueryError::DbError(DbError {
                as_text: err.to_string(),
                severity: db.severity().to_owned(),
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                extras,
            }))
        }
        None => WitError::QueryFailed(QueryError::Text(err.to_string())),
    }
}

fn bind(params: Vec<ParameterValue>) -> Result<Vec<convert::BoundParameter>, WitError> {
    params.into_iter().map(convert::to_parameter).collect()
}

fn as_refs(params: &[convert::BoundParameter]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

impl wit::Host for PgCtxView<'_> {}

impl wit::HostConnection for PgCtxView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, WitError>> {
        let redacted = redact_credentials(&address);
        if OutboundAddress::parse(&address).is_err() {
            return Ok(Err(WitError::ConnectionFailed(format!(
                "`{redacted}` is not a connection URL"
            ))));
        }
        if !self.ctx.allowed.allows_url(&address) {
            tracing::warn!(address = %redacted, "postgres address refused: not in allowed_outbound_hosts");
            return Ok(Err(WitError::ConnectionFailed(format!(
                "{redacted} is not in this component's allowed_outbound_hosts"
            ))));
        }
        if self.ctx.open >= MAX_CONNECTIONS_PER_INSTANCE {
            return Ok(Err(WitError::ConnectionFailed(format!(
                "an instance may hold at most {MAX_CONNECTIONS_PER_INSTANCE} connections"
            ))));
        }
        match self.ctx.backend.connect(&address, self.ctx.budget).await {
            Ok(client) => {
                self.ctx.open += 1;
                Ok(Ok(self.table.push(PgConnection { client })?))
            }
            Err(err) => {
                // The guest sees the same words, but may not log them (nexus's own components
                // do not); a refused certificate is the operator's to fix.
                tracing::warn!(address = %redacted, error = %err, "postgres connection failed");
                Ok(Err(WitError::ConnectionFailed(err.to_string())))
            }
        }
    }

    async fn query(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, WitError>> {
        let bound = match bind(params) {
            Ok(bound) => bound,
            Err(err) => return Ok(Err(err)),
        };
        let conn = self.table.get(&conn)?;
        let span = crate::telemetry::postgres_span(&statement);
        let rows = conn
            .query(&statement, &bound)
            .instrument(span.clone())
            .await;
        match &rows {
            Ok(rows) => crate::telemetry::set(
                &span,
                "db.response.returned_rows",
                i64::try_from(rows.rows.len()).unwrap_or(i64::MAX),
            ),
            Err(err) => crate::telemetry::failed(&span, format!("{err:?}")),
        }
        Ok(rows)
    }

    async fn execute(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, WitError>> {
        let bound = match bind(params) {
            Ok(bound) => bound,
            Err(err) => return Ok(Err(err)),
        };
        let conn = self.table.get(&conn)?;
        let span = crate::telemetry::postgres_span(&statement);
        let done = conn
            .execute(&statement, &bound)
            .instrument(span.clone())
            .await;
        match &done {
            Ok(count) => crate::telemetry::set(
                &span,
                "db.response.affected_rows",
                i64::try_from(*count).unwrap_or(i64::MAX),
            ),
            Err(err) => crate::telemetry::failed(&span, format!("{err:?}")),
        }
        Ok(done)
    }

    async fn drop(&mut self, conn: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        self.ctx.open = self.ctx.open.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_that_differ_in_tls_settings_get_pools_of_their_own() {
        let backends = PgBackends::new(None);
        let pools = || backends.pools.lock().unwrap().len();
        backends
            .pool("postgres://nexus@db:5432/nexus", Budget::Requests)
            .unwrap();
        backends
            .pool(
                "postgres://nexus@db:5432/nexus?sslmode=disable",
                Budget::Requests,
            )
            .unwrap();
        backends
            .pool(
                "postgres://nexus@db:5432/nexus?sslmode=verify-full",
                Budget::Requests,
            )
            .unwrap();
        assert_eq!(pools(), 3);
        backends
            .pool(
                "postgres://nexus@db:5432/nexus?sslmode=verify-full",
                Budget::Requests,
            )
            .unwrap();
        assert_eq!(pools(), 3);
        // The host's own work has pools of its own.
        backends
            .pool(
                "postgres://nexus@db:5432/nexus?sslmode=verify-full",
                Budget::Host,
            )
            .unwrap();
        assert_eq!(pools(), 4);
    }

    #[tokio::test]
    async fn a_pool_whose_root_file_cannot_be_read_is_not_kept() {
        let backends = PgBackends::new(None);
        let refused = backends
            .pool(
                "postgres://nexus:s3cret@db/nexus?sslmode=verify-ca&sslrootcert=/nonexistent.pem",
                Budget::Requests,
            )
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("cannot read sslrootcert /nonexistent.pem"),
            "{refused}"
        );
        assert!(!refused.contains("s3cret"), "{refused}");
        assert_eq!(backends.pools.lock().unwrap().len(), 0);
    }

    #[test]
    fn an_error_chain_shows_each_cause_once() {
        #[derive(Debug, Error)]
        #[error("error performing TLS handshake")]
        struct Handshake(#[source] std::io::Error);
        #[derive(Debug, Error)]
        #[error("Error occurred while creating a new object: {0}")]
        struct Pool(#[source] Handshake);

        let err = Pool(Handshake(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        )));
        assert_eq!(
            error_chain(&err),
            "Error occurred while creating a new object: error performing TLS handshake: \
             invalid peer certificate: UnknownIssuer"
        );
    }
}
