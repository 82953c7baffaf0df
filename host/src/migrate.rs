//! Applies the SQL migrations of `migrations/` (embedded in the binary at build time).
//!
//! Each migration runs once, in its own transaction, in file-name order, and is recorded in
//! `nexus_schema_migrations` with a checksum; a recorded migration whose file has changed since
//! is an error (a schema must not silently differ between hosts). An advisory lock makes
//! concurrent hosts wait for each other instead of racing.

use anyhow::{Context, anyhow, bail};
use sha2::{Digest, Sha256};

use crate::postgres::tls::{PgTarget, is_tls_failure};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The key of the advisory lock held while migrating ("nexus" in ASCII).
const MIGRATION_LOCK: i64 = 0x6e_65_78_75_73;

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub sql: &'static str,
    pub checksum: String,
}

/// The embedded migrations, parsed from their file names (`0001_name.sql`).
pub fn migrations() -> anyhow::Result<Vec<Migration>> {
    let mut out: Vec<Migration> = Vec::new();
    for (file, sql) in MIGRATIONS {
        let stem = file.trim_end_matches(".sql");
        let (version, name) = stem
            .split_once('_')
            .with_context(|| format!("migration `{file}` is not named NNNN_name.sql"))?;
        let version: i64 = version
            .parse()
            .with_context(|| format!("migration `{file}` does not start with a number"))?;
        if out.iter().any(|m| m.version == version) {
            bail!("two migrations have version {version}");
        }
        out.push(Migration {
            version,
            name: name.to_owned(),
            sql,
            checksum: hex::encode(Sha256::digest(sql.as_bytes())),
        });
    }
    out.sort_by_key(|m| m.version);
    Ok(out)
}

/// Applies what is not yet applied; returns the versions it applied.
pub async fn migrate(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<i64>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS nexus_schema_migrations (
                version    BIGINT PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .context("cannot create nexus_schema_migrations")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("cannot take the migration lock")?;
    let result = apply_pending(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = result?;
    unlocked.context("cannot release the migration lock")?;
    Ok(applied)
}

/// The embedded migrations that `client`'s database has not applied yet; an error if one it
/// applied has changed since.
async fn pending(client: &tokio_postgres::Client) -> anyhow::Result<Vec<Migration>> {
    let recorded: Vec<(i64, String)> = client
        .query("SELECT version, checksum FROM nexus_schema_migrations", &[])
        .await
        .context("cannot read nexus_schema_migrations")?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut pending = Vec::new();
    for migration in migrations()? {
        if let Some((_, checksum)) = recorded.iter().find(|(v, _)| *v == migration.version) {
            if *checksum != migration.checksum {
                bail!(
                    "migration {} ({}) has changed since it was applied; add a new migration instead",
                    migration.version,
                    migration.name
                );
            }
            continue;
        }
        pending.push(migration);
    }
    Ok(pending)
}

async fn apply_pending(client: &mut tokio_postgres::Client) -> anyhow::Result<Vec<i64>> {
    let mut applied = Vec::new();
    for migration in pending(client).await? {
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql).await.with_context(|| {
            format!(
                "migration {} ({}) failed",
                migration.version, migration.name
            )
        })?;
        tx.execute(
            "INSERT INTO nexus_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &migration.checksum],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = migration.version, name = %migration.name, "migration applied");
        applied.push(migration.version);
    }
    Ok(applied)
}

/// Connects to `url` (with TLS as its `sslmode` says) and migrates it. A failure to connect
/// says "cannot connect to" (worth retrying: the server may not be up yet), except a TLS failure,
/// which says "TLS with ... failed" (a setting to fix).
pub async fn migrate_url(url: &str) -> anyhow::Result<Vec<i64>> {
    let (mut client, driver) = connect(url).await?;
    let result = migrate(&mut client).await;
    drop(client);
    // The connection task ends once the client is gone; its error, if any, is already in `result`.
    let _ = driver.await;
    result
}

/// The versions of the embedded migrations that the database at `url` lacks (for hosts that
/// leave migrating to a job of its own, `nexus up --migrate wait`): none once it is current.
pub async fn pending_url(url: &str) -> anyhow::Result<Vec<i64>> {
    let (client, driver) = connect(url).await?;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('nexus_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .context("cannot look for nexus_schema_migrations")?
        .get(0);
    let result = if exists {
        pending(&client)
            .await
            .map(|pending| pending.iter().map(|m| m.version).collect())
    } else {
        migrations().map(|all| all.iter().map(|m| m.version).collect())
    };
    drop(client);
    let _ = driver.await;
    result
}

async fn connect(
    url: &str,
) -> anyhow::Result<(
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
)> {
    let redacted = crate::allowed_hosts::redact_credentials(url);
    let target = PgTarget::parse(url).map_err(|err| anyhow!("{redacted}: {err}"))?;
    let tls = target
        .connector()
        .map_err(|err| anyhow!("{redacted}: {err}"))?;
    let (client, connection) = match target.config.connect(tls).await {
        Ok(connected) => connected,
        Err(err) if is_tls_failure(&err) => {
            return Err(err).with_context(|| format!("TLS with {redacted} failed"));
        }
        Err(err) => return Err(err).with_context(|| format!("cannot connect to {redacted}")),
    };
    Ok((client, tokio::spawn(connection)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_ordered_and_checksummed() {
        let all = migrations().unwrap();
        assert!(!all.is_empty());
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        assert!(all.iter().all(|m| m.checksum.len() == 64));
    }
}
