//! A tenant's third-party bots (`tenants/{ccid}/bots`): where nexus sends each turn of a
//! conversation a bot holds, and the credentials it sends with them. A channel's routing rule
//! names the bot that answers first.
//!
//! Credentials are headers (`{"authorization": "Bearer ..."}`), sealed at rest under the
//! application's `credentials_key` (see `nexus_guest::sealed`) and never read back: the API
//! shows their names only, and the audit log records the names only.

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::body::Fields;
use nexus_guest::sealed;
use nexus_guest::secrets::new_id;
use nexus_guest::spin::{Db, Reply, opt_text, text, uuid};
use serde_json::{Map, Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::integrations::url;
use crate::{Tenant, audit, flag};

/// At most this many credential headers, each value at most [`MAX_HEADER_VALUE`] bytes.
const MAX_HEADERS: usize = 10;
const MAX_HEADER_VALUE: usize = 4096;
/// Headers nexus sets itself.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
];

fn tenant_param(tenant: &Tenant) -> ParameterValue {
    ParameterValue::Int64(tenant.id)
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The credential headers given (`credentials`), with lower-case names: `Some(None)` when given
/// as null (to remove them).
fn credentials(fields: &Fields) -> ApiResult<Option<Option<Map<String, Value>>>> {
    let refused = || {
        ApiError::bad_parameter(format!(
            "`credentials` is an object of at most {MAX_HEADERS} headers, name to text value \
             (e.g. {{\"authorization\": \"Bearer ...\"}}); {} are set by nexus",
            RESERVED_HEADERS.join(", ")
        ))
    };
    let given = match fields.others(&[]).get("credentials") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(refused()),
    };
    if given.len() > MAX_HEADERS {
        return Err(refused());
    }
    let mut headers = Map::new();
    for (name, value) in given {
        let name = name.to_ascii_lowercase();
        let value = value.as_str().ok_or_else(refused)?;
        let valid_value = value.len() <= MAX_HEADER_VALUE
            && !value.is_empty()
            && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if !is_header_name(&name) || RESERVED_HEADERS.contains(&name.as_str()) || !valid_value {
            return Err(refused());
        }
        headers.insert(name, Value::String(value.to_owned()));
    }
    Ok(Some(Some(headers)))
}

/// Seals `headers` for bot `id`; the sealed text and the header names.
fn seal(id: &str, headers: &Map<String, Value>) -> ApiResult<(String, Vec<String>)> {
    let keys = nexus_guest::at_rest::keyring()?;
    let plain = serde_json::to_vec(headers)
        .map_err(|err| ApiError::internal("encode the credentials", err))?;
    let sealed = keys
        .seal(&format!("bot:{id}"), &plain)
        .map_err(|err| match err {
            sealed::SealError::BadKey => ApiError::new(
                503,
                Code::Unavailable,
                format!("bot credentials cannot be stored: {err}"),
            ),
            other => ApiError::internal("seal the credentials", other),
        })?;
    Ok((sealed, headers.keys().cloned().collect()))
}

fn timeout(fields: &Fields) -> ApiResult<Option<i32>> {
    match fields.text("responseTimeoutSeconds") {
        None => Ok(None),
        Some(text) => text
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=30).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_parameter("`responseTimeoutSeconds` is a whole number from 1 to 30")
            }),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no bot is named `{name}`"))
}

pub fn list(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let bots = db.json_rows(
        "list bots",
        "SELECT nexus_bot_json(b) FROM bots b WHERE tenant_id = $1 ORDER BY name",
        &[tenant_param(tenant)],
    )?;
    Reply::ok(json!({ "bots": bots }))
}

pub fn get(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Reply> {
    let bot = db
        .json_row(
            "read the bot",
            "SELECT nexus_bot_json(b) FROM bots b WHERE tenant_id = $1 AND name = $2",
            &[tenant_param(tenant), text(name)],
        )?
        .ok_or_else(|| not_found(name))?;
    Reply::ok(bot)
}

/// Where a bot runs: a third-party `url`, or a tenant `component` of kind bot (one of them).
fn target(
    db: &Db,
    tenant: &Tenant,
    fields: &Fields,
) -> ApiResult<(Option<String>, Option<String>)> {
    let url = url(fields)?;
    let component = fields.text("component");
    if url.is_some() && component.is_some() {
        return Err(ApiError::bad_parameter(
            "a bot is either a third-party `url` or a tenant `component`, not both",
        ));
    }
    if let Some(component) = &component {
        crate::components::require_bot_component(db, tenant, component)?;
    }
    Ok((url, component))
}

/// Registers a bot: `name`, `url` (or `component`: a tenant bot component), and optionally
/// `nickname`, `credentials`, `responseTimeoutSeconds` (10) and `enabled` (true).
pub fn create(db: &Db, tenant: &Tenant, fields: &Fields) -> ApiResult<Reply> {
    let name = fields.required_text("name")?;
    if !is_name(&name) {
        return Err(ApiError::bad_parameter(
            "`name` is 1 to 128 letters, digits and _ . : - (starting with a letter or digit)",
        ));
    }
    let (url, component) = target(db, tenant, fields)?;
    if url.is_none() && component.is_none() {
        return Err(ApiError::bad_parameter(
            "`url` (a third-party bot) or `component` (a tenant bot component) is required",
        ));
    }
    let nickname = fields
        .bounded_text("nickname", 100)?
        .unwrap_or_else(|| name.clone());
    let id = new_id();
    let sealed = match credentials(fields)?.flatten() {
        Some(headers) => Some(seal(&id, &headers)?),
        None => None,
    };
    let names = sealed
        .as_ref()
        .map(|(_, names)| names.clone())
        .unwrap_or_default();
    let bot = db.transaction(|db| {
        let bot = db
            .json_row(
                "register the bot",
                "INSERT INTO bots AS b (id, tenant_id, name, nickname, url, credentials, credential_names, \
                   response_timeout_seconds, enabled, component) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, 10), coalesce($9, true), $10) \
                 RETURNING nexus_bot_json(b)",
                &[
                    uuid(&id),
                    tenant_param(tenant),
                    text(&name),
                    text(&nickname),
                    opt_text(url.clone()),
                    opt_text(sealed.as_ref().map(|(s, _)| s.clone())),
                    ParameterValue::ArrayStr(names.iter().cloned().map(Some).collect()),
                    timeout(fields)?.map_or(ParameterValue::DbNull, ParameterValue::Int32),
                    flag(fields, "enabled")?.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                    opt_text(component.clone()),
                ],
            )?
            .ok_or_else(|| ApiError::internal("register the bot", "no row"))?;
        audit(db, (Some(tenant.id), &tenant.ccid), "create", "bot", &name, json!({ "url": url, "component": component, "credentialNames": names }))?;
        Ok(bot)
    })?;
    Reply::created(bot)
}

/// Changes what is given; `credentials` replaces the headers (null removes them).
pub fn update(db: &Db, tenant: &Tenant, name: &str, fields: &Fields) -> ApiResult<Reply> {
    let (url, component) = target(db, tenant, fields)?;
    let nickname = fields.bounded_text("nickname", 100)?;
    let timeout = timeout(fields)?;
    let enabled = flag(fields, "enabled")?;
    let given = credentials(fields)?;
    db.transaction(|db| {
        let id = db
            .rows(
                "find the bot",
                "SELECT id::text AS id FROM bots WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
                &[tenant_param(tenant), text(name)],
            )?
            .rows()
            .next()
            .and_then(|row| row.get::<String>("id"))
            .ok_or_else(|| not_found(name))?;
        // (replace them?, the sealed headers, their names)
        let (replace, sealed, names) = match &given {
            None => (false, None, Vec::new()),
            Some(None) => (true, None, Vec::new()),
            Some(Some(headers)) => {
                let (sealed, names) = seal(&id, headers)?;
                (true, Some(sealed), names)
            }
        };
        let bot = db
            .json_row(
                "update the bot",
                "UPDATE bots b SET url = CASE WHEN $10::text IS NOT NULL THEN NULL ELSE coalesce($3, url) END, \
                   component = CASE WHEN $3::text IS NOT NULL THEN NULL ELSE coalesce($10, component) END, \
                   nickname = coalesce($4, nickname), \
                   response_timeout_seconds = coalesce($5, response_timeout_seconds), enabled = coalesce($6, enabled), \
                   credentials = CASE WHEN $7 THEN $8 ELSE credentials END, \
                   credential_names = CASE WHEN $7 THEN $9 ELSE credential_names END, updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING nexus_bot_json(b)",
                &[
                    tenant_param(tenant),
                    uuid(&id),
                    opt_text(url.clone()),
                    opt_text(nickname.clone()),
                    timeout.map_or(ParameterValue::DbNull, ParameterValue::Int32),
                    enabled.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                    ParameterValue::Boolean(replace),
                    opt_text(sealed),
                    ParameterValue::ArrayStr(names.iter().cloned().map(Some).collect()),
                    opt_text(component.clone()),
                ],
            )?
            .ok_or_else(|| not_found(name))?;
        let mut detail = json!({ "url": url, "component": component, "nickname": nickname, "responseTimeoutSeconds": timeout, "enabled": enabled });
        if replace {
            detail["credentialNames"] = json!(names);
        }
        audit(db, (Some(tenant.id), &tenant.ccid), "update", "bot", name, detail)?;
        Reply::ok(bot)
    })
}

/// Deletes a bot no routing rule names.
pub fn delete(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Reply> {
    db.transaction(|db| {
        let in_use = db.json_rows(
            "find the rules that name the bot",
            "SELECT to_jsonb(channel_id) FROM routing_rules WHERE tenant_id = $1 AND bot = $2",
            &[tenant_param(tenant), text(name)],
        )?;
        if !in_use.is_empty() {
            return Err(ApiError::conflict(format!(
                "the bot `{name}` answers first on channels {}: change their routing first",
                Value::Array(in_use)
            )));
        }
        let deleted = db.execute(
            "delete the bot",
            "DELETE FROM bots WHERE tenant_id = $1 AND name = $2",
            &[tenant_param(tenant), text(name)],
        )?;
        if deleted == 0 {
            return Err(not_found(name));
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "delete",
            "bot",
            name,
            Value::Null,
        )
    })?;
    Reply::ok(json!({ "deleted": name }))
}

/// Whether the tenant has a bot of this name (for a routing rule that names one).
pub fn exists(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<bool> {
    Ok(db
        .rows(
            "find the bot",
            "SELECT 1 FROM bots WHERE tenant_id = $1 AND name = $2",
            &[tenant_param(tenant), text(name)],
        )?
        .rows()
        .next()
        .is_some())
}
