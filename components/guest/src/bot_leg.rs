//! The bot leg of a conversation: a channel's routing rule names a bot, the bot joins the new
//! conversation and holds it (`routing_state = 'bot'`) until it hands off to routing or ends it.
//!
//! Turns are durable jobs of the `bots` component (queued by the `bot_turn` trigger of
//! migration 0009 for each customer message, and here for the first turn); this module reads a
//! turn's input from PostgreSQL and applies the bot's actions ([`crate::bot_contract`]) in one
//! transaction, so a turn either happens whole or is tried again whole.

use serde_json::{Map, Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::api::{ApiError, ApiResult};
use crate::bot_contract::Action;
use crate::conversation::{self, NewMessage};
use crate::live::LiveState;
use crate::routing::{self, Queue};
use crate::secrets::new_id;
use crate::spin::{Db, Live, jsonb, opt_text, text, uuid};

/// At most this many unseen customer messages go in one turn (the rest go in the next).
const TURN_MESSAGES: i64 = 50;

fn tenant(id: i64) -> ParameterValue {
    ParameterValue::Int64(id)
}

/// Puts a new conversation in the hands of the bot `bot_name`, if the tenant has it enabled,
/// and queues its first turn. Whether the bot took it.
pub fn engage(
    db: &Db,
    live: &Live,
    tenant_id: i64,
    interaction_id: &str,
    bot_name: &str,
) -> ApiResult<bool> {
    let participant_id = new_id();
    let joined = db.transaction(|db| {
        let rows = db.rows(
            "give the conversation to the bot",
            "WITH b AS (SELECT id, nickname FROM bots WHERE tenant_id = $2 AND name = $3 AND enabled) \
             UPDATE interactions i SET routing_state = 'bot', bot_id = b.id, bot_seen = 0, updated_at = now() \
             FROM b WHERE i.id = $1 AND i.tenant_id = $2 AND i.state = 'active' AND i.routing_state = 'none' \
             RETURNING b.nickname",
            &[uuid(interaction_id), tenant(tenant_id), text(bot_name)],
        )?;
        let Some(nickname) = rows.rows().next().and_then(|row| row.get::<String>("nickname"))
        else {
            return Ok(None);
        };
        db.execute(
            "add the bot",
            "INSERT INTO participants (id, interaction_id, tenant_id, kind, nickname) \
             VALUES ($1, $2, $3, 'Bot', $4)",
            &[
                uuid(&participant_id),
                uuid(interaction_id),
                tenant(tenant_id),
                text(&nickname),
            ],
        )?;
        let joined = conversation::append_message(
            db,
            tenant_id,
            interaction_id,
            &NewMessage {
                kind: "ParticipantJoined",
                participant_id: Some(&participant_id),
                sender_kind: "Bot",
                nickname: &nickname,
                text: None,
                data: None,
                visibility: "All",
                client_message_id: None,
            },
        )?;
        // The first turn: the bot greets, or answers what the conversation started with.
        db.execute(
            "queue the bot's first turn",
            "INSERT INTO jobs (id, tenant_id, component, kind, ordering_key, payload) \
             VALUES (gen_random_uuid(), $2, 'bots', 'turn', 'bots:' || $1::uuid::text, \
                     jsonb_build_object('interactionId', $1::uuid))",
            &[uuid(interaction_id), tenant(tenant_id)],
        )?;
        Ok(Some(joined.map(|(message, _)| message)))
    })?;
    let Some(joined) = joined else {
        return Ok(false);
    };
    if let Some(message) = joined {
        conversation::publish(live, interaction_id, &[message], "active");
    }
    Ok(true)
}

/// Everything a turn needs, read when it runs.
pub struct TurnInput {
    pub tenant_id: i64,
    pub ccid: String,
    pub interaction_id: String,
    pub channel_id: String,
    pub channel_type: String,
    pub user_data: Value,
    pub started_at: String,
    pub customer_nickname: String,
    pub bot: Bot,
    pub participant_id: String,
    /// The first turn of this bot in this conversation.
    pub first: bool,
    /// The customer's messages the bot has not seen, oldest first.
    pub messages: Vec<Value>,
    /// The bot has seen everything up to here once this turn is done.
    pub seen_through: i32,
    bot_seen: i32,
}

pub struct Bot {
    pub id: String,
    pub name: String,
    pub nickname: String,
    /// Empty for a tenant component.
    pub url: String,
    /// The tenant component that is the bot, if it is one.
    pub component: Option<BotComponent>,
    /// Sealed (see [`crate::sealed`]), for `bot:<id>`.
    pub credentials: Option<String>,
    pub response_timeout_seconds: i64,
    pub enabled: bool,
}

/// A tenant bot component, as the turn found it.
pub struct BotComponent {
    pub name: String,
    /// Passed to the host, which serves the turn with this revision or a newer one.
    pub revision: i64,
    /// Enabled, with an active version.
    pub runnable: bool,
    pub disabled_reason: Option<String>,
    pub timeout_ms: i64,
}

/// The input of the next turn of `interaction_id`: `None` when no bot holds it (any more) or
/// the bot has already seen everything.
pub fn next_turn(db: &Db, interaction_id: &str) -> ApiResult<Option<TurnInput>> {
    let row = db.json_row(
        "read the bot's conversation",
        "SELECT jsonb_build_object( \
           'tenantId', i.tenant_id, 'ccid', t.ccid, 'channelId', i.channel_id, 'channelType', c.type, \
           'userData', i.user_data, 'startedAt', nexus_ts(i.created_at), 'botSeen', i.bot_seen, \
           'through', i.next_position - 1, \
           'customer', (SELECT p.nickname FROM participants p WHERE p.interaction_id = i.id AND p.kind = 'Customer' ORDER BY p.joined_at LIMIT 1), \
           'participantId', (SELECT p.id FROM participants p WHERE p.interaction_id = i.id AND p.kind = 'Bot' AND p.left_at IS NULL ORDER BY p.joined_at DESC LIMIT 1), \
           'bot', jsonb_build_object('id', b.id, 'name', b.name, 'nickname', b.nickname, 'url', b.url, \
             'credentials', b.credentials, 'timeout', b.response_timeout_seconds, 'enabled', b.enabled, \
             'component', (SELECT jsonb_build_object('name', c.name, 'revision', c.revision, \
                 'runnable', c.enabled AND c.active_version IS NOT NULL, 'disabledReason', c.disabled_reason, \
                 'timeoutMs', c.timeout_ms) \
               FROM tenant_components c WHERE c.tenant_id = b.tenant_id AND c.name = b.component))) \
         FROM interactions i JOIN tenants t ON t.id = i.tenant_id JOIN channels c ON c.id = i.channel_id \
         JOIN bots b ON b.id = i.bot_id \
         WHERE i.id = $1 AND i.state = 'active' AND i.routing_state = 'bot'",
        &[uuid(interaction_id)],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let number = |v: &Value| v.as_i64().unwrap_or_default();
    let owned = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let tenant_id = number(&row["tenantId"]);
    let bot_seen = i32::try_from(number(&row["botSeen"])).unwrap_or_default();
    let through = i32::try_from(number(&row["through"])).unwrap_or_default();
    let messages = db.json_rows(
        "read what the customer wrote",
        "SELECT nexus_message_json(m) FROM messages m \
         WHERE m.interaction_id = $1 AND m.tenant_id = $2 AND m.position > $3 AND m.position <= $4 \
           AND m.sender_kind = 'Customer' AND m.type = 'Text' ORDER BY m.position LIMIT $5",
        &[
            uuid(interaction_id),
            tenant(tenant_id),
            ParameterValue::Int32(bot_seen),
            ParameterValue::Int32(through),
            ParameterValue::Int64(TURN_MESSAGES),
        ],
    )?;
    let first = bot_seen == 0;
    if messages.is_empty() && !first {
        return Ok(None);
    }
    // A full batch: the next turn takes up after the last one sent.
    let seen_through = if messages.len() as i64 == TURN_MESSAGES {
        messages
            .last()
            .and_then(|m| m["position"].as_i64())
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(through)
    } else {
        through
    };
    let bot = &row["bot"];
    Ok(Some(TurnInput {
        tenant_id,
        ccid: owned(&row["ccid"]),
        interaction_id: interaction_id.to_owned(),
        channel_id: owned(&row["channelId"]),
        channel_type: owned(&row["channelType"]),
        user_data: row["userData"].clone(),
        started_at: owned(&row["startedAt"]),
        customer_nickname: owned(&row["customer"]),
        participant_id: owned(&row["participantId"]),
        bot: Bot {
            id: owned(&bot["id"]),
            name: owned(&bot["name"]),
            nickname: owned(&bot["nickname"]),
            url: owned(&bot["url"]),
            component: bot["component"].as_object().map(|component| BotComponent {
                name: owned(&component["name"]),
                revision: number(&component["revision"]),
                runnable: component["runnable"].as_bool().unwrap_or(false),
                disabled_reason: component["disabledReason"].as_str().map(str::to_owned),
                timeout_ms: number(&component["timeoutMs"]),
            }),
            credentials: bot["credentials"].as_str().map(str::to_owned),
            response_timeout_seconds: number(&bot["timeout"]).clamp(1, 30),
            enabled: bot["enabled"].as_bool().unwrap_or(false),
        },
        first,
        messages,
        seen_through: seen_through.max(bot_seen),
        bot_seen,
    }))
}

/// The body POSTed to the bot for a turn (`turn_id`: the same on every attempt of the turn).
pub fn turn_request(input: &TurnInput, turn_id: &str) -> Value {
    let messages: Vec<Value> = input
        .messages
        .iter()
        .map(|m| {
            let mut message = json!({
                "position": m["position"],
                "text": m["text"],
                "timestamp": m["timestamp"],
            });
            if let Some(media) = m.get("data").and_then(|data| data.get("media")) {
                message["media"] = media.clone();
            }
            message
        })
        .collect();
    json!({
        "turnId": turn_id,
        "bot": input.bot.name,
        "event": if input.first { "started" } else { "message" },
        "conversation": {
            "id": input.interaction_id,
            "contactCenterId": input.ccid,
            "channelId": input.channel_id,
            "channelType": input.channel_type,
            "startedAt": input.started_at,
            "userData": input.user_data,
            "customer": {"nickname": input.customer_nickname},
        },
        "messages": messages,
    })
}

/// Where a handoff goes, and why.
struct Handoff<'a> {
    /// None: the channel has no queue to go to (its rule was deleted); the conversation waits
    /// unrouted, as one on a channel without a rule does.
    queue: Option<Queue>,
    reason: &'a str,
    /// The bot chose it (else nexus did, because the bot failed).
    by_bot: bool,
}

/// Applies the bot's answer to the turn: its actions in order, then the turn is marked seen.
/// Answers whether the conversation left the bot.
pub fn apply(db: &Db, live: &Live, input: &TurnInput, actions: &[Action]) -> ApiResult<bool> {
    let handoff = actions.iter().find_map(|action| match action {
        Action::Handoff { queue, reason } => Some(Handoff {
            queue: resolve_queue(db, input, queue.as_deref()),
            reason: reason.as_deref().unwrap_or("the bot handed off"),
            by_bot: true,
        }),
        _ => None,
    });
    let end = actions.iter().find_map(|action| match action {
        Action::End { reason } => Some(
            reason
                .as_ref()
                .map_or("bot".to_owned(), |r| format!("bot: {r}")),
        ),
        _ => None,
    });
    let outcome = db.transaction(|db| {
        if !mark_seen(db, input)? {
            return Ok(None);
        }
        let mut messages = Vec::new();
        for action in actions {
            match action {
                Action::Reply { text } => {
                    messages.extend(say(db, input, text, None)?);
                }
                Action::Ask { text, options } => {
                    let data = json!({ "options": options });
                    messages.extend(say(db, input, text, Some(&data))?);
                }
                Action::SetUserData { data } => set_user_data(db, input, data)?,
                // The last action: done below, once everything it says has been said.
                Action::Handoff { .. } | Action::End { .. } => {}
            }
        }
        if let Some(handoff) = &handoff {
            messages.extend(leave_for_routing(db, input, handoff)?);
        }
        let mut ended = Vec::new();
        if let Some(reason) = &end {
            ended = routing::end_chat(db, input.tenant_id, &input.interaction_id, reason)?;
        }
        Ok(Some((messages, ended)))
    })?;
    let Some((messages, ended)) = outcome else {
        return Ok(true);
    };
    conversation::publish(live, &input.interaction_id, &messages, "active");
    if !ended.is_empty() {
        conversation::publish(live, &input.interaction_id, &ended, "ended");
        let _ = LiveState::new(live, &input.interaction_id).set_state("ended");
        return Ok(true);
    }
    if let Some(handoff) = handoff {
        route(db, live, input, handoff.queue)?;
        return Ok(true);
    }
    Ok(false)
}

/// The bot's actions with what it says to the customer run through the channel's outbound
/// transforms (as an agent's texts are), before anything is stored: a reply a transform masks is
/// stored and sent masked. Called outside the turn's transaction (a transform may take seconds).
/// A transform's rejection is an error of status 422 (the caller fails the turn over to
/// routing: retrying would be refused again); its failure, 503 (the turn is tried again).
pub fn transform_replies(
    db: &Db,
    input: &TurnInput,
    actions: Vec<Action>,
) -> ApiResult<Vec<Action>> {
    let message = crate::tenant_components::Transformable {
        tenant_id: input.tenant_id,
        channel_id: Some(&input.channel_id),
        conversation_id: &input.interaction_id,
        direction: crate::tenant_components::Direction::Outbound,
        sender_kind: "Bot",
    };
    // The chain is read once for the turn, however many things the bot says.
    let chain = crate::tenant_components::chain(db, &message)?;
    actions
        .into_iter()
        .map(|action| match action {
            Action::Reply { text } => Ok(Action::Reply {
                text: chain.apply(&message, &text)?,
            }),
            Action::Ask { text, options } => Ok(Action::Ask {
                text: chain.apply(&message, &text)?,
                options,
            }),
            other => Ok(other),
        })
        .collect()
}

/// The bot did not answer as the contract says (`why`): the conversation goes to routing at
/// once, with the reason for the agent. A customer is never left with a silent bot.
pub fn fail_over(db: &Db, live: &Live, input: &TurnInput, why: &str) -> ApiResult<()> {
    let reason = format!("the bot {} did not answer: {why}", input.bot.name);
    let handoff = Handoff {
        queue: resolve_queue(db, input, None),
        reason: &reason,
        by_bot: false,
    };
    let messages = db.transaction(|db| {
        if !mark_seen(db, input)? {
            return Ok(None);
        }
        leave_for_routing(db, input, &handoff).map(Some)
    })?;
    let Some(messages) = messages else {
        return Ok(());
    };
    conversation::publish(live, &input.interaction_id, &messages, "active");
    route(db, live, input, handoff.queue)
}

/// Moves the bot's mark past this turn, if the conversation is still the bot's and no other
/// attempt of the turn got there first.
fn mark_seen(db: &Db, input: &TurnInput) -> ApiResult<bool> {
    let marked = db.execute(
        "mark the turn seen",
        "UPDATE interactions SET bot_seen = $4, updated_at = now() \
         WHERE id = $1 AND tenant_id = $2 AND state = 'active' AND routing_state = 'bot' \
           AND bot_id = $3 AND bot_seen = $5",
        &[
            uuid(&input.interaction_id),
            tenant(input.tenant_id),
            uuid(&input.bot.id),
            ParameterValue::Int32(input.seen_through.max(1)),
            ParameterValue::Int32(input.bot_seen),
        ],
    )?;
    Ok(marked == 1)
}

fn say(db: &Db, input: &TurnInput, text: &str, data: Option<&Value>) -> ApiResult<Option<Value>> {
    let appended = conversation::append_message(
        db,
        input.tenant_id,
        &input.interaction_id,
        &NewMessage {
            kind: "Text",
            participant_id: (!input.participant_id.is_empty()).then_some(&input.participant_id),
            sender_kind: "Bot",
            nickname: &input.bot.nickname,
            text: Some(text),
            data,
            visibility: "All",
            client_message_id: None,
        },
    )?;
    Ok(appended.map(|(message, _)| message))
}

/// Merges `data` into the conversation's user data; a null value removes its key.
fn set_user_data(db: &Db, input: &TurnInput, data: &Map<String, Value>) -> ApiResult<()> {
    let (removed, kept): (Vec<_>, Vec<_>) = data.iter().partition(|(_, value)| value.is_null());
    let kept: Map<String, Value> = kept
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    db.execute(
        "set the user data",
        "UPDATE interactions SET user_data = (user_data || $3::jsonb) - $4::text[], updated_at = now() \
         WHERE id = $1 AND tenant_id = $2",
        &[
            uuid(&input.interaction_id),
            tenant(input.tenant_id),
            jsonb(&Value::Object(kept)),
            ParameterValue::ArrayStr(removed.into_iter().map(|(k, _)| Some(k.clone())).collect()),
        ],
    )?;
    Ok(())
}

/// The bot leaves, and the agent who gets the conversation is told why (in the transcript, for
/// agents only, and in the user data as `botHandoff`). Routing follows once this commits.
fn leave_for_routing(db: &Db, input: &TurnInput, handoff: &Handoff<'_>) -> ApiResult<Vec<Value>> {
    let context = json!({
        "botHandoff": {
            "bot": input.bot.name,
            "reason": handoff.reason,
            "byBot": handoff.by_bot,
            "queue": handoff.queue.as_ref().map(|q| q.name.as_str()),
        }
    });
    // Queued here, in the transaction: if what follows the commit (Redis, the offer to an agent)
    // fails, the routing sweep finds the conversation waiting in PostgreSQL.
    db.execute(
        "record the handoff",
        "UPDATE interactions SET user_data = user_data || $3::jsonb, updated_at = now(), \
           routing_state = CASE WHEN $4::text IS NULL THEN 'none' ELSE 'queued' END, \
           queue = $4, queued_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END \
         WHERE id = $1 AND tenant_id = $2",
        &[
            uuid(&input.interaction_id),
            tenant(input.tenant_id),
            jsonb(&context),
            opt_text(handoff.queue.as_ref().map(|q| q.name.clone())),
        ],
    )?;
    let mut messages = Vec::new();
    if !input.participant_id.is_empty() {
        db.execute(
            "the bot leaves",
            "UPDATE participants SET left_at = now() WHERE id = $1 AND left_at IS NULL",
            &[uuid(&input.participant_id)],
        )?;
        let left = conversation::append_message(
            db,
            input.tenant_id,
            &input.interaction_id,
            &NewMessage {
                kind: "ParticipantLeft",
                participant_id: Some(&input.participant_id),
                sender_kind: "Bot",
                nickname: &input.bot.nickname,
                text: None,
                data: None,
                visibility: "All",
                client_message_id: None,
            },
        )?;
        messages.extend(left.map(|(message, _)| message));
    }
    let notice = format!("Handed off by {}: {}", input.bot.nickname, handoff.reason);
    let noted = conversation::append_message(
        db,
        input.tenant_id,
        &input.interaction_id,
        &NewMessage {
            kind: "Notice",
            participant_id: None,
            sender_kind: "System",
            nickname: "",
            text: Some(&notice),
            data: Some(&context["botHandoff"]),
            visibility: "Agent",
            client_message_id: None,
        },
    )?;
    messages.extend(noted.map(|(message, _)| message));
    Ok(messages)
}

/// The queue a handoff goes to: `wanted` if the tenant has it, else the channel rule's queue.
/// A failure to read them is logged and taken as no queue: the handoff must still happen.
fn resolve_queue(db: &Db, input: &TurnInput, wanted: Option<&str>) -> Option<Queue> {
    let found = (|| {
        if let Some(name) = wanted
            && let Some(queue) = routing::load_queue(db, input.tenant_id, name)?
        {
            return Ok(Some(queue));
        }
        match routing::rule_for_channel(db, input.tenant_id, &input.channel_id)? {
            Some(rule) => routing::load_queue(db, input.tenant_id, &rule.queue),
            None => Ok(None),
        }
    })();
    found.unwrap_or_else(|err: ApiError| {
        crate::spin::log_error("find the handoff's queue", &err);
        None
    })
}

/// Offers the handed-off conversation (queued when the handoff committed) to the queue's agents.
fn route(db: &Db, live: &Live, input: &TurnInput, queue: Option<Queue>) -> ApiResult<()> {
    match queue {
        Some(queue) => routing::enqueue(db, live, input.tenant_id, &input.interaction_id, &queue),
        None => Ok(()),
    }
}
