//! A component's own due jobs, run from its sweep endpoint: the job worker for Spin, which runs
//! no background work (a cron calls the endpoint). Jobs are claimed and finished with the same
//! SQL functions the nexus host's worker uses, so both can run at once, and each job is handed
//! to the component's handler in the shape the host would POST it, `{id, kind, attempt,
//! payload}`.

use std::future::Future;

use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::api::ApiResult;
use crate::jobs::{KEEP_SUCCEEDED_MS, RETRY_MS, honour_retry_after, outcome};
use crate::spin::{Db, Reply, text, uuid};

/// Jobs claimed per sweep.
const BATCH: i32 = 20;
/// The lease of a sweep's claims: longer than a sweep of [`BATCH`] runs can take.
const LEASE_MS: i64 = 10 * 60 * 1000;

/// Claims up to 20 due jobs of `component`, runs each with `run`, records each outcome on the
/// published schedule; how many ended how.
pub async fn sweep<F, Fut>(component: &str, run: F) -> ApiResult<Value>
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = ApiResult<Reply>>,
{
    let worker = format!("{component}-sweep@{}", crate::secrets::new_id());
    let claimed: Vec<Value> = {
        let db = Db::open()?;
        let rows = db.rows(
            "claim jobs",
            "SELECT id::text AS id, kind, attempts, payload::text AS payload \
             FROM nexus_claim_jobs($1, $2, $3, $4)",
            &[
                text(component),
                text(&worker),
                ParameterValue::Int32(BATCH),
                ParameterValue::Int64(LEASE_MS),
            ],
        )?;
        rows.rows()
            .filter_map(|row| {
                let payload: Value = serde_json::from_str(&row.get::<String>("payload")?).ok()?;
                Some(json!({
                    "id": row.get::<String>("id")?,
                    "kind": row.get::<String>("kind")?,
                    "attempt": row.get::<i32>("attempts")?,
                    "payload": payload,
                }))
            })
            .collect()
    };
    let mut summary = json!({"claimed": claimed.len(), "succeeded": 0, "retry": 0, "dead": 0});
    for job in claimed {
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        let attempt = u32::try_from(job["attempt"].as_i64().unwrap_or(1)).unwrap_or(1);
        let (status, detail, retry_after) = match run(job).await {
            Ok(reply) => (reply.status, reply.data.to_string(), None),
            Err(err) => (
                err.http_status,
                err.message.clone(),
                err.retry_after_seconds,
            ),
        };
        let ended = honour_retry_after(
            outcome(attempt, status, &RETRY_MS),
            retry_after.map(|seconds| seconds.saturating_mul(1000)),
        );
        let db = Db::open()?;
        db.rows(
            "finish the job",
            "SELECT nexus_finish_job($1, $2, $3, $4, $5, $6) AS state",
            &[
                uuid(&id),
                text(&worker),
                text(ended.name()),
                ParameterValue::Int32(i32::from(status)),
                text(&detail),
                ended
                    .retry_ms()
                    .map_or(ParameterValue::DbNull, ParameterValue::Int64),
            ],
        )?;
        summary[ended.name()] = json!(summary[ended.name()].as_i64().unwrap_or(0) + 1);
    }
    // What the host's worker does on its own timer: succeeded jobs past their retention go.
    Db::open()?.rows(
        "delete old succeeded jobs",
        "SELECT nexus_prune_jobs($1, $2, 1000) AS pruned",
        &[
            text(component),
            ParameterValue::Int64(i64::try_from(KEEP_SUCCEEDED_MS).unwrap_or(i64::MAX)),
        ],
    )?;
    Ok(summary)
}
