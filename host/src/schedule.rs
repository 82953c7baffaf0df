//! Timed requests: for each `[[component.NAME.tool.nexus.schedule]]`, the host `POST`s the path
//! to itself every `every_ms`, through its own listener, so the request is served, limited and
//! logged like any other. Under Spin the same endpoint is driven by an external cron; every
//! host of a cluster calls it, so the work behind it must be safe to run concurrently.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::manifest::Manifest;
use crate::variables::AppVariables;

/// How long one timed request may take before it is abandoned (the next tick tries again).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One resolved schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub path: String,
    pub every: Duration,
    pub bearer: Option<String>,
}

/// The manifest's schedules, with their tokens expanded.
pub fn schedules(manifest: &Manifest) -> anyhow::Result<Vec<Schedule>> {
    let variables = AppVariables::resolve(
        manifest,
        |name| std::env::var(name).ok(),
        &Default::default(),
    )?;
    let mut out = Vec::new();
    for (name, component) in &manifest.components {
        for schedule in &component.tool.nexus.schedule {
            let bearer = schedule
                .bearer
                .as_deref()
                .map(|template| variables.expand(template))
                .transpose()
                .with_context(|| format!("component `{name}`'s schedule bearer"))?
                .filter(|token| !token.is_empty());
            out.push(Schedule {
                path: schedule.path.clone(),
                every: Duration::from_millis(schedule.every_ms),
                bearer,
            });
        }
    }
    Ok(out)
}

/// Starts every schedule against the host listening at `address`.
pub fn start(schedules: Vec<Schedule>, address: SocketAddr) {
    for schedule in schedules {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(schedule.every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match tokio::time::timeout(REQUEST_TIMEOUT, post(address, &schedule)).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => {}
                    Ok(Ok(status)) => {
                        tracing::warn!(path = %schedule.path, status, "a timed request failed")
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(path = %schedule.path, error = %err, "a timed request failed")
                    }
                    Err(_) => tracing::warn!(path = %schedule.path, "a timed request timed out"),
                }
            }
        });
    }
}

/// Sends one `POST` over HTTP/1.1; the response status.
async fn post(address: SocketAddr, schedule: &Schedule) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(address).await?;
    let authorization = schedule
        .bearer
        .as_deref()
        .map(|token| format!("authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {} HTTP/1.1\r\nhost: {address}\r\nx-request-id: schedule-{}\r\n{authorization}content-length: 0\r\nconnection: close\r\n\r\n",
        schedule.path,
        uuid::Uuid::new_v4().simple()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let status_line = response.split(|b| *b == b'\n').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .context("no HTTP status in the response")?;
    Ok(status)
}
