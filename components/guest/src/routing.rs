//! Routing: queues, ready agents, invitations, and what moves conversations between them.
//!
//! PostgreSQL holds where each conversation stands (`interactions.routing_state`, `queue`,
//! `queued_at`, `invited_agent_id`, `last_agent_id`) and each agent's state; Redis holds the
//! live order:
//!
//! | key | type | what |
//! |---|---|---|
//! | `route:{tenant}:queue:{name}` | sorted set | waiting conversations, scored by arrival (ms) |
//! | `route:{tenant}:ready` | sorted set | agents ready for chat, scored by when they last got one |
//! | `agent:{id}` | hash | the agent's skills and capacity, while ready |
//! | `agent:{id}:load` | set | the conversations the agent holds (invited or assigned) |
//! | `route:tenants` | set | tenants with routing, for the sweep |
//! | `route:presence` | string | there while the ready agents above are complete (see [`sweep`]) |
//!
//! Two routers at once (two hosts, two requests) never give a conversation to two agents:
//! taking it off the queue is a `ZREM` only one of them wins, and the invitation is an
//! `UPDATE ... WHERE routing_state = 'queued'` only one of them can make. Nor do they give an
//! agent more than their capacity: a router adds the conversation to the agent's load set and
//! then counts it; if the count passes the capacity it takes it back. Both may take back (and
//! retry later), but neither can overfill. The sweep ([`sweep`]) rebuilds the queues and the
//! ready agents from PostgreSQL, so a Redis restart loses no waiting customer and no agent.

use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;
use spin_sdk::redis::RedisResult;

use crate::api::{ApiError, ApiResult, Code};
use crate::conversation::{self, NewMessage};
use crate::events;
use crate::live::{LiveState, now_ms, pairs, session_event};
use crate::secrets::new_id;
use crate::spin::{Db, Live, arg, int_arg, opt_text, reply_text, text, uuid};

/// How many waiting conversations one routing pass looks at, per queue.
const ROUTE_BATCH: i64 = 50;
/// How many of a queue's first places are told their place as it changes (customers further
/// back are told when they reach these places, or when their routing state changes): one
/// publish per place told per change of the queue.
const PLACES_TOLD: i64 = 100;
/// Tells the sessions at ranks `ARGV[1]` to `ARGV[2]` of queue `KEYS[1]` their places, on
/// their topics (`ARGV[3]` .. id); with `ARGV[5]`, a session just put in the queue, from its
/// own rank on (none, if it is no longer there). `ARGV[4]` is the queue's name as JSON.
const TELL_PLACES: &str = "\
local from = tonumber(ARGV[1]) \
if ARGV[5] ~= '' then \
  local rank = redis.call('ZRANK', KEYS[1], ARGV[5]) \
  if not rank then return 0 end \
  from = rank \
end \
local ids = redis.call('ZRANGE', KEYS[1], from, tonumber(ARGV[2])) \
for i, id in ipairs(ids) do \
  redis.call('PUBLISH', ARGV[3] .. id, '{\"type\":\"Routing\",\"routing\":{\"state\":\"queued\",\"queue\":' .. ARGV[4] .. ',\"position\":' .. (from + i) .. '}}') \
end \
return #ids";

/// A queue as the designer configured it.
#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub skills: Vec<String>,
    pub business_hours: Option<Value>,
    pub closed_message: Option<String>,
    pub invite_timeout_seconds: i64,
}

/// A channel's routing rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub bot: Option<String>,
    pub queue: String,
}

/// An agent, as routing and the desktop see them.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub tenant_id: i64,
    pub nickname: String,
    pub role: String,
    pub skills: Vec<String>,
    pub chat_capacity: i64,
    pub state: String,
}

fn tenant(id: i64) -> ParameterValue {
    ParameterValue::Int64(id)
}

fn queue_key(live: &Live, tenant_id: i64, queue: &str) -> String {
    live.key(&format!("route:{tenant_id}:queue:{queue}"))
}

fn ready_key(live: &Live, tenant_id: i64) -> String {
    live.key(&format!("route:{tenant_id}:ready"))
}

fn agent_key(live: &Live, agent_id: &str) -> String {
    live.key(&format!("agent:{agent_id}"))
}

fn load_key(live: &Live, agent_id: &str) -> String {
    live.key(&format!("agent:{agent_id}:load"))
}

/// Now, as a sorted-set score in milliseconds.
fn now_score() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

/// Puts a conversation in a queue's order, at `queued_ms` (its arrival).
fn wait_in_queue(
    live: &Live,
    tenant_id: i64,
    queue: &str,
    queued_ms: i64,
    interaction_id: &str,
) -> ApiResult<()> {
    live.cmd(
        "ZADD",
        &[
            arg(queue_key(live, tenant_id, queue)),
            int_arg(queued_ms),
            arg(interaction_id),
        ],
    )?;
    Ok(())
}

/// Tells the first [`PLACES_TOLD`] sessions waiting in a queue their places, on their topics;
/// with `newcomer`, only from its place on (the places before it did not change). On a Redis
/// without scripting (the embedded one), one command at a time.
fn tell_places(live: &Live, tenant_id: i64, queue: &str, newcomer: Option<&str>) -> ApiResult<()> {
    let key = queue_key(live, tenant_id, queue);
    let channel_prefix = live.key(&format!("ws:topic:{}", crate::live::session_topic("")));
    let queue_json = Value::from(queue).to_string();
    let scripted = live.raw_cmd(
        "EVAL",
        &[
            arg(TELL_PLACES),
            int_arg(1),
            arg(&key),
            int_arg(0),
            int_arg(PLACES_TOLD - 1),
            arg(&channel_prefix),
            arg(&queue_json),
            arg(newcomer.unwrap_or_default()),
        ],
    );
    match scripted {
        Ok(_) => Ok(()),
        Err(spin_sdk::redis::Error::Other(reason)) if reason.contains("unknown command") => {
            let from = match newcomer {
                Some(id) => match live.cmd("ZRANK", &[arg(&key), arg(id)])?.first() {
                    Some(RedisResult::Int64(rank)) => *rank,
                    _ => return Ok(()),
                },
                None => 0,
            };
            let waiting = live.cmd(
                "ZRANGE",
                &[arg(&key), int_arg(from), int_arg(PLACES_TOLD - 1)],
            )?;
            for (rank, id) in (from + 1..).zip(waiting.iter().filter_map(reply_text)) {
                let routing = json!({"state": "queued", "queue": queue, "position": rank});
                LiveState::new(live, &id).publish(&session_event::routing(&routing))?;
            }
            Ok(())
        }
        Err(err) => Err(ApiError::internal("tell the queue's places (EVAL)", err)),
    }
}

/// Tells a session where routing has it now, when that is not a place in a queue.
fn tell_routing(live: &Live, interaction_id: &str, state: &str, queue: Option<&str>) {
    let routing = json!({"state": state, "queue": queue, "position": null});
    // Only the session's socket and waiting reads hear it; they read it again when they start.
    let _ = LiveState::new(live, interaction_id).publish(&session_event::routing(&routing));
}

fn int_reply(reply: &[RedisResult]) -> i64 {
    match reply.first() {
        Some(RedisResult::Int64(n)) => *n,
        _ => 0,
    }
}

fn text_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Reads an agent by the hash of their token.
pub fn agent_by_token_hash(db: &Db, token_hash: &str) -> ApiResult<Option<Agent>> {
    let row = db.json_row(
        "find the agent",
        "SELECT nexus_agent_json(a) || jsonb_build_object('tenantId', a.tenant_id) FROM agents a \
         JOIN tenants t ON t.id = a.tenant_id \
         WHERE a.token_hash = $1 AND a.enabled AND t.enabled",
        &[text(token_hash)],
    )?;
    Ok(row.map(|agent| agent_from_json(&agent)))
}

/// Reads an agent of a tenant by id.
pub fn agent_by_id(db: &Db, tenant_id: i64, agent_id: &str) -> ApiResult<Option<Agent>> {
    if !crate::spin::is_uuid(agent_id) {
        return Ok(None);
    }
    let row = db.json_row(
        "find the agent",
        "SELECT nexus_agent_json(a) || jsonb_build_object('tenantId', a.tenant_id) FROM agents a \
         WHERE a.id = $1 AND a.tenant_id = $2 AND a.enabled",
        &[uuid(agent_id), tenant(tenant_id)],
    )?;
    Ok(row.map(|agent| agent_from_json(&agent)))
}

fn agent_from_json(agent: &Value) -> Agent {
    Agent {
        id: agent["id"].as_str().unwrap_or_default().to_owned(),
        tenant_id: agent["tenantId"].as_i64().unwrap_or_default(),
        nickname: agent["nickname"].as_str().unwrap_or_default().to_owned(),
        role: agent["role"].as_str().unwrap_or("agent").to_owned(),
        skills: text_list(agent.get("skills")),
        chat_capacity: agent["capacity"]["chat"].as_i64().unwrap_or(1).max(0),
        state: agent["state"].as_str().unwrap_or("logged_out").to_owned(),
    }
}

/// A queue's configuration.
pub fn load_queue(db: &Db, tenant_id: i64, name: &str) -> ApiResult<Option<Queue>> {
    let row = db.json_row(
        "read the queue",
        "SELECT nexus_queue_json(q) FROM queues q WHERE tenant_id = $1 AND name = $2",
        &[tenant(tenant_id), text(name)],
    )?;
    Ok(row.map(|q| Queue {
        name: q["name"].as_str().unwrap_or_default().to_owned(),
        skills: text_list(q.get("skills")),
        business_hours: q.get("businessHours").cloned(),
        closed_message: q["closedMessage"].as_str().map(str::to_owned),
        invite_timeout_seconds: q["inviteTimeoutSeconds"].as_i64().unwrap_or(30),
    }))
}

/// The routing rule of a channel, if the designer gave it one.
pub fn rule_for_channel(db: &Db, tenant_id: i64, channel_id: &str) -> ApiResult<Option<Rule>> {
    let rows = db.rows(
        "read the routing rule",
        "SELECT bot, queue FROM routing_rules WHERE tenant_id = $1 AND channel_id = $2",
        &[tenant(tenant_id), uuid(channel_id)],
    )?;
    Ok(rows.rows().next().map(|row| Rule {
        bot: row.get::<String>("bot"),
        queue: row.get::<String>("queue").unwrap_or_default(),
    }))
}

/// Routes a conversation that has just started on `channel_id`, as the channel's rule says:
/// to the rule's bot first, if it names one the tenant has enabled, else to the rule's queue.
pub fn route_new(
    db: &Db,
    live: &Live,
    tenant_id: i64,
    channel_id: &str,
    interaction_id: &str,
) -> ApiResult<()> {
    let Some(rule) = rule_for_channel(db, tenant_id, channel_id)? else {
        return Ok(());
    };
    if let Some(bot) = &rule.bot
        && crate::bot_leg::engage(db, live, tenant_id, interaction_id, bot)?
    {
        return Ok(());
    }
    let Some(queue) = load_queue(db, tenant_id, &rule.queue)? else {
        return Ok(());
    };
    enqueue(db, live, tenant_id, interaction_id, &queue)
}

fn is_open(queue: &Queue) -> bool {
    queue.business_hours.as_ref().is_none_or(|hours| {
        crate::hours::is_open(
            hours,
            i64::try_from(crate::spin::now_unix()).unwrap_or_default(),
        )
    })
}

/// Puts an open conversation in a queue and offers what can be offered. A customer who arrives
/// while the queue is closed is told so (the conversation waits, as async chats do).
pub fn enqueue(
    db: &Db,
    live: &Live,
    tenant_id: i64,
    interaction_id: &str,
    queue: &Queue,
) -> ApiResult<()> {
    let queued = db.rows(
        "queue the conversation",
        "UPDATE interactions SET routing_state = 'queued', queue = $3, queued_at = now(), \
           invited_agent_id = NULL, updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND state = 'active' \
         RETURNING (extract(epoch FROM queued_at) * 1000)::bigint AS queued_ms",
        &[uuid(interaction_id), tenant(tenant_id), text(&queue.name)],
    )?;
    let Some(queued_ms) = queued
        .rows()
        .next()
        .and_then(|row| row.get::<i64>("queued_ms"))
    else {
        return Ok(());
    };
    wait_in_queue(live, tenant_id, &queue.name, queued_ms, interaction_id)?;
    live.cmd(
        "SADD",
        &[arg(live.key("route:tenants")), arg(tenant_id.to_string())],
    )?;
    if !is_open(queue)
        && let Some(message) = &queue.closed_message
    {
        post_system(
            db,
            live,
            tenant_id,
            interaction_id,
            "Notice",
            message,
            "All",
        )?;
    }
    route(db, live, tenant_id, &queue.name)?;
    tell_places(live, tenant_id, &queue.name, Some(interaction_id))?;
    Ok(())
}

/// Appends a system message to a conversation and tells everyone.
pub fn post_system(
    db: &Db,
    live: &Live,
    tenant_id: i64,
    interaction_id: &str,
    kind: &str,
    message: &str,
    visibility: &str,
) -> ApiResult<()> {
    let appended = conversation::append_message(
        db,
        tenant_id,
        interaction_id,
        &NewMessage {
            kind,
            participant_id: None,
            sender_kind: "System",
            nickname: "",
            text: Some(message),
            data: None,
            visibility,
            client_message_id: None,
        },
    )?;
    if let Some((message, _)) = appended {
        conversation::publish(live, interaction_id, &[message], "active");
    }
    Ok(())
}

/// A ready agent who could take one more conversation.
struct Candidate {
    id: String,
    capacity: i64,
}

/// Ready agents with every skill in `skills` and room for one more, longest idle first.
fn candidates(live: &Live, tenant_id: i64, skills: &[String]) -> ApiResult<Vec<Candidate>> {
    let ready = live.cmd(
        "ZRANGE",
        &[arg(ready_key(live, tenant_id)), int_arg(0), int_arg(-1)],
    )?;
    let mut found = Vec::new();
    for agent_id in ready.iter().filter_map(reply_text) {
        let fields = pairs(&live.cmd("HGETALL", &[arg(agent_key(live, &agent_id))])?);
        let field = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.clone())
        };
        let Some(capacity) = field("capacity").and_then(|c| c.parse::<i64>().ok()) else {
            continue;
        };
        let agent_skills: Vec<String> = field("skills")
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        if !skills.iter().all(|skill| agent_skills.contains(skill)) {
            continue;
        }
        let load = int_reply(&live.cmd("SCARD", &[arg(load_key(live, &agent_id))])?);
        if load < capacity {
            found.push(Candidate {
                id: agent_id,
                capacity,
            });
        }
    }
    Ok(found)
}

/// The agent who last served the contact of `interaction_id`, if any.
fn last_agent(db: &Db, tenant_id: i64, interaction_id: &str) -> ApiResult<Option<String>> {
    let rows = db.rows(
        "find the contact's last agent",
        "SELECT prior.last_agent_id::text AS agent FROM interactions i \
         JOIN interactions prior ON prior.tenant_id = i.tenant_id AND prior.contact_id = i.contact_id \
         WHERE i.id = $1 AND i.tenant_id = $2 AND prior.id <> i.id AND prior.last_agent_id IS NOT NULL \
         ORDER BY prior.created_at DESC LIMIT 1",
        &[uuid(interaction_id), tenant(tenant_id)],
    )?;
    Ok(rows
        .rows()
        .next()
        .and_then(|row| row.get::<String>("agent")))
}

/// Reserves room for `interaction_id` in an agent's load; whether there was room.
fn reserve(live: &Live, agent_id: &str, capacity: i64, interaction_id: &str) -> ApiResult<bool> {
    let key = load_key(live, agent_id);
    live.cmd("SADD", &[arg(&key), arg(interaction_id)])?;
    if int_reply(&live.cmd("SCARD", &[arg(&key)])?) > capacity {
        live.cmd("SREM", &[arg(&key), arg(interaction_id)])?;
        return Ok(false);
    }
    Ok(true)
}

fn release(live: &Live, agent_id: &str, interaction_id: &str) -> ApiResult<()> {
    live.cmd(
        "SREM",
        &[arg(load_key(live, agent_id)), arg(interaction_id)],
    )?;
    Ok(())
}

/// Offers a queue's waiting conversations to its ready agents; how many were offered.
pub fn route(db: &Db, live: &Live, tenant_id: i64, queue_name: &str) -> ApiResult<u32> {
    let Some(queue) = load_queue(db, tenant_id, queue_name)? else {
        return Ok(0);
    };
    if !is_open(&queue) {
        return Ok(0);
    }
    let key = queue_key(live, tenant_id, queue_name);
    let waiting = live.cmd(
        "ZRANGE",
        &[
            arg(&key),
            int_arg(0),
            int_arg(ROUTE_BATCH - 1),
            arg("WITHSCORES"),
        ],
    )?;
    let waiting: Vec<(String, String)> = waiting
        .chunks(2)
        .filter_map(|pair| Some((reply_text(pair.first()?)?, reply_text(pair.get(1)?)?)))
        .collect();
    if waiting.is_empty() {
        return Ok(0);
    }
    let mut available = candidates(live, tenant_id, &queue.skills)?;
    let mut offered = 0;
    for (interaction_id, score) in waiting {
        if available.is_empty() {
            break;
        }
        // Taking it off the queue is what makes this router the only one routing it.
        if int_reply(&live.cmd("ZREM", &[arg(&key), arg(&interaction_id)])?) == 0 {
            continue;
        }
        let mut order: Vec<usize> = (0..available.len()).collect();
        if let Some(last) = last_agent(db, tenant_id, &interaction_id)?
            && let Some(index) = available.iter().position(|c| c.id == last)
        {
            order.retain(|i| *i != index);
            order.insert(0, index);
        }
        let mut placed = false;
        for index in order {
            let candidate = &available[index];
            if !reserve(live, &candidate.id, candidate.capacity, &interaction_id)? {
                continue;
            }
            let agent_id = candidate.id.clone();
            if !invite(db, live, tenant_id, &interaction_id, &agent_id)? {
                // No longer waiting (ended, or routed meanwhile): nothing to put back.
                release(live, &agent_id, &interaction_id)?;
                placed = true;
                break;
            }
            offered += 1;
            placed = true;
            tell_routing(live, &interaction_id, "invited", Some(queue_name));
            let full = int_reply(&live.cmd("SCARD", &[arg(load_key(live, &agent_id))])?)
                >= candidate.capacity;
            if full {
                available.remove(index);
            } else {
                // Offered one: now the most recently served, behind the others.
                let moved = available.remove(index);
                available.push(moved);
            }
            break;
        }
        if !placed {
            live.cmd("ZADD", &[arg(&key), arg(&score), arg(&interaction_id)])?;
        }
    }
    if offered > 0 {
        tell_places(live, tenant_id, queue_name, None)?;
    }
    Ok(offered)
}

/// Offers a waiting conversation to an agent; false if it was no longer waiting.
fn invite(
    db: &Db,
    live: &Live,
    tenant_id: i64,
    interaction_id: &str,
    agent_id: &str,
) -> ApiResult<bool> {
    let interaction = db.json_row(
        "invite the agent",
        "UPDATE interactions SET routing_state = 'invited', invited_agent_id = $3, updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND state = 'active' AND routing_state IN ('queued', 'idle') \
         RETURNING nexus_work_json(interactions)",
        &[
            uuid(interaction_id),
            tenant(tenant_id),
            uuid(agent_id),
        ],
    )?;
    let Some(interaction) = interaction else {
        return Ok(false);
    };
    live.cmd(
        "ZADD",
        &[
            arg(ready_key(live, tenant_id)),
            int_arg(now_score()),
            arg(agent_id),
        ],
    )?;
    events::push(
        live,
        agent_id,
        json!({
            "messageType": "InteractionStateChanged",
            "notificationType": "Invited",
            "interaction": with_state(interaction, "Invited", &["accept", "reject"]),
        }),
    )?;
    Ok(true)
}

fn with_state(mut interaction: Value, state: &str, capabilities: &[&str]) -> Value {
    interaction["workState"] = Value::from(state);
    interaction["capabilities"] = json!(capabilities);
    interaction
}

/// The interaction as the desktop sees it.
pub fn work_json(db: &Db, tenant_id: i64, interaction_id: &str) -> ApiResult<Option<Value>> {
    db.json_row(
        "read the interaction",
        "SELECT nexus_work_json(i) FROM interactions i WHERE id = $1 AND tenant_id = $2",
        &[uuid(interaction_id), tenant(tenant_id)],
    )
}

fn not_yours() -> ApiError {
    ApiError::new(
        409,
        Code::Conflict,
        "this interaction is not offered to you, or no longer",
    )
}

/// Sets an agent's state. Ready puts them in line for conversations (and offers them what
/// waits); not ready and logged out take them out of it.
pub fn set_agent_state(
    db: &Db,
    live: &Live,
    agent: &Agent,
    state: &str,
    reason: Option<&str>,
) -> ApiResult<Value> {
    let updated = db
        .json_row(
            "set the agent's state",
            "UPDATE agents a SET state = $3, state_reason = $4, updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 RETURNING nexus_agent_json(a)",
            &[
                uuid(&agent.id),
                tenant(agent.tenant_id),
                text(state),
                opt_text(reason),
            ],
        )?
        .ok_or_else(|| ApiError::new(401, Code::Conflict, "the agent is gone"))?;
    if state == "ready" {
        publish_agent(db, live, agent)?;
        let key = ready_key(live, agent.tenant_id);
        let already = live.cmd("ZSCORE", &[arg(&key), arg(&agent.id)])?;
        if matches!(already.first(), None | Some(RedisResult::Nil)) {
            live.cmd("ZADD", &[arg(&key), int_arg(now_score()), arg(&agent.id)])?;
        }
        live.cmd(
            "SADD",
            &[
                arg(live.key("route:tenants")),
                arg(agent.tenant_id.to_string()),
            ],
        )?;
        route_tenant(db, live, agent.tenant_id)?;
    } else {
        live.cmd(
            "ZREM",
            &[arg(ready_key(live, agent.tenant_id)), arg(&agent.id)],
        )?;
    }
    events::push(
        live,
        &agent.id,
        json!({"messageType": "AgentStateChanged", "state": state, "reason": reason}),
    )?;
    Ok(updated)
}

/// Writes what routing needs of a ready agent to Redis, and their load as PostgreSQL has it.
fn publish_agent(db: &Db, live: &Live, agent: &Agent) -> ApiResult<()> {
    live.cmd(
        "HSET",
        &[
            arg(agent_key(live, &agent.id)),
            arg("capacity"),
            int_arg(agent.chat_capacity),
            arg("skills"),
            arg(json!(agent.skills).to_string()),
        ],
    )?;
    let held = db.rows(
        "read the agent's load",
        "SELECT id::text AS id FROM interactions WHERE tenant_id = $2 AND state = 'active' AND \
           ((routing_state = 'invited' AND invited_agent_id = $1) OR (routing_state = 'assigned' AND last_agent_id = $1))",
        &[uuid(&agent.id), tenant(agent.tenant_id)],
    )?;
    let key = load_key(live, &agent.id);
    live.cmd("DEL", &[arg(&key)])?;
    for id in held.rows().filter_map(|row| row.get::<String>("id")) {
        live.cmd("SADD", &[arg(&key), arg(id)])?;
    }
    Ok(())
}

/// Routes every queue of a tenant that has someone waiting.
pub fn route_tenant(db: &Db, live: &Live, tenant_id: i64) -> ApiResult<u32> {
    let queues = db.rows(
        "list the waiting queues",
        "SELECT DISTINCT queue FROM interactions WHERE tenant_id = $1 AND routing_state = 'queued' AND state = 'active'",
        &[tenant(tenant_id)],
    )?;
    let mut offered = 0;
    for queue in queues.rows().filter_map(|row| row.get::<String>("queue")) {
        offered += route(db, live, tenant_id, &queue)?;
    }
    Ok(offered)
}

/// Puts an offered conversation back in its queue, at its place (the agent rejected it, or
/// did not answer in time), and offers it to someone else.
fn requeue(
    db: &Db,
    live: &Live,
    tenant_id: i64,
    interaction_id: &str,
    agent_id: &str,
) -> ApiResult<bool> {
    let rows = db.rows(
        "put the conversation back in its queue",
        "UPDATE interactions SET routing_state = 'queued', invited_agent_id = NULL, updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND routing_state = 'invited' AND invited_agent_id = $3 \
         RETURNING queue, (extract(epoch FROM queued_at) * 1000)::bigint AS queued_ms",
        &[uuid(interaction_id), tenant(tenant_id), uuid(agent_id)],
    )?;
    let Some(row) = rows.rows().next() else {
        return Ok(false);
    };
    let queue = row.get::<String>("queue").unwrap_or_default();
    let queued_ms = row.get::<i64>("queued_ms").unwrap_or_default();
    release(live, agent_id, interaction_id)?;
    // Behind the other ready agents, so that someone else is offered it first.
    let ready = ready_key(live, tenant_id);
    if !matches!(
        live.cmd("ZSCORE", &[arg(&ready), arg(agent_id)])?.first(),
        None | Some(RedisResult::Nil)
    ) {
        live.cmd("ZADD", &[arg(&ready), int_arg(now_score()), arg(agent_id)])?;
    }
    wait_in_queue(live, tenant_id, &queue, queued_ms, interaction_id)?;
    events::push(
        live,
        agent_id,
        json!({"messageType": "InteractionStateChanged", "notificationType": "Revoked", "interaction": {"id": interaction_id}}),
    )?;
    route(db, live, tenant_id, &queue)?;
    tell_places(live, tenant_id, &queue, Some(interaction_id))?;
    Ok(true)
}

/// Takes back the invitations of conversations that ended before the agent answered (the
/// customer left first): the agent's capacity is freed and the desktop told `Revoked`. How many.
fn withdraw_ended(db: &Db, live: &Live, tenant_id: i64) -> ApiResult<u32> {
    let withdrawn = db.rows(
        "withdraw the invitations of ended conversations",
        "WITH gone AS (SELECT id, invited_agent_id FROM interactions \
           WHERE tenant_id = $1 AND routing_state = 'invited' AND state <> 'active' FOR UPDATE) \
         UPDATE interactions i SET routing_state = 'done', invited_agent_id = NULL, \
           updated_at = now() \
         FROM gone WHERE i.id = gone.id \
         RETURNING i.id::text AS id, gone.invited_agent_id::text AS agent",
        &[tenant(tenant_id)],
    )?;
    let mut count = 0;
    for row in withdrawn.rows() {
        let (Some(id), Some(agent)) = (row.get::<String>("id"), row.get::<String>("agent")) else {
            continue;
        };
        release(live, &agent, &id)?;
        events::push(
            live,
            &agent,
            json!({"messageType": "InteractionStateChanged", "notificationType": "Revoked", "interaction": {"id": id}}),
        )?;
        count += 1;
    }
    Ok(count)
}

/// The agent turns down an offered conversation.
pub fn reject(db: &Db, live: &Live, agent: &Agent, interaction_id: &str) -> ApiResult<()> {
    if requeue(db, live, agent.tenant_id, interaction_id, &agent.id)? {
        Ok(())
    } else {
        Err(not_yours())
    }
}

/// Adds an agent to a conversation as `role`, in the transcript as joined; the new participant.
fn join(
    db: &Db,
    agent: &Agent,
    interaction_id: &str,
    role: &str,
    nickname: &str,
) -> ApiResult<Option<Value>> {
    let participant_id = new_id();
    let kind = if agent.role == "supervisor" {
        "Supervisor"
    } else {
        "Agent"
    };
    db.execute(
        "add the agent",
        "INSERT INTO participants (id, interaction_id, tenant_id, kind, nickname, agent_id, role) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            uuid(&participant_id),
            uuid(interaction_id),
            tenant(agent.tenant_id),
            text(kind),
            text(nickname),
            uuid(&agent.id),
            text(role),
        ],
    )?;
    let visibility = match role {
        // A consultation and a coach are between agents; a monitor is seen by supervisors only.
        "consult" | "coach" => "Agent",
        "monitor" => "Supervisor",
        _ => "All",
    };
    let joined = conversation::append_message(
        db,
        agent.tenant_id,
        interaction_id,
        &NewMessage {
            kind: "ParticipantJoined",
            participant_id: Some(&participant_id),
            sender_kind: kind,
            nickname,
            text: None,
            data: None,
            visibility,
            client_message_id: None,
        },
    )?;
    Ok(joined.map(|(message, _)| message))
}

/// Records an agent's joining in the live state (rebuilding it if Redis lost it) and tells
/// everyone.
fn announce_join(
    db: &Db,
    live: &Live,
    agent: &Agent,
    interaction_id: &str,
    role: &str,
    message: Value,
) -> ApiResult<()> {
    let state = LiveState::new(live, interaction_id);
    if state.load()?.is_none()
        && let Some((session, tail)) =
            conversation::load_session(db, agent.tenant_id, interaction_id)?
    {
        state.store(&session, &tail)?;
    }
    state.set_agent(&agent.id, Some(role))?;
    conversation::publish(live, interaction_id, &[message], "active");
    Ok(())
}

/// The agent takes an offered conversation.
pub fn accept(
    db: &Db,
    live: &Live,
    agent: &Agent,
    interaction_id: &str,
    nickname: Option<&str>,
) -> ApiResult<Value> {
    let nickname = nickname.unwrap_or(&agent.nickname).to_owned();
    let message = db.transaction(|db| {
        let taken = db.execute(
            "take the conversation",
            "UPDATE interactions SET routing_state = 'assigned', invited_agent_id = NULL, last_agent_id = $3, updated_at = now() \
             WHERE id = $1 AND tenant_id = $2 AND routing_state = 'invited' AND invited_agent_id = $3 AND state = 'active'",
            &[uuid(interaction_id), tenant(agent.tenant_id), uuid(&agent.id)],
        )?;
        if taken == 0 {
            return Err(not_yours());
        }
        join(db, agent, interaction_id, "primary", &nickname)?.ok_or_else(not_yours)
    })?;
    announce_join(db, live, agent, interaction_id, "primary", message)?;
    let interaction = work_json(db, agent.tenant_id, interaction_id)?.unwrap_or(Value::Null);
    tell_routing(
        live,
        interaction_id,
        "assigned",
        interaction["queue"].as_str(),
    );
    events::push(
        live,
        &agent.id,
        json!({
            "messageType": "InteractionStateChanged",
            "notificationType": "StatusChange",
            "interaction": with_state(interaction.clone(), "Accepted", &["send-message", "leave", "transfer-agent", "place-in-queue", "invite", "consult", "complete"]),
        }),
    )?;
    Ok(interaction)
}

/// A supervisor or another agent joins a conversation: `conference`, `consult`, `monitor`,
/// `coach` or `barge`.
pub fn add_participant(
    db: &Db,
    live: &Live,
    agent: &Agent,
    interaction_id: &str,
    role: &str,
) -> ApiResult<Value> {
    let message = db.transaction(|db| {
        let open = db.execute(
            "check the conversation",
            "UPDATE interactions SET updated_at = now() WHERE id = $1 AND tenant_id = $2 AND state = 'active'",
            &[uuid(interaction_id), tenant(agent.tenant_id)],
        )?;
        if open == 0 {
            return Err(ApiError::new(409, Code::Conflict, "the conversation has ended"));
        }
        // Switching between monitor, coach and barge: leave the old role first.
        db.execute(
            "leave the previous role",
            "UPDATE participants SET left_at = now() WHERE interaction_id = $1 AND agent_id = $2 AND left_at IS NULL",
            &[uuid(interaction_id), uuid(&agent.id)],
        )?;
        join(db, agent, interaction_id, role, &agent.nickname)?.ok_or_else(not_yours)
    })?;
    announce_join(db, live, agent, interaction_id, role, message)?;
    let interaction = work_json(db, agent.tenant_id, interaction_id)?.unwrap_or(Value::Null);
    events::push(
        live,
        &agent.id,
        json!({
            "messageType": "InteractionStateChanged",
            "notificationType": "StatusChange",
            "interaction": with_state(interaction.clone(), "Joined", &[]),
            "role": role,
        }),
    )?;
    Ok(interaction)
}

/// The agent's role in a conversation they take part in, if they do.
pub fn role_in(
    db: &Db,
    agent: &Agent,
    interaction_id: &str,
) -> ApiResult<Option<(String, String)>> {
    if !crate::spin::is_uuid(interaction_id) {
        return Ok(None);
    }
    let rows = db.rows(
        "find the agent in the conversation",
        "SELECT id::text AS participant, role FROM participants \
         WHERE interaction_id = $1 AND tenant_id = $2 AND agent_id = $3 AND left_at IS NULL",
        &[
            uuid(interaction_id),
            tenant(agent.tenant_id),
            uuid(&agent.id),
        ],
    )?;
    Ok(rows.rows().next().and_then(|row| {
        Some((
            row.get::<String>("participant")?,
            row.get::<String>("role")?,
        ))
    }))
}

/// What happens to the chat when an agent leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAction {
    /// End the chat if no other agent is left in it.
    CloseIfNoAgents,
    /// End the chat.
    ForceClose,
    /// Keep it open for the customer (an async chat); it goes back to routing when they write.
    KeepAlive,
}

impl AfterAction {
    pub fn parse(text: Option<&str>) -> Option<AfterAction> {
        match text.unwrap_or("CloseIfNoAgents") {
            "CloseIfNoAgents" => Some(AfterAction::CloseIfNoAgents),
            "ForceClose" => Some(AfterAction::ForceClose),
            "KeepAlive" => Some(AfterAction::KeepAlive),
            _ => None,
        }
    }
}

/// The agent leaves a conversation; whether the chat ended.
pub fn leave(
    db: &Db,
    live: &Live,
    agent: &Agent,
    interaction_id: &str,
    after: AfterAction,
) -> ApiResult<bool> {
    let (messages, ended, idle_in) = db.transaction(|db| {
        let rows = db.rows(
            "leave the conversation",
            "UPDATE participants SET left_at = now() \
             WHERE interaction_id = $1 AND tenant_id = $2 AND agent_id = $3 AND left_at IS NULL \
             RETURNING id::text AS id, kind, nickname, role",
            &[uuid(interaction_id), tenant(agent.tenant_id), uuid(&agent.id)],
        )?;
        let Some(row) = rows.rows().next() else {
            return Err(ApiError::new(409, Code::Conflict, "you are not in this conversation"));
        };
        let participant = row.get::<String>("id").unwrap_or_default();
        let role = row.get::<String>("role").unwrap_or_default();
        let visibility = match role.as_str() {
            "consult" | "coach" => "Agent",
            "monitor" => "Supervisor",
            _ => "All",
        };
        let mut messages = Vec::new();
        if let Some((left, _)) = conversation::append_message(
            db,
            agent.tenant_id,
            interaction_id,
            &NewMessage {
                kind: "ParticipantLeft",
                participant_id: Some(&participant),
                sender_kind: &row.get::<String>("kind").unwrap_or_default(),
                nickname: &row.get::<String>("nickname").unwrap_or_default(),
                text: None,
                data: None,
                visibility,
                client_message_id: None,
            },
        )? {
            messages.push(left);
        }
        let agents_left = db
            .rows(
                "count the agents left",
                "SELECT count(*) AS n FROM participants WHERE interaction_id = $1 AND left_at IS NULL \
                 AND agent_id IS NOT NULL AND role IN ('primary', 'conference', 'barge')",
                &[uuid(interaction_id)],
            )?
            .rows()
            .next()
            .and_then(|row| row.get::<i64>("n"))
            .unwrap_or_default();
        let close = match after {
            AfterAction::ForceClose => true,
            AfterAction::CloseIfNoAgents => agents_left == 0,
            AfterAction::KeepAlive => false,
        };
        // Kept open without agents: idle, in the queue it came from.
        let mut idle_in = None;
        if close {
            messages.extend(end_chat(db, agent.tenant_id, interaction_id, "agent")?);
        } else if agents_left == 0 {
            idle_in = db
                .rows(
                    "keep the chat open without agents",
                    "UPDATE interactions SET routing_state = 'idle', updated_at = now() \
                     WHERE id = $1 AND tenant_id = $2 AND state = 'active' AND routing_state = 'assigned' \
                     RETURNING queue",
                    &[uuid(interaction_id), tenant(agent.tenant_id)],
                )?
                .rows()
                .next()
                .map(|row| row.get::<String>("queue"));
        }
        Ok((messages, close, idle_in))
    })?;
    if let Some(queue) = idle_in {
        tell_routing(live, interaction_id, "idle", queue.as_deref());
    }
    let state = LiveState::new(live, interaction_id);
    let _ = state.set_agent(&agent.id, None);
    // The one who left is told too: they are no longer in the live list.
    conversation::publish(
        live,
        interaction_id,
        &messages,
        if ended { "ended" } else { "active" },
    );
    if ended {
        let _ = state.set_state("ended");
    }
    conversation::tell_agents(
        live,
        interaction_id,
        &[(agent.id.clone(), "primary".into())],
        &messages,
    );
    Ok(ended)
}

/// Ends a chat: the remaining participants leave and the transcript says it ended.
pub fn end_chat(
    db: &Db,
    tenant_id: i64,
    interaction_id: &str,
    reason: &str,
) -> ApiResult<Vec<Value>> {
    let rows = db.rows(
        "end the chat",
        "UPDATE interactions SET state = 'ended', ended_at = now(), ended_reason = $3, \
           next_position = next_position + 1, updated_at = now(), last_activity_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND state = 'active' RETURNING next_position - 1 AS position",
        &[uuid(interaction_id), tenant(tenant_id), text(reason)],
    )?;
    let Some(position) = rows
        .rows()
        .next()
        .and_then(|row| row.get::<i32>("position"))
    else {
        return Ok(Vec::new());
    };
    db.execute(
        "everyone leaves",
        "UPDATE participants SET left_at = now() WHERE interaction_id = $1 AND left_at IS NULL AND agent_id IS NULL",
        &[uuid(interaction_id)],
    )?;
    db.json_rows(
        "record the end",
        "INSERT INTO messages AS m (interaction_id, position, tenant_id, type, sender_kind, nickname) \
         VALUES ($1, $3, $2, 'ChatEnded', 'System', '') RETURNING nexus_message_json(m)",
        &[uuid(interaction_id), tenant(tenant_id), ParameterValue::Int32(position)],
    )
}

/// The agent marks a conversation done: they leave it if still in (ending it if nobody else
/// is), it stops counting against their capacity, and what waits is offered again.
pub fn complete(db: &Db, live: &Live, agent: &Agent, interaction_id: &str) -> ApiResult<()> {
    if role_in(db, agent, interaction_id)?.is_some() {
        leave(
            db,
            live,
            agent,
            interaction_id,
            AfterAction::CloseIfNoAgents,
        )?;
    }
    let done = db.execute(
        "mark the conversation done",
        "UPDATE interactions SET routing_state = CASE WHEN state = 'ended' OR routing_state = 'assigned' THEN 'done' ELSE routing_state END, \
           updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND last_agent_id = $3 AND routing_state IN ('assigned', 'idle')",
        &[uuid(interaction_id), tenant(agent.tenant_id), uuid(&agent.id)],
    )?;
    if done == 0 {
        return Err(ApiError::new(
            409,
            Code::Conflict,
            "this interaction is not yours to complete",
        ));
    }
    release(live, &agent.id, interaction_id)?;
    events::push(
        live,
        &agent.id,
        json!({"messageType": "InteractionStateChanged", "notificationType": "Completed", "interaction": {"id": interaction_id}}),
    )?;
    route_tenant(db, live, agent.tenant_id)?;
    Ok(())
}

/// The agent hands the conversation to another agent, who is offered it at once.
pub fn transfer_to_agent(
    db: &Db,
    live: &Live,
    agent: &Agent,
    interaction_id: &str,
    target: &Agent,
) -> ApiResult<()> {
    if target.state != "ready" {
        return Err(ApiError::new(
            409,
            Code::Conflict,
            "that agent is not ready",
        ));
    }
    let Some(queue) = current_queue(db, agent.tenant_id, interaction_id)? else {
        return Err(not_yours());
    };
    if !reserve(live, &target.id, target.chat_capacity, interaction_id)? {
        return Err(ApiError::new(
            409,
            Code::Conflict,
            "that agent has no room for another conversation",
        ));
    }
    leave(db, live, agent, interaction_id, AfterAction::KeepAlive)?;
    release(live, &agent.id, interaction_id)?;
    if queue.is_empty() {
        release(live, &target.id, interaction_id)?;
        return Err(ApiError::new(
            409,
            Code::Conflict,
            "only a routed conversation can be transferred",
        ));
    }
    if !invite(db, live, agent.tenant_id, interaction_id, &target.id)? {
        release(live, &target.id, interaction_id)?;
        return Err(ApiError::new(
            409,
            Code::Conflict,
            "the conversation has ended",
        ));
    }
    events::push(
        live,
        &agent.id,
        json!({"messageType": "InteractionStateChanged", "notificationType": "Transferred", "interaction": {"id": interaction_id}, "to": target.id}),
    )?;
    Ok(())
}

/// The agent puts the conversation in a queue (theirs or another).
pub fn transfer_to_queue(
    db: &Db,
    live: &Live,
    agent: &Agent,
    interaction_id: &str,
    queue: &Queue,
) -> ApiResult<()> {
    if current_queue(db, agent.tenant_id, interaction_id)?.is_none() {
        return Err(not_yours());
    }
    leave(db, live, agent, interaction_id, AfterAction::KeepAlive)?;
    release(live, &agent.id, interaction_id)?;
    enqueue(db, live, agent.tenant_id, interaction_id, queue)?;
    events::push(
        live,
        &agent.id,
        json!({"messageType": "InteractionStateChanged", "notificationType": "Transferred", "interaction": {"id": interaction_id}, "queue": queue.name}),
    )?;
    Ok(())
}

fn current_queue(db: &Db, tenant_id: i64, interaction_id: &str) -> ApiResult<Option<String>> {
    let rows = db.rows(
        "read the conversation's queue",
        "SELECT coalesce(queue, '') AS queue FROM interactions WHERE id = $1 AND tenant_id = $2 AND state = 'active'",
        &[uuid(interaction_id), tenant(tenant_id)],
    )?;
    Ok(rows
        .rows()
        .next()
        .and_then(|row| row.get::<String>("queue")))
}

/// A customer wrote in a chat kept open without agents: it goes back to its queue (and to the
/// agent who had it, if they are free).
pub fn wake(db: &Db, live: &Live, tenant_id: i64, interaction_id: &str) -> ApiResult<()> {
    let rows = db.rows(
        "wake the conversation",
        "UPDATE interactions SET routing_state = 'queued', queued_at = now(), updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND state = 'active' AND routing_state = 'idle' \
         RETURNING queue, (extract(epoch FROM queued_at) * 1000)::bigint AS queued_ms",
        &[uuid(interaction_id), tenant(tenant_id)],
    )?;
    let Some(row) = rows.rows().next() else {
        return Ok(());
    };
    let queue = row.get::<String>("queue").unwrap_or_default();
    wait_in_queue(
        live,
        tenant_id,
        &queue,
        row.get::<i64>("queued_ms").unwrap_or_default(),
        interaction_id,
    )?;
    route(db, live, tenant_id, &queue)?;
    tell_places(live, tenant_id, &queue, Some(interaction_id))?;
    Ok(())
}

/// Where routing has a session, as the Chat API tells its customer: `{"state", "queue",
/// "position"}` (the place in the queue while queued, 1 is next); null for an unknown one.
pub fn status(db: &Db, live: &Live, tenant_id: i64, interaction_id: &str) -> ApiResult<Value> {
    let rows = db.rows(
        "read the routing state",
        "SELECT routing_state, queue FROM interactions WHERE id = $1 AND tenant_id = $2",
        &[uuid(interaction_id), tenant(tenant_id)],
    )?;
    let Some(row) = rows.rows().next() else {
        return Ok(Value::Null);
    };
    let state = row.get::<String>("routing_state").unwrap_or_default();
    let queue = row.get::<String>("queue");
    let position = match (&queue, state.as_str()) {
        (Some(queue), "queued") => position(live, tenant_id, queue, interaction_id)?,
        _ => None,
    };
    Ok(json!({ "state": state, "queue": queue, "position": position }))
}

/// The customer's place in their queue (1 is next), while they wait.
pub fn position(
    live: &Live,
    tenant_id: i64,
    queue: &str,
    interaction_id: &str,
) -> ApiResult<Option<i64>> {
    let reply = live.cmd(
        "ZRANK",
        &[arg(queue_key(live, tenant_id, queue)), arg(interaction_id)],
    )?;
    Ok(match reply.first() {
        Some(RedisResult::Int64(rank)) => Some(rank + 1),
        _ => None,
    })
}

/// After Redis lost what it held (restarted empty, flushed), puts the agents PostgreSQL says are
/// ready back in line, with their skills, capacity and load; how many. Redis holds a marker
/// (`route:presence`, set once this is done) so that the check costs one `EXISTS` per sweep.
/// Their place in line (who waited longest) is lost with Redis: they line up anew.
fn restore_presence(db: &Db, live: &Live) -> ApiResult<u32> {
    let marker = live.key("route:presence");
    if int_reply(&live.cmd("EXISTS", &[arg(&marker)])?) == 1 {
        return Ok(0);
    }
    let ready = db.json_rows(
        "list the ready agents",
        "SELECT nexus_agent_json(a) || jsonb_build_object('tenantId', a.tenant_id) FROM agents a \
         JOIN tenants t ON t.id = a.tenant_id WHERE a.state = 'ready' AND a.enabled AND t.enabled",
        &[],
    )?;
    let mut restored = 0;
    for agent in ready.iter().map(agent_from_json) {
        publish_agent(db, live, &agent)?;
        live.cmd(
            "ZADD",
            &[
                arg(ready_key(live, agent.tenant_id)),
                arg("NX"),
                int_arg(now_score()),
                arg(&agent.id),
            ],
        )?;
        live.cmd(
            "SADD",
            &[
                arg(live.key("route:tenants")),
                arg(agent.tenant_id.to_string()),
            ],
        )?;
        restored += 1;
    }
    live.cmd("SET", &[arg(&marker), arg("1")])?;
    Ok(restored)
}

/// Due routing work for every tenant: ready agents and queues rebuilt from PostgreSQL (after a
/// Redis restart), unanswered invitations taken back, those of conversations that ended first
/// withdrawn, waits past a queue's timeout moved to its overflow queue, and every queue routed. Safe to run on every host at once.
pub fn sweep(db: &Db, live: &Live) -> ApiResult<Value> {
    let restored = restore_presence(db, live)?;
    let tenants = db.rows(
        "list the tenants with routing",
        "SELECT DISTINCT tenant_id FROM interactions \
         WHERE routing_state = 'invited' OR (routing_state = 'queued' AND state = 'active')",
        &[],
    )?;
    let mut summary = json!({"requeued": 0, "overflowed": 0, "offered": 0, "withdrawn": 0,
                             "agentsRestored": restored});
    for tenant_id in tenants.rows().filter_map(|row| row.get::<i64>("tenant_id")) {
        let withdrawn = withdraw_ended(db, live, tenant_id)?;
        summary["withdrawn"] =
            Value::from(summary["withdrawn"].as_i64().unwrap_or(0) + i64::from(withdrawn));
        // Not what changed in the last two seconds: a router that has just taken a conversation
        // off the queue (ZREM) may not have committed its invitation yet, and putting it back
        // would count it twice in every position until the next pass drops it.
        let waiting = db.rows(
            "list the waiting conversations",
            "SELECT id::text AS id, queue, (extract(epoch FROM queued_at) * 1000)::bigint AS queued_ms \
             FROM interactions WHERE tenant_id = $1 AND routing_state = 'queued' AND state = 'active' \
               AND updated_at < now() - interval '2 seconds'",
            &[tenant(tenant_id)],
        )?;
        for row in waiting.rows() {
            let (Some(id), Some(queue), Some(ms)) = (
                row.get::<String>("id"),
                row.get::<String>("queue"),
                row.get::<i64>("queued_ms"),
            ) else {
                continue;
            };
            wait_in_queue(live, tenant_id, &queue, ms, &id)?;
        }
        let expired = db.rows(
            "find unanswered invitations",
            "SELECT i.id::text AS id, i.invited_agent_id::text AS agent FROM interactions i \
             JOIN queues q ON q.tenant_id = i.tenant_id AND q.name = i.queue \
             WHERE i.tenant_id = $1 AND i.routing_state = 'invited' AND i.state = 'active' \
               AND i.updated_at < now() - make_interval(secs => q.invite_timeout_seconds)",
            &[tenant(tenant_id)],
        )?;
        for row in expired.rows() {
            if let (Some(id), Some(agent)) = (row.get::<String>("id"), row.get::<String>("agent"))
                && requeue(db, live, tenant_id, &id, &agent)?
            {
                summary["requeued"] = Value::from(summary["requeued"].as_i64().unwrap_or(0) + 1);
            }
        }
        let overflowed = db.rows(
            "move long waits to the overflow queue",
            "WITH due AS (SELECT i.id, i.queue AS old_queue, q.overflow_queue FROM interactions i \
               JOIN queues q ON q.tenant_id = i.tenant_id AND q.name = i.queue \
               WHERE i.tenant_id = $1 AND i.routing_state = 'queued' AND i.state = 'active' \
                 AND q.timeout_seconds IS NOT NULL AND q.overflow_queue IS NOT NULL \
                 AND i.queued_at < now() - make_interval(secs => q.timeout_seconds) FOR UPDATE OF i) \
             UPDATE interactions i SET queue = due.overflow_queue, queued_at = now(), updated_at = now() \
             FROM due WHERE i.id = due.id \
             RETURNING i.id::text AS id, due.old_queue, i.queue, (extract(epoch FROM i.queued_at) * 1000)::bigint AS queued_ms",
            &[tenant(tenant_id)],
        )?;
        for row in overflowed.rows() {
            let (Some(id), Some(old), Some(new), Some(ms)) = (
                row.get::<String>("id"),
                row.get::<String>("old_queue"),
                row.get::<String>("queue"),
                row.get::<i64>("queued_ms"),
            ) else {
                continue;
            };
            live.cmd("ZREM", &[arg(queue_key(live, tenant_id, &old)), arg(&id)])?;
            wait_in_queue(live, tenant_id, &new, ms, &id)?;
            tell_places(live, tenant_id, &new, Some(&id))?;
            summary["overflowed"] = Value::from(summary["overflowed"].as_i64().unwrap_or(0) + 1);
        }
        let offered = route_tenant(db, live, tenant_id)?;
        summary["offered"] =
            Value::from(summary["offered"].as_i64().unwrap_or(0) + i64::from(offered));
    }
    Ok(summary)
}
