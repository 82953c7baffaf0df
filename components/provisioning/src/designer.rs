//! The routing configuration ("designer") part of provisioning: agents, queues, and per channel
//! which bot answers first and which queue follows.

use nexus_guest::api::{ApiError, ApiResult};
use nexus_guest::body::Fields;
use nexus_guest::secrets::new_id;
use nexus_guest::spin::{Db, Reply, jsonb, opt_text, text, uuid};
use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::{Tenant, audit, channel_id, flag};

fn tenant_param(tenant: &Tenant) -> ParameterValue {
    ParameterValue::Int64(tenant.id)
}

/// A list of short names (`skills`): an array, or a comma-separated string in a form body.
fn names(fields: &Fields, name: &str) -> ApiResult<Option<Vec<String>>> {
    let raw = fields.others(&[]).get(name).cloned();
    let list: Vec<String> = match raw {
        None => return Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad_parameter(format!("`{name}` is a list of names")))?,
        Some(Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => {
            return Err(ApiError::bad_parameter(format!(
                "`{name}` is a list of names"
            )));
        }
    };
    if list
        .iter()
        .any(|s| s.len() > 64 || s.chars().any(char::is_whitespace))
    {
        return Err(ApiError::bad_parameter(format!(
            "`{name}`: each name has at most 64 characters and no spaces"
        )));
    }
    Ok(Some(list))
}

fn text_array(items: &[String]) -> ParameterValue {
    ParameterValue::ArrayStr(items.iter().cloned().map(Some).collect())
}

fn capacity(fields: &Fields) -> ApiResult<Option<Value>> {
    let Some(raw) = fields.others(&[]).get("capacity").cloned() else {
        return Ok(None);
    };
    let chat = match &raw {
        Value::Object(map) => map.get("chat").and_then(Value::as_i64),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match chat {
        Some(chat) if (0..=100).contains(&chat) => Ok(Some(json!({ "chat": chat }))),
        _ => Err(ApiError::bad_parameter(
            "`capacity` is {\"chat\": N} (or N) with N from 0 to 100",
        )),
    }
}

pub fn list_agents(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let agents = db.json_rows(
        "list agents",
        "SELECT nexus_agent_json(a) FROM agents a WHERE tenant_id = $1 ORDER BY username",
        &[tenant_param(tenant)],
    )?;
    Reply::ok(json!({ "agents": agents }))
}

/// Creates an agent and answers their token, which is shown only now.
pub fn create_agent(db: &Db, tenant: &Tenant, fields: &Fields) -> ApiResult<Reply> {
    let username = fields.required_text("username")?;
    let nickname = fields
        .bounded_text("nickname", 100)?
        .unwrap_or_else(|| username.clone());
    let role = fields.text("role").unwrap_or_else(|| "agent".into());
    if !matches!(role.as_str(), "agent" | "supervisor") {
        return Err(ApiError::bad_parameter("`role` is agent or supervisor"));
    }
    let skills = names(fields, "skills")?.unwrap_or_default();
    let capacity = capacity(fields)?.unwrap_or(json!({"chat": 3}));
    let token = nexus_guest::agent_token::new_token()
        .map_err(|err| ApiError::internal("make a token", err))?;
    let id = new_id();
    let agent = db.transaction(|db| {
        let agent = db
            .json_row(
                "create the agent",
                "INSERT INTO agents AS a (id, tenant_id, username, nickname, role, token_hash, skills, capacity) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING nexus_agent_json(a)",
                &[
                    uuid(&id),
                    tenant_param(tenant),
                    text(&username),
                    text(&nickname),
                    text(&role),
                    text(nexus_guest::agent_token::hash(&token)),
                    text_array(&skills),
                    jsonb(&capacity),
                ],
            )?
            .ok_or_else(|| ApiError::internal("create the agent", "no row"))?;
        audit(db, (Some(tenant.id), &tenant.ccid), "create", "agent", &id, json!({"username": username}))?;
        Ok(agent)
    })?;
    let mut agent = agent;
    agent["token"] = Value::String(token);
    Reply::created(agent)
}

fn agent_id(id: &str) -> ApiResult<&str> {
    if nexus_guest::spin::is_uuid(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no agent has the id `{id}`")))
    }
}

pub fn agent(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    let agent = db
        .json_row(
            "read the agent",
            "SELECT nexus_agent_json(a) FROM agents a WHERE tenant_id = $1 AND id = $2",
            &[tenant_param(tenant), uuid(agent_id(id)?)],
        )?
        .ok_or_else(|| ApiError::not_found(format!("no agent has the id `{id}`")))?;
    Reply::ok(agent)
}

pub fn update_agent(db: &Db, tenant: &Tenant, id: &str, fields: &Fields) -> ApiResult<Reply> {
    let skills = names(fields, "skills")?;
    let capacity = capacity(fields)?;
    let role = fields.text("role");
    if role
        .as_deref()
        .is_some_and(|r| !matches!(r, "agent" | "supervisor"))
    {
        return Err(ApiError::bad_parameter("`role` is agent or supervisor"));
    }
    let agent = db.transaction(|db| {
        let agent = db
            .json_row(
                "update the agent",
                "UPDATE agents a SET nickname = coalesce($3, nickname), role = coalesce($4, role), \
                   skills = coalesce($5, skills), capacity = coalesce($6, capacity), \
                   enabled = coalesce($7, enabled), updated_at = now() \
                 WHERE tenant_id = $1 AND id = $2 RETURNING nexus_agent_json(a)",
                &[
                    tenant_param(tenant),
                    uuid(agent_id(id)?),
                    opt_text(fields.bounded_text("nickname", 100)?),
                    opt_text(role.clone()),
                    skills.as_deref().map_or(ParameterValue::DbNull, text_array),
                    capacity.as_ref().map_or(ParameterValue::DbNull, jsonb),
                    flag(fields, "enabled")?
                        .map_or(ParameterValue::DbNull, ParameterValue::Boolean),
                ],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no agent has the id `{id}`")))?;
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "update",
            "agent",
            id,
            Value::Null,
        )?;
        Ok(agent)
    })?;
    Reply::ok(agent)
}

pub fn delete_agent(db: &Db, tenant: &Tenant, id: &str) -> ApiResult<Reply> {
    db.transaction(|db| {
        let deleted = db.execute(
            "delete the agent",
            "DELETE FROM agents WHERE tenant_id = $1 AND id = $2",
            &[tenant_param(tenant), uuid(agent_id(id)?)],
        )?;
        if deleted == 0 {
            return Err(ApiError::not_found(format!("no agent has the id `{id}`")));
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "delete",
            "agent",
            id,
            Value::Null,
        )
    })?;
    Reply::ok(json!({ "deleted": id }))
}

pub fn list_queues(db: &Db, tenant: &Tenant) -> ApiResult<Reply> {
    let queues = db.json_rows(
        "list queues",
        "SELECT nexus_queue_json(q) FROM queues q WHERE tenant_id = $1 ORDER BY name",
        &[tenant_param(tenant)],
    )?;
    Reply::ok(json!({ "queues": queues }))
}

fn positive(fields: &Fields, name: &str) -> ApiResult<Option<i64>> {
    match fields.others(&[]).get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| (1..=7 * 24 * 3600).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_parameter(format!("`{name}` is a number of seconds, at least 1"))
            }),
    }
}

/// Creates or replaces a queue.
pub fn put_queue(db: &Db, tenant: &Tenant, name: &str, fields: &Fields) -> ApiResult<Reply> {
    let skills = names(fields, "skills")?.unwrap_or_default();
    let hours = fields.object("businessHours")?.map(Value::Object);
    if let Some(hours) = &hours {
        nexus_guest::hours::validate(hours).map_err(ApiError::bad_parameter)?;
    }
    let overflow = fields.text("overflowQueue");
    if overflow.as_deref() == Some(name) {
        return Err(ApiError::bad_parameter(
            "a queue cannot overflow into itself",
        ));
    }
    let queue = db.transaction(|db| {
        let queue = db
            .json_row(
                "save the queue",
                "INSERT INTO queues AS q (tenant_id, name, skills, timeout_seconds, overflow_queue, business_hours, closed_message, invite_timeout_seconds) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, 30)) \
                 ON CONFLICT (tenant_id, name) DO UPDATE SET skills = EXCLUDED.skills, \
                   timeout_seconds = EXCLUDED.timeout_seconds, overflow_queue = EXCLUDED.overflow_queue, \
                   business_hours = EXCLUDED.business_hours, closed_message = EXCLUDED.closed_message, \
                   invite_timeout_seconds = EXCLUDED.invite_timeout_seconds, updated_at = now() \
                 RETURNING nexus_queue_json(q)",
                &[
                    tenant_param(tenant),
                    text(name),
                    text_array(&skills),
                    positive(fields, "timeoutSeconds")?.map_or(ParameterValue::DbNull, |n| ParameterValue::Int32(i32::try_from(n).unwrap_or(i32::MAX))),
                    opt_text(overflow.clone()),
                    hours.as_ref().map_or(ParameterValue::DbNull, jsonb),
                    opt_text(fields.bounded_text("closedMessage", 1000)?),
                    positive(fields, "inviteTimeoutSeconds")?.map_or(ParameterValue::DbNull, |n| ParameterValue::Int32(i32::try_from(n).unwrap_or(i32::MAX))),
                ],
            )?
            .ok_or_else(|| ApiError::internal("save the queue", "no row"))?;
        audit(db, (Some(tenant.id), &tenant.ccid), "put", "queue", name, Value::Null)?;
        Ok(queue)
    })?;
    Reply::ok(queue)
}

pub fn queue(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Reply> {
    let queue = db
        .json_row(
            "read the queue",
            "SELECT nexus_queue_json(q) FROM queues q WHERE tenant_id = $1 AND name = $2",
            &[tenant_param(tenant), text(name)],
        )?
        .ok_or_else(|| ApiError::not_found(format!("no queue is named `{name}`")))?;
    Reply::ok(queue)
}

pub fn delete_queue(db: &Db, tenant: &Tenant, name: &str) -> ApiResult<Reply> {
    db.transaction(|db| {
        let deleted = db.execute(
            "delete the queue",
            "DELETE FROM queues WHERE tenant_id = $1 AND name = $2",
            &[tenant_param(tenant), text(name)],
        )?;
        if deleted == 0 {
            return Err(ApiError::not_found(format!("no queue is named `{name}`")));
        }
        audit(
            db,
            (Some(tenant.id), &tenant.ccid),
            "delete",
            "queue",
            name,
            Value::Null,
        )
    })?;
    Reply::ok(json!({ "deleted": name }))
}

/// Sets a channel's routing: `queue` (required) and `bot` (which answers first, if any).
pub fn put_rule(db: &Db, tenant: &Tenant, channel: &str, fields: &Fields) -> ApiResult<Reply> {
    let queue = fields.required_text("queue")?;
    let bot = fields.bounded_text("bot", 128)?;
    let last_agent = flag(fields, "lastAgent")?.unwrap_or(true);
    let channel = channel_id(channel)?;
    let rule = db.transaction(|db| {
        let queue_exists = db
            .rows(
                "find the queue",
                "SELECT 1 FROM queues WHERE tenant_id = $1 AND name = $2",
                &[tenant_param(tenant), text(&queue)],
            )?
            .rows()
            .next()
            .is_some();
        if !queue_exists {
            return Err(ApiError::bad_parameter(format!(
                "`queue`: no queue is named `{queue}` (create it under queues first)"
            )));
        }
        if let Some(bot) = &bot
            && !crate::bots::exists(db, tenant, bot)?
        {
            return Err(ApiError::bad_parameter(format!(
                "`bot`: no bot is named `{bot}` (register it under bots first)"
            )));
        }
        let rule = db
            .json_row(
                "save the routing rule",
                "INSERT INTO routing_rules (channel_id, tenant_id, bot, queue, last_agent) \
                 SELECT c.id, c.tenant_id, $3, $4, $5 FROM channels c WHERE c.id = $1 AND c.tenant_id = $2 \
                 ON CONFLICT (channel_id) DO UPDATE SET bot = EXCLUDED.bot, queue = EXCLUDED.queue, \
                   last_agent = EXCLUDED.last_agent, updated_at = now() \
                 RETURNING jsonb_strip_nulls(jsonb_build_object('channelId', channel_id, 'bot', bot, 'queue', queue, 'lastAgent', last_agent))",
                &[uuid(channel), tenant_param(tenant), opt_text(bot.clone()), text(&queue), ParameterValue::Boolean(last_agent)],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no channel has the id `{channel}`")))?;
        audit(db, (Some(tenant.id), &tenant.ccid), "put", "routing", channel, rule.clone())?;
        Ok(rule)
    })?;
    Reply::ok(rule)
}

pub fn rule(db: &Db, tenant: &Tenant, channel: &str) -> ApiResult<Reply> {
    let rule = db
        .json_row(
            "read the routing rule",
            "SELECT jsonb_strip_nulls(jsonb_build_object('channelId', channel_id, 'bot', bot, 'queue', queue, 'lastAgent', last_agent)) \
             FROM routing_rules WHERE tenant_id = $1 AND channel_id = $2",
            &[tenant_param(tenant), uuid(channel_id(channel)?)],
        )?
        .ok_or_else(|| ApiError::not_found("this channel has no routing rule"))?;
    Reply::ok(rule)
}
