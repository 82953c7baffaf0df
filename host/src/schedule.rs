//! Timed requests: for each `[[component.NAME.tool.nexus.schedule]]`, the host `POST`s the path
//! to itself every `every_ms`, through its own listener (`loopback`), so the request is served,
//! limited and logged like any other. Under Spin the same endpoint is driven by an external cron; every
//! host of a cluster calls it, so the work behind it must be safe to run concurrently.

use std::net::SocketAddr;
use std::time::Duration;

use crate::manifest::Manifest;

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
    let variables = crate::loopback::app_variables(manifest)?;
    let mut out = Vec::new();
    for (name, component) in &manifest.components {
        for schedule in &component.tool.nexus.schedule {
            let bearer = crate::loopback::bearer(
                &variables,
                schedule.bearer.as_deref(),
                &format!("component `{name}`'s schedule"),
            )?;
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
pub fn start(
    schedules: Vec<Schedule>,
    address: SocketAddr,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    for schedule in schedules {
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(schedule.every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // A draining host stops taking requests, its own included; other hosts keep
                // the schedule.
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                }
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

/// Sends one `POST`; the response status.
async fn post(address: SocketAddr, schedule: &Schedule) -> anyhow::Result<u16> {
    let request_id = format!("schedule-{}", uuid::Uuid::new_v4().simple());
    let answer = crate::loopback::post(
        address,
        &schedule.path,
        schedule.bearer.as_deref(),
        &request_id,
        None,
    )
    .await?;
    Ok(answer.status)
}
