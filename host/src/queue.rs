//! Durable jobs: for each component with `[component.NAME.tool.nexus.jobs]`, the host claims
//! its due jobs from PostgreSQL (`nexus_claim_jobs`, see `migrations/0004_jobs_and_webhooks.sql`)
//! and `POST`s each to the component through its own listener, so the run is limited, logged and
//! counted like any request; the answer's status decides the job's fate (`nexus_finish_job`).
//!
//! - At least once: a claim is a lease; a host that dies mid-run leaves the job to be claimed
//!   again (by any host) when the lease runs out. Components make their runs safe to repeat
//!   (a webhook carries the same `webhook-id` every time).
//! - No double work: claims take row locks with `SKIP LOCKED`, so concurrent hosts never hold
//!   one job at once, and a job waits for the older jobs of its ordering key.
//! - Retries follow the component's published schedule (`retry_ms`); after its last delay the
//!   job is dead-lettered. 422 dead-letters at once (the component says retrying cannot help).
//!
//! Under Spin, which runs no background work, a component's sweep endpoint does the same with
//! the same two SQL functions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::budget::Budget;
use crate::loopback;
use crate::manifest::Manifest;
use crate::metrics::{JobLabels, Metrics};
use crate::postgres::PgBackend;

/// The shortest pause after a failed claim (the database is down, say).
const CLAIM_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// One component's job worker on this host.
#[derive(Debug, Clone)]
pub struct JobWorker {
    pub component: String,
    pub path: String,
    pub bearer: Option<String>,
    pub concurrency: usize,
    pub retry: Vec<Duration>,
    pub lease: Duration,
    pub poll: Duration,
    /// Succeeded jobs older than this are deleted.
    pub keep_succeeded: Duration,
}

/// How one attempt ended (the rules the components' sweeps follow too).
pub use nexus_guest::jobs::Outcome;

impl JobWorker {
    /// What becomes of a job whose attempt `attempt` (1 for the first) was answered `status`
    /// (`None`: no answer at all), with the answer's `Retry-After`, which can only lengthen the
    /// wait.
    pub fn outcome(
        &self,
        attempt: u32,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Outcome {
        let schedule: Vec<u64> = self
            .retry
            .iter()
            .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .collect();
        // No answer counts as a failure to retry, as any status but 2xx and 422 does.
        nexus_guest::jobs::honour_retry_after(
            nexus_guest::jobs::outcome(attempt, status.unwrap_or(0), &schedule),
            retry_after.map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// The manifest's job workers, with their tokens expanded.
pub fn workers(manifest: &Manifest) -> anyhow::Result<Vec<JobWorker>> {
    let variables = loopback::app_variables(manifest)?;
    let mut out = Vec::new();
    for (name, component) in &manifest.components {
        let Some(jobs) = &component.tool.nexus.jobs else {
            continue;
        };
        let bearer = loopback::bearer(
            &variables,
            jobs.bearer.as_deref(),
            &format!("component `{name}`'s jobs"),
        )?;
        out.push(JobWorker {
            component: name.clone(),
            path: jobs.path.clone(),
            bearer,
            concurrency: jobs.concurrency,
            retry: jobs
                .retry_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
            lease: Duration::from_millis(jobs.lease_ms),
            poll: Duration::from_millis(jobs.poll_ms),
            keep_succeeded: Duration::from_millis(jobs.keep_succeeded_ms),
        });
    }
    Ok(out)
}

/// Where the workers find the database and the host.
#[derive(Clone)]
pub struct JobContext {
    pub postgres: Arc<dyn PgBackend>,
    /// The platform database's address as components name it (`postgres_address`).
    pub database: String,
    /// The host's own listener.
    pub address: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// Becomes true when the host shuts down: the workers claim nothing more (the jobs they
    /// run finish as in-flight requests do).
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Starts every worker, and the pruning of its succeeded jobs.
pub fn start(workers: Vec<JobWorker>, context: JobContext) {
    for worker in workers {
        let worker = Arc::new(worker);
        tokio::spawn(prune(Arc::clone(&worker), context.clone()));
        tokio::spawn(run_worker(worker, context.clone()));
    }
}

/// Jobs deleted per statement, so that pruning a backlog never holds many rows at once.
const PRUNE_BATCH: i32 = 1000;
/// How often succeeded jobs past their retention are deleted (more often when the retention
/// is shorter).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Deletes the worker's succeeded jobs once they are older than its `keep_succeeded_ms`.
async fn prune(worker: Arc<JobWorker>, context: JobContext) {
    let every = PRUNE_EVERY.min((worker.keep_succeeded / 2).max(Duration::from_millis(100)));
    let older_than_ms = i64::try_from(worker.keep_succeeded.as_millis()).unwrap_or(i64::MAX);
    let mut stopping = context.stopping.clone();
    loop {
        pause(every, &mut stopping).await;
        if *stopping.borrow() {
            return;
        }
        let pruned = async {
            let client = context
                .postgres
                .connect(&context.database, Budget::Host)
                .await?;
            let row = client
                .query_one(
                    "SELECT nexus_prune_jobs($1, $2, $3) AS pruned",
                    &[&worker.component, &older_than_ms, &PRUNE_BATCH],
                )
                .await
                .context("nexus_prune_jobs")?;
            anyhow::Ok(row.try_get::<_, i32>("pruned")?)
        }
        .await;
        match pruned {
            Ok(0) => {}
            Ok(count) => {
                tracing::debug!(component = %worker.component, count, "succeeded jobs deleted")
            }
            Err(err) => {
                tracing::warn!(component = %worker.component, error = %format!("{err:#}"), "cannot prune jobs")
            }
        }
    }
}

/// A claimed job.
struct Claimed {
    id: uuid::Uuid,
    kind: String,
    attempt: u32,
    payload: Value,
}

async fn run_worker(worker: Arc<JobWorker>, context: JobContext) {
    // Names this worker in the claims, so that only it can report on them.
    let worker_id = format!("{}@{}", worker.component, uuid::Uuid::new_v4().simple());
    let slots = Arc::new(Semaphore::new(worker.concurrency));
    tracing::info!(component = %worker.component, worker = %worker_id, "running durable jobs");
    let mut stopping = context.stopping.clone();
    loop {
        if *stopping.borrow() {
            return;
        }
        if slots.available_permits() == 0 {
            // Every slot is busy: wait for one to come free.
            if let Ok(permit) = Arc::clone(&slots).acquire_owned().await {
                drop(permit);
            }
            continue;
        }
        match claim(&worker, &worker_id, &context, slots.available_permits()).await {
            Ok(jobs) if !jobs.is_empty() => {
                for job in jobs {
                    let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                        break;
                    };
                    tokio::spawn(run_job(
                        Arc::clone(&worker),
                        worker_id.clone(),
                        context.clone(),
                        job,
                        permit,
                    ));
                }
            }
            Ok(_) => pause(worker.poll, &mut stopping).await,
            Err(err) => {
                tracing::warn!(component = %worker.component, error = %format!("{err:#}"), "cannot claim jobs");
                pause(worker.poll.max(CLAIM_ERROR_PAUSE), &mut stopping).await;
            }
        }
    }
}

/// Waits `length`, or less if the host begins to shut down.
async fn pause(length: Duration, stopping: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(length) => {}
        _ = stopping.changed() => {}
    }
}

async fn claim(
    worker: &JobWorker,
    worker_id: &str,
    context: &JobContext,
    limit: usize,
) -> anyhow::Result<Vec<Claimed>> {
    // The connection goes back to the pool before the jobs run.
    let client = context
        .postgres
        .connect(&context.database, Budget::Host)
        .await?;
    let rows = client
        .query(
            "SELECT id, kind, attempts, payload FROM nexus_claim_jobs($1, $2, $3, $4)",
            &[
                &worker.component,
                &worker_id,
                &i32::try_from(limit).unwrap_or(i32::MAX),
                &i64::try_from(worker.lease.as_millis()).unwrap_or(i64::MAX),
            ],
        )
        .await
        .context("nexus_claim_jobs")?;
    rows.iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                attempt: u32::try_from(row.try_get::<_, i32>("attempts")?).unwrap_or_default(),
                payload: row.try_get("payload")?,
            })
        })
        .collect()
}

async fn run_job(
    worker: Arc<JobWorker>,
    worker_id: String,
    context: JobContext,
    job: Claimed,
    _slot: OwnedSemaphorePermit,
) {
    let body = json!({
        "id": job.id.to_string(),
        "kind": job.kind,
        "attempt": job.attempt,
        "payload": job.payload,
    });
    let request_id = format!("job-{}-{}", job.id.simple(), job.attempt);
    // Answer within the lease, or another host may run the job meanwhile.
    let deadline = worker.lease.saturating_sub(Duration::from_secs(1));
    let span = crate::telemetry::job_span(
        &worker.component,
        &job.kind,
        &job.id.to_string(),
        job.attempt,
    );
    let answer = tokio::time::timeout(
        deadline,
        loopback::post(
            context.address,
            &worker.path,
            worker.bearer.as_deref(),
            &request_id,
            Some(body.to_string().into_bytes()),
        ),
    )
    .instrument(span.clone())
    .await;
    let (status, detail, retry_after) = match answer {
        Ok(Ok(answer)) => (Some(answer.status), answer.body, answer.retry_after),
        Ok(Err(err)) => (None, format!("{err:#}"), None),
        Err(_) => (None, format!("no answer within {deadline:?}"), None),
    };
    let outcome = worker.outcome(job.attempt, status, retry_after);
    crate::telemetry::set(&span, "nexus.job.outcome", outcome.name());
    if outcome != Outcome::Succeeded {
        crate::telemetry::failed(&span, outcome.name());
    }
    context
        .metrics
        .jobs
        .get_or_create(&JobLabels {
            component: worker.component.clone(),
            outcome: outcome.name(),
        })
        .inc();
    if outcome != Outcome::Succeeded {
        tracing::warn!(
            component = %worker.component, job = %job.id, attempt = job.attempt,
            status, outcome = outcome.name(), detail = %detail, "a job attempt failed"
        );
    }
    if let Err(err) = finish(&context, &job, &worker_id, outcome, status, &detail).await {
        // The lease runs out and the job is run again: at least once.
        tracing::warn!(job = %job.id, error = %format!("{err:#}"), "cannot record a job's outcome");
    }
}

async fn finish(
    context: &JobContext,
    job: &Claimed,
    worker_id: &str,
    outcome: Outcome,
    status: Option<u16>,
    detail: &str,
) -> anyhow::Result<()> {
    let retry_ms = outcome.retry_ms();
    let client = context
        .postgres
        .connect(&context.database, Budget::Host)
        .await?;
    let state: Option<String> = client
        .query_one(
            "SELECT nexus_finish_job($1, $2, $3, $4, $5, $6)",
            &[
                &job.id,
                &worker_id,
                &outcome.name(),
                &status.map(i32::from),
                &detail,
                &retry_ms,
            ],
        )
        .await
        .context("nexus_finish_job")?
        .try_get(0)?;
    if state.is_none() {
        // Either another worker holds it now (this one's lease ran out), or it is gone (its
        // tenant or webhook endpoint was deleted while it ran).
        tracing::warn!(
            job = %job.id,
            "the job's outcome was not recorded: its lease ran out, or the job was deleted meanwhile"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(retry_ms: &[u64]) -> JobWorker {
        JobWorker {
            component: "webhooks".into(),
            path: "/run".into(),
            bearer: None,
            concurrency: 1,
            retry: retry_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            keep_succeeded: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_answer_decides_the_outcome() {
        let w = worker(&[100, 200]);
        assert_eq!(w.outcome(1, Some(200), None), Outcome::Succeeded);
        assert_eq!(w.outcome(1, Some(204), None), Outcome::Succeeded);
        assert_eq!(w.outcome(1, Some(422), None), Outcome::Dead);
        assert_eq!(w.outcome(1, Some(503), None), Outcome::Retry(100));
        assert_eq!(w.outcome(2, None, None), Outcome::Retry(200));
    }

    #[test]
    fn the_schedule_runs_out_into_the_dead_letters() {
        let w = worker(&[100, 200]);
        assert_eq!(w.outcome(3, Some(500), None), Outcome::Dead);
        assert_eq!(worker(&[]).outcome(1, Some(500), None), Outcome::Dead);
    }

    #[test]
    fn retry_after_can_only_lengthen_the_wait() {
        let w = worker(&[100]);
        assert_eq!(
            w.outcome(1, Some(503), Some(Duration::from_secs(2))),
            Outcome::Retry(2000)
        );
        assert_eq!(
            w.outcome(1, Some(503), Some(Duration::ZERO)),
            Outcome::Retry(100)
        );
    }
}
