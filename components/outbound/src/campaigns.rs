//! Campaigns (`/nexus/v3/outbound/campaigns`): a contact list messaged through one SMS or email
//! channel with one template, on a schedule, within a contact-time window in each recipient's
//! own time zone, at a pace (messages per second, burst, messages in flight), with attempts on
//! transient failures and a validity after which an unsent record expires.
//!
//! States: `draft → scheduled → running ⇄ paused → completed | cancelled`. Starting makes one
//! record per contact (its address, zone and variables copied). The pump
//! (`POST /campaigns/pump`, every 100 ms under nexus; `nexus_campaign_pump` in
//! `migrations/0019_campaigns.sql`) hands due records to the channel's component as durable
//! `campaign-send` jobs; each job checks the suppression list at send time, renders the
//! template, sends with an idempotency key, and reports. A provider's 429 halves the pace and
//! pauses it as long as the provider asks, and never fails a record.

use std::collections::BTreeMap;

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::parking;
use nexus_guest::spin::{
    Db, Live, Reply, header, is_uuid, jsonb, opt_text, require_admin, text, uuid,
};
use serde_json::{Map, Value, json};
use spin_sdk::http::Request;
use spin_sdk::pg4::ParameterValue;

use crate::{MAX_BODY_BYTES, page_size};

const MAX_NAME_CHARS: usize = 200;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// Campaigns the pump turns per call.
const PUMP_BATCH: i64 = 50;
/// The longest long-poll of the events, in seconds.
const MAX_WAIT_SECONDS: i64 = 30;
/// How often a long-poll of the events looks again, under Spin.
const LONG_POLL_CHECK: std::time::Duration = std::time::Duration::from_millis(250);
/// How long past its deadline a waiting poll is still said to wait: a poll called again late.
const POLLER_MARGIN_MS: u64 = 2_000;
/// Events published per campaign per call.
const PUBLISH_BATCH: i64 = 2_000;

/// The columns of a campaign as the API shows it.
const CAMPAIGN_JSON: &str = "jsonb_build_object(\
    'id', c.id, 'name', c.name, 'channelId', c.channel_id, 'listId', c.list_id, \
    'template', c.template_name, 'state', c.state, \
    'schedule', jsonb_build_object('startAt', nexus_ts(c.starts_at), 'endAt', nexus_ts(c.ends_at)), \
    'window', jsonb_build_object( \
        'days', (SELECT coalesce(jsonb_agg((ARRAY['mon','tue','wed','thu','fri','sat','sun'])[d] \
                 ORDER BY d), '[]'::jsonb) FROM unnest(c.window_days) AS d), \
        'from', to_char(c.window_from, 'HH24:MI'), \
        'to', CASE WHEN c.window_to = '24:00' THEN '24:00' ELSE to_char(c.window_to, 'HH24:MI') END), \
    'defaultTimeZone', c.default_time_zone, \
    'pacing', jsonb_build_object('messagesPerSecond', c.rate_per_second, 'burst', c.burst, \
        'maxInFlight', c.max_in_flight, \
        'currentShare', round(c.pace_factor::numeric, 3), \
        'throttledUntil', nexus_ts(CASE WHEN c.throttled_until > now() THEN c.throttled_until END)), \
    'attempts', jsonb_build_object('max', c.max_attempts, 'backoffSeconds', c.backoff_seconds), \
    'validitySeconds', c.validity_seconds, \
    'counts', c.record_counts, \
    'createdAt', nexus_ts(c.created_at), 'startedAt', nexus_ts(c.started_at), \
    'finishedAt', nexus_ts(c.finished_at))";

fn missing(id: &str) -> ApiError {
    ApiError::not_found(format!("no campaign has the id `{id}`"))
}

/// Campaign `id` of the tenant's as the API shows it, or a 404.
fn campaign_json(db: &Db, tenant: i64, id: &str) -> ApiResult<Value> {
    if !is_uuid(id) {
        return Err(missing(id));
    }
    db.json_row(
        "read the campaign",
        &format!("SELECT {CAMPAIGN_JSON} FROM campaigns c WHERE tenant_id = $1 AND id = $2"),
        &[ParameterValue::Int64(tenant), uuid(id)],
    )?
    .ok_or_else(|| missing(id))
}

/// `GET /campaigns/{id}`: the campaign, with its records counted by status.
pub fn get(db: &Db, tenant: i64, id: &str) -> ApiResult<Reply> {
    Reply::ok(campaign_json(db, tenant, id)?)
}

/// `GET /campaigns`: oldest first, a page at a time (`cursor`: the last id seen), maybe only
/// those in `state`.
pub fn all(db: &Db, tenant: i64, params: &BTreeMap<String, String>) -> ApiResult<Reply> {
    let limit = page_size(params)?;
    let after = crate::uuid_cursor(params)?;
    let state = params.get("state").cloned();
    if let Some(state) = &state
        && ![
            "draft",
            "scheduled",
            "running",
            "paused",
            "completed",
            "cancelled",
        ]
        .contains(&state.as_str())
    {
        return Err(ApiError::bad_parameter(format!(
            "`state` is a campaign state, not `{state}`"
        )));
    }
    let mut items = db.json_rows(
        "list the campaigns",
        &format!(
            "SELECT {CAMPAIGN_JSON} FROM campaigns c WHERE tenant_id = $1 \
               AND ($2::text IS NULL OR (created_at, id) > \
                    (SELECT created_at, id FROM campaigns WHERE tenant_id = $1 AND id::text = $2)) \
               AND ($3::text IS NULL OR state = $3) \
             ORDER BY created_at, id LIMIT $4"
        ),
        &[
            ParameterValue::Int64(tenant),
            opt_text(after),
            opt_text(state),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    let next = crate::next_cursor(&mut items, limit, "id");
    Reply::ok(json!({ "campaigns": items, "nextCursor": next }))
}

/// A JSON request body as an object.
fn json_body(req: &Request) -> ApiResult<Map<String, Value>> {
    let media_type = header(req, "content-type").unwrap_or_default();
    if !media_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::new(
            415,
            Code::InvalidParameter,
            "a campaign is JSON: send it as application/json",
        ));
    }
    if req.body().len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            413,
            Code::LimitBodySize,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(object)) => {
            nexus_guest::body::refuse_nul("body", &Value::Object(object.clone()))?;
            Ok(object)
        }
        Ok(_) => Err(ApiError::bad_parameter("the body is a JSON object")),
        Err(err) => Err(ApiError::bad_parameter(format!(
            "the body is not JSON: {err}"
        ))),
    }
}

/// Field `name` of `object` as an object (absent: empty).
fn section<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> ApiResult<Option<&'a Map<String, Value>>> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(ApiError::bad_parameter(format!("`{name}` is an object"))),
    }
}

fn string_field(object: &Map<String, Value>, path: &str, name: &str) -> ApiResult<Option<String>> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Some(_) => Err(ApiError::bad_parameter(format!(
            "`{path}{name}` is a non-empty string"
        ))),
    }
}

/// A number field within `[min, max]`, or `default` when absent.
fn number_field(
    object: Option<&Map<String, Value>>,
    path: &str,
    name: &str,
    (min, max): (f64, f64),
    default: Option<f64>,
) -> ApiResult<Option<f64>> {
    match object.and_then(|object| object.get(name)) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(number)) => match number.as_f64() {
            Some(value) if (min..=max).contains(&value) => Ok(Some(value)),
            _ => Err(ApiError::bad_parameter(format!(
                "`{path}{name}` is a number from {min} to {max}"
            ))),
        },
        Some(_) => Err(ApiError::bad_parameter(format!(
            "`{path}{name}` is a number"
        ))),
    }
}

fn integer(value: Option<f64>, path: &str) -> ApiResult<Option<i64>> {
    match value {
        Some(value) if value.fract() != 0.0 => Err(ApiError::bad_parameter(format!(
            "`{path}` is a whole number"
        ))),
        Some(value) => Ok(Some(value as i64)),
        None => Ok(None),
    }
}

/// `"HH:MM"` (or `"24:00"` as an end), as minutes after midnight.
fn clock(text: &str, field: &str) -> ApiResult<i64> {
    let bad = || ApiError::bad_parameter(format!("`window.{field}` is a time HH:MM, not `{text}`"));
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(bad());
    }
    let (hours, minutes): (i64, i64) = (
        hours.parse().map_err(|_| bad())?,
        minutes.parse().map_err(|_| bad())?,
    );
    if !(0..=24).contains(&hours) || !(0..60).contains(&minutes) || hours * 60 + minutes > 1440 {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

/// The contact-time window: ISO day numbers, and the hours as `HH:MM` texts.
fn window(object: &Map<String, Value>) -> ApiResult<(Vec<i32>, String, String)> {
    let Some(window) = section(object, "window")? else {
        return Ok(((1..=7).collect(), "00:00".into(), "24:00".into()));
    };
    let days = match window.get("days") {
        None | Some(Value::Null) => (1..=7).collect(),
        Some(Value::Array(days)) => {
            let mut numbers = Vec::new();
            for day in days {
                let name = day.as_str().unwrap_or_default().to_ascii_lowercase();
                let Some(at) = DAYS.iter().position(|known| *known == name) else {
                    return Err(ApiError::bad_parameter(format!(
                        "`window.days` names days as mon, tue, wed, thu, fri, sat, sun, not {day}"
                    )));
                };
                let number = at as i32 + 1;
                if !numbers.contains(&number) {
                    numbers.push(number);
                }
            }
            if numbers.is_empty() {
                return Err(ApiError::bad_parameter(
                    "`window.days` names at least one day",
                ));
            }
            numbers.sort_unstable();
            numbers
        }
        Some(_) => return Err(ApiError::bad_parameter("`window.days` is an array of days")),
    };
    let from = string_field(window, "window.", "from")?.unwrap_or_else(|| "00:00".into());
    let to = string_field(window, "window.", "to")?.unwrap_or_else(|| "24:00".into());
    if clock(&from, "from")? >= clock(&to, "to")? || from == "24:00" {
        return Err(ApiError::bad_parameter(
            "`window.from` is before `window.to` (a window does not cross midnight)",
        ));
    }
    Ok((days, from, to))
}

/// `POST /campaigns`: a draft, from its channel, list and template, with its schedule, window,
/// pacing, attempts and validity.
pub fn create(db: &Db, tenant: i64, req: &Request) -> ApiResult<Reply> {
    let body = json_body(req)?;
    let name = string_field(&body, "", "name")?
        .ok_or_else(|| ApiError::bad_parameter("`name` is required"))?;
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_parameter(format!(
            "`name` is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let channel_id = string_field(&body, "", "channelId")?
        .ok_or_else(|| ApiError::bad_parameter("`channelId` is required"))?
        .to_ascii_lowercase();
    let list_id = string_field(&body, "", "listId")?
        .ok_or_else(|| ApiError::bad_parameter("`listId` is required"))?
        .to_ascii_lowercase();
    let template = string_field(&body, "", "template")?
        .ok_or_else(|| ApiError::bad_parameter("`template` (a template's name) is required"))?;
    let schedule = section(&body, "schedule")?;
    let timestamp = |name: &str| -> ApiResult<Option<String>> {
        schedule
            .map(|schedule| string_field(schedule, "schedule.", name))
            .transpose()
            .map(Option::flatten)?
            .map(|text| nexus_guest::timestamp::parse(&format!("schedule.{name}"), &text))
            .transpose()
    };
    let (starts_at, ends_at) = (timestamp("startAt")?, timestamp("endAt")?);
    let (days, from, to) = window(&body)?;
    let zone = match string_field(&body, "", "defaultTimeZone")? {
        Some(zone) => nexus_guest::contacts::time_zone(&zone)
            .map_err(|why| ApiError::bad_parameter(format!("`defaultTimeZone`: {why}")))?,
        None => "UTC".to_owned(),
    };
    let pacing = section(&body, "pacing")?;
    let rate = number_field(
        pacing,
        "pacing.",
        "messagesPerSecond",
        (0.01, 10_000.0),
        Some(10.0),
    )?
    .unwrap_or(10.0);
    let burst = integer(
        number_field(pacing, "pacing.", "burst", (1.0, 10_000.0), None)?,
        "pacing.burst",
    )?
    .unwrap_or_else(|| (rate.ceil() as i64).clamp(1, 10_000));
    let in_flight = integer(
        number_field(
            pacing,
            "pacing.",
            "maxInFlight",
            (1.0, 10_000.0),
            Some(100.0),
        )?,
        "pacing.maxInFlight",
    )?
    .unwrap_or(100);
    let attempts = section(&body, "attempts")?;
    let max_attempts = integer(
        number_field(attempts, "attempts.", "max", (1.0, 20.0), Some(3.0))?,
        "attempts.max",
    )?
    .unwrap_or(3);
    let backoff = integer(
        number_field(
            attempts,
            "attempts.",
            "backoffSeconds",
            (1.0, 86_400.0),
            Some(30.0),
        )?,
        "attempts.backoffSeconds",
    )?
    .unwrap_or(30);
    let validity = integer(
        number_field(
            Some(&body),
            "",
            "validitySeconds",
            (1.0, 31_536_000.0),
            None,
        )?,
        "validitySeconds",
    )?;

    // What it names: the tenant's own channel (an SMS one), list and template.
    let channel = db
        .json_row(
            "read the channel",
            "SELECT jsonb_build_object('type', type, 'enabled', enabled) FROM channels \
             WHERE tenant_id = $1 AND id::text = $2",
            &[ParameterValue::Int64(tenant), text(channel_id.as_str())],
        )?
        .ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "`channelId`: `{channel_id}` is not a channel of this tenant"
            ))
        })?;
    let channel_type = channel["type"].as_str().unwrap_or_default().to_owned();
    if !matches!(channel_type.as_str(), "sms" | "email") {
        return Err(ApiError::bad_parameter(format!(
            "`channelId`: campaigns send through sms and email channels, and this one is {channel_type}"
        )));
    }
    if !is_uuid(&list_id) {
        return Err(ApiError::bad_parameter(format!(
            "`listId`: `{list_id}` is not a contact list of this tenant"
        )));
    }
    let list_found = db
        .json_row(
            "read the contact list",
            "SELECT to_jsonb(id) FROM contact_lists WHERE tenant_id = $1 AND id = $2",
            &[ParameterValue::Int64(tenant), uuid(list_id.as_str())],
        )?
        .is_some();
    if !list_found {
        return Err(ApiError::bad_parameter(format!(
            "`listId`: `{list_id}` is not a contact list of this tenant"
        )));
    }
    let stored = db
        .json_row(
            "read the template",
            "SELECT jsonb_build_object('channel', channel, 'subject', subject, 'body', body) \
             FROM outbound_templates WHERE tenant_id = $1 AND name = $2",
            &[ParameterValue::Int64(tenant), text(template.as_str())],
        )?
        .ok_or_else(|| {
            ApiError::bad_parameter(format!("`template`: no template is named `{template}`"))
        })?;
    if stored["channel"] != channel_type {
        return Err(ApiError::bad_parameter(format!(
            "`template`: `{template}` is a template for {}, and the channel is {channel_type}",
            stored["channel"].as_str().unwrap_or_default()
        )));
    }
    let created = db
        .json_row(
            "create the campaign",
            &format!(
                "INSERT INTO campaigns AS c (tenant_id, name, channel_id, channel_type, list_id, \
                   template_name, subject, body, starts_at, ends_at, window_days, window_from, \
                   window_to, default_time_zone, rate_per_second, burst, max_in_flight, \
                   max_attempts, backoff_seconds, validity_seconds) \
                 SELECT $1::bigint, $2::text, $3::uuid, $4::text, $5::uuid, $6::text, $7::text, \
                   $8::text, $9::text::timestamptz, \
                   $10::text::timestamptz, ARRAY(SELECT jsonb_array_elements_text($11::jsonb)::smallint), \
                   $12::text::time, $13::text::time, $14::text, ($15::jsonb ->> 'rate')::float8, \
                   ($15::jsonb ->> 'burst')::int, ($15::jsonb ->> 'inFlight')::int, \
                   ($15::jsonb ->> 'attempts')::int, ($15::jsonb ->> 'backoff')::int, \
                   ($15::jsonb ->> 'validity')::int \
                 WHERE $10::text IS NULL OR $10::text::timestamptz > coalesce($9::text::timestamptz, now()) \
                 RETURNING {CAMPAIGN_JSON}"
            ),
            &[
                ParameterValue::Int64(tenant),
                text(name),
                uuid(channel_id),
                text(channel_type),
                uuid(list_id),
                text(template),
                opt_text(stored["subject"].as_str()),
                text(stored["body"].as_str().unwrap_or_default()),
                opt_text(starts_at),
                opt_text(ends_at),
                jsonb(&json!(days)),
                text(from),
                text(to),
                text(zone),
                jsonb(&json!({
                    "rate": rate, "burst": burst, "inFlight": in_flight,
                    "attempts": max_attempts, "backoff": backoff, "validity": validity,
                })),
            ],
        )?
        .ok_or_else(|| {
            ApiError::bad_parameter("`schedule.endAt` is after `schedule.startAt` and in the future")
        })?;
    Reply::created(created)
}

/// Moves campaign `id` to the state `action` leads to, from the states it allows; a 409 from
/// another. Starting a draft also makes its records, one per contact of its list.
pub fn act(db: &Db, tenant: i64, id: &str, action: &str) -> ApiResult<Reply> {
    let current = campaign_json(db, tenant, id)?;
    let state = current["state"].as_str().unwrap_or_default().to_owned();
    let allowed: &[&str] = match action {
        "start" => &["draft"],
        "pause" => &["scheduled", "running"],
        "resume" => &["paused"],
        "cancel" => &["draft", "scheduled", "running", "paused"],
        _ => {
            return Err(ApiError::not_found(format!(
                "no campaign action is named `{action}`"
            )));
        }
    };
    if !allowed.contains(&state.as_str()) {
        return Err(ApiError::conflict(format!(
            "a campaign that is {state} cannot {action}; it can from {}",
            allowed.join(" or ")
        )));
    }
    let moved = db.transaction(|db| {
        let moved = db.execute(
            &format!("{action} the campaign"),
            "UPDATE campaigns SET state = CASE \
                 WHEN $3 = 'pause' THEN 'paused' \
                 WHEN $3 = 'cancel' THEN 'cancelled' \
                 WHEN starts_at IS NOT NULL AND starts_at > now() THEN 'scheduled' \
                 ELSE 'running' END, \
               started_at = CASE WHEN $3 IN ('start', 'resume') AND started_at IS NULL \
                 AND (starts_at IS NULL OR starts_at <= now()) THEN now() ELSE started_at END, \
               finished_at = CASE WHEN $3 = 'cancel' THEN now() ELSE finished_at END, \
               tokens = 0, tokens_at = now(), updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 AND state = $4",
            &[
                ParameterValue::Int64(tenant),
                uuid(id),
                text(action),
                text(state.as_str()),
            ],
        )?;
        if moved == 1 && action == "start" {
            // One record per contact, with the address the channel sends to (the phone number
            // for SMS, the email address for email); a contact without one fails at once,
            // saying so.
            db.execute(
                "make the campaign's records",
                "INSERT INTO campaign_records (campaign_id, contact_id, client_id, address, \
                   time_zone, variables, status, due_at, reason) \
                 SELECT c.id, k.id, k.client_id, coalesce(a.address, ''), \
                   coalesce(k.time_zone, c.default_time_zone), \
                   k.variables || jsonb_strip_nulls(jsonb_build_object('clientId', k.client_id, \
                     'phone', k.phone, 'email', k.email)), \
                   CASE WHEN a.address IS NULL THEN 'failed' ELSE 'pending' END, \
                   CASE WHEN a.address IS NULL THEN NULL ELSE now() END, \
                   CASE WHEN a.address IS NULL THEN CASE c.channel_type \
                     WHEN 'email' THEN 'the contact has no email address' \
                     ELSE 'the contact has no phone number' END END \
                 FROM campaigns c JOIN list_contacts k ON k.list_id = c.list_id \
                 CROSS JOIN LATERAL (SELECT CASE c.channel_type WHEN 'email' THEN k.email \
                   ELSE k.phone END AS address) a \
                 WHERE c.id = $1",
                &[uuid(id)],
            )?;
        }
        Ok(moved)
    })?;
    if moved == 0 {
        // Another request moved it between the read and the write.
        return Err(ApiError::conflict(
            "the campaign changed meanwhile; read it and try again",
        ));
    }
    Reply::ok(campaign_json(db, tenant, id)?)
}

/// `DELETE /campaigns/{id}`: a draft, or a campaign that is over, with its records.
pub fn delete(db: &Db, tenant: i64, id: &str) -> ApiResult<Reply> {
    let current = campaign_json(db, tenant, id)?;
    let state = current["state"].as_str().unwrap_or_default();
    if !["draft", "completed", "cancelled"].contains(&state) {
        return Err(ApiError::conflict(format!(
            "a campaign that is {state} is not deleted: cancel it first"
        )));
    }
    db.execute(
        "delete the campaign",
        "DELETE FROM campaigns WHERE tenant_id = $1 AND id = $2 \
         AND state IN ('draft', 'completed', 'cancelled')",
        &[ParameterValue::Int64(tenant), uuid(id)],
    )?;
    Reply::ok(json!({ "deleted": id }))
}

const RECORD_STATUSES: [&str; 10] = [
    "pending",
    "queued",
    "sent",
    "delivered",
    "failed",
    "replied",
    "opted-out",
    "expired",
    "suppressed",
    "outside-window",
];

/// `GET /campaigns/{id}/records`: its records in contact order, a page at a time, maybe only
/// those with `status` or `clientId`.
pub fn records(
    db: &Db,
    tenant: i64,
    id: &str,
    params: &BTreeMap<String, String>,
) -> ApiResult<Reply> {
    campaign_json(db, tenant, id)?;
    let limit = page_size(params)?;
    let after = crate::numeric_cursor(params)?;
    let status = params.get("status").cloned();
    if let Some(status) = &status
        && !RECORD_STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::bad_parameter(format!(
            "`status` is a record status, not `{status}`"
        )));
    }
    let rows = db.rows(
        "list the records",
        "SELECT contact_id, jsonb_build_object('clientId', client_id, 'address', address, \
           'timeZone', time_zone, 'status', status, 'attempts', attempts, \
           'providerId', provider_id, 'reason', reason, 'updatedAt', nexus_ts(updated_at))::text \
           AS record \
         FROM campaign_records WHERE campaign_id = $1 AND contact_id > $2 \
           AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR client_id = $4) \
         ORDER BY contact_id LIMIT $5",
        &[
            uuid(id),
            ParameterValue::Int64(after),
            opt_text(status),
            opt_text(params.get("clientId").cloned()),
            ParameterValue::Int64(limit + 1),
        ],
    )?;
    let mut items = Vec::new();
    let mut last = None;
    for row in rows.rows() {
        if items.len() as i64 == limit {
            break;
        }
        let record = row
            .get::<String>("record")
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .ok_or_else(|| ApiError::internal("list the records", "a record"))?;
        last = row.get::<i64>("contact_id");
        items.push(record);
    }
    let more = rows.rows().count() as i64 > limit;
    Reply::ok(json!({
        "records": items,
        "nextCursor": if more { last.map(|id| id.to_string()) } else { None },
    }))
}

/// `GET /campaigns/{id}/events?after=N&wait=S`: what happened to the campaign and its records
/// after event `after`, in order, up to `limit`; with `wait`, a long-poll: when there is nothing
/// yet, it answers as soon as something comes, or empty after `wait` seconds (at most 30). The
/// WebSocket (`campaign-socket`) pushes the same events under nexus; this is for a tool that
/// polls, and for Spin.
///
/// Under the nexus host a poll with nothing to answer parks on the campaign's topic (no
/// instance, no connection held) and the host calls again when the pump publishes or at the
/// deadline; its memo is the deadline. Under Spin it looks again every [`LONG_POLL_CHECK`],
/// holding no database connection between looks.
pub fn events(
    db: Db,
    tenant: i64,
    id: &str,
    params: &BTreeMap<String, String>,
) -> ApiResult<Reply> {
    campaign_json(&db, tenant, id)?;
    let limit = nexus_guest::body::int_param(params, "limit", 1, 1000, 200)?;
    let after = nexus_guest::body::int_param(params, "after", 0, i64::MAX, 0)?;
    let wait = nexus_guest::body::int_param(params, "wait", 0, MAX_WAIT_SECONDS, 0)?;
    let parked_call = parking::call();
    let deadline_ms = parked_call
        .as_ref()
        .and_then(|call| call.memo.as_deref())
        .and_then(|memo| memo.parse::<u64>().ok())
        .unwrap_or_else(|| parking::now_ms().saturating_add(wait.unsigned_abs() * 1000));
    // The host's call at the deadline answers whatever there is.
    let waits = parking::now_ms() < deadline_ms
        && parked_call
            .as_ref()
            .is_none_or(|call| call.wake != parking::Wake::Deadline);
    let parks = waits && parked_call.is_some();
    if parks {
        // Before the log is read: the pump, which publishes only where someone listens, then
        // either publishes what this read misses or logged it before this read began.
        mark_poller(id, deadline_ms)?;
    }
    let read = |db: &Db| {
        db.json_rows(
            "read the events",
            "SELECT nexus_campaign_event_json(e) FROM campaign_events e \
             WHERE campaign_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                uuid(id),
                ParameterValue::Int64(after),
                ParameterValue::Int64(limit),
            ],
        )
    };
    let mut events = read(&db)?;
    drop(db);
    if events.is_empty() && parks {
        parking::park(vec![topic(id)], deadline_ms, deadline_ms.to_string());
        // Nothing is sent for a parked request.
        return Reply::ok(Value::Null);
    }
    while events.is_empty() && parking::now_ms() < deadline_ms {
        std::thread::sleep(LONG_POLL_CHECK);
        events = read(&Db::open()?)?;
    }
    let last = events
        .last()
        .and_then(|event| event["seq"].as_i64())
        .unwrap_or(after);
    Reply::ok(json!({ "events": events, "last": last }))
}

/// Says, until `deadline_ms`, that a poll waits on campaign `id`'s events: the pump publishes
/// them to its topic then, as it does for a socket.
fn mark_poller(id: &str, deadline_ms: u64) -> ApiResult<()> {
    let live = Live::open()?;
    let for_ms = deadline_ms
        .saturating_sub(parking::now_ms())
        .saturating_add(POLLER_MARGIN_MS);
    live.cmd(
        "SET",
        &[
            nexus_guest::spin::arg(poller_key(&live, id)),
            nexus_guest::spin::arg("1"),
            nexus_guest::spin::arg("PX"),
            nexus_guest::spin::int_arg(i64::try_from(for_ms).unwrap_or(i64::MAX)),
        ],
    )?;
    Ok(())
}

/// The key that says a poll waits on campaign `id`'s events.
fn poller_key(live: &Live, id: &str) -> String {
    live.key(&format!("campaign:{id}:polled"))
}

/// `POST /campaigns/pump` (the admin token; the host's timer every 100 ms, or a cron under
/// Spin): one turn of the pump of each campaign that is running or due to start, up to
/// `PUMP_BATCH` a call, those turned longest ago first (a turn sets `tokens_at`), so that every
/// live campaign gets its turns however many there are.
pub fn pump(db: &Db, req: &Request) -> ApiResult<Reply> {
    require_admin(req)?;
    let turns = db.json_rows(
        "pump the campaigns",
        "SELECT jsonb_build_object('id', id, 'turn', nexus_campaign_pump(id)) \
         FROM (SELECT id FROM campaigns \
               WHERE state = 'running' \
                  OR (state = 'scheduled' AND (starts_at IS NULL OR starts_at <= now())) \
               ORDER BY tokens_at NULLS FIRST LIMIT $1) live",
        &[ParameterValue::Int64(PUMP_BATCH)],
    )?;
    let published = publish(db);
    Reply::ok(json!({ "campaigns": turns, "published": published }))
}

/// Publishes the campaigns' events not published yet to their sockets' topics
/// (`ws:topic:campaign:<id>`), in order, and answers how many. Two hosts publishing the same
/// events at once is harmless: a socket takes each number once. Redis being down only delays
/// the sockets: one that misses a number is closed after a few seconds and catches up from the
/// log when its client reconnects.
fn publish(db: &Db) -> u64 {
    let published = (|| -> ApiResult<u64> {
        let behind = db.json_rows(
            "find the unpublished events",
            "SELECT jsonb_build_object('id', id, 'after', published_seq, 'last', event_seq) \
             FROM campaigns WHERE published_seq < event_seq LIMIT $1",
            &[ParameterValue::Int64(PUMP_BATCH)],
        )?;
        if behind.is_empty() {
            return Ok(0);
        }
        let live = Live::open()?;
        let mut count = 0;
        for campaign in behind {
            let (Some(id), Some(after), Some(logged)) = (
                campaign["id"].as_str(),
                campaign["after"].as_i64(),
                campaign["last"].as_i64(),
            ) else {
                continue;
            };
            let channel = live.key(&format!("ws:topic:{}", topic(id)));
            // No socket listens and no poll waits (asked after `logged` was read): a socket that
            // subscribes from now on replays the log past it, and a poll reads it, so those
            // events need no publishing.
            if !has_subscribers(&live, &channel) && !is_polled(&live, id) {
                db.execute(
                    "record what needs no publishing",
                    "UPDATE campaigns SET published_seq = greatest(published_seq, $2) \
                     WHERE id = $1",
                    &[uuid(id), ParameterValue::Int64(logged)],
                )?;
                continue;
            }
            let events = db.json_rows(
                "read the unpublished events",
                "SELECT nexus_campaign_event_json(e) FROM campaign_events e \
                 WHERE campaign_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[
                    uuid(id),
                    ParameterValue::Int64(after),
                    ParameterValue::Int64(PUBLISH_BATCH),
                ],
            )?;
            let mut last = after;
            for event in &events {
                live.publish(&channel, event.to_string().as_bytes())?;
                last = event["seq"].as_i64().unwrap_or(last);
                count += 1;
            }
            db.execute(
                "record what was published",
                "UPDATE campaigns SET published_seq = greatest(published_seq, $2) WHERE id = $1",
                &[uuid(id), ParameterValue::Int64(last)],
            )?;
        }
        Ok(count)
    })();
    published.unwrap_or_else(|err| {
        nexus_guest::spin::log_error("publish the campaign events", &err);
        0
    })
}

/// Whether a socket (on any host) subscribes to `channel`; true when Redis cannot say (the
/// embedded store has no `PUBSUB`), so that the events are published.
fn has_subscribers(live: &Live, channel: &str) -> bool {
    match live.raw_cmd(
        "PUBSUB",
        &[nexus_guest::spin::arg("NUMSUB"), nexus_guest::spin::arg(channel)],
    ) {
        Ok(reply) => reply.iter().any(|item| {
            matches!(item, spin_sdk::redis::RedisResult::Int64(subscribers) if *subscribers > 0)
        }),
        Err(_) => true,
    }
}

/// Whether a long-poll waits on campaign `id`'s events (see [`mark_poller`]); true when Redis
/// cannot say.
fn is_polled(live: &Live, id: &str) -> bool {
    match live.cmd("EXISTS", &[nexus_guest::spin::arg(poller_key(live, id))]) {
        Ok(reply) => !matches!(reply.first(), Some(spin_sdk::redis::RedisResult::Int64(0))),
        Err(_) => true,
    }
}

/// The topic of campaign `id`'s sockets and parked polls.
pub fn topic(id: &str) -> String {
    format!("campaign:{id}")
}

/// `GET /metrics` (the admin token): the campaigns by state, and the records of the campaigns
/// not over by status, in Prometheus's text format. Every host answers the same (the numbers
/// are the database's): aggregate them with `max`.
pub fn metrics(req: &Request) -> ApiResult<String> {
    require_admin(req)?;
    let db = Db::open()?;
    let counts = db
        .json_row(
            "count the campaigns",
            "SELECT jsonb_build_object( \
               'states', (SELECT coalesce(jsonb_object_agg(state, n), '{}') FROM \
                 (SELECT state, count(*) AS n FROM campaigns GROUP BY state) s), \
               'records', (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM \
                 (SELECT counted.key AS status, sum(counted.value::bigint) AS n FROM campaigns c \
                   CROSS JOIN LATERAL jsonb_each_text(c.record_counts) counted \
                  WHERE c.state IN ('scheduled', 'running', 'paused') GROUP BY counted.key) r), \
               'throttled', (SELECT count(*) FROM campaigns \
                 WHERE state = 'running' AND throttled_until > now()))",
            &[],
        )?
        .unwrap_or_default();
    let mut text =
        String::from("# HELP nexus_campaigns Campaigns by state.\n# TYPE nexus_campaigns gauge\n");
    for state in [
        "draft",
        "scheduled",
        "running",
        "paused",
        "completed",
        "cancelled",
    ] {
        let n = counts["states"][state].as_i64().unwrap_or(0);
        text.push_str(&format!("nexus_campaigns{{state=\"{state}\"}} {n}\n"));
    }
    text.push_str(
        "# HELP nexus_campaign_records Records of the campaigns scheduled, running or paused, by status.\n\
         # TYPE nexus_campaign_records gauge\n",
    );
    for status in RECORD_STATUSES {
        let n = counts["records"][status].as_i64().unwrap_or(0);
        text.push_str(&format!(
            "nexus_campaign_records{{status=\"{status}\"}} {n}\n"
        ));
    }
    text.push_str(&format!(
        "# HELP nexus_campaigns_throttled Running campaigns paused by a provider's 429 now.\n\
         # TYPE nexus_campaigns_throttled gauge\nnexus_campaigns_throttled {}\n",
        counts["throttled"].as_i64().unwrap_or(0)
    ));
    Ok(text)
}

/// Records written per read of the export.
const EXPORT_PAGE: i64 = 1_000;

/// `GET /campaigns/{id}/records.csv`: the campaign's records as CSV (`clientId, address,
/// timeZone, status, attempts, providerId, reason, updatedAt`), in contact order, maybe only
/// those with `status`; written a page at a time as they are read.
pub struct Export {
    db: Db,
    id: String,
    status: Option<String>,
    name: String,
}

impl Export {
    /// Checks the key, the campaign and the filter: what fails here is an ordinary error
    /// answer, before anything is written.
    pub fn prepare(req: &Request, id: &str) -> ApiResult<Export> {
        let db = Db::open()?;
        let tenant = nexus_guest::api_key::authorize(req, &db, "outbound")?;
        let campaign = campaign_json(&db, tenant, id)?;
        let params = nexus_guest::spin::query(req)?;
        let status = params.get("status").cloned();
        if let Some(status) = &status
            && !RECORD_STATUSES.contains(&status.as_str())
        {
            return Err(ApiError::bad_parameter(format!(
                "`status` is a record status, not `{status}`"
            )));
        }
        let name: String = campaign["name"]
            .as_str()
            .unwrap_or("campaign")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Export {
            db,
            id: id.to_ascii_lowercase(),
            status,
            name,
        })
    }

    /// Writes the CSV; a failure midway ends the body unfinished (see `ResponseWriter`).
    pub fn write(self, out: spin_sdk::http::ResponseOutparam) {
        let disposition = format!("attachment; filename=\"{}-records.csv\"", self.name);
        let written = nexus_guest::streamed_body::ResponseWriter::start(
            out,
            &[
                ("content-type", "text/csv; charset=utf-8"),
                ("content-disposition", &disposition),
            ],
        )
        .and_then(|mut writer| {
            self.pages(&mut writer)?;
            writer.finish()
        });
        if let Err(err) = written {
            nexus_guest::spin::log_error("export the records", &err);
        }
    }

    fn pages(&self, writer: &mut nexus_guest::streamed_body::ResponseWriter) -> ApiResult<()> {
        let csv_error = |err: csv::Error| ApiError::internal("write the CSV", err);
        let mut lines = csv::Writer::from_writer(Vec::new());
        lines
            .write_record([
                "clientId",
                "address",
                "timeZone",
                "status",
                "attempts",
                "providerId",
                "reason",
                "updatedAt",
            ])
            .map_err(csv_error)?;
        let mut after = 0i64;
        loop {
            let rows = self.db.rows(
                "export the records",
                "SELECT contact_id, client_id, address, time_zone, status, attempts::text AS attempts, \
                   coalesce(provider_id, '') AS provider_id, coalesce(reason, '') AS reason, \
                   nexus_ts(updated_at) AS updated_at \
                 FROM campaign_records WHERE campaign_id = $1 AND contact_id > $2 \
                   AND ($3::text IS NULL OR status = $3) \
                 ORDER BY contact_id LIMIT $4",
                &[
                    uuid(self.id.as_str()),
                    ParameterValue::Int64(after),
                    opt_text(self.status.clone()),
                    ParameterValue::Int64(EXPORT_PAGE),
                ],
            )?;
            let mut count = 0;
            for row in rows.rows() {
                count += 1;
                after = row.get::<i64>("contact_id").unwrap_or(after);
                let field = |name: &str| row.get::<String>(name).unwrap_or_default();
                lines
                    .write_record([
                        field("client_id"),
                        field("address"),
                        field("time_zone"),
                        field("status"),
                        field("attempts"),
                        field("provider_id"),
                        field("reason"),
                        field("updated_at"),
                    ])
                    .map_err(csv_error)?;
            }
            let page = lines
                .into_inner()
                .map_err(|err| ApiError::internal("write the CSV", err.to_string()))?;
            writer.write(&page)?;
            lines = csv::Writer::from_writer(Vec::new());
            if count < EXPORT_PAGE {
                return Ok(());
            }
        }
    }
}
