//! A tenant's interaction webhooks (`tenants/{ccid}/webhooks`) and its durable jobs
//! (`tenants/{ccid}/jobs`): what was queued, how each attempt went, and replaying one.

use nexus_guest::api::{ApiError, ApiResult};
use nexus_guest::body::Fields;
use nexus_guest::secrets::new_id;
use nexus_guest::spin::{Db, Reply, opt_text, text, uuid};
use nexus_guest::webhook_signature;
use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::{Tenant, audit, flag, overlap_seconds};

/// The events an endpoint may ask for: the interactions' (`*` is every one of them) and the
/// campaigns' (`campaign.*`, `record.*`, or one state or status), which `*` leaves out.
const EVENTS: [&str; 23] = [
    "STARTED",
    "FINISHED",
    "MESSAGE",
    "AGENT_JOINED",
    "AGENT_LEFT",
    "QUEUED",
    "IDLE",
    "campaign.*",
    "campaign.scheduled",
    "campaign.running",
    "campaign.paused",
    "campaign.completed",
    "campaign.cancelled",
    "record.*",
    "record.queued",
    "record.sent",
    "record.delivered",
    "record.failed",
    "record.replied",
    "record.opted-out",
    "record.suppressed",
    "record.expired",
    "record.outside-window",
];
const JOB_STATES: [&str; 4] = ["pending", "running", "succeeded", "dead"];

fn tenant_param(tenant: &Tenant) -> ParameterValue {
    ParameterValue::Int64(tenant.id)
}

fn checked_id(id: &str, what: &str) -> ApiResult<String> {
    if nexus_guest::spin::is_uuid(id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::not_found(format!("no {what} has the id `{id}`")))
    }
}

pub(crate) fn url(fields: &Fields) -> ApiResult<Option<String>> {
    let Some(url) = fields.text("url") else {
        return Ok(None);
    };
    let valid = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.contains(char::is_whitespace);
    if valid {
        // A tenant's endpoint must not reach into nexus's own network (see
        // nexus_guest::private_address): checked here as written, and again by the
        // nexus host on the resolved address when it delivers.
        nexus_guest::private_address::check_url(
            "url",
            &url,
            nexus_guest::spin::private_outbound_allowed(),
        )?;
        Ok(Some(url))
    } else {
        Err(ApiError::bad_parameter(
            "`url` is an http(s) URL of at most 2048 characters",
        ))
    }
}

fn events(fields: &Fields) -> ApiResult<Option<Vec<String>>> {
    let Some(raw) = fields.others(&[]).get("events").cloned() else {
        return Ok(None);
    };
    let events: Option<Vec<String>> = raw.as_array().map(|items| {
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    });
    match events {
        Some(events)
            if !events.is_empty()
                && events
                    .iter()
                    .all(|e| e == "*" || EVENTS.contains(&e.as_str())) =>
        {
            Ok(Some(events))
        }
        _ => Err(ApiError::bad_parameter(format!(
            "`events` is a non-empty list of {} or \"*\"",
            EVENTS.join(", ")
        ))),
    }
}

fn text_array(items: &[String]) -> ParameterValue {
    ParameterValue::ArrayStr(items.iter().map(|s| Some(s.clone())).collect())
}

fn new_secret() -> ApiResult<String> {
    webhook_signature::new_secret().map_err(|err| ApiError::internal("make a webhook secret", err))
}

pub fn list_webhooks(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let webhooks = db.json_rows(
        "list webhooks",
        "SELECT nexus_webhook_json(w) FROM webhook_endpoints w WHERE tenant_id = $1 ORDER BY created_at",
        &[tenant_param(tenant)],
    )?;
    Reply::ok(json!({ "webhooks": webhooks }))
}

/// Registers an endpoint; the answer carries its signing secret.
pub fn create_webhook(db: &Db, tenant: &Tenant, fields: &Fields) -> ApiResult<Reply> {
    let url = url(fields)?.ok_or_else(|| ApiError::bad_parameter("`url` is required"))?;
    let events = events(fields)?.unwrap_or_else(|| vec!["*".into()]);
    let secret = new_secret()?;
    let id = new_id();
    let mut webhook = db.transaction(|db| {
        let webhook = db
            .json_row(
                "create the webhook",
                "INSERT INTO webhook_endpoints AS w (id, tenant_id, url, events, description, secret) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING nexus_webhook_json(w)",
                &[
                    uuid(&id),
                    tenant_param(tenant),
                    text(&url),
                    text_array(&events),
                    opt_text(fields.bounded_text("description", 500)?),
                    text(&secret),
                ],
            )?
            .ok_or_else(|| ApiError::internal("create the webhook", "no row"))?;
        audit(db, (Some(tenant.id), &tenant.ccid), "create", "webhook", &id, json!({ "url": url, "events": events }))?;
        Ok(webhook)
    })?;
    webhook["secret"] = Value::String(secret);
    Reply::created(webhook)
}

pub fn webhook(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    let id = checked_id(id, "webhook")?;
    let webhook = db
        .json_row(
            "read the webhook",
            "SELECT nexus_webhook_json(w) FROM webhook_endpoints w WHERE tenant_id = $1 AND id = $2",
            &[tenant_param(tenant), uuid(&id)],
        )?
        .ok_or_else(|| ApiError::not_found(format!("no webhook has the id `{id}`")))?;
    Reply::ok(webhook)
}

pub fn update_webhook(db: &Db, tenant: &Tenant, id: &str, fields: &Fields) -> ApiResult<Reply> {
    let id = checked_id(id, "webhook")?;
    let url = url(fields)?;
    let events = events(fields)?;
    let enabled = flag(fields, "enabled")?;
    let description = fields.bounded_text("description", 500)?;
    db.transaction(|db| {
        let webhook = db
            .json_row(
                "update the webhook",
                "UPDATE webhook_endpoints w SET url = coalesce($3, url), events = coalesce($4, events), \
                   enabled = coalesce($5, enabled), description = coalesce($6, description), updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING nexus_webhook_json(w)",
                &[
                    tenant_param(tenant),
                    uuid(&id),
                    opt_text(url.clone()),
                    events.as_deref().map_or(ParameterValue::DbNull, text_array),
                    enabled.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                    opt_text(description),
                ],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no webhook has the id `{id}`")))?;
        audit(db, (Some(tenant.id), &tenant.ccid), "update", "webhook", &id, json!({ "url": url, "events": events, "enabled": enabled }))?;
        Reply::ok(webhook)
    })
}

pub fn delete_webhook(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    let id = checked_id(id, "webhook")?;
    db.transaction(|db| {
        let deleted = db.execute(
            "delete the webhook",
            "DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2",
            &[tenant_param(tenant), uuid(&id)],
        )?;
        if deleted == 0 {
            return Err(ApiError::not_found(format!("no webhook has the id `{id}`")));
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "delete",
            "webhook",
            &id,
            Value::Null,
        )
    })?;
    Reply::ok(json!({ "deleted": id }))
}

/// A new signing secret; the old one signs too for `overlapSeconds` (a day by default).
pub fn rotate_webhook_secret(
    db: &Db,
    tenant: &Tenant,
    id: &str,
    fields: &Fields,
) -> ApiResult<Reply> {
    let id = checked_id(id, "webhook")?;
    let overlap = overlap_seconds(fields)?;
    let secret = new_secret()?;
    let mut rotated = db.transaction(|db| {
        let rotated = db
            .json_row(
                "rotate the webhook secret",
                "UPDATE webhook_endpoints w SET previous_secret = secret, \
                 previous_secret_expires_at = now() + make_interval(secs => $3), secret = $4, updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING nexus_webhook_json(w)",
                &[
                    tenant_param(tenant),
                    uuid(&id),
                    ParameterValue::Floating64(overlap as f64),
                    text(&secret),
                ],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no webhook has the id `{id}`")))?;
        audit(db, (Some(tenant.id), &tenant.ccid), "rotate-secret", "webhook", &id, json!({ "overlapSeconds": overlap }))?;
        Ok(rotated)
    })?;
    rotated["secret"] = Value::String(secret);
    Reply::ok(rotated)
}

/// The tenant's jobs, newest first: `state` filters, `limit` (≤ 500, default 100).
pub fn list_jobs(
    db: &Db,
    tenant: &Tenant,
    params: &std::collections::BTreeMap<String, String>,
) -> ApiResult<Reply> {
    let state = params.get("state").cloned();
    if state.as_deref().is_some_and(|s| !JOB_STATES.contains(&s)) {
        return Err(ApiError::bad_parameter(format!(
            "`state` is one of {}",
            JOB_STATES.join(", ")
        )));
    }
    let limit = match params.get("limit") {
        None => 100,
        Some(limit) => limit
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::bad_parameter("`limit` is from 1 to 500"))?,
    };
    let jobs = db.json_rows(
        "list jobs",
        "SELECT nexus_job_json(j) FROM jobs j WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2) \
         ORDER BY created_at DESC, seq DESC LIMIT $3",
        &[tenant_param(tenant), opt_text(state), ParameterValue::Int64(limit)],
    )?;
    Reply::ok(json!({ "jobs": jobs }))
}

/// A job with every attempt made.
pub fn job(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    let id = checked_id(id, "job")?;
    let job = db
        .json_row(
            "read the job",
            "SELECT nexus_job_json(j) || jsonb_build_object('attemptsMade', (\
               SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(\
                 'attempt', a.attempt, 'outcome', a.outcome, 'status', a.status, 'detail', a.detail, \
                 'finishedAt', nexus_ts(a.finished_at))) ORDER BY a.id), '[]'::jsonb) \
               FROM job_attempts a WHERE a.job_id = j.id)) \
             FROM jobs j WHERE tenant_id = $1 AND id = $2",
            &[tenant_param(tenant), uuid(&id)],
        )?
        .ok_or_else(|| ApiError::not_found(format!("no job has the id `{id}`")))?;
    Reply::ok(job)
}

/// Runs a finished job (dead, or delivered) again from the start of its retry schedule.
pub fn replay_job(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    let id = checked_id(id, "job")?;
    db.transaction(|db| {
        let job = db.json_row(
            "replay the job",
            "UPDATE jobs j SET state = 'pending', attempts = 0, run_at = now(), finished_at = NULL, updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 AND state IN ('dead', 'succeeded') RETURNING nexus_job_json(j)",
            &[tenant_param(tenant), uuid(&id)],
        )?;
        let Some(job) = job else {
            return Err(ApiError::new(
                409,
                nexus_guest::api::Code::Conflict,
                format!("no finished job has the id `{id}` (a pending or running job is already on its way)"),
            ));
        };
        audit(db, (Some(tenant.id), &tenant.ccid), "replay", "job", &id, Value::Null)?;
        Reply::ok(job)
    })
}
