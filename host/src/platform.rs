//! The platform's own Redis and PostgreSQL: the servers named by `REDIS_URL` and
//! `DATABASE_URL`, or, where one is not given, an embedded stand-in.
//!
//! Components reach them like any other server, by address, through the application variables
//! the platform sets (a manifest that declares them gets these values unless
//! `SPIN_VARIABLE_<NAME>` overrides them):
//!
//! | variable | with `REDIS_URL` / `DATABASE_URL` | embedded |
//! |---|---|---|
//! | `redis_address` | the URL | `redis://nexus.embedded:6379` |
//! | `redis_host` | its `host:port` | `nexus.embedded:6379` |
//! | `postgres_address` | the URL | `postgres://nexus.embedded:5432/nexus` |
//! | `postgres_host` | its `host:port` | `nexus.embedded:5432` |
//!
//! `redis_host` and `postgres_host` exist for `allowed_outbound_hosts`, which (as in Spin) takes a
//! host and port, not a URL with a path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
#[cfg(not(feature = "embedded-postgres"))]
use anyhow::bail;
use url::Url;

use crate::allowed_hosts::{redact_credentials, well_known_port};
use crate::postgres::{PgBackend, PgBackends};
use crate::redis::embedded::EmbeddedRedis;
use crate::redis::{EMBEDDED_HOST, RedisBackend, RedisBackends};

/// Where the platform's servers are, as configured.
#[derive(Debug, Clone, Default)]
pub struct PlatformConfig {
    pub redis_url: Option<String>,
    pub database_url: Option<String>,
}

impl PlatformConfig {
    /// Reads `REDIS_URL` and `DATABASE_URL` (empty counts as unset).
    pub fn from_env() -> PlatformConfig {
        let get = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        PlatformConfig {
            redis_url: get("REDIS_URL"),
            database_url: get("DATABASE_URL"),
        }
    }
}

/// The running platform backends.
pub struct Platform {
    pub redis: Arc<RedisBackends>,
    pub postgres: Arc<PgBackends>,
    /// The Redis server, when one is configured (`REDIS_URL`).
    pub redis_url: Option<String>,
    /// The connection string of the platform database (real or embedded).
    pub database_url: String,
    pub variables: BTreeMap<String, String>,
    embedded_postgres: Option<EmbeddedPg>,
}

#[cfg(feature = "embedded-postgres")]
type EmbeddedPg = crate::postgres::embedded::EmbeddedPostgres;
/// Without the feature there is never an embedded PostgreSQL.
#[cfg(not(feature = "embedded-postgres"))]
type EmbeddedPg = std::convert::Infallible;

fn host_port(url: &str) -> anyhow::Result<String> {
    let parsed =
        Url::parse(url).with_context(|| format!("`{}` is not a URL", redact_credentials(url)))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("`{}` names no host", redact_credentials(url)))?;
    let port = parsed
        .port()
        .or_else(|| well_known_port(parsed.scheme()))
        .with_context(|| format!("`{}` names no port", redact_credentials(url)))?;
    Ok(format!("{host}:{port}"))
}

impl Platform {
    /// Connects to the configured servers, and starts an embedded stand-in (with its data under
    /// `data_dir`) for each one that is not configured.
    pub async fn start(config: PlatformConfig, data_dir: &Path) -> anyhow::Result<Platform> {
        let mut variables = BTreeMap::new();

        let embedded_redis = match &config.redis_url {
            Some(url) => {
                variables.insert("redis_address".into(), url.clone());
                variables.insert("redis_host".into(), host_port(url)?);
                None
            }
            None => {
                variables.insert(
                    "redis_address".into(),
                    format!("redis://{EMBEDDED_HOST}:6379"),
                );
                variables.insert("redis_host".into(), format!("{EMBEDDED_HOST}:6379"));
                tracing::info!("REDIS_URL is not set: serving the embedded Redis");
                Some(Arc::new(EmbeddedRedis::default()))
            }
        };

        let mut embedded_postgres = None;
        let database_url = match &config.database_url {
            Some(url) => {
                variables.insert("postgres_address".into(), url.clone());
                variables.insert("postgres_host".into(), host_port(url)?);
                url.clone()
            }
            None => {
                variables.insert(
                    "postgres_address".into(),
                    format!("postgres://{EMBEDDED_HOST}:5432/nexus"),
                );
                variables.insert("postgres_host".into(), format!("{EMBEDDED_HOST}:5432"));
                let embedded = start_embedded_postgres(data_dir).await?;
                let url = embedded_url(&embedded);
                embedded_postgres = Some(embedded);
                url
            }
        };
        let embedded_url = config.database_url.is_none().then(|| database_url.clone());

        Ok(Platform {
            redis: Arc::new(RedisBackends::new(embedded_redis)),
            redis_url: config.redis_url.clone(),
            postgres: Arc::new(PgBackends::new(embedded_url)),
            database_url,
            variables,
            embedded_postgres,
        })
    }

    /// Checks that the platform's servers answer, through the same pools components use.
    pub async fn check_ready(&self) -> BTreeMap<&'static str, Result<(), String>> {
        let redis = async {
            let address = self
                .variables
                .get("redis_address")
                .cloned()
                .unwrap_or_default();
            let mut session = self
                .redis
                .connect(&address, crate::budget::Budget::Host)
                .await
                .map_err(|err| err.to_string())?;
            session
                .command("PING", Vec::new())
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        };
        let postgres = async {
            let address = self
                .variables
                .get("postgres_address")
                .cloned()
                .unwrap_or_default();
            let client = self
                .postgres
                .connect(&address, crate::budget::Budget::Host)
                .await
                .map_err(|err| err.to_string())?;
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        };
        let (redis, postgres) = tokio::join!(redis, postgres);
        BTreeMap::from([("redis", redis), ("postgres", postgres)])
    }

    /// Stops the embedded servers.
    pub fn shutdown(self) -> anyhow::Result<()> {
        if let Some(embedded) = self.embedded_postgres {
            // Close the pooled connections first: PGlite stops only once its client is gone.
            drop(self.postgres);
            stop_embedded_postgres(embedded)?;
        }
        Ok(())
    }
}

#[cfg(feature = "embedded-postgres")]
async fn start_embedded_postgres(data_dir: &Path) -> anyhow::Result<EmbeddedPg> {
    tracing::info!(data_dir = %data_dir.display(), "DATABASE_URL is not set: starting the embedded PostgreSQL");
    let started = std::time::Instant::now();
    let embedded = EmbeddedPg::start(data_dir).await?;
    tracing::info!(
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "the embedded PostgreSQL is up"
    );
    Ok(embedded)
}

#[cfg(feature = "embedded-postgres")]
fn embedded_url(embedded: &EmbeddedPg) -> String {
    embedded.url().to_owned()
}

#[cfg(feature = "embedded-postgres")]
fn stop_embedded_postgres(embedded: EmbeddedPg) -> anyhow::Result<()> {
    embedded.shutdown()
}

#[cfg(not(feature = "embedded-postgres"))]
async fn start_embedded_postgres(_data_dir: &Path) -> anyhow::Result<EmbeddedPg> {
    bail!(
        "DATABASE_URL is not set, and this nexus was built without the embedded PostgreSQL \
         (the `embedded-postgres` feature): set DATABASE_URL"
    )
}

#[cfg(not(feature = "embedded-postgres"))]
fn embedded_url(embedded: &EmbeddedPg) -> String {
    match *embedded {}
}

#[cfg(not(feature = "embedded-postgres"))]
fn stop_embedded_postgres(embedded: EmbeddedPg) -> anyhow::Result<()> {
    match embedded {}
}
