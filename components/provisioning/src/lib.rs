//! The provisioning API (`/nexus/v3/provisioning/...`): tenants keyed by their contact-center id,
//! their API keys (stored hashed, one permission each, enabled or not, expiring or not, copied),
//! their channels (with a per-channel secret, rotated with an overlap), and the audit of every
//! change. Every request carries `Authorization: Bearer <admin_token>`; the component refuses all
//! of them while the application's `admin_token` variable is empty.
//!
//! The OpenAPI description is `openapi/provisioning.json`.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

mod bots;
mod components;
mod designer;
mod integrations;

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::at_rest;
use nexus_guest::body::Fields;
use nexus_guest::secrets::{self, new_id};
use nexus_guest::spin::{
    Db, Reply, header, is_uuid, jsonb, opt_text, path_segments, query, reference_id, respond, text,
    uuid,
};
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Method, Request};
use spin_sdk::http_component;
use spin_sdk::pg4::ParameterValue;

/// The largest provisioning request body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a channel's previous secret stays valid after a rotation, unless the caller says.
const DEFAULT_SECRET_OVERLAP_SECONDS: i64 = 24 * 3600;
/// The longest overlap a rotation may ask for: a week.
const MAX_SECRET_OVERLAP_SECONDS: i64 = 7 * 24 * 3600;

/// Serves `/nexus/v3/provisioning/...`.
#[http_component]
fn provisioning(req: Request) -> impl IntoResponse {
    let reference = reference_id(&req);
    respond(&reference, serve(&req))
}

fn serve(req: &Request) -> ApiResult<Reply> {
    nexus_guest::spin::require_admin(req)?;
    let path = path_segments(req);
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let db = Db::open()?;
    let method = req.method();
    match (method, segments.as_slice()) {
        (Method::Post, ["secrets", "reseal"]) => reseal(&db),
        (Method::Get, ["tenants"]) => list_tenants(&db),
        (Method::Post, ["tenants"]) => create_tenant(&db, &fields(req)?),
        (Method::Get, ["tenants", ccid]) => Reply::ok(tenant_json(&db, &tenant(&db, ccid)?)?),
        (Method::Patch, ["tenants", ccid]) => {
            update_tenant(&db, &tenant(&db, ccid)?, &fields(req)?)
        }
        (Method::Delete, ["tenants", ccid]) => delete_tenant(&db, &tenant(&db, ccid)?),
        (Method::Post, ["tenants", ccid, "rotate-token-secret"]) => {
            rotate_token_secret(&db, &tenant(&db, ccid)?)
        }
        (Method::Get, ["tenants", ccid, "api-keys"]) => list_api_keys(&db, &tenant(&db, ccid)?),
        (Method::Post, ["tenants", ccid, "api-keys"]) => {
            create_api_key(&db, &tenant(&db, ccid)?, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "api-keys", id]) => {
            Reply::ok(api_key(&db, &tenant(&db, ccid)?, id)?)
        }
        (Method::Patch, ["tenants", ccid, "api-keys", id]) => {
            update_api_key(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Delete, ["tenants", ccid, "api-keys", id]) => {
            delete_api_key(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Post, ["tenants", ccid, "api-keys", id, "copy"]) => {
            copy_api_key(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Get, ["tenants", ccid, "channels"]) => list_channels(&db, &tenant(&db, ccid)?),
        (Method::Post, ["tenants", ccid, "channels"]) => {
            create_channel(&db, &tenant(&db, ccid)?, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "channels", id]) => {
            Reply::ok(channel(&db, &tenant(&db, ccid)?, id)?)
        }
        (Method::Patch, ["tenants", ccid, "channels", id]) => {
            update_channel(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Delete, ["tenants", ccid, "channels", id]) => {
            delete_channel(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Post, ["tenants", ccid, "channels", id, "rotate-secret"]) => {
            rotate_channel_secret(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "audit"]) => audit_log(&db, &tenant(&db, ccid)?, req),
        (Method::Get, ["tenants", ccid, "agents"]) => {
            designer::list_agents(&db, &tenant(&db, ccid)?)
        }
        (Method::Post, ["tenants", ccid, "agents"]) => {
            designer::create_agent(&db, &tenant(&db, ccid)?, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "agents", id]) => {
            designer::agent(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Patch, ["tenants", ccid, "agents", id]) => {
            designer::update_agent(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Delete, ["tenants", ccid, "agents", id]) => {
            designer::delete_agent(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Get, ["tenants", ccid, "queues"]) => {
            designer::list_queues(&db, &tenant(&db, ccid)?)
        }
        (Method::Put, ["tenants", ccid, "queues", name]) => {
            designer::put_queue(&db, &tenant(&db, ccid)?, name, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "queues", name]) => {
            designer::queue(&db, &tenant(&db, ccid)?, name)
        }
        (Method::Delete, ["tenants", ccid, "queues", name]) => {
            designer::delete_queue(&db, &tenant(&db, ccid)?, name)
        }
        (Method::Get, ["tenants", ccid, "webhooks"]) => {
            integrations::list_webhooks(&db, &tenant(&db, ccid)?)
        }
        (Method::Post, ["tenants", ccid, "webhooks"]) => {
            integrations::create_webhook(&db, &tenant(&db, ccid)?, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "webhooks", id]) => {
            integrations::webhook(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Patch, ["tenants", ccid, "webhooks", id]) => {
            integrations::update_webhook(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Delete, ["tenants", ccid, "webhooks", id]) => {
            integrations::delete_webhook(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Post, ["tenants", ccid, "webhooks", id, "rotate-secret"]) => {
            integrations::rotate_webhook_secret(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "jobs"]) => {
            integrations::list_jobs(&db, &tenant(&db, ccid)?, &query(req)?)
        }
        (Method::Get, ["tenants", ccid, "jobs", id]) => {
            integrations::job(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Post, ["tenants", ccid, "jobs", id, "replay"]) => {
            integrations::replay_job(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Get, ["tenants", ccid, "bots"]) => bots::list(&db, &tenant(&db, ccid)?),
        (Method::Post, ["tenants", ccid, "bots"]) => {
            bots::create(&db, &tenant(&db, ccid)?, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "bots", name]) => bots::get(&db, &tenant(&db, ccid)?, name),
        (Method::Patch, ["tenants", ccid, "bots", name]) => {
            bots::update(&db, &tenant(&db, ccid)?, name, &fields(req)?)
        }
        (Method::Delete, ["tenants", ccid, "bots", name]) => {
            bots::delete(&db, &tenant(&db, ccid)?, name)
        }
        (Method::Get, ["tenants", ccid, "components"]) => {
            components::list(&db, &tenant(&db, ccid)?)
        }
        (Method::Get, ["tenants", ccid, "components", name]) => {
            components::get(&db, &tenant(&db, ccid)?, name)
        }
        (Method::Post, ["tenants", ccid, "components", name, "versions"]) => {
            components::upload(&db, &tenant(&db, ccid)?, name, &query(req)?, req.body())
        }
        (Method::Post, ["tenants", ccid, "components", name, "activate"]) => {
            components::activate(&db, &tenant(&db, ccid)?, name, &fields(req)?)
        }
        (Method::Post, ["tenants", ccid, "components", name, "rollback"]) => {
            components::rollback(&db, &tenant(&db, ccid)?, name)
        }
        (Method::Patch, ["tenants", ccid, "components", name]) => {
            components::update(&db, &tenant(&db, ccid)?, name, &fields(req)?)
        }
        (Method::Delete, ["tenants", ccid, "components", name]) => {
            components::delete(&db, &tenant(&db, ccid)?, name)
        }
        (Method::Get, ["tenants", ccid, "channels", id, "transforms"]) => {
            components::channel_transforms(&db, &tenant(&db, ccid)?, id)
        }
        (Method::Put, ["tenants", ccid, "channels", id, "transforms"]) => {
            components::set_channel_transforms(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Put, ["tenants", ccid, "channels", id, "routing"]) => {
            designer::put_rule(&db, &tenant(&db, ccid)?, id, &fields(req)?)
        }
        (Method::Get, ["tenants", ccid, "channels", id, "routing"]) => {
            designer::rule(&db, &tenant(&db, ccid)?, id)
        }
        _ => Err(ApiError::new(
            404,
            Code::NotFound,
            format!("no such operation: {method} /{}", path.join("/")),
        )),
    }
}

/// The admin token must be configured and presented.
fn fields(req: &Request) -> ApiResult<Fields> {
    Fields::parse(
        header(req, "content-type").as_deref(),
        req.body(),
        MAX_BODY_BYTES,
    )
}

/// A tenant, by the ccid in the path.
pub(crate) struct Tenant {
    pub(crate) id: i64,
    pub(crate) ccid: String,
}

fn tenant(db: &Db, ccid: &str) -> ApiResult<Tenant> {
    let rows = db.rows(
        "find the tenant",
        "SELECT id FROM tenants WHERE ccid = $1",
        &[text(ccid)],
    )?;
    let id = rows
        .rows()
        .next()
        .and_then(|row| row.get::<i64>("id"))
        .ok_or_else(|| {
            ApiError::new(
                404,
                Code::InvalidContactCenter,
                format!("no tenant has the ccid `{ccid}`"),
            )
        })?;
    Ok(Tenant {
        id,
        ccid: ccid.to_owned(),
    })
}

fn tenant_json(db: &Db, tenant: &Tenant) -> ApiResult<Value> {
    db.json_row(
        "read the tenant",
        "SELECT nexus_tenant_json(t) FROM tenants t WHERE id = $1",
        &[ParameterValue::Int64(tenant.id)],
    )?
    .ok_or_else(|| ApiError::not_found("the tenant is gone"))
}

/// Records a provisioning change, in the transaction that makes it.
pub(crate) fn audit(
    db: &Db,
    tenant: (Option<i64>, &str),
    action: &str,
    entity: &str,
    entity_id: &str,
    detail: Value,
) -> ApiResult<()> {
    db.execute(
        "audit the change",
        "INSERT INTO provisioning_audit (tenant_id, ccid, actor, action, entity, entity_id, detail) \
         VALUES ($1, $2, 'admin', $3, $4, $5, $6)",
        &[
            tenant.0.map_or(ParameterValue::DbNull, ParameterValue::Int64),
            text(tenant.1),
            text(action),
            text(entity),
            text(entity_id),
            jsonb(&detail),
        ],
    )?;
    Ok(())
}

fn new_secret() -> ApiResult<String> {
    secrets::new_secret().map_err(|err| ApiError::internal("no randomness", err))
}

/// A boolean field: `true`/`false` in JSON or in a form.
pub(crate) fn flag(fields: &Fields, name: &str) -> ApiResult<Option<bool>> {
    match fields.text(name).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_parameter(format!(
            "`{name}` must be true or false"
        ))),
    }
}

fn list_tenants(db: &Db) -> ApiResult<Reply> {
    let tenants = db.json_rows(
        "list tenants",
        "SELECT nexus_tenant_json(t) FROM tenants t ORDER BY ccid",
        &[],
    )?;
    Reply::ok(json!({ "tenants": tenants }))
}

fn create_tenant(db: &Db, fields: &Fields) -> ApiResult<Reply> {
    let ccid = fields.required_text("ccid")?;
    let name = fields.text("name").unwrap_or_else(|| ccid.clone());
    let token_secret = new_secret()?;
    db.transaction(|db| {
        let tenant = db
            .json_row(
                "create the tenant",
                "INSERT INTO tenants (ccid, name, token_secret) VALUES ($1, $2, $3) \
                 RETURNING nexus_tenant_json(tenants)",
                &[text(&ccid), text(&name), text(&token_secret)],
            )?
            .ok_or_else(|| ApiError::internal("create the tenant", "no row"))?;
        let id = tenant_id(db, &ccid)?;
        audit(
            db,
            (Some(id), &ccid),
            "create",
            "tenant",
            &ccid,
            json!({ "name": name }),
        )?;
        Reply::created(tenant)
    })
}

fn tenant_id(db: &Db, ccid: &str) -> ApiResult<i64> {
    tenant(db, ccid).map(|tenant| tenant.id)
}

fn update_tenant(db: &Db, tenant: &Tenant, fields: &Fields) -> ApiResult<Reply> {
    let name = fields.bounded_text("name", 200)?;
    let enabled = flag(fields, "enabled")?;
    if fields.text("ccid").is_some() {
        return Err(ApiError::bad_parameter("a tenant's ccid cannot change"));
    }
    db.transaction(|db| {
        let updated = db
            .json_row(
                "update the tenant",
                "UPDATE tenants SET name = coalesce($2::text, name), \
                 enabled = coalesce($3::boolean, enabled), updated_at = now() \
                 WHERE id = $1 RETURNING nexus_tenant_json(tenants)",
                &[
                    ParameterValue::Int64(tenant.id),
                    opt_text(name.clone()),
                    enabled.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                ],
            )?
            .ok_or_else(|| ApiError::not_found("the tenant is gone"))?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "update",
            "tenant",
            &tenant.ccid,
            json!({ "name": name, "enabled": enabled }),
        )?;
        Reply::ok(updated)
    })
}

fn delete_tenant(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    db.transaction(|db| {
        db.execute(
            "delete the tenant",
            "DELETE FROM tenants WHERE id = $1",
            &[ParameterValue::Int64(tenant.id)],
        )?;
        audit(
            db,
            (None, &tenant.ccid),
            "delete",
            "tenant",
            &tenant.ccid,
            json!({}),
        )?;
        Reply::ok(json!({ "deleted": tenant.ccid }))
    })
}

/// A new token secret: every chat client token the tenant issued stops verifying at once.
fn rotate_token_secret(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let secret = new_secret()?;
    db.transaction(|db| {
        db.execute(
            "rotate the token secret",
            "UPDATE tenants SET token_secret = $2, updated_at = now() WHERE id = $1",
            &[ParameterValue::Int64(tenant.id), text(&secret)],
        )?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "rotate-token-secret",
            "tenant",
            &tenant.ccid,
            json!({}),
        )?;
        Reply::ok(tenant_json(db, tenant)?)
    })
}

fn list_api_keys(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let keys = db.json_rows(
        "list API keys",
        "SELECT nexus_api_key_json(k) FROM api_keys k WHERE tenant_id = $1 ORDER BY name",
        &[ParameterValue::Int64(tenant.id)],
    )?;
    Reply::ok(json!({ "apiKeys": keys }))
}

fn key_id(id: &str) -> ApiResult<&str> {
    if is_uuid(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no API key has the id `{id}`")))
    }
}

fn api_key(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Value> {
    db.json_row(
        "read the API key",
        "SELECT nexus_api_key_json(k) FROM api_keys k WHERE tenant_id = $1 AND id = $2",
        &[ParameterValue::Int64(tenant.id), uuid(key_id(id)?)],
    )?
    .ok_or_else(|| ApiError::not_found(format!("no API key has the id `{id}`")))
}

/// Inserts a key and returns its JSON with the key itself, which is never shown again.
fn insert_api_key(
    db: &Db,
    tenant: &Tenant,
    name: &str,
    permission: &str,
    enabled: bool,
    expires_at: Option<String>,
    copied_from: Option<&str>,
) -> ApiResult<Value> {
    let key = secrets::new_api_key().map_err(|err| ApiError::internal("no randomness", err))?;
    let id = new_id();
    let mut created = db
        .json_row(
            "create the API key",
            "INSERT INTO api_keys (id, tenant_id, name, permission, key_hash, key_prefix, enabled, expires_at, copied_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz, $9) \
             RETURNING nexus_api_key_json(api_keys)",
            &[
                uuid(&id),
                ParameterValue::Int64(tenant.id),
                text(name),
                text(permission),
                ParameterValue::Binary(key.hash),
                text(&key.display_prefix),
                ParameterValue::Boolean(enabled),
                opt_text(expires_at),
                copied_from.map_or(ParameterValue::DbNull, uuid),
            ],
        )?
        .ok_or_else(|| ApiError::internal("create the API key", "no row"))?;
    if let Some(object) = created.as_object_mut() {
        object.insert("key".into(), Value::String(key.key));
    }
    Ok(created)
}

fn permission(fields: &Fields) -> ApiResult<String> {
    let permission = fields.required_text("permission")?;
    match permission.as_str() {
        "chat" | "securemail" | "history" | "outbound" => Ok(permission),
        other => Err(ApiError::bad_parameter(format!(
            "`permission` is chat, securemail, history or outbound, not `{other}`"
        ))),
    }
}

fn create_api_key(db: &Db, tenant: &Tenant, fields: &Fields) -> ApiResult<Reply> {
    let name = fields.required_text("name")?;
    let permission = permission(fields)?;
    let enabled = flag(fields, "enabled")?.unwrap_or(true);
    let expires_at = fields.timestamp("expiresAt")?;
    db.transaction(|db| {
        let created = insert_api_key(db, tenant, &name, &permission, enabled, expires_at.clone(), None)?;
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "create",
            "api-key",
            &id,
            json!({ "name": name, "permission": permission, "enabled": enabled, "expiresAt": expires_at }),
        )?;
        Reply::created(created)
    })
}

fn update_api_key(db: &Db, tenant: &Tenant, id: &str, fields: &Fields) -> ApiResult<Reply> {
    if fields.text("permission").is_some() {
        return Err(ApiError::bad_parameter(
            "an API key's permission is fixed when it is created",
        ));
    }
    let name = fields.bounded_text("name", 200)?;
    let enabled = flag(fields, "enabled")?;
    // `expiresAt: null` in JSON (or `never` in a form) removes the expiry.
    let clear_expiry = fields.text("expiresAt").as_deref() == Some("never");
    let expires_at = if clear_expiry {
        None
    } else {
        fields.timestamp("expiresAt")?
    };
    db.transaction(|db| {
        let updated = db
            .json_row(
                "update the API key",
                "UPDATE api_keys SET name = coalesce($3::text, name), \
                 enabled = coalesce($4::boolean, enabled), \
                 expires_at = CASE WHEN $6::boolean THEN NULL ELSE coalesce($5::text::timestamptz, expires_at) END, \
                 updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING nexus_api_key_json(api_keys)",
                &[
                    ParameterValue::Int64(tenant.id),
                    uuid(key_id(id)?),
                    opt_text(name.clone()),
                    enabled.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                    opt_text(expires_at.clone().filter(|_| !clear_expiry)),
                    ParameterValue::Boolean(clear_expiry),
                ],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no API key has the id `{id}`")))?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "update",
            "api-key",
            id,
            json!({ "name": name, "enabled": enabled, "expiresAt": expires_at }),
        )?;
        Reply::ok(updated)
    })
}

fn delete_api_key(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    db.transaction(|db| {
        let deleted = db.execute(
            "delete the API key",
            "DELETE FROM api_keys WHERE tenant_id = $1 AND id = $2",
            &[ParameterValue::Int64(tenant.id), uuid(key_id(id)?)],
        )?;
        if deleted == 0 {
            return Err(ApiError::not_found(format!("no API key has the id `{id}`")));
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "delete",
            "api-key",
            id,
            json!({}),
        )?;
        Reply::ok(json!({ "deleted": id }))
    })
}

/// A copy of a key: a new key with the same permission, state and expiry, named `<name>_N` with
/// the first free N, as the original product names copies.
fn copy_api_key(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    db.transaction(|db| {
        let original = api_key(db, tenant, id)?;
        let name = original["name"].as_str().unwrap_or_default();
        let taken = db.rows(
            "name the copy",
            "SELECT name FROM api_keys WHERE tenant_id = $1 AND name LIKE $2",
            &[
                ParameterValue::Int64(tenant.id),
                text(format!("{}\\_%", like_escape(name))),
            ],
        )?;
        let taken: Vec<String> = taken
            .rows()
            .filter_map(|row| row.get::<String>("name"))
            .collect();
        let copy_name = (1..)
            .map(|n| format!("{name}_{n}"))
            .find(|candidate| !taken.contains(candidate))
            .unwrap_or_default();
        let created = insert_api_key(
            db,
            tenant,
            &copy_name,
            original["permission"].as_str().unwrap_or_default(),
            original["enabled"].as_bool().unwrap_or(true),
            original["expiresAt"].as_str().map(str::to_owned),
            Some(id),
        )?;
        let new_id = created["id"].as_str().unwrap_or_default().to_owned();
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "copy",
            "api-key",
            &new_id,
            json!({ "from": id, "name": copy_name }),
        )?;
        Reply::created(created)
    })
}

fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn list_channels(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let channels = db.json_rows(
        "list channels",
        "SELECT nexus_channel_json(c) FROM channels c WHERE tenant_id = $1 ORDER BY name",
        &[ParameterValue::Int64(tenant.id)],
    )?;
    Reply::ok(json!({ "channels": channels }))
}

pub(crate) fn channel_id(id: &str) -> ApiResult<&str> {
    if is_uuid(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no channel has the id `{id}`")))
    }
}

fn channel(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Value> {
    db.json_row(
        "read the channel",
        "SELECT nexus_channel_json(c) FROM channels c WHERE tenant_id = $1 AND id = $2",
        &[ParameterValue::Int64(tenant.id), uuid(channel_id(id)?)],
    )?
    .ok_or_else(|| ApiError::not_found(format!("no channel has the id `{id}`")))
}

fn channel_type(fields: &Fields) -> ApiResult<String> {
    let kind = fields.required_text("type")?;
    match kind.as_str() {
        "chat" | "messaging" | "sms" | "email" | "securemail" => Ok(kind),
        other => Err(ApiError::bad_parameter(format!(
            "`type` is chat, messaging, sms, email or securemail, not `{other}`"
        ))),
    }
}

/// A channel's (new) secret. An SMS or email channel's is its provider's, given in `secret`:
/// the SMS aggregator's auth token, the email provider's webhook signing key. nexus makes every
/// other channel's.
fn channel_secret(kind: &str, fields: &Fields) -> ApiResult<String> {
    match (kind, fields.bounded_text("secret", 256)?) {
        ("sms" | "email", Some(secret)) => Ok(secret),
        ("sms" | "email", None) => Err(ApiError::bad_parameter(
            "an sms or email channel needs `secret`: the provider's auth token or webhook signing key",
        )),
        (_, Some(_)) => Err(ApiError::bad_parameter(
            "only an sms or email channel takes a `secret`; nexus makes the others'",
        )),
        (_, None) => new_secret(),
    }
}

/// A provider API's credentials (`credentials`, an object): written, never shown again.
fn credentials(fields: &Fields) -> ApiResult<Option<Value>> {
    Ok(fields.object("credentials")?.map(Value::Object))
}

/// What the audit keeps of credentials: their names.
fn credential_names(credentials: Option<&Value>) -> Value {
    credentials
        .and_then(Value::as_object)
        .map(|c| Value::from(c.keys().cloned().collect::<Vec<_>>()))
        .unwrap_or(Value::Null)
}

/// The settings that name where nexus sends a channel's messages: a messaging client's
/// `webhookUrl`, an SMS or email provider's `apiBaseUrl`.
const OUTBOUND_SETTINGS: [&str; 2] = ["webhookUrl", "apiBaseUrl"];

/// A channel's settings, refused when a URL nexus will send to points at a non-public address
/// (see nexus_guest::private_address; the nexus host checks the resolved address again when it
/// sends). Checked whatever the channel's type, as an update does not restate it.
fn channel_settings(fields: &Fields) -> ApiResult<Option<serde_json::Map<String, Value>>> {
    let settings = fields.object("settings")?;
    if let Some(settings) = &settings {
        let allowed = nexus_guest::spin::private_outbound_allowed();
        for name in OUTBOUND_SETTINGS {
            if let Some(url) = settings.get(name).and_then(Value::as_str) {
                nexus_guest::private_address::check_url(
                    &format!("settings.{name}"),
                    url.trim(),
                    allowed,
                )?;
            }
        }
    }
    Ok(settings)
}

fn create_channel(db: &Db, tenant: &Tenant, fields: &Fields) -> ApiResult<Reply> {
    let kind = channel_type(fields)?;
    let name = fields.required_text("name")?;
    let settings = Value::Object(channel_settings(fields)?.unwrap_or_default());
    let secret = channel_secret(&kind, fields)?;
    let credentials = credentials(fields)?;
    let id = new_id();
    // Stored sealed, bound to the channel; the caller sees the secret once, in this answer.
    let keys = at_rest::keyring()?;
    let sealed_secret = at_rest::seal_secret(&keys, &id, &secret)?;
    let sealed_credentials = credentials
        .as_ref()
        .map(|credentials| at_rest::seal_credentials(&keys, &id, credentials))
        .transpose()?;
    db.transaction(|db| {
        let mut created = db
            .json_row(
                "create the channel",
                "INSERT INTO channels (id, tenant_id, type, name, secret, settings, credentials) \
                 VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, '{}'::jsonb)) RETURNING nexus_channel_json(channels)",
                &[
                    uuid(&id),
                    ParameterValue::Int64(tenant.id),
                    text(&kind),
                    text(&name),
                    text(&sealed_secret),
                    jsonb(&settings),
                    sealed_credentials.as_ref().map_or(ParameterValue::DbNull, jsonb),
                ],
            )?
            .ok_or_else(|| ApiError::internal("create the channel", "no row"))?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "create",
            "channel",
            &id,
            json!({ "type": kind, "name": name, "credentials": credential_names(credentials.as_ref()) }),
        )?;
        if let Some(object) = created.as_object_mut() {
            object.insert("secret".into(), Value::String(secret.clone()));
        }
        Reply::created(created)
    })
}

fn update_channel(db: &Db, tenant: &Tenant, id: &str, fields: &Fields) -> ApiResult<Reply> {
    if fields.text("type").is_some() {
        return Err(ApiError::bad_parameter("a channel's type cannot change"));
    }
    let name = fields.text("name");
    let enabled = flag(fields, "enabled")?;
    let settings = channel_settings(fields)?.map(Value::Object);
    let credentials = credentials(fields)?;
    let channel = channel_id(id)?;
    let sealed_credentials = credentials
        .as_ref()
        .map(|credentials| at_rest::seal_credentials(&at_rest::keyring()?, channel, credentials))
        .transpose()?;
    db.transaction(|db| {
        let updated = db
            .json_row(
                "update the channel",
                "UPDATE channels SET name = coalesce($3::text, name), \
                 enabled = coalesce($4::boolean, enabled), \
                 settings = coalesce($5::jsonb, settings), \
                 credentials = coalesce($6::jsonb, credentials), updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING nexus_channel_json(channels)",
                &[
                    ParameterValue::Int64(tenant.id),
                    uuid(channel_id(id)?),
                    opt_text(name.clone()),
                    enabled.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                    settings.as_ref().map_or(ParameterValue::DbNull, jsonb),
                    sealed_credentials
                        .as_ref()
                        .map_or(ParameterValue::DbNull, jsonb),
                ],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no channel has the id `{id}`")))?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "update",
            "channel",
            id,
            json!({ "name": name, "enabled": enabled, "settings": settings,
                    "credentials": credential_names(credentials.as_ref()) }),
        )?;
        Reply::ok(updated)
    })
}

fn delete_channel(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    db.transaction(|db| {
        let deleted = db
            .execute(
                "delete the channel",
                "DELETE FROM channels WHERE tenant_id = $1 AND id = $2",
                &[ParameterValue::Int64(tenant.id), uuid(channel_id(id)?)],
            )
            .map_err(|err| {
                if err.code == Code::Conflict {
                    ApiError::conflict(
                        "the channel has interactions in the history: disable it instead",
                    )
                } else {
                    err
                }
            })?;
        if deleted == 0 {
            return Err(ApiError::not_found(format!("no channel has the id `{id}`")));
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "delete",
            "channel",
            id,
            json!({}),
        )?;
        Reply::ok(json!({ "deleted": id }))
    })
}

/// A new channel secret. The previous one stays valid for `overlapSeconds` (a day unless said),
/// so that the far side can move to the new one without a window of refused requests.
/// How long a rotated secret keeps working (`overlapSeconds`).
pub(crate) fn overlap_seconds(fields: &Fields) -> ApiResult<i64> {
    match fields.text("overlapSeconds") {
        None => Ok(DEFAULT_SECRET_OVERLAP_SECONDS),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|seconds| (0..=MAX_SECRET_OVERLAP_SECONDS).contains(seconds))
            .ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "`overlapSeconds` is a number of seconds from 0 to {MAX_SECRET_OVERLAP_SECONDS}"
                ))
            }),
    }
}

fn rotate_channel_secret(db: &Db, tenant: &Tenant, id: &str, fields: &Fields) -> ApiResult<Reply> {
    let overlap = overlap_seconds(fields)?;
    let kind = db
        .rows(
            "read the channel's type",
            "SELECT type FROM channels WHERE tenant_id = $1 AND id = $2",
            &[ParameterValue::Int64(tenant.id), uuid(channel_id(id)?)],
        )?
        .rows()
        .next()
        .and_then(|row| row.get::<String>("type"))
        .ok_or_else(|| ApiError::not_found(format!("no channel has the id `{id}`")))?;
    let secret = channel_secret(&kind, fields)?;
    let sealed_secret = at_rest::seal_secret(&at_rest::keyring()?, channel_id(id)?, &secret)?;
    db.transaction(|db| {
        let mut rotated = db
            .json_row(
                "rotate the channel secret",
                "UPDATE channels SET previous_secret = secret, \
                 previous_secret_expires_at = now() + make_interval(secs => $3), \
                 secret = $4, updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING nexus_channel_json(channels)",
                &[
                    ParameterValue::Int64(tenant.id),
                    uuid(channel_id(id)?),
                    ParameterValue::Floating64(overlap as f64),
                    text(&sealed_secret),
                ],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no channel has the id `{id}`")))?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "rotate-secret",
            "channel",
            id,
            json!({ "overlapSeconds": overlap }),
        )?;
        if let Some(object) = rotated.as_object_mut() {
            object.insert("secret".into(), Value::String(secret.clone()));
        }
        Reply::ok(rotated)
    })
}

/// The tenant's audit, newest first, `limit` (≤ 500) at a time before the id `before`.
fn audit_log(db: &Db, tenant: &Tenant, req: &Request) -> ApiResult<Reply> {
    let params = query(req)?;
    let limit = match params.get("limit") {
        None => 100,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::bad_parameter("`limit` is from 1 to 500"))?,
    };
    let before = match params.get("before") {
        None => i64::MAX,
        Some(text) => text
            .parse::<i64>()
            .map_err(|_| ApiError::bad_parameter("`before` is an audit entry id"))?,
    };
    let entries = db.json_rows(
        "read the audit",
        "SELECT jsonb_build_object('id', id, 'actor', actor, 'action', action, 'entity', entity, \
         'entityId', entity_id, 'detail', detail, 'at', nexus_ts(at)) \
         FROM provisioning_audit WHERE ccid = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        &[
            text(&tenant.ccid),
            ParameterValue::Int64(before),
            ParameterValue::Int64(limit),
        ],
    )?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().and_then(|entry| entry["id"].as_i64()))
        .flatten();
    Reply::ok(json!({ "entries": entries, "nextBefore": next }))
}

/// How many rows one reseal takes of each kind: a pass is short; the host runs one a minute.
const RESEAL_BATCH: i64 = 200;

/// Seals under the current `credentials_key` what is not sealed under it yet: channel secrets
/// and credentials stored before they were sealed, and everything sealed under a key that a
/// rotation retired (`credentials_keys_previous`), bots' credentials included. Safe to run on
/// every host at once: a row that changed meanwhile is left to the next pass.
fn reseal(db: &Db) -> ApiResult<Reply> {
    let keys = at_rest::keyring()?;
    let current = keys.current_id().map_err(|err| {
        ApiError::new(
            503,
            Code::NotConfigured,
            format!("nothing can be sealed: {err}"),
        )
    })?;
    let sealed_now = format!("v2.{current}.%");
    let stale = db.rows(
        "find channel secrets to seal",
        "SELECT id::text AS id, secret, previous_secret, credentials::text AS credentials FROM channels \
         WHERE secret NOT LIKE $1 OR previous_secret NOT LIKE $1 \
            OR (credentials <> '{}'::jsonb \
                AND (jsonb_typeof(credentials) <> 'string' OR credentials #>> '{}' NOT LIKE $1)) \
         ORDER BY id LIMIT $2",
        &[text(&sealed_now), ParameterValue::Int64(RESEAL_BATCH)],
    )?;
    let mut channels = 0;
    for row in stale.rows() {
        let (Some(id), Some(secret), Some(credentials)) = (
            row.get::<String>("id"),
            row.get::<String>("secret"),
            row.get::<String>("credentials")
                .and_then(|text| serde_json::from_str::<Value>(&text).ok()),
        ) else {
            continue;
        };
        let previous = row.get::<String>("previous_secret");
        let reseal_secret = |stored: &str| -> ApiResult<String> {
            at_rest::seal_secret(&keys, &id, &at_rest::open_secret(&keys, &id, stored)?)
        };
        let new_secret = reseal_secret(&secret)?;
        let new_previous = previous.as_deref().map(reseal_secret).transpose()?;
        let new_credentials = if credentials == json!({}) {
            credentials.clone()
        } else {
            at_rest::seal_credentials(
                &keys,
                &id,
                &at_rest::open_credentials(&keys, &id, &credentials)?,
            )?
        };
        channels += db.execute(
            "seal the channel's secrets",
            "UPDATE channels SET secret = $3, previous_secret = $4, credentials = $5 \
             WHERE id = $1 AND secret = $2 AND previous_secret IS NOT DISTINCT FROM $6 \
               AND credentials = $7",
            &[
                uuid(&id),
                text(&secret),
                text(&new_secret),
                opt_text(new_previous),
                jsonb(&new_credentials),
                opt_text(previous),
                jsonb(&credentials),
            ],
        )?;
    }
    let stale_bots = db.rows(
        "find bot credentials to seal",
        "SELECT id::text AS id, credentials FROM bots \
         WHERE credentials IS NOT NULL AND credentials NOT LIKE $1 ORDER BY id LIMIT $2",
        &[text(&sealed_now), ParameterValue::Int64(RESEAL_BATCH)],
    )?;
    let mut bots = 0;
    for row in stale_bots.rows() {
        let (Some(id), Some(stored)) = (row.get::<String>("id"), row.get::<String>("credentials"))
        else {
            continue;
        };
        let context = format!("bot:{id}");
        let opened = keys.open(&context, &stored).map_err(|err| {
            ApiError::new(
                503,
                Code::Unavailable,
                format!("bot {id}'s credentials cannot be opened: {err}"),
            )
        })?;
        let sealed = keys
            .seal(&context, &opened)
            .map_err(|err| ApiError::internal("seal a bot's credentials", err))?;
        bots += db.execute(
            "seal the bot's credentials",
            "UPDATE bots SET credentials = $3 WHERE id = $1 AND credentials = $2",
            &[uuid(&id), text(&stored), text(&sealed)],
        )?;
    }
    let more = i64::try_from(stale.rows.len()).unwrap_or(i64::MAX) >= RESEAL_BATCH
        || i64::try_from(stale_bots.rows.len()).unwrap_or(i64::MAX) >= RESEAL_BATCH;
    Reply::ok(json!({ "keyId": current, "channels": channels, "bots": bots, "more": more }))
}
