//! The embedded PostgreSQL: PGlite (PostgreSQL 17 compiled to WebAssembly, run in-process by
//! pglite-oxide) serving a local TCP port, so that `nexus up` has a real PostgreSQL on a bare
//! machine. Its data lives in the host's data directory and survives restarts. It serves one
//! client connection at a time, so the host reaches it through a pool of one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pglite_oxide::PgliteServer;

/// A running embedded PostgreSQL; stopped when dropped.
pub struct EmbeddedPostgres {
    server: Option<PgliteServer>,
    url: String,
}

impl EmbeddedPostgres {
    /// Starts PGlite on a free loopback port with its data under `data_dir`.
    pub async fn start(data_dir: &Path) -> anyhow::Result<EmbeddedPostgres> {
        let root: PathBuf = data_dir.join("pglite");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let server =
            tokio::task::spawn_blocking(move || PgliteServer::builder().path(root).start())
                .await
                .context("the embedded PostgreSQL start-up task failed")?
                .context("cannot start the embedded PostgreSQL")?;
        let url = server.database_url();
        Ok(EmbeddedPostgres {
            server: Some(server),
            url,
        })
    }

    /// Its tokio-postgres connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops it, after every client has disconnected.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(server) => server
                .shutdown()
                .context("stopping the embedded PostgreSQL"),
            None => Ok(()),
        }
    }
}
