//! A tenant's own components (`tenants/{ccid}/components`): sandboxed bots and transforms that
//! nexus runs (under the nexus host only; see `wit/tenant/tenant.wit`).
//!
//! - `POST components/{name}/versions?kind=bot|transform[&activate=false]`: the component
//!   itself as the body (`application/wasm`, at most 8 MiB). The host checks it against its
//!   world before it is accepted; it is stored as the next version and, unless `activate=false`,
//!   becomes the active one.
//! - `POST components/{name}/activate {"version"}`, `POST components/{name}/rollback` (back to
//!   the version that was active before), `PATCH components/{name}` (limits, allowed hosts,
//!   enabled, and for a transform `required`: fail closed), `GET`, `DELETE` (refused while a
//!   bot or a channel uses it).
//! - `PUT channels/{id}/transforms {"inbound": [names], "outbound": [names]}`: a channel's
//!   chains, in the order they run.
//!
//! Every change bumps the component's revision and is announced to the hosts (see
//! `nexus_guest::tenant_components`), which compile the new version before it is called.

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::body::Fields;
use nexus_guest::secrets::new_id;
use nexus_guest::spin::{Db, Reply, text, uuid};
use nexus_guest::tenant_components::{self, Outcome};
use nexus_guest::tenant_contract::MAX_COMPONENT_BYTES;
use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::{Tenant, audit, flag};

/// How long validating an upload may take (it is compiled).
const VALIDATE_TIMEOUT_MS: u64 = 60_000;

fn tenant_param(tenant: &Tenant) -> ParameterValue {
    ParameterValue::Int64(tenant.id)
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no component is named `{name}`"))
}

fn component_json(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Value> {
    db.json_row(
        "read the component",
        "SELECT nexus_tenant_component_json(c) || jsonb_build_object('versions', coalesce(( \
           SELECT jsonb_agg(jsonb_build_object('version', v.version, 'sha256', v.sha256, \
             'sizeBytes', v.size_bytes, 'imports', to_jsonb(v.imports), \
             'uploadedAt', nexus_ts(v.uploaded_at)) ORDER BY v.version) \
           FROM tenant_component_versions v WHERE v.component_id = c.id), '[]'::jsonb)) \
         FROM tenant_components c WHERE c.tenant_id = $1 AND c.name = $2",
        &[tenant_param(tenant), text(name)],
    )?
    .ok_or_else(|| not_found(name))
}

pub fn list(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let components = db.json_rows(
        "list the components",
        "SELECT nexus_tenant_component_json(c) FROM tenant_components c WHERE tenant_id = $1 ORDER BY name",
        &[tenant_param(tenant)],
    )?;
    Reply::ok(json!({ "components": components }))
}

pub fn get(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Reply> {
    Reply::ok(component_json(db, tenant, name)?)
}

/// Tells the hosts, once committed, that the component changed.
fn announce(tenant: &Tenant, component: &Value) {
    if let (Some(name), Some(revision)) =
        (component["name"].as_str(), component["revision"].as_i64())
    {
        tenant_components::announce(tenant.id, name, revision);
    }
}

/// Accepts a new version: checked by the host, stored, and (unless `activate=false`) active.
pub fn upload(
    db: &Db,
    tenant: &Tenant,
    name: &str,
    params: &std::collections::BTreeMap<String, String>,
    wasm: &[u8],
) -> ApiResult<Reply> {
    if !is_name(name) {
        return Err(ApiError::bad_parameter(
            "a component's name is 1 to 63 lower-case letters, digits, _ and - (starting with a letter or digit)",
        ));
    }
    let kind = params
        .get("kind")
        .map(String::as_str)
        .filter(|kind| ["bot", "transform"].contains(kind))
        .ok_or_else(|| ApiError::bad_parameter("`kind` is bot or transform"))?;
    let activate = match params.get("activate").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(ApiError::bad_parameter("`activate` is true or false")),
    };
    if wasm.is_empty() {
        return Err(ApiError::bad_parameter(
            "the body is the component (application/wasm)",
        ));
    }
    if wasm.len() > MAX_COMPONENT_BYTES {
        return Err(ApiError::new(
            413,
            Code::LimitBodySize,
            format!("a component is at most {MAX_COMPONENT_BYTES} bytes"),
        ));
    }
    let validated = match tenant_components::call(
        &format!("/v1/validate?kind={kind}"),
        "application/wasm",
        wasm,
        VALIDATE_TIMEOUT_MS,
    ) {
        Outcome::Answered(validated) => validated,
        Outcome::Refused(why) => {
            return Err(ApiError::bad_parameter(format!(
                "the component is not a nexus {kind}: {why}"
            )));
        }
        Outcome::Failed { message, .. } => {
            return Err(ApiError::new(
                503,
                Code::Unavailable,
                format!("the component cannot be checked now: {message}"),
            ));
        }
    };
    let imports: Vec<Option<String>> = validated["imports"]
        .as_array()
        .map(|imports| {
            imports
                .iter()
                .filter_map(|i| i.as_str().map(|i| Some(i.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let sha256 = validated["sha256"].as_str().unwrap_or_default().to_owned();
    let (component, version) = db.transaction(|db| {
        db.execute(
            "create the component",
            "INSERT INTO tenant_components (id, tenant_id, name, kind) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, name) DO NOTHING",
            &[uuid(new_id()), tenant_param(tenant), text(name), text(kind)],
        )?;
        let row = db
            .rows(
                "take the next version",
                "UPDATE tenant_components SET latest_version = latest_version + 1, updated_at = now() \
                 WHERE tenant_id = $1 AND name = $2 RETURNING id::text AS id, kind, latest_version",
                &[tenant_param(tenant), text(name)],
            )?
            .rows()
            .next()
            .and_then(|row| {
                Some((
                    row.get::<String>("id")?,
                    row.get::<String>("kind")?,
                    row.get::<i32>("latest_version")?,
                ))
            })
            .ok_or_else(|| ApiError::internal("take the next version", "no row"))?;
        let (id, existing_kind, version) = row;
        if existing_kind != kind {
            return Err(ApiError::conflict(format!(
                "`{name}` is a {existing_kind}; a {kind} needs a name of its own"
            )));
        }
        db.execute(
            "store the version",
            "INSERT INTO tenant_component_versions (component_id, version, wasm, sha256, size_bytes, imports) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                uuid(&id),
                ParameterValue::Int32(version),
                ParameterValue::Binary(wasm.to_vec()),
                text(&sha256),
                ParameterValue::Int32(i32::try_from(wasm.len()).unwrap_or(i32::MAX)),
                ParameterValue::ArrayStr(imports.clone()),
            ],
        )?;
        if activate {
            switch_to(db, tenant, name, version)?;
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "upload",
            "component",
            name,
            json!({ "kind": kind, "version": version, "sha256": sha256, "sizeBytes": wasm.len(), "activated": activate }),
        )?;
        Ok((component_json(db, tenant, name)?, version))
    })?;
    if activate {
        announce(tenant, &component);
    }
    let mut created = component;
    created["uploadedVersion"] = json!(version);
    Reply::created(created)
}

/// Makes `version` the active one (the one active before becomes the rollback target).
fn switch_to(db: &Db, tenant: &Tenant, name: &str, version: i32) -> ApiResult<()> {
    let switched = db.execute(
        "activate the version",
        "UPDATE tenant_components c SET \
           previous_version = CASE WHEN active_version IS DISTINCT FROM $3 THEN active_version ELSE previous_version END, \
           active_version = $3, revision = revision + 1, updated_at = now() \
         WHERE tenant_id = $1 AND name = $2 AND EXISTS ( \
           SELECT 1 FROM tenant_component_versions v WHERE v.component_id = c.id AND v.version = $3)",
        &[tenant_param(tenant), text(name), ParameterValue::Int32(version)],
    )?;
    if switched == 0 {
        return Err(ApiError::not_found(format!(
            "`{name}` has no version {version}"
        )));
    }
    Ok(())
}

/// `{"version"}` becomes the active version.
pub fn activate(db: &Db, tenant: &Tenant, name: &str, fields: &Fields) -> ApiResult<Reply> {
    let version = fields
        .text("version")
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::bad_parameter("`version` is a version number"))?;
    let component = db.transaction(|db| {
        component_json(db, tenant, name)?;
        switch_to(db, tenant, name, version)?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "activate",
            "component",
            name,
            json!({ "version": version }),
        )?;
        component_json(db, tenant, name)
    })?;
    announce(tenant, &component);
    Reply::ok(component)
}

/// Back to the version that was active before the current one.
pub fn rollback(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Reply> {
    let component = db.transaction(|db| {
        let current = component_json(db, tenant, name)?;
        let previous = current["previousVersion"]
            .as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "`{name}` has no earlier active version to go back to"
                ))
            })?;
        switch_to(db, tenant, name, previous)?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "rollback",
            "component",
            name,
            json!({ "from": current["activeVersion"], "to": previous }),
        )?;
        component_json(db, tenant, name)
    })?;
    announce(tenant, &component);
    Reply::ok(component)
}

fn bounded(
    fields: &Fields,
    name: &str,
    range: std::ops::RangeInclusive<i32>,
) -> ApiResult<Option<i32>> {
    match fields.text(name) {
        None => Ok(None),
        Some(given) => given
            .parse::<i32>()
            .ok()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "`{name}` is a whole number from {} to {}",
                    range.start(),
                    range.end()
                ))
            }),
    }
}

/// `allowedHosts`: a list of `scheme://host[:port]` (Spin's syntax).
fn allowed_hosts(fields: &Fields) -> ApiResult<Option<Vec<String>>> {
    let refused = || {
        ApiError::bad_parameter(
            "`allowedHosts` is a list of at most 32 addresses, `scheme://host[:port]` \
             (`https://api.example.com`, `https://*.example.com`, `http://10.0.0.0/8:8080`)",
        )
    };
    match fields.others(&[]).get("allowedHosts") {
        None => Ok(None),
        Some(Value::Array(items)) if items.len() <= 32 => items
            .iter()
            .map(|item| {
                item.as_str()
                    .filter(|host| {
                        let host = host.trim();
                        host.len() <= 256
                            && host.contains("://")
                            && !host.contains(char::is_whitespace)
                            && !host.to_ascii_lowercase().contains(".nexus.internal")
                            && !host.to_ascii_lowercase().contains("nexus.embedded")
                    })
                    .map(|host| host.trim().to_owned())
                    .ok_or_else(refused)
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        Some(_) => Err(refused()),
    }
}

/// Changes limits, allowed hosts, or whether the component runs (enabling one nexus disabled
/// clears its failures).
pub fn update(db: &Db, tenant: &Tenant, name: &str, fields: &Fields) -> ApiResult<Reply> {
    let cpu = bounded(fields, "cpuTimeMs", 10..=2000)?;
    let timeout = bounded(fields, "timeoutMs", 100..=30_000)?;
    let memory = bounded(fields, "memoryMb", 1..=128)?;
    let hosts = allowed_hosts(fields)?;
    let enabled = flag(fields, "enabled")?;
    let required = flag(fields, "required")?;
    let component = db.transaction(|db| {
        let updated = db.execute(
            "update the component",
            "UPDATE tenant_components SET cpu_time_ms = coalesce($3, cpu_time_ms), \
               timeout_ms = coalesce($4, timeout_ms), memory_mb = coalesce($5, memory_mb), \
               allowed_hosts = coalesce($6, allowed_hosts), enabled = coalesce($7, enabled), \
               disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END, \
               consecutive_failures = CASE WHEN $7 THEN 0 ELSE consecutive_failures END, \
               required = coalesce($8, required), \
               revision = revision + 1, updated_at = now() \
             WHERE tenant_id = $1 AND name = $2 AND ($8::boolean IS NULL OR NOT $8 OR kind = 'transform')",
            &[
                tenant_param(tenant),
                text(name),
                cpu.map_or(ParameterValue::DbNull, ParameterValue::Int32),
                timeout.map_or(ParameterValue::DbNull, ParameterValue::Int32),
                memory.map_or(ParameterValue::DbNull, ParameterValue::Int32),
                hosts.clone().map_or(ParameterValue::DbNull, |hosts| {
                    ParameterValue::ArrayStr(hosts.into_iter().map(Some).collect())
                }),
                enabled.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                required.map_or(ParameterValue::DbNull, ParameterValue::Boolean),
            ],
        )?;
        if updated == 0 {
            if required == Some(true) && component_json(db, tenant, name).is_ok() {
                return Err(ApiError::bad_parameter(
                    "only a transform can be `required` (a bot that fails hands off to routing)",
                ));
            }
            return Err(not_found(name));
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "update",
            "component",
            name,
            json!({ "cpuTimeMs": cpu, "timeoutMs": timeout, "memoryMb": memory, "allowedHosts": hosts, "enabled": enabled, "required": required }),
        )?;
        component_json(db, tenant, name)
    })?;
    announce(tenant, &component);
    Reply::ok(component)
}

/// Deletes a component (every version) that no bot or channel uses.
pub fn delete(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Reply> {
    db.transaction(|db| {
        let users = db.json_rows(
            "find what uses the component",
            "SELECT to_jsonb('bot ' || name) FROM bots WHERE tenant_id = $1 AND component = $2 \
             UNION ALL SELECT DISTINCT to_jsonb('channel ' || channel_id::text) FROM channel_transforms \
             WHERE tenant_id = $1 AND component = $2",
            &[tenant_param(tenant), text(name)],
        )?;
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "`{name}` is in use by {}: unbind it first",
                Value::Array(users)
            )));
        }
        let deleted = db.execute(
            "delete the component",
            "DELETE FROM tenant_components WHERE tenant_id = $1 AND name = $2",
            &[tenant_param(tenant), text(name)],
        )?;
        if deleted == 0 {
            return Err(not_found(name));
        }
        audit(db, (Some(tenant.id), &tenant.ccid), "delete", "component", name, Value::Null)
    })?;
    Reply::ok(json!({ "deleted": name }))
}

fn transforms_json(db: &Db, tenant: &Tenant, channel_id: &str) -> ApiResult<Value> {
    let chain = |direction: &str| {
        db.json_rows(
            "read the channel's transforms",
            "SELECT to_jsonb(component) FROM channel_transforms \
             WHERE tenant_id = $1 AND channel_id = $2 AND direction = $3 ORDER BY position",
            &[tenant_param(tenant), uuid(channel_id), text(direction)],
        )
    };
    Ok(json!({ "inbound": chain("inbound")?, "outbound": chain("outbound")? }))
}

fn channel_of(db: &Db, tenant: &Tenant, channel_id: &str) -> ApiResult<()> {
    if !nexus_guest::spin::is_uuid(channel_id) {
        return Err(ApiError::not_found("no such channel"));
    }
    db.rows(
        "find the channel",
        "SELECT 1 FROM channels WHERE tenant_id = $1 AND id = $2",
        &[tenant_param(tenant), uuid(channel_id)],
    )?
    .rows()
    .next()
    .map(|_| ())
    .ok_or_else(|| ApiError::not_found("no such channel"))
}

pub fn channel_transforms(db: &Db, tenant: &Tenant, channel_id: &str) -> ApiResult<Reply> {
    channel_of(db, tenant, channel_id)?;
    Reply::ok(transforms_json(db, tenant, channel_id)?)
}

/// Replaces the channel's chains (`inbound`, `outbound`: transform names, in order; a
/// direction not given keeps its chain).
pub fn set_channel_transforms(
    db: &Db,
    tenant: &Tenant,
    channel_id: &str,
    fields: &Fields,
) -> ApiResult<Reply> {
    channel_of(db, tenant, channel_id)?;
    let given = fields.others(&[]);
    let chain = |direction: &str| -> ApiResult<Option<Vec<String>>> {
        match given.get(direction) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() <= 8 => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_parameter(format!("`{direction}` is a list of transform names"))
                }),
            Some(_) => Err(ApiError::bad_parameter(format!(
                "`{direction}` is a list of at most 8 transform names"
            ))),
        }
    };
    let chains = [
        ("inbound", chain("inbound")?),
        ("outbound", chain("outbound")?),
    ];
    let result = db.transaction(|db| {
        for (direction, names) in &chains {
            let Some(names) = names else { continue };
            db.execute(
                "clear the chain",
                "DELETE FROM channel_transforms WHERE tenant_id = $1 AND channel_id = $2 AND direction = $3",
                &[tenant_param(tenant), uuid(channel_id), text(*direction)],
            )?;
            for (position, name) in names.iter().enumerate() {
                let is_transform = db
                    .rows(
                        "find the transform",
                        "SELECT 1 FROM tenant_components WHERE tenant_id = $1 AND name = $2 AND kind = 'transform'",
                        &[tenant_param(tenant), text(name)],
                    )?
                    .rows()
                    .next()
                    .is_some();
                if !is_transform {
                    return Err(ApiError::bad_parameter(format!(
                        "`{name}` is not a transform of this tenant"
                    )));
                }
                db.execute(
                    "add to the chain",
                    "INSERT INTO channel_transforms (channel_id, tenant_id, direction, position, component) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        uuid(channel_id),
                        tenant_param(tenant),
                        text(*direction),
                        ParameterValue::Int32(i32::try_from(position).unwrap_or(i32::MAX)),
                        text(name),
                    ],
                )?;
            }
        }
        let result = transforms_json(db, tenant, channel_id)?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "update",
            "channel",
            channel_id,
            json!({ "transforms": result }),
        )?;
        Ok(result)
    })?;
    Reply::ok(result)
}

/// Checks that a bot's `component` is a bot component of the tenant.
pub fn require_bot_component(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<()> {
    let kind = db
        .rows(
            "find the component",
            "SELECT kind FROM tenant_components WHERE tenant_id = $1 AND name = $2",
            &[tenant_param(tenant), text(name)],
        )?
        .rows()
        .next()
        .and_then(|row| row.get::<String>("kind"));
    match kind.as_deref() {
        Some("bot") => Ok(()),
        Some(other) => Err(ApiError::bad_parameter(format!(
            "`{name}` is a {other}, not a bot"
        ))),
        None => Err(ApiError::bad_parameter(format!(
            "no component is named `{name}`: upload it first"
        ))),
    }
}
